//! `aloft scale`: machine count per process group and region, VM size and memory.

use std::collections::BTreeMap;

use aloft_types::MachineState;
use aloft_types::api::{DeployRequest, MachineResponse};
use aloft_types::machine::{
    DEFAULT_PROCESS_GROUP, METADATA_RELEASE_ID, METADATA_RELEASE_VERSION, MachineConfig,
    MachineGuest,
};
use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;

use aloft_client::scale::{converge, copy_request, group_regions, newest, removal_order};

use super::status::{group_of, live_machines};
use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

/// `aloft scale` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScaleCommand {
    /// Run N machines of a process group across regions, as `fly scale count`: clones of
    /// its newest machine are created, or the extra machines (stopped ones first, then
    /// the newest) destroyed.
    Count {
        /// N, or GROUP=N for each process group to scale (`web=2 worker=1`).
        #[arg(required = true, value_name = "N|GROUP=N")]
        counts: Vec<String>,
        /// The process group (default: the app's only group, else `app`).
        #[arg(long = "process-group", short = 'g', value_name = "GROUP")]
        group: Option<String>,
        /// The regions to act on, comma-separated (`ams,ord`): the N machines are counted
        /// in these and spread evenly over them (the first gets the odd one). Default:
        /// the regions where the group has machines (the newest machine's first).
        #[arg(long, short = 'r', value_name = "REGIONS")]
        region: Option<String>,
        /// At most this many machines of the group in each region.
        #[arg(long, value_name = "M")]
        max_per_region: Option<u32>,
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
            counts,
            group,
            region,
            max_per_region,
            confirm_above,
            yes,
        } => {
            let counts = group_counts(&counts)?;
            let regions: Vec<String> = region
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect();
            let mut done = Vec::new();
            for (named, count) in counts {
                let group = match named {
                    Some(group) => group,
                    None => pick_group(&machines, group.clone())?,
                };
                let target = Target {
                    group: &group,
                    regions: regions.clone(),
                    max_per_region,
                    count,
                };
                count_to(&client, app, &machines, &target, (confirm_above, yes), out).await?;
                done.push(serde_json::json!({
                    "process_group": group,
                    "region": region,
                    "max_per_region": max_per_region,
                    "count": count,
                }));
            }
            if json {
                match done.as_slice() {
                    [one] => out.json(one)?,
                    _ => out.json(&done)?,
                }
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

/// `scale count`'s counts: one `N` (for the group `--process-group` names or the
/// default one), or `GROUP=N` for each group, as flyctl reads them.
fn group_counts(args: &[String]) -> anyhow::Result<Vec<(Option<String>, u32)>> {
    let parse = |arg: &str, text: &str| {
        text.trim().parse::<u32>().map_err(|_| {
            anyhow::anyhow!("count {arg:?}: expected a number of machines, or GROUP=NUMBER")
        })
    };
    let mut counts = Vec::new();
    for arg in args {
        match arg.split_once('=') {
            Some((group, count)) if !group.trim().is_empty() => {
                counts.push((Some(group.trim().to_owned()), parse(arg, count)?));
            }
            Some(_) => anyhow::bail!("count {arg:?}: the process group before `=` is missing"),
            None => counts.push((None, parse(arg, arg)?)),
        }
    }
    if counts.iter().filter(|(group, _)| group.is_none()).count() > 1
        || (counts.len() > 1 && counts.iter().any(|(group, _)| group.is_none()))
    {
        anyhow::bail!(
            "give one count (N, for --process-group or the default group) or GROUP=N for each group, not both"
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (group, _) in &counts {
        if let Some(group) = group
            && !seen.insert(group.clone())
        {
            anyhow::bail!("process group {group} is given two counts");
        }
    }
    Ok(counts)
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

/// What `scale count` asks for.
struct Target<'a> {
    group: &'a str,
    /// Empty: the regions where the group has machines.
    regions: Vec<String>,
    max_per_region: Option<u32>,
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
    let group = target.group;
    let wanted = target.count as usize;
    let of_group: Vec<&MachineResponse> =
        machines.iter().filter(|m| group_of(m) == group).collect();
    if of_group.is_empty() && wanted > 0 {
        return Err(anyhow::anyhow!(
            "process group {group} of app {app} has no machine to copy: run `aloft deploy` first"
        )
        .into());
    }
    let regions: Vec<String> = if target.regions.is_empty() {
        // Where the group runs, the newest machine's region first.
        group_regions(&of_group)
    } else {
        target.regions.clone()
    };
    let mut current: BTreeMap<String, usize> = BTreeMap::new();
    for machine in &of_group {
        *current.entry(machine.region.clone()).or_default() += 1;
    }
    let counted: usize = regions
        .iter()
        .map(|r| current.get(r).copied().unwrap_or(0))
        .sum();
    let place = if target.regions.is_empty() {
        String::new()
    } else {
        format!(" in {}", regions.join(", "))
    };
    let plan = converge(
        wanted,
        &current,
        &regions,
        target.max_per_region.map(|m| m as usize),
    )
    .map_err(|why| anyhow::anyhow!("scale count {wanted}: {why}"))?;
    if plan.is_empty() {
        out.status(&format!(
            "process group {group} already has {wanted} machine(s){place}"
        ));
        return Ok(());
    }
    let adding: i64 = plan.iter().map(|(_, d)| (*d).max(0)).sum();
    let removing: i64 = plan.iter().map(|(_, d)| (-*d).max(0)).sum();
    let change = usize::try_from(adding + removing).unwrap_or(usize::MAX);
    if change > confirm_above as usize {
        let verb = match (adding > 0, removing > 0) {
            (true, true) => "create and destroy",
            (true, false) => "create",
            _ => "destroy",
        };
        crate::confirm::confirm(
            &format!(
                "Scaling process group {group} of {app} from {counted} to {wanted} machine(s){place} will {verb} {change}. Go ahead?"
            ),
            &format!("scaling by {change} machines (more than --confirm-above {confirm_above})"),
            yes,
        )?;
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut created = Vec::new();
    let to_create = usize::try_from(adding).unwrap_or(usize::MAX);
    for (region, delta) in plan.iter().filter(|(_, d)| *d > 0) {
        let in_region: Vec<&MachineResponse> = of_group
            .iter()
            .copied()
            .filter(|m| &m.region == region)
            .collect();
        let template = newest(&in_region).or_else(|| newest(&of_group)).ok_or_else(|| {
            anyhow::anyhow!(
                "process group {group} of app {app} has no machine to copy: run `aloft deploy` first"
            )
        })?;
        for _ in 0..*delta {
            let request = copy_request(template, region);
            // Ctrl-C stops creating: the machine being created is finished, no other.
            let creating = client.create_machine(app, &request);
            tokio::pin!(creating);
            let machine = tokio::select! {
                machine = &mut creating => machine,
                _ = &mut interrupted => {
                    let machine = creating.await;
                    let made = created.len() + usize::from(machine.is_ok());
                    out.status(&format!(
                        "interrupted: created {made} of {to_create} machine(s); process group {group} now has {}{place} (run `aloft scale count` again to change it)",
                        counted + made
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
    for (region, delta) in plan.iter().filter(|(_, d)| *d < 0) {
        // Stopped machines go first, then the newest.
        for machine in removal_order(&of_group, region)
            .into_iter()
            .take(usize::try_from(-delta).unwrap_or(0))
        {
            client
                .destroy_machine(app, &machine.id, true)
                .await
                .with_context(|| format!("destroying machine {}", machine.id))?;
            out.status(&format!(
                "destroyed machine {} in {} (process group {group})",
                machine.id, machine.region
            ));
        }
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
            release_command_guest: None,
            smoke_checks: None,
            smoke_check_seconds: None,
            only_machines: None,
            regions: None,
            fly_toml: None,
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

#[cfg(test)]
mod tests {
    use super::group_counts;

    #[test]
    fn counts_are_a_number_or_one_per_group() {
        let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(group_counts(&args(&["3"])).unwrap(), vec![(None, 3)]);
        assert_eq!(
            group_counts(&args(&["web=2", "worker=1"])).unwrap(),
            vec![(Some("web".to_owned()), 2), (Some("worker".to_owned()), 1)]
        );
        assert_eq!(
            group_counts(&args(&["web=0"])).unwrap(),
            vec![(Some("web".to_owned()), 0)]
        );
        for (bad, says) in [
            (&["three"][..], "expected a number"),
            (&["web=x"][..], "expected a number"),
            (&["=2"][..], "process group before `=` is missing"),
            (&["2", "web=1"][..], "not both"),
            (&["web=1", "web=2"][..], "two counts"),
            (&["-1"][..], "expected a number"),
        ] {
            let error = group_counts(&args(bad)).unwrap_err().to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }
}
