//! Volumes: a named piece of one host's disk, attached to at most one machine.

use aloft_types::{AppId, HostId, MachineId, VolumeId};
use sqlx::any::AnyRow;

use crate::{Store, StoreError, column, now_ms, random, typed};

/// Where a volume is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VolumeState {
    Creating,
    Created,
    Extending,
    /// Being filled from a snapshot: no machine may mount it yet.
    Restoring,
    PendingDestroy,
    Destroyed,
}

impl VolumeState {
    pub const fn as_str(self) -> &'static str {
        match self {
            VolumeState::Creating => "creating",
            VolumeState::Created => "created",
            VolumeState::Extending => "extending",
            VolumeState::Restoring => "restoring",
            VolumeState::PendingDestroy => "pending_destroy",
            VolumeState::Destroyed => "destroyed",
        }
    }
}

impl std::str::FromStr for VolumeState {
    type Err = std::io::Error;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [
            VolumeState::Creating,
            VolumeState::Created,
            VolumeState::Extending,
            VolumeState::Restoring,
            VolumeState::PendingDestroy,
            VolumeState::Destroyed,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
        .ok_or_else(|| std::io::Error::other(format!("unknown volume state {name:?}")))
    }
}

/// What [`Store::create_volume`] needs.
#[derive(Debug, Clone)]
pub struct NewVolume {
    pub app_id: AppId,
    pub name: String,
    pub region: String,
    pub host_id: Option<HostId>,
    pub size_gb: i64,
    pub encrypted: bool,
    /// Its encryption key, sealed (see [`VolumeRecord::key_sealed`]).
    pub key_sealed: Option<String>,
    pub snapshot_retention: i64,
    /// Daily snapshots (Fly's `auto_backup_enabled`).
    pub auto_backup_enabled: bool,
}

/// A volume as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub id: VolumeId,
    pub app_id: AppId,
    pub name: String,
    pub region: String,
    pub host_id: Option<HostId>,
    pub size_gb: i64,
    pub state: VolumeState,
    pub attached_machine_id: Option<MachineId>,
    pub encrypted: bool,
    /// The key its files are encrypted with on its host, sealed by the control plane's
    /// secrets key; `None` when it is not encrypted at rest.
    pub key_sealed: Option<String>,
    pub snapshot_retention: i64,
    /// Daily snapshots (Fly's `auto_backup_enabled`).
    pub auto_backup_enabled: bool,
    pub created_at: i64,
    /// When it last changed (its creation when it never did).
    pub updated_at: i64,
}

pub(crate) const COLUMNS: &str = "id, app_id, name, region, host_id, size_gb, state, attached_machine_id, encrypted, snapshot_retention, auto_backup_enabled, created_at, updated_at, key_sealed";

pub(crate) fn volume_from(row: &AnyRow) -> Result<VolumeRecord, StoreError> {
    const WHAT: &str = "volume";
    let host: Option<String> = column(row, WHAT, "host_id")?;
    let machine: Option<String> = column(row, WHAT, "attached_machine_id")?;
    let created_at = column(row, WHAT, "created_at")?;
    Ok(VolumeRecord {
        id: typed(row, WHAT, "id")?,
        app_id: typed(row, WHAT, "app_id")?,
        name: column(row, WHAT, "name")?,
        region: column(row, WHAT, "region")?,
        host_id: host.map(|h| crate::parse("host id", &h)).transpose()?,
        size_gb: column(row, WHAT, "size_gb")?,
        state: typed(row, WHAT, "state")?,
        attached_machine_id: machine
            .map(|m| crate::parse("machine id", &m))
            .transpose()?,
        encrypted: column::<i64>(row, WHAT, "encrypted")? != 0,
        key_sealed: column(row, WHAT, "key_sealed")?,
        snapshot_retention: column(row, WHAT, "snapshot_retention")?,
        auto_backup_enabled: column::<i64>(row, WHAT, "auto_backup_enabled")? != 0,
        created_at,
        updated_at: match column::<i64>(row, WHAT, "updated_at")? {
            0 => created_at,
            at => at,
        },
    })
}

fn not_found(id: &VolumeId) -> StoreError {
    StoreError::NotFound {
        what: "volume",
        id: id.to_string(),
    }
}

