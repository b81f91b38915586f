//! `aloft console`: a command in a new, temporary machine of the app (its config and
//! secrets), attached to the terminal, destroyed when it ends.

use std::path::{Path, PathBuf};

use aloft_types::api::MachineRequest;
use anyhow::Context as _;

use super::ssh::session::{connect, exit, pick_machine, run_session};
use crate::Failure;
use crate::api;
use crate::output::Output;

#[derive(Debug, clap::Args)]
pub struct EphemeralArgs {
    /// Run this instead of the fly.toml's `console_command` (default `/bin/sh`).
    #[arg(short = 'C', long = "command", value_name = "CMD")]
    command: Option<String>,
    /// The machine's user to run as.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    user: Option<String>,
}

/// `aloft console`: a new machine of the app's current release (its image, env and
/// secrets; no services, checks or volumes) idling, `console_command` run in it over SSH
/// with a terminal, and the machine destroyed when that ends, however it ends.
pub(crate) async fn console(
    args: EphemeralArgs,
    app: &str,
    config: &Option<PathBuf>,
    out: &mut Output,
) -> Result<(), Failure> {
    let command = match args.command {
        Some(command) => command,
        None => console_command(config)?.unwrap_or_else(|| "/bin/sh".to_owned()),
    };
    let client = api::client()?;
    let template = pick_machine(&client, app, None, false, out)
        .await
        .context("the console machine copies a started machine of the current release")?;
    let mut machine_config = template.config.clone();
    machine_config.services.clear();
    machine_config.checks.clear();
    machine_config.mounts.clear();
    machine_config.statics.clear();
    machine_config.schedule = None;
    machine_config.standbys.clear();
    machine_config.auto_destroy = true;
    machine_config.restart = Some(aloft_types::machine::MachineRestart {
        policy: Some(aloft_types::machine::RestartPolicy::No),
        max_retries: 0,
    });
    machine_config.init.exec = Vec::new();
    machine_config.init.entrypoint = vec!["sleep".to_owned()];
    machine_config.init.cmd = vec!["2147483647".to_owned()];
    machine_config.metadata.insert(
        aloft_types::machine::METADATA_PROCESS_GROUP.to_owned(),
        "fly_app_console".to_owned(),
    );
    let created = client
        .create_machine(
            app,
            &MachineRequest {
                config: machine_config,
                region: Some(template.region.clone()),
                name: None,
                skip_launch: false,
                skip_service_registration: true,
                skip_secrets: false,
                lease_ttl: None,
                min_secrets_version: None,
                current_version: None,
            },
        )
        .await
        .context("creating the console machine")?;
    out.status(&format!("Console machine {} is starting", created.id));
    let outcome = async {
        client
            .wait(app, &created.id, aloft_types::MachineState::Started, 60)
            .await
            .context("waiting for the console machine to start")?;
        let connection = connect(
            &client,
            app,
            &created.id,
            &args.user.clone().unwrap_or_default(),
        )
        .await?;
        let code = run_session(&connection, Some(command), true).await?;
        let _ = connection.close().await;
        Ok::<u32, anyhow::Error>(code)
    }
    .await;
    let destroyed = client.destroy_machine(app, &created.id, true).await;
    match destroyed {
        Ok(_) => out.status(&format!("Console machine {} destroyed", created.id)),
        Err(error) => out.error(&format!(
            "destroying console machine {}: {error} (run `aloft machine destroy --force {}`)",
            created.id, created.id
        )),
    }
    exit(outcome?)
}

fn console_command(config: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    let path = match config {
        Some(path) => Some(path.clone()),
        None => aloft_config::find_in(Path::new("")).ok(),
    };
    let Some(path) = path else { return Ok(None) };
    let parsed = aloft_config::load(&path)?;
    Ok(parsed.config().and_then(|c| c.console_command.clone()))
}
