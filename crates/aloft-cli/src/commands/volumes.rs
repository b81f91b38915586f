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
        /// Daily automatic snapshots (flyctl's flag; Aloft takes none, so `true` is refused).
        #[arg(long)]
        scheduled_snapshots: Option<bool>,
        /// Keep the data unencrypted.
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
        /// Daily automatic snapshots (Aloft takes none, so `true` is refused).
        #[arg(long)]
        scheduled_snapshots: Option<bool>,
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
    /// Destroy a volume that no machine uses, with its data.
    Destroy {
        id: String,
        /// Do not ask for confirmation (needed where there is no terminal to ask on).
        #[arg(long, short = 'y')]
        yes: bool,
    },
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
        VolumesCommand::Create {
            name,
            size,
            region,
            snapshot_retention,
            scheduled_snapshots,
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
                    "nothing to update: pass --snapshot-retention DAYS"
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
            client
                .extend_volume(app, &id, size)
                .await
                .map_err(anyhow::Error::from)?
                .volume
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
