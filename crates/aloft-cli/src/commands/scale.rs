//! `aloft scale`: machine count per process group and region, VM size and memory.

use std::collections::BTreeMap;

use aloft_types::MachineState;
use aloft_types::api::{DeployRequest, MachineRequest, MachineResponse};
use aloft_types::machine::{
    DEFAULT_PROCESS_GROUP, METADATA_RELEASE_ID, METADATA_RELEASE_VERSION, MachineConfig,
    MachineGuest,
};
use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;

use super::status::{group_of, live_machines};
use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

/// `aloft scale` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScaleCommand {
    /// Run N machines of a process group (in a region): clones of its newest machine are
    /// created, or the extra machines (stopped ones first, then the newest) destroyed.
    Count {
        count: u32,
        /// The process group (default: the app's only group, else `app`).
        #[arg(long = "process-group", short = 'g', value_name = "GROUP")]
        group: Option<String>,
        /// Count (and create) machines in this region only.
        #[arg(long, short = 'r')]
        region: Option<String>,
        /// Ask for confirmation when more machines than this would be created or
        /// destroyed.
        #[arg(long, value_name = "N", default_value_t = 10)]
        confirm_above: u32,
        /// Do not ask for confirmation (needed where there is no terminal to ask on).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Give every machine (of a group) a VM size (such as shared-cpu-1x or performance-2x),
    /// with a rolling deploy.
    Vm {
        size: String,
        /// Memory in MB instead of the size's default.
        #[arg(long, value_name = "MB")]
        memory: Option<u32>,
        #[arg(long = "process-group", short = 'g', value_name = "GROUP")]
        group: Option<String>,
    },
    /// Give every machine (of a group) this much memory (MB), with a rolling deploy.
    Memory {
        mb: u32,
        #[arg(long = "process-group", short = 'g', value_name = "GROUP")]
        group: Option<String>,
    },
    /// The machines per process group: count, size, memory and regions.
    Show,
}

pub(crate) async fn scale(
    command: ScaleCommand,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    let machines = live_machines(&client, app).await?;
    match command {
        ScaleCommand::Show => show(&machines, json, out),
        ScaleCommand::Count {
            count,
            group,
            region,
            confirm_above,
            yes,
        } => {
            let group = pick_group(&machines, group)?;
            let target = Target {
                group: &group,
                region: region.as_deref(),
                count,
            };
            count_to(&client, app, &machines, &target, (confirm_above, yes), out).await?;
            if json {
                out.json(&serde_json::json!({
                    "process_group": group,
                    "region": region,
                    "count": count,
                }))?;
            }
            Ok(())
        }
        ScaleCommand::Vm {
            size,
            memory,
            group,
        } => {
            let mut guest = MachineGuest::preset(&size).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown VM size {size:?}; the sizes are: {}",
                    aloft_types::machine::GUEST_PRESET_NAMES.join(", ")
                )
            })?;
            if let Some(mb) = memory {
                guest.memory_mb = mb;
            }
            let describe = format!("scale vm to {size}");
            redeploy(&client, app, &machines, group, out, &describe, |config| {
                config.guest = Some(guest.clone());
            })
            .await?;
            if json {
                out.json(&serde_json::json!({ "guest": guest }))?;
            }
            Ok(())
        }
        ScaleCommand::Memory { mb, group } => {
            let describe = format!("scale memory to {mb} MB");
            redeploy(&client, app, &machines, group, out, &describe, |config| {
                let mut guest = config.guest.clone().unwrap_or_default();
                guest.memory_mb = mb;
                config.guest = Some(guest);
            })
            .await?;
            if json {
                out.json(&serde_json::json!({ "memory_mb": mb }))?;
            }
            Ok(())
        }
    }
}

