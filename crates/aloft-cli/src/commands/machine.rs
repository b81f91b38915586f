//! `aloft machine`: run and manage machines directly.

use aloft_client::Client;
use aloft_types::api::{MachineRequest, MachineResponse};
use aloft_types::machine::{
    MachineConfig, MachineGuest, MachineInit, MachineMount, MachineRestart, RestartPolicy,
};
use aloft_types::{MachineState, Signal};
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use std::time::{Duration, Instant};

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

/// Longest single wait the API allows; longer waits repeat it.
const WAIT_SECONDS: u64 = 60;

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Create and start a machine from an image.
    Run(RunArgs),
    /// List the app's machines.
    List,
    /// Show a machine, with its recent events.
    Status { id: String },
    /// Start a stopped machine.
    Start { id: String },
    /// Stop a machine (its kill signal, then SIGKILL after the timeout).
    Stop {
        id: String,
        #[arg(long, short = 's')]
        signal: Option<Signal>,
        /// e.g. 30s.
        #[arg(long)]
        timeout: Option<aloft_types::Duration>,
    },
    /// Restart a machine.
    Restart { id: String },
    /// Destroy a machine (a running one needs --force).
    Destroy {
        id: String,
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Run a command in a started machine; exits with the command's exit code.
    Exec {
        id: String,
        /// The command line, e.g. 'ls -l /data'.
        command: String,
        /// Seconds before giving up.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Take a machine out of the proxy's rotation.
    Cordon { id: String },
    /// Put a cordoned machine back.
    Uncordon { id: String },
}

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
    detach: bool,
}

async fn wait(client: &Client, app: &str, id: &str, state: MachineState) -> anyhow::Result<()> {
    for _ in 0..5 {
        match client.wait(app, id, state, WAIT_SECONDS).await {
            Ok(_) => return Ok(()),
            Err(error) if error.status() == Some(408) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    bail!(
        "machine {id} did not become {state} within {} seconds",
        WAIT_SECONDS * 5
    )
}

async fn run_machine(client: &Client, app: &str, args: RunArgs) -> anyhow::Result<MachineResponse> {
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
/// How long a new machine may take to start, an image pull included.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How many of a failed machine's last log lines are shown.
const LINES_SHOWN: usize = 20;

/// Waits until a new machine is started and has kept running for [`SMOKE_CHECK`]; fails
/// at once, with the reason, when it cannot be launched (an image that cannot be pulled,
/// say) or exits.
async fn running(client: &Client, app: &str, id: &str) -> anyhow::Result<MachineResponse> {
    let deadline = Instant::now() + START_TIMEOUT;
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
                START_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A machine's last log lines, as text to append to a message (empty when it has none).
async fn last_lines(client: &Client, app: &str, id: &str) -> String {
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

/// A machine's checks as `passing/total` (empty without checks), as `fly machine list`
/// shows them.
/// `aloft machine list`: the app's name over a table of its machines.
fn machines_table(app: &str, machines: &[MachineResponse]) -> String {
    let rows = machines
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.name.clone(),
                m.state.clone(),
                checks_summary(&m.checks),
                m.region.clone(),
                table::short_image(&m.config.image),
                m.config
                    .metadata
                    .get("fly_process_group")
                    .cloned()
                    .unwrap_or_default(),
                m.created_at.clone(),
                m.updated_at.clone(),
            ]
        })
        .collect::<Vec<_>>();
    format!(
        "{app}\n{}",
        table::render(
            &[
                "ID",
                "NAME",
                "STATE",
                "CHECKS",
                "REGION",
                "IMAGE",
                "PROCESS GROUP",
                "CREATED",
                "LAST UPDATED"
            ],
            &rows
        )
    )
}

pub(crate) fn checks_summary(checks: &[aloft_types::api::CheckResponse]) -> String {
    if checks.is_empty() {
        return String::new();
    }
    let passing = checks
        .iter()
        .filter(|c| c.status == aloft_types::CheckStatus::Passing)
        .count();
    format!("{passing}/{}", checks.len())
}

fn describe(machine: &MachineResponse) -> String {
    let mut text = format!(
        "Machine ID = {}\nName       = {}\nState      = {}\nRegion     = {}\nImage      = {}\nVersion    = {}\nCordoned   = {}\nCreated    = {}\n",
        machine.id,
        machine.name,
        machine.state,
        machine.region,
        machine.config.image,
        machine.version,
        machine.cordoned,
        machine.created_at
    );
    if !machine.checks.is_empty() {
        text.push_str("\nChecks\n");
        let rows: Vec<Vec<String>> = machine
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.status.to_string(),
                    c.updated_at.clone(),
                    c.output.lines().next().unwrap_or_default().to_owned(),
                ]
            })
            .collect();
        text.push_str(&table::render(
            &["NAME", "STATUS", "LAST UPDATED", "OUTPUT"],
            &rows,
        ));
    }
    if !machine.events.is_empty() {
        text.push_str("\nEvents\n");
        let rows = machine
            .events
            .iter()
            .map(|e| {
                let exit = e
                    .request
                    .get("exit_event")
                    .and_then(|x| x.get("exit_code"))
                    .map(|c| format!("exit code {c}"))
                    .unwrap_or_default();
                vec![
                    aloft_types::time::rfc3339(e.timestamp),
                    e.kind.clone(),
                    e.status.clone(),
                    e.source.clone(),
                    exit,
                ]
            })
            .collect::<Vec<_>>();
        text.push_str(&table::render(
            &["TIMESTAMP", "TYPE", "STATUS", "SOURCE", "DETAIL"],
            &rows,
        ));
    }
    text
}

