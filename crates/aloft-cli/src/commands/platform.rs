//! `aloft platform`: what the platform offers, as flyctl's `fly platform` shows it.

use clap::Subcommand;

use crate::Failure;
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
    /// The platform's hosts: region, CPUs used of their CPUs, machines, last heartbeat
    /// (the operator's token only).
    Hosts,
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

pub(crate) async fn platform(
    command: PlatformCommand,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    match command {
        PlatformCommand::Regions => {
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
        PlatformCommand::Hosts => {
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
                        format!("{}/{}", h.cpus_used, h.cpus),
                        memory(u32::try_from(h.memory_mb).unwrap_or(u32::MAX)),
                        format!("{}/{}", h.machines_started, h.machines),
                        h.last_heartbeat.clone(),
                    ]
                })
                .collect();
            out.data(&table::render(
                &[
                    "ID",
                    "REGION",
                    "CPUS USED",
                    "MEMORY",
                    "MACHINES STARTED",
                    "LAST HEARTBEAT",
                ],
                &rows,
            ));
            Ok(())
        }
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
