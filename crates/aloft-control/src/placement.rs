//! Where a new machine (or volume) goes, decided without IO from what is known of the
//! hosts of its region: only a host that is up (not down, cordoned or draining) with room
//! for it, and of those the one holding the fewest of the same app's process group (so a
//! group spreads over the region's hosts), then the least loaded. A refusal says which
//! region and which resource is short.
//!
//! Room: memory counts one to one against what the host reported (a host that reports
//! none is not checked for it); CPUs count in shares, 16 to a core, as Fly sizes them: a
//! `performance` CPU takes a whole core (16 shares), a `shared` one a sixteenth (1 share),
//! Fly's baseline for shared CPUs. A machine keeps its room while it is stopped, so that
//! starting it again never fails for want of it.

use aloft_types::machine::{CpuKind, METADATA_PROCESS_GROUP, MachineConfig, MachineGuest};
use aloft_types::{HostId, HostState};

/// The process group a config belongs to (`app` when it names none).
pub(crate) fn group_of(config: &MachineConfig) -> &str {
    config
        .metadata
        .get(METADATA_PROCESS_GROUP)
        .map_or("app", String::as_str)
}

/// CPU shares per core.
pub(crate) const SHARES_PER_CPU: i64 = 16;

/// What a machine (or a volume: nothing) needs of its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Need {
    pub shares: i64,
    pub memory_mb: i64,
}

impl Need {
    /// A machine with this guest (Fly's default size when it has none).
    pub(crate) fn of(guest: Option<&MachineGuest>) -> Need {
        let limits = MachineGuest::limits(guest);
        let per_cpu = match guest.and_then(|g| g.cpu_kind) {
            Some(CpuKind::Performance) => SHARES_PER_CPU,
            _ => 1,
        };
        Need {
            shares: i64::from(limits.cpus) * per_cpu,
            memory_mb: i64::from(limits.memory_mb),
        }
    }

    pub(crate) const NOTHING: Need = Need {
        shares: 0,
        memory_mb: 0,
    };

    pub(crate) fn plus(self, other: Need) -> Need {
        Need {
            shares: self.shares.saturating_add(other.shares),
            memory_mb: self.memory_mb.saturating_add(other.memory_mb),
        }
    }
}

/// One host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub id: HostId,
    pub region: String,
    pub state: HostState,
    pub cpus: i64,
    /// 0 when the host did not say.
    pub memory_mb: i64,
    /// What the machines placed on it take (destroyed ones not).
    pub used: Need,
    /// Machines (or volumes) of the same app and process group on it.
    pub siblings: usize,
}

impl Candidate {
    fn free(&self) -> Need {
        Need {
            shares: self.cpus.max(1) * SHARES_PER_CPU - self.used.shares,
            memory_mb: if self.memory_mb > 0 {
                self.memory_mb - self.used.memory_mb
            } else {
                i64::MAX
            },
        }
    }

    fn fits(&self, need: Need) -> (bool, bool) {
        let free = self.free();
        (free.shares >= need.shares, free.memory_mb >= need.memory_mb)
    }

    /// How full it is, in thousandths of its scarcer resource.
    fn load(&self) -> i64 {
        let cpu = self.used.shares * 1000 / (self.cpus.max(1) * SHARES_PER_CPU);
        let memory = if self.memory_mb > 0 {
            self.used.memory_mb * 1000 / self.memory_mb
        } else {
            0
        };
        cpu.max(memory)
    }
}

/// Why nothing could be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("no host in region {region} can take the machine (regions with hosts: {})", list(.regions))]
    NoHosts {
        region: String,
        regions: Vec<String>,
    },
    #[error("no host in region {region} can take the machine: {}", unavailable(.hosts))]
    NoneUp {
        region: String,
        hosts: Vec<(HostId, HostState)>,
    },
    #[error(
        "no host in region {region} can take the machine: {short} is short (it needs {}; the most free on one up host is {})",
        describe(*.need, *.short),
        describe(*.most_free, *.short)
    )]
    NoRoom {
        region: String,
        short: Short,
        need: Need,
        most_free: Need,
    },
}

/// The resource a refused machine lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Short {
    Memory,
    Cpu,
    /// Hosts with enough of one lack the other.
    Both,
}

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Short::Memory => "memory",
            Short::Cpu => "CPU",
            Short::Both => "room (no host has both the CPU and the memory)",
        })
    }
}

fn list(regions: &[String]) -> String {
    if regions.is_empty() {
        "none".to_owned()
    } else {
        regions.join(", ")
    }
}

fn unavailable(hosts: &[(HostId, HostState)]) -> String {
    let each: Vec<String> = hosts
        .iter()
        .map(|(id, state)| format!("{id} is {state}"))
        .collect();
    format!("none is up ({})", each.join(", "))
}

fn describe(need: Need, short: Short) -> String {
    let cpu = format!(
        "{} CPU share(s) of {SHARES_PER_CPU} per core",
        need.shares.max(0)
    );
    let memory = if need.memory_mb == i64::MAX {
        "unlimited memory".to_owned()
    } else {
        format!("{} MB of memory", need.memory_mb.max(0))
    };
    match short {
        Short::Memory => memory,
        Short::Cpu => cpu,
        Short::Both => format!("{cpu} and {memory}"),
    }
}

/// The host in `region` for something that needs `need`.
pub(crate) fn choose(region: &str, need: Need, hosts: &[Candidate]) -> Result<HostId, Refusal> {
    let local: Vec<&Candidate> = hosts.iter().filter(|h| h.region == region).collect();
    if local.is_empty() {
        let mut regions: Vec<String> = hosts.iter().map(|h| h.region.clone()).collect();
        regions.sort();
        regions.dedup();
        return Err(Refusal::NoHosts {
            region: region.to_owned(),
            regions,
        });
    }
    let up: Vec<&Candidate> = local
        .iter()
        .copied()
        .filter(|h| h.state == HostState::Up)
        .collect();
    if up.is_empty() {
        return Err(Refusal::NoneUp {
            region: region.to_owned(),
            hosts: local.iter().map(|h| (h.id.clone(), h.state)).collect(),
        });
    }
    let best = up
        .iter()
        .filter(|h| h.fits(need) == (true, true))
        .min_by_key(|h| (h.siblings, h.load(), h.id.clone()));
    if let Some(host) = best {
        return Ok(host.id.clone());
    }
    let cpu_anywhere = up.iter().any(|h| h.fits(need).0);
    let memory_anywhere = up.iter().any(|h| h.fits(need).1);
    let short = match (cpu_anywhere, memory_anywhere) {
        (true, false) => Short::Memory,
        (false, true) => Short::Cpu,
        _ => Short::Both,
    };
    let most_free = Need {
        shares: up.iter().map(|h| h.free().shares).max().unwrap_or(0),
        memory_mb: up.iter().map(|h| h.free().memory_mb).max().unwrap_or(0),
    };
    Err(Refusal::NoRoom {
        region: region.to_owned(),
        short,
        need,
        most_free,
    })
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