impl Store {
    pub async fn create_volume(&self, new: NewVolume) -> Result<VolumeRecord, StoreError> {
        let now = now_ms();
        let volume = VolumeRecord {
            id: VolumeId::generate(random()),
            app_id: new.app_id,
            name: new.name,
            region: new.region,
            host_id: new.host_id,
            size_gb: new.size_gb,
            state: VolumeState::Created,
            attached_machine_id: None,
            encrypted: new.encrypted,
            key_sealed: new.key_sealed,
            snapshot_retention: new.snapshot_retention,
            auto_backup_enabled: new.auto_backup_enabled,
            created_at: now,
            updated_at: now,
        };
        sqlx::query(&format!(
            "INSERT INTO volumes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(volume.id.as_str())
        .bind(volume.app_id.as_str())
        .bind(&volume.name)
        .bind(&volume.region)
        .bind(volume.host_id.as_ref().map(|h| h.to_string()))
        .bind(volume.size_gb)
        .bind(volume.state.as_str())
        .bind(i64::from(volume.encrypted))
        .bind(volume.snapshot_retention)
        .bind(i64::from(volume.auto_backup_enabled))
        .bind(volume.created_at)
        .bind(volume.updated_at)
        .bind(volume.key_sealed.clone())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "creating a volume",
            "volume",
            &volume.name,
        ))?;
        Ok(volume)
    }

