//! `aloft volumes`: an app's volumes.

use aloft_types::api::CreateVolumeRequest;
use clap::Subcommand;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

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
        /// Days snapshots are kept (1 to 60; default 5).
        #[arg(long)]
        snapshot_retention: Option<i64>,
        /// Daily automatic snapshots (on unless `false`).
        #[arg(long)]
        scheduled_snapshots: Option<bool>,
        /// Fill the volume from this snapshot (`volumes snapshots list`); it is made on the
        /// snapshot's host, at least as big as the volume the snapshot was taken of.
        #[arg(long)]
        snapshot_id: Option<String>,
        /// Keep the data unencrypted on the host's disk (volumes are encrypted at rest by
        /// default, where the host can).
        #[arg(long)]
        no_encryption: bool,
        /// Place it in a zone that holds no other volume of the app.
        #[arg(long)]
        require_unique_zone: bool,
    },
    /// Change a volume's snapshot retention.
    Update {
        id: String,
        /// Days snapshots are kept (1 to 60).
        #[arg(long)]
        snapshot_retention: Option<i64>,
        /// Daily automatic snapshots on or off.
        #[arg(long)]
        scheduled_snapshots: Option<bool>,
    },
    /// A volume's snapshots: list them, or take one now.
    #[command(subcommand)]
    Snapshots(SnapshotsCommand),
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
    /// Destroy a volume that no machine uses, with its data.
    Destroy {
        id: String,
        /// Do not ask for confirmation (needed where there is no terminal to ask on).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// List a volume's snapshots, oldest first.
    #[command(visible_alias = "ls")]
    List { volume: String },
    /// Take a snapshot of a volume now (it also gets one a day while daily snapshots are
    /// on).
    Create { volume: String },
}

/// Bytes as flyctl shows sizes (`1.5 MiB`).
fn bytes(size: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{size} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

async fn snapshots(
    client: &aloft_client::Client,
    command: SnapshotsCommand,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let shown = match command {
        SnapshotsCommand::List { volume } => client
            .volume_snapshots(app, &volume)
            .await
            .map_err(anyhow::Error::from)?,
        SnapshotsCommand::Create { volume } => {
            let snapshot = client
                .create_volume_snapshot(app, &volume)
                .await
                .map_err(anyhow::Error::from)?;
            if !json {
                out.status(&format!(
                    "Took snapshot {} of volume {volume} ({})",
                    snapshot.id,
                    bytes(snapshot.size)
                ));
            }
            vec![snapshot]
        }
    };
    if json {
        out.json(&shown)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.status.clone(),
                bytes(s.size),
                s.created_at.clone(),
                s.retention_days.map(|d| d.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    out.data(&table::render(
        &["ID", "STATUS", "SIZE", "CREATED AT", "RETENTION DAYS"],
        &rows,
    ));
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
        VolumesCommand::Snapshots(command) => {
            return snapshots(&client, command, app, json, out).await;
        }
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
        VolumesCommand::Create {
            name,
            size,
            region,
            snapshot_retention,
            scheduled_snapshots,
            snapshot_id,
            no_encryption,
            require_unique_zone,
        } => client
            .create_volume(
                app,
                &CreateVolumeRequest {
                    region,
                    size_gb: Some(size),
                    encrypted: no_encryption.then_some(false),
                    snapshot_retention,
                    require_unique_zone: require_unique_zone.then_some(true),
                    auto_backup_enabled: scheduled_snapshots,
                    snapshot_id,
                    ..CreateVolumeRequest::named(name)
                },
            )
            .await
            .map_err(anyhow::Error::from)?,
        VolumesCommand::Update {
            id,
            snapshot_retention,
            scheduled_snapshots,
        } => {
            if snapshot_retention.is_none() && scheduled_snapshots.is_none() {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "nothing to update: pass --snapshot-retention DAYS or --scheduled-snapshots true|false"
                )));
            }
            client
                .update_volume(
                    app,
                    &id,
                    &aloft_types::api::UpdateVolumeRequest {
                        snapshot_retention,
                        auto_backup_enabled: scheduled_snapshots,
                    },
                )
                .await
                .map_err(anyhow::Error::from)?
        }
        VolumesCommand::Show { id } => {
            client.volume(app, &id).await.map_err(anyhow::Error::from)?
        }
        VolumesCommand::Extend { id, size } => {
            let extended = client
                .extend_volume(app, &id, size)
                .await
                .map_err(anyhow::Error::from)?;
            if extended.needs_restart {
                out.status(
                    "Its machine runs on it: restart the machine (aloft machine restart) for the filesystem to grow.",
                );
            }
            extended.volume
        }
        VolumesCommand::Destroy { id, yes } => {
            crate::confirm::confirm(
                &format!("Destroy volume {id} of app {app} and every file on it?"),
                "destroying a volume",
                yes,
            )?;
            client
                .destroy_volume(app, &id)
                .await
                .map_err(anyhow::Error::from)?
        }
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
