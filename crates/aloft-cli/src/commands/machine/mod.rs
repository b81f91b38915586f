//! `aloft machine`: run and manage machines directly.

mod launch;
mod manage;
mod show;

use aloft_client::Client;
use aloft_types::MachineState;
use aloft_types::Signal;
use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use launch::{RunArgs, run_machine};
use manage::{CloneArgs, LeasesCommand, UpdateArgs};
pub(crate) use manage::{Until, wait_until};
pub(crate) use show::checks_summary;

/// How long a machine may take to start (or start again), an image pull included.
pub(crate) const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
use show::{describe, machines_table};

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
    /// Send SIGKILL to a machine (its restart policy decides what follows).
    Kill { id: String },
    /// Suspend machines: a container cannot be snapshotted here, so each is stopped, as
    /// Fly does where suspending is not available (its `suspend` event says so).
    Suspend {
        #[arg(required = true)]
        ids: Vec<String>,
        /// How long to wait for each to stop, e.g. 2m.
        #[arg(long, short = 'w', default_value = "5m")]
        wait_timeout: aloft_types::Duration,
    },
    /// Wait for a machine to reach a state.
    Wait {
        id: String,
        /// settled (any state a machine rests in), started, stopped, suspended, failed or
        /// destroyed.
        #[arg(long, default_value = "settled")]
        state: String,
        #[arg(long, short = 'w', default_value = "5m")]
        wait_timeout: aloft_types::Duration,
    },
    /// Show or clear machines' leases.
    #[command(subcommand)]
    Leases(LeasesCommand),
    /// Create a machine with the config of another (a mounted volume becomes a new
    /// empty one of the same name and size).
    Clone(CloneArgs),
    /// Change a machine's config: a new version, which a started machine restarts on.
    Update(UpdateArgs),
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
        MachineCommand::Kill { id } => {
            manage::kill(&client, app, &id).await?;
            done(
                out,
                json,
                &id,
                "killed",
                &format!("Kill signal sent to machine {id}"),
            )?;
        }
        MachineCommand::Suspend { ids, wait_timeout } => {
            for id in &ids {
                client
                    .suspend_machine(app, id)
                    .await
                    .map_err(anyhow::Error::from)?;
            }
            let mut reached = Vec::new();
            for id in &ids {
                let state = manage::wait_any(
                    &client,
                    app,
                    id,
                    &[MachineState::Stopped, MachineState::Suspended],
                    "stopped",
                    wait_timeout.as_std(),
                )
                .await?;
                reached.push(serde_json::json!({ "id": id, "state": state }));
                if !json {
                    out.status(&format!(
                        "Machine {id} suspended (a container is stopped: {state})"
                    ));
                }
            }
            if json {
                out.json(&reached)?;
            }
        }
        MachineCommand::Wait {
            id,
            state,
            wait_timeout,
        } => {
            let reached =
                manage::wait_for(&client, app, &id, &state, wait_timeout.as_std()).await?;
            done(
                out,
                json,
                &id,
                &reached,
                &format!("Machine {id} is {reached}"),
            )?;
        }
        MachineCommand::Leases(LeasesCommand::View { ids }) => {
            let leases = manage::leases_view(&client, app, ids).await?;
            if json {
                let shown: Vec<_> = leases
                    .iter()
                    .map(|(id, lease)| serde_json::json!({ "id": id, "lease": lease }))
                    .collect();
                out.json(&shown)?;
            } else {
                out.data(&show::leases_table(&leases));
            }
        }
        MachineCommand::Leases(LeasesCommand::Clear { ids }) => {
            let cleared = manage::leases_clear(&client, app, ids).await?;
            if json {
                out.json(&cleared)?;
            } else if cleared.is_empty() {
                out.status("No machine had a lease");
            } else {
                for id in &cleared {
                    out.status(&format!("Released the lease on machine {id}"));
                }
            }
        }
        MachineCommand::Clone(args) => {
            let source = args.id.clone();
            let machine = manage::clone(&client, app, args).await?;
            if json {
                out.json(&machine)?;
            } else {
                out.status(&format!(
                    "Machine {} ({}) cloned from {source}, {}",
                    machine.id, machine.name, machine.state
                ));
                out.data(&machine.id);
            }
        }
        MachineCommand::Update(args) => {
            let machine = client
                .machine(app, &args.id)
                .await
                .map_err(anyhow::Error::from)?;
            let config = manage::updated(&machine.config, &args)?;
            let changes = manage::changes(&machine.config, &config);
            if changes.is_empty() {
                return Err(anyhow::anyhow!(
                    "the update changes nothing in machine {}: name what to change (see --help)",
                    machine.id
                )
                .into());
            }
            crate::confirm::confirm(
                &format!(
                    "Update machine {} ({}):\n  {}\nGo ahead?",
                    machine.id,
                    machine.state,
                    changes.join("\n  ")
                ),
                &format!("updating machine {}", machine.id),
                args.yes,
            )?;
            let updated = manage::update(&client, app, &machine, config, args.detach).await?;
            if json {
                out.json(&updated)?;
            } else {
                out.status(&format!(
                    "Machine {} updated to version {} ({})",
                    updated.id, updated.version, updated.state
                ));
            }
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