    pub async fn volume(&self, app_id: &AppId, id: &VolumeId) -> Result<VolumeRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM volumes WHERE id = $1 AND app_id = $2"
        ))
        .bind(id.as_str())
        .bind(app_id.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database(
            "finding a volume",
            "volume",
            id.as_str(),
        ))?;
        row.as_ref()
            .map(volume_from)
            .transpose()?
            .ok_or_else(|| not_found(id))
    }

    /// The app's volumes, destroyed ones too, oldest first.
    pub async fn list_volumes_with_destroyed(
        &self,
        app_id: &AppId,
    ) -> Result<Vec<VolumeRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM volumes WHERE app_id = $1 ORDER BY created_at, id"
        ))
        .bind(app_id.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing volumes",
            "app",
            app_id.as_str(),
        ))?;
        rows.iter().map(volume_from).collect()
    }

    /// The app's volumes that are not destroyed, oldest first.
    pub async fn list_volumes(&self, app_id: &AppId) -> Result<Vec<VolumeRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM volumes WHERE app_id = $1 AND state <> 'destroyed' ORDER BY created_at, id"))
            .bind(app_id.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::database("listing volumes", "app", app_id.as_str()))?;
        rows.iter().map(volume_from).collect()
    }

    /// Grows a volume; volumes never shrink.
    pub async fn extend_volume(
        &self,
        app_id: &AppId,
        id: &VolumeId,
        size_gb: i64,
    ) -> Result<VolumeRecord, StoreError> {
        let volume = self.volume(app_id, id).await?;
        if size_gb <= volume.size_gb {
            return Err(StoreError::Conflict {
                what: "volume",
                id: id.to_string(),
                reason: format!(
                    "it is {} GB; a volume can only grow (asked for {size_gb} GB)",
                    volume.size_gb
                ),
            });
        }
        sqlx::query(
            "UPDATE volumes SET size_gb = $1, updated_at = $4 WHERE id = $2 AND app_id = $3",
        )
        .bind(size_gb)
        .bind(id.as_str())
        .bind(app_id.as_str())
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "extending a volume",
            "volume",
            id.as_str(),
        ))?;
        self.volume(app_id, id).await
    }

    /// Moves a volume between `created` and `restoring` (filled from a snapshot).
    pub async fn set_volume_state(
        &self,
        app_id: &AppId,
        id: &VolumeId,
        state: VolumeState,
    ) -> Result<VolumeRecord, StoreError> {
        sqlx::query(
            "UPDATE volumes SET state = $1, updated_at = $4 WHERE id = $2 AND app_id = $3 AND state <> 'destroyed'",
        )
        .bind(state.as_str())
        .bind(id.as_str())
        .bind(app_id.as_str())
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "changing a volume's state",
            "volume",
            id.as_str(),
        ))?;
        self.volume(app_id, id).await
    }

    /// Changes a volume's snapshot settings (Fly's volume update): how many days its
    /// snapshots are kept, and whether it gets one a day; `None` leaves one as it is.
    pub async fn update_volume_settings(
        &self,
        app_id: &AppId,
        id: &VolumeId,
        retention_days: Option<i64>,
        daily_snapshots: Option<bool>,
    ) -> Result<VolumeRecord, StoreError> {
        let current = self.volume(app_id, id).await?;
        sqlx::query(
            "UPDATE volumes SET snapshot_retention = $1, auto_backup_enabled = $2, updated_at = $5 WHERE id = $3 AND app_id = $4",
        )
        .bind(retention_days.unwrap_or(current.snapshot_retention))
        .bind(i64::from(daily_snapshots.unwrap_or(current.auto_backup_enabled)))
        .bind(id.as_str())
        .bind(app_id.as_str())
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "updating a volume",
            "volume",
            id.as_str(),
        ))?;
        self.volume(app_id, id).await
    }

    /// Attaches a volume to a machine; fails while another machine has it.
    pub async fn attach_volume(
        &self,
        app_id: &AppId,
        id: &VolumeId,
        machine: &MachineId,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE volumes SET attached_machine_id = $1, updated_at = $4 WHERE id = $2 AND app_id = $3 AND state NOT IN ('destroyed', 'restoring') \
             AND (attached_machine_id IS NULL OR attached_machine_id = $1)",
        )
        .bind(machine.as_str())
        .bind(id.as_str())
        .bind(app_id.as_str())
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(StoreError::database("attaching a volume", "volume", id.as_str()))?;
        if updated.rows_affected() == 0 {
            return Err(self.attach_refused(app_id, id).await);
        }
        Ok(())
    }

    /// Why `id` could not be attached: it is being restored, or another machine holds it.
    pub(crate) async fn attach_refused(&self, app_id: &AppId, id: &VolumeId) -> StoreError {
        let volume = match self.volume(app_id, id).await {
            Ok(volume) => volume,
            Err(error) => return error,
        };
        if volume.state == VolumeState::Restoring {
            return StoreError::Conflict {
                what: "volume",
                id: id.to_string(),
                reason: "it is still being restored from a snapshot".to_owned(),
            };
        }
        let holder = volume
            .attached_machine_id
            .map_or_else(|| "nothing".to_owned(), |m| m.to_string());
        StoreError::Conflict {
            what: "volume",
            id: id.to_string(),
            reason: format!("it is attached to machine {holder}"),
        }
    }

    /// Detaches a volume from whatever machine holds it.
    pub async fn detach_volume(&self, app_id: &AppId, id: &VolumeId) -> Result<(), StoreError> {
        sqlx::query("UPDATE volumes SET attached_machine_id = NULL, updated_at = $3 WHERE id = $1 AND app_id = $2")
            .bind(id.as_str())
            .bind(app_id.as_str())
            .bind(now_ms())
            .execute(self.pool())
            .await
            .map_err(StoreError::database(
                "detaching a volume",
                "volume",
                id.as_str(),
            ))?;
        Ok(())
    }

    /// Marks a volume destroyed; refused while a machine has it attached.
    pub async fn destroy_volume(
        &self,
        app_id: &AppId,
        id: &VolumeId,
    ) -> Result<VolumeRecord, StoreError> {
        let volume = self.volume(app_id, id).await?;
        if let Some(machine) = &volume.attached_machine_id {
            return Err(StoreError::Conflict {
                what: "volume",
                id: id.to_string(),
                reason: format!(
                    "it is attached to machine {machine}; destroy the machine or detach the volume first"
                ),
            });
        }
        sqlx::query("UPDATE volumes SET state = 'destroyed', updated_at = $3 WHERE id = $1 AND app_id = $2 AND attached_machine_id IS NULL")
            .bind(id.as_str())
            .bind(app_id.as_str())
            .bind(now_ms())
            .execute(self.pool())
            .await
            .map_err(StoreError::database("destroying a volume", "volume", id.as_str()))?;
        self.volume(app_id, id).await
    }
}