/// The group a command acts on: the one asked for, the only one there is, or `app`.
fn pick_group(machines: &[MachineResponse], asked: Option<String>) -> anyhow::Result<String> {
    if let Some(group) = asked {
        return Ok(group);
    }
    let groups: std::collections::BTreeSet<String> = machines.iter().map(group_of).collect();
    match groups.len() {
        0 => Ok(DEFAULT_PROCESS_GROUP.to_owned()),
        1 => Ok(groups.into_iter().next().unwrap_or_default()),
        _ if groups.contains(DEFAULT_PROCESS_GROUP) => Ok(DEFAULT_PROCESS_GROUP.to_owned()),
        _ => anyhow::bail!(
            "the app has several process groups ({}): pick one with --process-group",
            groups.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

fn show(machines: &[MachineResponse], json: bool, out: &mut Output) -> Result<(), Failure> {
    #[derive(Debug, Serialize, Default)]
    struct Group {
        process_group: String,
        count: usize,
        cpu_kind: String,
        cpus: u32,
        memory_mb: u32,
        regions: BTreeMap<String, usize>,
    }
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for machine in machines {
        let name = group_of(machine);
        let guest = machine.config.guest.clone().unwrap_or_default();
        let group = groups.entry(name.clone()).or_insert_with(|| Group {
            process_group: name,
            cpu_kind: guest
                .cpu_kind
                .map_or_else(|| "shared".to_owned(), |k| k.to_string()),
            cpus: guest.cpus,
            memory_mb: guest.memory_mb,
            ..Group::default()
        });
        group.count += 1;
        *group.regions.entry(machine.region.clone()).or_default() += 1;
    }
    let groups: Vec<Group> = groups.into_values().collect();
    if json {
        out.json(&groups)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.process_group.clone(),
                g.count.to_string(),
                g.cpu_kind.clone(),
                g.cpus.to_string(),
                format!("{} MB", g.memory_mb),
                g.regions
                    .iter()
                    .map(|(region, n)| format!("{region}({n})"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    out.data(&table::render(
        &["PROCESS", "COUNT", "KIND", "CPUS", "MEMORY", "REGIONS"],
        &rows,
    ));
    Ok(())
}

/// The newest machine of a group (the template for new ones).
fn newest<'a>(machines: &[&'a MachineResponse]) -> Option<&'a MachineResponse> {
    machines
        .iter()
        .max_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)))
        .copied()
}

/// What `scale count` asks for.
struct Target<'a> {
    group: &'a str,
    region: Option<&'a str>,
    count: u32,
}