pub(crate) async fn run(
    command: MachineCommand,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    match command {
        MachineCommand::Run(args) => {
            let detach = args.detach;
            let machine = run_machine(&client, app, args).await?;
            if json {
                out.json(&machine)?;
            } else {
                out.status(&format!(
                    "Machine {} ({}) {}",
                    machine.id,
                    machine.name,
                    if detach { "created" } else { "is started" }
                ));
                out.data(&machine.id);
            }
        }
        MachineCommand::List => {
            let machines = client
                .list_machines(app)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&machines)?;
            } else {
                out.data(&machines_table(app, &machines));
            }
        }
        MachineCommand::Status { id } => {
            let machine = client
                .machine(app, &id)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&machine)?;
            } else {
                out.data(&describe(&machine));
            }
        }
        MachineCommand::Start { id } => {
            client
                .start_machine(app, &id)
                .await
                .map_err(anyhow::Error::from)?;
            wait(&client, app, &id, MachineState::Started).await?;
            done(out, json, &id, "started", &format!("Machine {id} started"))?;
        }
        MachineCommand::Stop {
            id,
            signal,
            timeout,
        } => {
            client
                .stop_machine(app, &id, signal, timeout)
                .await
                .map_err(anyhow::Error::from)?;
            wait(&client, app, &id, MachineState::Stopped).await?;
            done(out, json, &id, "stopped", &format!("Machine {id} stopped"))?;
        }
        MachineCommand::Restart { id } => {
            client
                .restart_machine(app, &id)
                .await
                .map_err(anyhow::Error::from)?;
            wait(&client, app, &id, MachineState::Started).await?;
            done(
                out,
                json,
                &id,
                "started",
                &format!("Machine {id} restarted"),
            )?;
        }
        MachineCommand::Destroy { id, force } => {
            client
                .destroy_machine(app, &id, force)
                .await
                .map_err(anyhow::Error::from)?;
            wait(&client, app, &id, MachineState::Destroyed).await?;
            done(
                out,
                json,
                &id,
                "destroyed",
                &format!("Machine {id} destroyed"),
            )?;
        }
        MachineCommand::Exec {
            id,
            command,
            timeout,
        } => {
            let words = shlex::split(&command)
                .filter(|w| !w.is_empty())
                .with_context(|| format!("cannot split {command:?} into words"))?;
            let output = client
                .exec(app, &id, words, timeout)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&output)?;
            } else {
                out.raw_stdout(&output.stdout);
                out.raw_stderr(&output.stderr);
            }
            if output.exit_code != 0 {
                return Err(Failure::Exit(
                    u8::try_from(output.exit_code.clamp(1, 255)).unwrap_or(1),
                ));
            }
        }
        MachineCommand::Cordon { id } => {
            client
                .cordon_machine(app, &id, true)
                .await
                .map_err(anyhow::Error::from)?;
            done(
                out,
                json,
                &id,
                "cordoned",
                &format!("Machine {id} cordoned"),
            )?;
        }
        MachineCommand::Uncordon { id } => {
            client
                .cordon_machine(app, &id, false)
                .await
                .map_err(anyhow::Error::from)?;
            done(
                out,
                json,
                &id,
                "uncordoned",
                &format!("Machine {id} uncordoned"),
            )?;
        }
    }
    Ok(())
}

