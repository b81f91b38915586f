//! `aloft machine kill|suspend|wait|leases|clone|update`: flyctl's everyday machine
//! commands beside run, start and stop.

use std::time::{Duration, Instant};

use aloft_client::Client;
use aloft_types::api::{CreateVolumeRequest, MachineRequest, MachineResponse};
use aloft_types::machine::{MachineConfig, MachineGuest, MachineRestart, RestartPolicy};
use aloft_types::{MachineState, Signal};
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

/// States a machine rests in (`wait --state settled`, flyctl's default).
const SETTLED: [MachineState; 5] = [
    MachineState::Started,
    MachineState::Stopped,
    MachineState::Suspended,
    MachineState::Failed,
    MachineState::Destroyed,
];

#[derive(Debug, Subcommand)]
pub enum LeasesCommand {
    /// Show the leases held on machines (all of the app's without ids).
    View { ids: Vec<String> },
    /// Release the leases held on machines (all of the app's without ids).
    Clear { ids: Vec<String> },
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The machine to copy.
    pub(super) id: String,
    /// Where the copy runs (the source's region by default).
    #[arg(long, short = 'r')]
    region: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// An unattached volume (name or id) for the copy's mount, instead of a new empty
    /// volume of the source's name and size.
    #[arg(long, value_name = "VOLUME")]
    attach_volume: Option<String>,
    /// Return once created, without waiting for it to start.
    #[arg(long)]
    detach: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub(super) id: String,
    /// The image to run.
    #[arg(long, short = 'i')]
    image: Option<String>,
    /// NAME=VALUE, repeatable; an empty VALUE removes NAME.
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// KEY=VALUE, repeatable; an empty VALUE removes KEY.
    #[arg(long, short = 'm', value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// The command to run instead of the image's.
    #[arg(long, short = 'C')]
    command: Option<String>,
    /// The entrypoint to use instead of the image's.
    #[arg(long)]
    entrypoint: Option<String>,
    /// A size preset (`aloft platform vm-sizes`).
    #[arg(long)]
    vm_size: Option<String>,
    /// Memory in MB.
    #[arg(long, alias = "vm-memory")]
    memory: Option<u32>,
    #[arg(long, alias = "vm-cpus")]
    cpus: Option<u32>,
    /// no, always or on-failure.
    #[arg(long)]
    restart: Option<String>,
    /// Update without asking.
    #[arg(long, short = 'y')]
    pub(super) yes: bool,
    /// Return once the update is recorded, without waiting for the machine.
    #[arg(long)]
    pub(super) detach: bool,
}

/// `machine kill`: SIGKILL to the machine's main process; its restart policy decides
/// what follows.
pub(super) async fn kill(client: &Client, app: &str, id: &str) -> anyhow::Result<()> {
    client.signal_machine(app, id, Signal::Kill).await?;
    Ok(())
}

/// `machine wait`: until the machine is in `state` (`settled`: any state it rests in),
/// at most `timeout`; the state it reached.
pub(super) async fn wait_for(
    client: &Client,
    app: &str,
    id: &str,
    state: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let wanted: Vec<MachineState> = if state == "settled" {
        SETTLED.to_vec()
    } else {
        vec![state.parse().map_err(|_| {
            anyhow::anyhow!(
                "--state {state:?} is not a machine state: use settled, started, stopped, suspended, failed or destroyed"
            )
        })?]
    };
    wait_any(client, app, id, &wanted, state, timeout).await
}

/// What a wait waits for: a machine in one of `states` (`label` names them in the error)
/// and, with `checks_passing`, every check of it passing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Until<'a> {
    pub(crate) states: &'a [MachineState],
    pub(crate) label: &'a str,
    pub(crate) checks_passing: bool,
}