async fn count_to(
    client: &aloft_client::Client,
    app: &str,
    machines: &[MachineResponse],
    target: &Target<'_>,
    (confirm_above, yes): (u32, bool),
    out: &mut Output,
) -> Result<(), Failure> {
    let Target {
        group,
        region,
        count,
    } = *target;
    let of_group: Vec<&MachineResponse> =
        machines.iter().filter(|m| group_of(m) == group).collect();
    let counted: Vec<&MachineResponse> = of_group
        .iter()
        .copied()
        .filter(|m| region.is_none_or(|r| m.region == r))
        .collect();
    let wanted = count as usize;
    let place = region.map_or_else(String::new, |r| format!(" in {r}"));
    if counted.len() == wanted {
        out.status(&format!(
            "process group {group} already has {wanted} machine(s){place}"
        ));
        return Ok(());
    }
    let change = counted.len().abs_diff(wanted);
    if change > confirm_above as usize {
        let verb = if counted.len() < wanted {
            "create"
        } else {
            "destroy"
        };
        crate::confirm::confirm(
            &format!(
                "Scaling process group {group} of {app} from {} to {wanted} machine(s){place} will {verb} {change}. Go ahead?",
                counted.len()
            ),
            &format!("scaling by {change} machines (more than --confirm-above {confirm_above})"),
            yes,
        )?;
    }
    if counted.len() < wanted {
        let template = newest(&counted).or_else(|| newest(&of_group)).ok_or_else(|| {
            anyhow::anyhow!(
                "process group {group} of app {app} has no machine to copy: run `aloft deploy` first"
            )
        })?;
        let mut created = Vec::new();
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        for _ in counted.len()..wanted {
            let mut config = template.config.clone();
            // A copy gets a volume of its own: the same name, a free or new one.
            for mount in &mut config.mounts {
                mount.volume.clear();
            }
            let mut request = MachineRequest::new(config);
            request.region = Some(region.unwrap_or(&template.region).to_owned());
            // Ctrl-C stops creating: the machine being created is finished, no other.
            let creating = client.create_machine(app, &request);
            tokio::pin!(creating);
            let machine = tokio::select! {
                machine = &mut creating => machine,
                _ = &mut interrupted => {
                    let machine = creating.await;
                    let made = created.len() + usize::from(machine.is_ok());
                    out.status(&format!(
                        "interrupted: created {made} of {} machine(s); process group {group} now has {}{place} (run `aloft scale count` again to change it)",
                        wanted - counted.len(),
                        counted.len() + made
                    ));
                    return Err(Failure::Exit(130));
                }
            };
            let machine = machine.map_err(|error| {
                anyhow::anyhow!(
                    "creating a machine of process group {group} after {} new one(s): {error}",
                    created.len()
                )
            })?;
            out.status(&format!(
                "created machine {} in {} (process group {group})",
                machine.id, machine.region
            ));
            created.push(machine.id);
        }
        for id in &created {
            tokio::select! {
                waited = client.wait(app, id, MachineState::Started, 60) => {
                    waited.with_context(|| format!("waiting for machine {id} to start"))?;
                }
                _ = &mut interrupted => {
                    out.status(&format!(
                        "interrupted while waiting: the {} new machine(s) go on starting",
                        created.len()
                    ));
                    return Err(Failure::Exit(130));
                }
            }
        }
        out.status(&format!(
            "process group {group} has {wanted} machine(s){place}"
        ));
        return Ok(());
    }
    // Stopped machines go first, then the newest.
    let mut extra = counted.clone();
    extra.sort_by(|a, b| {
        let stopped = |m: &MachineResponse| m.state != "stopped";
        (stopped(a), &b.created_at, &b.id).cmp(&(stopped(b), &a.created_at, &a.id))
    });
    for machine in extra.into_iter().take(counted.len() - wanted) {
        client
            .destroy_machine(app, &machine.id, true)
            .await
            .with_context(|| format!("destroying machine {}", machine.id))?;
        out.status(&format!(
            "destroyed machine {} in {} (process group {group})",
            machine.id, machine.region
        ));
    }
    out.status(&format!(
        "process group {group} has {wanted} machine(s){place}"
    ));
    Ok(())
}

/// Changes the config of the machines of a group (or of every group) through a rolling
/// deploy of their newest machine's config, changed by `change`: each machine is
/// replaced and checked, and a failure rolls back. With no machines there is nothing to do.
pub(crate) async fn redeploy(
    client: &aloft_client::Client,
    app: &str,
    machines: &[MachineResponse],
    group: Option<String>,
    out: &mut Output,
    describe: &str,
    change: impl Fn(&mut MachineConfig),
) -> Result<(), Failure> {
    let groups: Vec<String> = match group {
        Some(group) => vec![group],
        None => machines
            .iter()
            .map(group_of)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    if groups.is_empty() {
        return Err(anyhow::anyhow!("app {app} has no machines: run `aloft deploy` first").into());
    }
    for group in groups {
        let of_group: Vec<&MachineResponse> =
            machines.iter().filter(|m| group_of(m) == group).collect();
        let template = newest(&of_group)
            .ok_or_else(|| anyhow::anyhow!("process group {group} of app {app} has no machines"))?;
        let mut config = template.config.clone();
        config.metadata.remove(METADATA_RELEASE_VERSION);
        config.metadata.remove(METADATA_RELEASE_ID);
        change(&mut config);
        let request = DeployRequest {
            image: config.image.clone(),
            config,
            strategy: Some("rolling".to_owned()),
            max_unavailable: None,
            wait_timeout: None,
            initial_count: None,
            description: Some(format!("{describe} (process group {group})")),
            release_command: None,
            release_command_timeout: None,
            smoke_checks: None,
            smoke_check_seconds: None,
        };
        let started = client
            .deploy(app, &request)
            .await
            .with_context(|| format!("starting the {describe} of process group {group}"))?;
        out.status(&format!(
            "{describe}: release v{} of {app} (process group {group}), deployment {}",
            started.release.version, started.id
        ));
        let finished = crate::commands::deploy::follow(client, app, started, out).await?;
        if finished.status != "succeeded" {
            return Err(crate::commands::deploy::failure_of(app, &finished).into());
        }
    }
    Ok(())
}
