//! `aloft secrets`: an app's encrypted secrets.

use std::collections::BTreeMap;
use std::io::Read as _;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set secrets: NAME=VALUE ...; the machines restart with them (a rolling deploy)
    /// unless `--stage`.
    Set {
        #[arg(required = true, value_name = "NAME=VALUE")]
        pairs: Vec<String>,
        /// Store them only; `aloft secrets deploy` applies them later.
        #[arg(long)]
        stage: bool,
    },
    /// List secret names and digests (never values).
    List,
    /// Remove secrets by name (the machines restart without them unless `--stage`).
    Unset {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        stage: bool,
        /// Do not ask for confirmation (needed where there is no terminal to ask on).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Read NAME=VALUE lines from stdin and set them all (the machines restart unless
    /// `--stage`).
    Import {
        #[arg(long)]
        stage: bool,
    },
    /// Restart the machines with the secrets as they are now (after `--stage`).
    Deploy,
}

/// A value that changes whenever the app's secrets do: the machines' config carries it,
/// so a deploy that applies secrets replaces every machine.
pub(crate) const METADATA_SECRETS: &str = "aloft_secrets";

fn secrets_fingerprint(secrets: &[aloft_types::api::SecretInfo]) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut pairs: Vec<(&str, &str)> = secrets
        .iter()
        .map(|s| (s.name.as_str(), s.digest.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Restarts the app's machines with its current secrets, by a rolling deploy.
async fn apply(client: &aloft_client::Client, app: &str, out: &mut Output) -> Result<(), Failure> {
    let machines = crate::commands::status::live_machines(client, app).await?;
    if machines.is_empty() {
        out.status(&format!(
            "app {app} has no machines yet; its next deploy uses the secrets"
        ));
        return Ok(());
    }
    let secrets = client
        .list_secrets(app)
        .await
        .map_err(anyhow::Error::from)?;
    let fingerprint = secrets_fingerprint(&secrets);
    crate::commands::scale::redeploy(
        client,
        app,
        &machines,
        None,
        out,
        "apply secrets",
        |config| {
            config
                .metadata
                .insert(METADATA_SECRETS.to_owned(), fingerprint.clone());
        },
    )
    .await
}

fn split_pair(pair: &str) -> anyhow::Result<(String, String)> {
    match pair.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => bail!("{pair:?} is not NAME=VALUE"),
    }
}

pub(crate) async fn secrets(
    command: SecretsCommand,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    let stage = match &command {
        SecretsCommand::Set { stage, .. }
        | SecretsCommand::Unset { stage, .. }
        | SecretsCommand::Import { stage } => *stage,
        SecretsCommand::List | SecretsCommand::Deploy => false,
    };
    let values: BTreeMap<String, Option<String>> = match command {
        SecretsCommand::List => {
            let secrets = client
                .list_secrets(app)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&secrets)?;
            } else {
                let rows = secrets
                    .iter()
                    .map(|s| vec![s.name.clone(), s.digest.clone(), s.created_at.clone()])
                    .collect::<Vec<_>>();
                out.data(&table::render(&["NAME", "DIGEST", "CREATED AT"], &rows));
            }
            return Ok(());
        }
        SecretsCommand::Deploy => {
            apply(&client, app, out).await?;
            out.report(
                json,
                serde_json::json!({ "app": app, "applied": true }),
                &format!("the machines of {app} run with the current secrets"),
            )?;
            return Ok(());
        }
        SecretsCommand::Set { pairs, .. } => pairs
            .iter()
            .map(|p| split_pair(p).map(|(n, v)| (n, Some(v))))
            .collect::<anyhow::Result<_>>()?,
        SecretsCommand::Unset { names, yes, .. } => {
            let set: Vec<String> = client
                .list_secrets(app)
                .await
                .map_err(anyhow::Error::from)?
                .into_iter()
                .map(|s| s.name)
                .collect();
            if let Some(missing) = names.iter().find(|n| !set.contains(n)) {
                return Err(anyhow::anyhow!(
                    "secret {missing} is not set on app {app}; `aloft secrets list -a {app}` shows its secrets"
                )
                .into());
            }
            crate::confirm::confirm(
                &format!(
                    "Remove secret(s) {} of app {app}? Their values cannot be read back",
                    names.join(", ")
                ),
                "removing secrets",
                yes,
            )?;
            names.into_iter().map(|n| (n, None)).collect()
        }
        SecretsCommand::Import { .. } => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading NAME=VALUE lines from stdin")?;
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(|line| split_pair(line).map(|(n, v)| (n, Some(v))))
                .collect::<anyhow::Result<_>>()?
        }
    };
    let version = client
        .update_secrets(app, values)
        .await
        .map_err(anyhow::Error::from)?;
    if json {
        out.json(&version)?;
    } else {
        out.status(&format!(
            "Secrets of {app} are now at version {}",
            version.version
        ));
    }
    if stage {
        out.status("staged: `aloft secrets deploy` restarts the machines with them");
        return Ok(());
    }
    apply(&client, app, out).await
}
