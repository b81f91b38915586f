//! `aloft machine run`: a machine from an image, watched until it has kept running.

use std::time::{Duration, Instant};

use aloft_client::Client;
use aloft_types::MachineState;
use aloft_types::api::{MachineRequest, MachineResponse};
use aloft_types::machine::{
    MachineConfig, MachineGuest, MachineInit, MachineMount, MachineRestart, RestartPolicy,
};
use anyhow::{Context as _, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image to run.
    image: String,
    /// The command to run instead of the image's.
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
    #[arg(long)]
    name: Option<String>,
    /// NAME=VALUE, repeatable.
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// A volume (name or id) and where to mount it: data:/data.
    #[arg(long, value_name = "VOLUME:/PATH")]
    volume: Option<String>,
    #[arg(long, short = 'r')]
    region: Option<String>,
    /// no, always or on-failure.
    #[arg(long)]
    restart: Option<String>,
    /// Restarts allowed by on-failure.
    #[arg(long)]
    max_retries: Option<u32>,
    /// Memory in MB.
    #[arg(long)]
    memory: Option<u32>,
    #[arg(long)]
    cpus: Option<u32>,
    /// Return once created, without waiting for it to start.
    #[arg(long)]
    pub(super) detach: bool,
}

pub(super) async fn run_machine(
    client: &Client,
    app: &str,
    args: RunArgs,
) -> anyhow::Result<MachineResponse> {
    let mut config = MachineConfig {
        image: args.image,
        ..MachineConfig::default()
    };
    if !args.command.is_empty() {
        config.init = MachineInit {
            cmd: args.command,
            ..MachineInit::default()
        };
    }
    for pair in &args.env {
        let (name, value) = pair
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .with_context(|| format!("--env {pair:?} is not NAME=VALUE"))?;
        config.env.insert(name.to_owned(), value.to_owned());
    }
    if let Some(spec) = &args.volume {
        let (volume, path) = spec
            .split_once(':')
            .with_context(|| format!("--volume {spec:?} is not VOLUME:/PATH"))?;
        let volumes = client.list_volumes(app).await?;
        let found = volumes
            .iter()
            .find(|v| v.id == volume || (v.name == volume && v.attached_machine_id.is_none()))
            .with_context(|| {
                format!("app {app} has no unattached volume named or numbered {volume:?}")
            })?;
        config.mounts.push(MachineMount {
            volume: found.id.clone(),
            path: path.to_owned(),
            ..MachineMount::default()
        });
    }
    if let Some(policy) = &args.restart {
        let policy = match policy.as_str() {
            "no" | "never" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "on-failure" => RestartPolicy::OnFailure,
            other => bail!("--restart {other:?}: use no, always or on-failure"),
        };
        config.restart = Some(MachineRestart {
            policy: Some(policy),
            max_retries: args.max_retries.unwrap_or(0),
        });
    }
    if args.memory.is_some() || args.cpus.is_some() {
        let mut guest =
            MachineGuest::preset(aloft_types::machine::DEFAULT_GUEST_PRESET).unwrap_or_default();
        if let Some(memory) = args.memory {
            guest.memory_mb = memory;
        }
        if let Some(cpus) = args.cpus {
            guest.cpus = cpus;
        }
        config.guest = Some(guest);
    }
    let request = MachineRequest {
        region: args.region,
        name: args.name,
        ..MachineRequest::new(config)
    };
    let machine = client.create_machine(app, &request).await?;
    if !args.detach {
        return running(client, app, &machine.id).await;
    }
    Ok(machine)
}

/// How long a started machine is watched for an exit before `machine run` calls it
/// started (flyctl's smoke checks).
const SMOKE_CHECK: Duration = Duration::from_secs(10);
/// How many of a failed machine's last log lines are shown.
const LINES_SHOWN: usize = 20;

/// Waits until a new machine is started and has kept running for [`SMOKE_CHECK`]; fails
/// at once, with the reason, when it cannot be launched (an image that cannot be pulled,
/// say) or exits.
pub(super) async fn running(
    client: &Client,
    app: &str,
    id: &str,
) -> anyhow::Result<MachineResponse> {
    let deadline = Instant::now() + super::START_TIMEOUT;
    let mut started: Option<Instant> = None;
    loop {
        let machine = client.machine(app, id).await?;
        if machine.state == MachineState::Failed.as_str() {
            let reason = machine
                .events
                .iter()
                .filter(|e| e.kind == "launch" && e.status == "failed")
                .max_by_key(|e| e.timestamp)
                .and_then(|e| e.request.get("error")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| "no reason recorded".to_owned());
            bail!(
                "machine {id} failed to launch: {reason}{}",
                last_lines(client, app, id).await
            );
        }
        if let Some(exit) = machine
            .events
            .iter()
            .filter(|e| e.kind == "exit")
            .filter(|e| e.request.pointer("/exit_event/requested_stop") != Some(&true.into()))
            .max_by_key(|e| e.timestamp)
        {
            let code = exit
                .request
                .pointer("/exit_event/exit_code")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(-1);
            let crashing = if exit.status == "restarting" {
                "; the app appears to be crashing"
            } else {
                ""
            };
            bail!(
                "machine {id} exited with code {code} right after it started{crashing}{}\nSee `aloft machine status {id} -a {app}` and `aloft logs -a {app} --machine {id}`",
                last_lines(client, app, id).await
            );
        }
        if machine.state == MachineState::Started.as_str() {
            let since = *started.get_or_insert_with(Instant::now);
            if since.elapsed() >= SMOKE_CHECK {
                return Ok(machine);
            }
        } else if Instant::now() >= deadline {
            bail!(
                "machine {id} is {} and did not start within {} seconds",
                machine.state,
                super::START_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A machine's last log lines, as text to append to a message (empty when it has none).
pub(super) async fn last_lines(client: &Client, app: &str, id: &str) -> String {
    let request = aloft_client::LogsRequest {
        machine: Some(id.to_owned()),
        limit: Some(LINES_SHOWN),
        newest: Some(true),
        ..aloft_client::LogsRequest::default()
    };
    let Ok(page) = client.logs(app, &request).await else {
        return String::new();
    };
    let mut lines: Vec<_> = page
        .entries
        .into_iter()
        .filter(|l| l.stream != "platform")
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    lines.sort_by_key(|l| l.timestamp_ns);
    let mut text = format!("\nlast log lines of machine {id}:");
    for line in lines {
        text.push_str("\n  ");
        text.push_str(&line.message);
    }
    text
}
