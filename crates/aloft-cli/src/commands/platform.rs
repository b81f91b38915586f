//! `aloft platform`: what the platform offers, as flyctl's `fly platform` shows it.

use clap::Subcommand;

use crate::Failure;
use aloft_client::HostAction;

use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum PlatformCommand {
    /// The regions that have hosts: Fly's name for Fly's codes, and the CPUs left there.
    Regions,
    /// The machine sizes (`--vm-size`, `[[vm]] size`, `scale vm`).
    #[command(name = "vm-sizes")]
    VmSizes,
    /// The platform's hosts (the operator's token only): `list` (the default), or
    /// `cordon`, `uncordon` or `drain` one.
    Hosts {
        #[command(subcommand)]
        command: Option<HostsCommand>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostsCommand {
    /// Every host: region, state, CPU shares and memory reserved of its size, machines,
    /// last heartbeat.
    List,
    /// Take no new machines on HOST; its machines run on.
    Cordon { host: String },
    /// Let HOST take new machines again (a drain stops where it is).
    Uncordon { host: String },
    /// Move HOST's machines without volumes to other hosts one by one (each replacement
    /// starts and passes its checks before the machine it replaces stops); it takes no
    /// new machines.
    Drain { host: String },
}

/// `aloft regions`: the regions, as `fly regions` lists them.
#[derive(Debug, Subcommand)]
pub enum RegionsCommand {
    /// The regions that have hosts, with the CPUs free there.
    List,
}

/// A size as `vm-sizes --json` shows it.
#[derive(Debug, serde::Serialize)]
struct Size {
    name: &'static str,
    cpu_kind: String,
    cpus: u32,
    memory_mb: u32,
    gpus: u32,
    gpu_kind: Option<String>,
}

fn sizes() -> Vec<Size> {
    aloft_types::machine::GUEST_PRESET_NAMES
        .iter()
        .filter_map(|name| {
            let guest = aloft_types::machine::MachineGuest::preset(name)?;
            Some(Size {
                name,
                cpu_kind: guest
                    .cpu_kind
                    .map_or_else(|| "shared".to_owned(), |k| k.to_string()),
                cpus: guest.cpus,
                memory_mb: guest.memory_mb,
                gpus: guest.gpus,
                gpu_kind: guest.gpu_kind,
            })
        })
        .collect()
}

/// `256 MB`, `2 GB`: as flyctl shows memory.
fn memory(mb: u32) -> String {
    if mb >= 1024 && mb.is_multiple_of(1024) {
        format!("{} GB", mb / 1024)
    } else {
        format!("{mb} MB")
    }
}

/// The regions that have hosts (`aloft platform regions`, `aloft regions list`).
pub(crate) async fn regions(json: bool, out: &mut Output) -> Result<(), Failure> {
    let regions = client()?
        .platform_regions()
        .await
        .map_err(anyhow::Error::from)?;
    if json {
        out.json(&regions)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = regions
        .regions
        .iter()
        .map(|r| {
            let nearest = if r.code == regions.nearest { " *" } else { "" };
            vec![
                r.name.clone(),
                format!("{}{nearest}", r.code),
                r.capacity.to_string(),
            ]
        })
        .collect();
    out.data(&table::render(&["NAME", "CODE", "CPUS FREE"], &rows));
    out.data("\n* nearest: the control plane's region");
    Ok(())
}

async fn hosts(command: Option<HostsCommand>, json: bool, out: &mut Output) -> Result<(), Failure> {
    let (host, action) = match command.unwrap_or(HostsCommand::List) {
        HostsCommand::List => return list_hosts(json, out).await,
        HostsCommand::Cordon { host } => (host, HostAction::Cordon),
        HostsCommand::Uncordon { host } => (host, HostAction::Uncordon),
        HostsCommand::Drain { host } => (host, HostAction::Drain),
    };
    let shown = client()?
        .set_host_state(&host, action)
        .await
        .map_err(anyhow::Error::from)?;
    if json {
        out.json(&shown)?;
        return Ok(());
    }
    let said = match action {
        HostAction::Cordon => "takes no new machines; its machines run on",
        HostAction::Uncordon => "takes new machines again",
        HostAction::Drain => {
            "takes no new machines; its machines without volumes move to other hosts one by one (follow with `aloft platform hosts list`)"
        }
    };
    out.data(&format!("host {} is {}: it {said}", shown.id, shown.state));
    Ok(())
}

async fn list_hosts(json: bool, out: &mut Output) -> Result<(), Failure> {
    let hosts = client()?
        .platform_hosts()
        .await
        .map_err(anyhow::Error::from)?;
    if json {
        out.json(&hosts)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = hosts
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.id.clone(),
                h.region.clone(),
                h.state.clone(),
                format!("{}/{}", h.cpu_shares_reserved, h.cpus * 16),
                format!(
                    "{}/{}",
                    memory(u32::try_from(h.memory_reserved_mb).unwrap_or(u32::MAX)),
                    memory(u32::try_from(h.memory_mb).unwrap_or(u32::MAX))
                ),
                format!("{}/{}", h.machines_started, h.machines),
                h.last_heartbeat.clone(),
            ]
        })
        .collect();
    out.data(&table::render(
        &[
            "ID",
            "REGION",
            "STATE",
            "CPU SHARES",
            "MEMORY",
            "MACHINES STARTED",
            "LAST HEARTBEAT",
        ],
        &rows,
    ));
    out.data("\nCPU shares: 16 to a core (a shared CPU takes 1, a performance CPU 16); reserved of the host's, as memory");
    Ok(())
}

pub(crate) async fn platform(
    command: PlatformCommand,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    match command {
        PlatformCommand::Regions => regions(json, out).await,
        PlatformCommand::Hosts { command } => hosts(command, json, out).await,
        PlatformCommand::VmSizes => {
            let sizes = sizes();
            if json {
                out.json(&sizes)?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = sizes
                .iter()
                .map(|s| {
                    vec![
                        s.name.to_owned(),
                        s.cpus.to_string(),
                        memory(s.memory_mb),
                        s.gpu_kind.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.data(&table::render(
                &["NAME", "CPU CORES", "MEMORY", "GPU MODEL"],
                &rows,
            ));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_reads_as_flyctl_shows_it() {
        assert_eq!(super::memory(256), "256 MB");
        assert_eq!(super::memory(2048), "2 GB");
        assert_eq!(super::memory(1536), "1536 MB");
    }

    #[test]
    fn every_preset_is_a_size() {
        assert_eq!(
            super::sizes().len(),
            aloft_types::machine::GUEST_PRESET_NAMES.len()
        );
    }
}