/// Reports a finished lifecycle change: `{"id", "state"}` with `--json`, else a sentence.
fn done(out: &mut Output, json: bool, id: &str, state: &str, text: &str) -> anyhow::Result<()> {
    if json {
        out.json(&serde_json::json!({ "id": id, "state": state }))
    } else {
        out.status(text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use aloft_types::CheckStatus;
    use aloft_types::api::CheckResponse;

    use super::*;

    #[test]
    fn checks_read_as_passing_over_total() {
        let check = |status| CheckResponse {
            name: "c".to_owned(),
            status,
            output: String::new(),
            updated_at: String::new(),
        };
        assert_eq!(checks_summary(&[]), "");
        assert_eq!(
            checks_summary(&[check(CheckStatus::Passing), check(CheckStatus::Critical)]),
            "1/2"
        );
    }

    fn machine(id: &str, state: &str, group: &str, checks: &[CheckStatus]) -> MachineResponse {
        let mut config = MachineConfig {
            image: "registry.local/aloft/web@sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904aaaaaaaaaaaaaaaaaaaaaaaa".to_owned(),
            ..MachineConfig::default()
        };
        config
            .metadata
            .insert("fly_process_group".to_owned(), group.to_owned());
        MachineResponse {
            id: id.to_owned(),
            name: format!("{group}-{}", &id[..4]),
            state: state.to_owned(),
            region: "ams".to_owned(),
            instance_id: "01JEXAMPLE".to_owned(),
            version: "01JEXAMPLE".to_owned(),
            private_ip: "fdaa:0:1:a7b:ams:1::2".to_owned(),
            image_ref: aloft_types::api::ImageRef::parse(&config.image),
            config,
            events: Vec::new(),
            checks: checks
                .iter()
                .map(|status| CheckResponse {
                    name: "servicecheck-00-http-8080".to_owned(),
                    status: *status,
                    output: String::new(),
                    updated_at: String::new(),
                })
                .collect(),
            host_status: "ok".to_owned(),
            cordoned: false,
            created_at: "2026-12-06T09:00:00Z".to_owned(),
            updated_at: "2026-12-06T10:01:02Z".to_owned(),
            nonce: None,
        }
    }

    /// `aloft machine list`, as Fly's `machine list` lays it out.
    #[test]
    fn the_machine_list_shows_state_checks_and_process_group() {
        let machines = [
            machine("148e21ea7d2e89", "started", "app", &[CheckStatus::Passing]),
            machine(
                "3d8d9e4b1c2a70",
                "starting",
                "app",
                &[CheckStatus::Critical],
            ),
            machine("9080e6f1a2b3c4", "stopped", "worker", &[]),
        ];
        insta::assert_snapshot!(machines_table("web", &machines));
        insta::assert_snapshot!("no_machines", machines_table("web", &[]));
    }
}
