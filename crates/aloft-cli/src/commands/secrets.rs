//! `aloft secrets` and `aloft volumes`.

use std::collections::BTreeMap;
use std::io::Read as _;

use aloft_types::api::CreateVolumeRequest;
use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set secrets: NAME=VALUE ...
    Set {
        #[arg(required = true, value_name = "NAME=VALUE")]
        pairs: Vec<String>,
    },
    /// List secret names and digests (never values).
    List,
    /// Remove secrets by name.
    Unset {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Read NAME=VALUE lines from stdin and set them all.
    Import,
}

#[derive(Debug, Subcommand)]
pub enum VolumesCommand {
    /// Create a volume.
    Create {
        name: String,
        /// Size in GB.
        #[arg(long, short = 's', default_value_t = 1)]
        size: i64,
        #[arg(long, short = 'r')]
        region: Option<String>,
    },
    /// List volumes.
    List,
    /// Show a volume.
    Show { id: String },
    /// Grow a volume.
    Extend {
        id: String,
        /// The new size in GB.
        #[arg(long, short = 's')]
        size: i64,
    },
    /// Destroy a volume that no machine uses.
    Destroy { id: String },
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
        SecretsCommand::Set { pairs } => pairs
            .iter()
            .map(|p| split_pair(p).map(|(n, v)| (n, Some(v))))
            .collect::<anyhow::Result<_>>()?,
        SecretsCommand::Unset { names } => names.into_iter().map(|n| (n, None)).collect(),
        SecretsCommand::Import => {
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
    Ok(())
}

pub(crate) async fn volumes(
    command: VolumesCommand,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    let volume = match command {
        VolumesCommand::List => {
            let volumes = client
                .list_volumes(app)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&volumes)?;
            } else {
                let rows = volumes
                    .iter()
                    .map(|v| {
                        vec![
                            v.id.clone(),
                            v.state.clone(),
                            v.name.clone(),
                            format!("{}GB", v.size_gb),
                            v.region.clone(),
                            v.encrypted.to_string(),
                            v.attached_machine_id.clone().unwrap_or_default(),
                            v.created_at.clone(),
                        ]
                    })
                    .collect::<Vec<_>>();
                out.data(&table::render(
                    &[
                        "ID",
                        "STATE",
                        "NAME",
                        "SIZE",
                        "REGION",
                        "ENCRYPTED",
                        "ATTACHED VM",
                        "CREATED AT",
                    ],
                    &rows,
                ));
            }
            return Ok(());
        }
        VolumesCommand::Create { name, size, region } => client
            .create_volume(
                app,
                &CreateVolumeRequest {
                    name,
                    region,
                    size_gb: Some(size),
                    encrypted: None,
                    snapshot_retention: None,
                    require_unique_zone: None,
                },
            )
            .await
            .map_err(anyhow::Error::from)?,
        VolumesCommand::Show { id } => {
            client.volume(app, &id).await.map_err(anyhow::Error::from)?
        }
        VolumesCommand::Extend { id, size } => {
            client
                .extend_volume(app, &id, size)
                .await
                .map_err(anyhow::Error::from)?
                .volume
        }
        VolumesCommand::Destroy { id } => client
            .destroy_volume(app, &id)
            .await
            .map_err(anyhow::Error::from)?,
    };
    if json {
        out.json(&volume)?;
    } else {
        out.data(&format!(
            "ID         = {}\nName       = {}\nState      = {}\nSize       = {}GB\nRegion     = {}\nAttached   = {}",
            volume.id,
            volume.name,
            volume.state,
            volume.size_gb,
            volume.region,
            volume.attached_machine_id.as_deref().unwrap_or("-")
        ));
    }
    Ok(())
}
