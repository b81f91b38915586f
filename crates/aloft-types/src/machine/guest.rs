//! A machine's size: CPU class, CPUs, memory and GPUs as Fly's API spells them, Fly's
//! size presets, and the limits a machine runs under.

use serde::{Deserialize, Serialize};

use super::is_zero;

/// CPU class of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CpuKind {
    Shared,
    Performance,
}

impl std::fmt::Display for CpuKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CpuKind::Shared => "shared",
            CpuKind::Performance => "performance",
        })
    }
}

/// Whether the root filesystem outlives a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PersistRootfs {
    Never,
    Restart,
    Always,
}

/// CPU, memory and GPU of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineGuest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kind: Option<CpuKind>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cpus: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub memory_mb: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_memory_mb: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpus: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dedication_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_rootfs: Option<PersistRootfs>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_args: Vec<String>,
}

/// The CPUs, memory and tasks a machine runs with (what the engine enforces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLimits {
    pub cpus: u32,
    pub memory_mb: u32,
    /// Processes and threads together: a fork bomb stops here, inside its machine.
    pub pids: u32,
}

/// The fewest tasks a machine may run, however small; a bigger one gets
/// [`PIDS_PER_MEMORY_MB`] per MB of its memory.
pub const MIN_PIDS: u32 = 1024;
pub const PIDS_PER_MEMORY_MB: u32 = 2;

impl MachineGuest {
    /// The limits a machine with this guest (or none) runs under: what it leaves out is
    /// Fly's default size, `shared-cpu-1x` (one shared CPU, 256 MB; memory is the fewest
    /// MB per CPU of its kind when only CPUs are given), and its tasks are capped at
    /// [`MIN_PIDS`] or [`PIDS_PER_MEMORY_MB`] per MB, whichever is more.
    pub fn limits(guest: Option<&MachineGuest>) -> GuestLimits {
        let cpus = guest.map_or(0, |g| g.cpus).max(1);
        let per_cpu = match guest.and_then(|g| g.cpu_kind) {
            Some(CpuKind::Performance) => MIN_MEMORY_MB_PER_PERFORMANCE_CPU,
            _ => MIN_MEMORY_MB_PER_SHARED_CPU,
        };
        let memory_mb = match guest.map_or(0, |g| g.memory_mb) {
            0 => cpus.saturating_mul(per_cpu),
            given => given,
        };
        GuestLimits {
            cpus,
            memory_mb,
            pids: memory_mb.saturating_mul(PIDS_PER_MEMORY_MB).max(MIN_PIDS),
        }
    }
}

/// Memory per CPU, as Fly sizes machines.
pub const MIN_MEMORY_MB_PER_SHARED_CPU: u32 = 256;
pub const MAX_MEMORY_MB_PER_SHARED_CPU: u32 = 2048;
pub const MIN_MEMORY_MB_PER_PERFORMANCE_CPU: u32 = 2048;
pub const MAX_MEMORY_MB_PER_PERFORMANCE_CPU: u32 = 8192;

/// Fly's VM size presets (`fly platform vm-sizes`).
pub const GUEST_PRESET_NAMES: [&str; 18] = [
    "shared-cpu-1x",
    "shared-cpu-2x",
    "shared-cpu-4x",
    "shared-cpu-6x",
    "shared-cpu-8x",
    "performance-1x",
    "performance-2x",
    "performance-4x",
    "performance-6x",
    "performance-8x",
    "performance-10x",
    "performance-12x",
    "performance-14x",
    "performance-16x",
    "a100-40gb",
    "a100-80gb",
    "l40s",
    "a10",
];

/// The size a machine gets when nothing says otherwise.
pub const DEFAULT_GUEST_PRESET: &str = "shared-cpu-1x";
/// The size a GPU machine gets when only `gpu_kind` is given.
pub const DEFAULT_GPU_GUEST_PRESET: &str = "performance-8x";

impl MachineGuest {
    /// The guest of a named preset, or `None` for an unknown name.
    pub fn preset(name: &str) -> Option<MachineGuest> {
        let gpu = |kind: &str| MachineGuest {
            cpu_kind: Some(CpuKind::Performance),
            cpus: 8,
            memory_mb: 16 * MIN_MEMORY_MB_PER_PERFORMANCE_CPU,
            gpus: 1,
            gpu_kind: Some(kind.to_owned()),
            ..MachineGuest::default()
        };
        match name {
            "a100-40gb" => return Some(gpu("a100-pcie-40gb")),
            "a100-80gb" => return Some(gpu("a100-sxm4-80gb")),
            "l40s" => return Some(gpu("l40s")),
            "a10" => return Some(gpu("a10")),
            _ => {}
        }
        if !GUEST_PRESET_NAMES.contains(&name) {
            return None;
        }
        let (kind, per_cpu, count) = if let Some(rest) = name.strip_prefix("shared-cpu-") {
            (CpuKind::Shared, MIN_MEMORY_MB_PER_SHARED_CPU, rest)
        } else {
            let rest = name.strip_prefix("performance-")?;
            (
                CpuKind::Performance,
                MIN_MEMORY_MB_PER_PERFORMANCE_CPU,
                rest,
            )
        };
        let cpus: u32 = count.strip_suffix('x')?.parse().ok()?;
        Some(MachineGuest {
            cpu_kind: Some(kind),
            cpus,
            memory_mb: cpus * per_cpu,
            ..MachineGuest::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(kind: Option<CpuKind>, cpus: u32, memory_mb: u32) -> MachineGuest {
        MachineGuest {
            cpu_kind: kind,
            cpus,
            memory_mb,
            ..MachineGuest::default()
        }
    }

    #[test]
    fn limits_fill_in_flys_default_size_and_cap_tasks_by_memory() {
        let limits = |g: Option<&MachineGuest>| {
            let l = MachineGuest::limits(g);
            (l.cpus, l.memory_mb, l.pids)
        };
        // No guest: shared-cpu-1x, 256 MB; tasks at the floor.
        assert_eq!(limits(None), (1, 256, 1024));
        assert_eq!(limits(Some(&MachineGuest::default())), (1, 256, 1024));
        // CPUs alone: the fewest MB per CPU of their kind.
        assert_eq!(limits(Some(&guest(None, 2, 0))), (2, 512, 1024));
        assert_eq!(
            limits(Some(&guest(Some(CpuKind::Performance), 1, 0))),
            (1, 2048, 4096)
        );
        // Given memory is kept; above 512 MB the cap grows with it.
        assert_eq!(limits(Some(&guest(None, 1, 1024))), (1, 1024, 2048));
        assert_eq!(limits(Some(&guest(None, 0, 512))), (1, 512, 1024));
    }
}