/// Polls the machine until it is as `until` says, at most `timeout`; the machine then.
pub(crate) async fn wait_until(
    client: &Client,
    app: &str,
    id: &str,
    until: Until<'_>,
    timeout: Duration,
) -> anyhow::Result<MachineResponse> {
    let deadline = Instant::now() + timeout;
    loop {
        let machine = client.machine(app, id).await?;
        let in_state = until.states.iter().any(|s| s.as_str() == machine.state);
        let passing = machine
            .checks
            .iter()
            .all(|c| c.status == aloft_types::CheckStatus::Passing);
        if in_state && (passing || !until.checks_passing) {
            return Ok(machine);
        }
        if Instant::now() >= deadline {
            let checks = if until.checks_passing {
                format!(
                    " with its checks passing (now: {})",
                    super::checks_summary(&machine.checks)
                )
            } else {
                String::new()
            };
            bail!(
                "machine {id} is {} and did not become {}{checks} within {}s",
                machine.state,
                until.label,
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Until the machine is in one of `wanted` (`label` names them in the error), at most
/// `timeout`; the state it reached.
pub(super) async fn wait_any(
    client: &Client,
    app: &str,
    id: &str,
    wanted: &[MachineState],
    label: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let until = Until {
        states: wanted,
        label,
        checks_passing: false,
    };
    Ok(wait_until(client, app, id, until, timeout).await?.state)
}

/// The machines a `leases` command is about: `ids`, or every machine of the app.
async fn targets(client: &Client, app: &str, ids: Vec<String>) -> anyhow::Result<Vec<String>> {
    if !ids.is_empty() {
        return Ok(ids);
    }
    Ok(client
        .list_machines(app)
        .await?
        .into_iter()
        .map(|m| m.id)
        .collect())
}

/// `machine leases view`: each machine's lease, or none.
pub(super) async fn leases_view(
    client: &Client,
    app: &str,
    ids: Vec<String>,
) -> anyhow::Result<Vec<(String, Option<aloft_types::api::LeaseResponse>)>> {
    let mut leases = Vec::new();
    for id in targets(client, app, ids).await? {
        let lease = match client.machine_lease(app, &id).await {
            Ok(lease) => Some(lease),
            Err(error) if error.status() == Some(404) => {
                // No lease, or no machine: the machine's own read tells which.
                client.machine(app, &id).await?;
                None
            }
            Err(error) => return Err(error.into()),
        };
        leases.push((id, lease));
    }
    Ok(leases)
}

/// `machine leases clear`: releases each machine's lease; the ids whose lease went.
pub(super) async fn leases_clear(
    client: &Client,
    app: &str,
    ids: Vec<String>,
) -> anyhow::Result<Vec<String>> {
    let mut cleared = Vec::new();
    for (id, lease) in leases_view(client, app, ids).await? {
        if let Some(lease) = lease {
            client
                .release_lease(app, &id, &lease.data.nonce)
                .await
                .with_context(|| format!("releasing the lease on machine {id}"))?;
            cleared.push(id);
        }
    }
    Ok(cleared)
}

/// `machine clone`: a new machine with the source's config; a mounted volume becomes a
/// new empty volume of the same name and size (or `--attach-volume`).
pub(super) async fn clone(
    client: &Client,
    app: &str,
    args: CloneArgs,
) -> anyhow::Result<MachineResponse> {
    let source = client.machine(app, &args.id).await?;
    let region = args.region.unwrap_or_else(|| source.region.clone());
    let mut config = source.config.clone();
    for mount in &mut config.mounts {
        let volume = match &args.attach_volume {
            Some(wanted) => {
                let volumes = client.list_volumes(app).await?;
                volumes
                    .into_iter()
                    .find(|v| {
                        (v.id == *wanted || v.name == *wanted) && v.attached_machine_id.is_none()
                    })
                    .with_context(|| {
                        format!("app {app} has no unattached volume named or numbered {wanted:?}")
                    })?
            }
            None => {
                let original = client.volume(app, &mount.volume).await?;
                let request = CreateVolumeRequest {
                    region: Some(region.clone()),
                    size_gb: Some(original.size_gb),
                    ..CreateVolumeRequest::named(original.name)
                };
                client.create_volume(app, &request).await?
            }
        };
        mount.volume = volume.id;
        mount.name = volume.name;
    }
    let request = MachineRequest {
        region: Some(region),
        name: args.name,
        ..MachineRequest::new(config)
    };
    let machine = client.create_machine(app, &request).await?;
    if args.detach {
        return Ok(machine);
    }
    super::launch::running(client, app, &machine.id).await
}

/// The config `args` asks for, from `current`.
pub(super) fn updated(current: &MachineConfig, args: &UpdateArgs) -> anyhow::Result<MachineConfig> {
    let mut config = current.clone();
    if let Some(image) = &args.image {
        config.image.clone_from(image);
    }
    for (map, pairs, flag) in [
        (&mut config.env, &args.env, "--env"),
        (&mut config.metadata, &args.metadata, "--metadata"),
    ] {
        for pair in pairs {
            let (name, value) = pair
                .split_once('=')
                .filter(|(n, _)| !n.is_empty())
                .with_context(|| format!("{flag} {pair:?} is not NAME=VALUE"))?;
            if value.is_empty() {
                map.remove(name);
            } else {
                map.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    for (words, flag, field) in [
        (&args.command, "--command", &mut config.init.cmd),
        (
            &args.entrypoint,
            "--entrypoint",
            &mut config.init.entrypoint,
        ),
    ] {
        if let Some(line) = words {
            *field = shlex::split(line)
                .filter(|w| !w.is_empty())
                .with_context(|| format!("{flag} {line:?} cannot be split into words"))?;
        }
    }
    if let Some(size) = &args.vm_size {
        let preset = MachineGuest::preset(size).with_context(|| {
            format!("--vm-size {size:?} is not a size; `aloft platform vm-sizes` lists them")
        })?;
        config.guest = Some(preset);
    }
    if args.memory.is_some() || args.cpus.is_some() {
        let mut guest = config.guest.clone().unwrap_or_else(|| {
            MachineGuest::preset(aloft_types::machine::DEFAULT_GUEST_PRESET).unwrap_or_default()
        });
        if let Some(memory) = args.memory {
            guest.memory_mb = memory;
        }
        if let Some(cpus) = args.cpus {
            guest.cpus = cpus;
        }
        config.guest = Some(guest);
    }
    if let Some(policy) = &args.restart {
        let policy = match policy.as_str() {
            "no" | "never" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "on-failure" | "on-fail" => RestartPolicy::OnFailure,
            other => bail!("--restart {other:?}: use no, always or on-failure"),
        };
        let max_retries = config.restart.as_ref().map_or(0, |r| r.max_retries);
        config.restart = Some(MachineRestart {
            policy: Some(policy),
            max_retries,
        });
    }
    Ok(config)
}

/// What an update changes, one line per top-level field, for the question asked first.
pub(super) fn changes(before: &MachineConfig, after: &MachineConfig) -> Vec<String> {
    let (Ok(serde_json::Value::Object(before)), Ok(serde_json::Value::Object(after))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|key| {
            let show = |v: Option<&serde_json::Value>| {
                v.map_or_else(|| "(none)".to_owned(), serde_json::Value::to_string)
            };
            format!(
                "{key}: {} -> {}",
                show(before.get(key)),
                show(after.get(key))
            )
        })
        .collect()
}

/// Sends an update of `machine` to `config` (naming the version it replaces), then, unless
/// `detach`, waits for a machine that was started to be started again.
pub(super) async fn update(
    client: &Client,
    app: &str,
    machine: &MachineResponse,
    config: MachineConfig,
    detach: bool,
) -> anyhow::Result<MachineResponse> {
    let request = MachineRequest {
        current_version: Some(machine.version.clone()),
        ..MachineRequest::new(config)
    };
    let updated = client.update_machine(app, &machine.id, &request).await?;
    if !detach && machine.state == MachineState::Started.as_str() {
        wait_for(client, app, &machine.id, "started", super::START_TIMEOUT).await?;
        return Ok(client.machine(app, &machine.id).await?);
    }
    Ok(updated)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Update {
        #[command(flatten)]
        args: UpdateArgs,
    }

    fn args(line: &[&str]) -> UpdateArgs {
        Update::try_parse_from(std::iter::once("update").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn an_update_changes_only_what_it_names() {
        let mut current = MachineConfig {
            image: "web:1".to_owned(),
            ..MachineConfig::default()
        };
        current.env.insert("KEEP".to_owned(), "1".to_owned());
        current.env.insert("DROP".to_owned(), "1".to_owned());
        let next = updated(
            &current,
            &args(&[
                "m1",
                "-i",
                "web:2",
                "-e",
                "NEW=2",
                "-e",
                "DROP=",
                "--vm-size",
                "shared-cpu-2x",
                "-C",
                "serve --port 8080",
                "--restart",
                "on-failure",
            ]),
        )
        .unwrap();
        assert_eq!(next.image, "web:2");
        assert_eq!(next.env.get("KEEP").map(String::as_str), Some("1"));
        assert_eq!(next.env.get("NEW").map(String::as_str), Some("2"));
        assert!(!next.env.contains_key("DROP"));
        assert_eq!(
            next.guest.as_ref().map(|g| (g.cpus, g.memory_mb)),
            Some((2, 512))
        );
        assert_eq!(next.init.cmd, ["serve", "--port", "8080"]);
        assert_eq!(
            next.restart.and_then(|r| r.policy),
            Some(RestartPolicy::OnFailure)
        );
        // Nothing named, nothing changed.
        assert_eq!(updated(&current, &args(&["m1"])).unwrap(), current);
        assert!(changes(&current, &current).is_empty());
        let lines = changes(
            &current,
            &updated(&current, &args(&["m1", "-i", "web:2"])).unwrap(),
        );
        assert_eq!(lines, [r#"image: "web:1" -> "web:2""#]);
    }

    #[test]
    fn bad_update_flags_say_which() {
        let current = MachineConfig::default();
        for (line, wanted) in [
            (
                &["m1", "-e", "NOVALUE"][..],
                "--env \"NOVALUE\" is not NAME=VALUE",
            ),
            (
                &["m1", "--vm-size", "huge"][..],
                "--vm-size \"huge\" is not a size",
            ),
            (
                &["m1", "--restart", "sometimes"][..],
                "--restart \"sometimes\"",
            ),
        ] {
            let error = updated(&current, &args(line)).unwrap_err().to_string();
            assert!(error.starts_with(wanted), "{line:?}: {error}");
        }
    }
}
