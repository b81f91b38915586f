//! Volume snapshots: archives of a volume's files kept on its host. The row comes first
//! (`creating`), then the host writes the archive, then the row says `created` (with its
//! size and digest) or `failed`.

use aloft_types::{AppId, HostId, SnapshotId, VolumeId};
use sqlx::any::AnyRow;

use crate::{Store, StoreError, column, now_ms, random, typed};

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotStatus {
    /// Asked of the host, not yet written (or its writer died: see
    /// [`Store::fail_unfinished_snapshots`]).
    Creating,
    Created,
    Failed,
}

impl SnapshotStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            SnapshotStatus::Creating => "creating",
            SnapshotStatus::Created => "created",
            SnapshotStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for SnapshotStatus {
    type Err = std::io::Error;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [
            SnapshotStatus::Creating,
            SnapshotStatus::Created,
            SnapshotStatus::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
        .ok_or_else(|| std::io::Error::other(format!("unknown snapshot status {name:?}")))
    }
}

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: SnapshotId,
    pub volume_id: VolumeId,
    pub app_id: AppId,
    /// The host that keeps its archive (the volume's).
    pub host_id: Option<HostId>,
    pub status: SnapshotStatus,
    /// Bytes of its archive.
    pub size: i64,
    /// The volume's size in GB when it was taken.
    pub volume_size: i64,
    /// `sha256:<hex>` of its archive; empty until created.
    pub digest: String,
    pub retention_days: i64,
    pub created_at: i64,
}

impl SnapshotRecord {
    /// When it may be deleted (milliseconds since the epoch).
    pub fn expires_at(&self) -> i64 {
        self.created_at
            .saturating_add(self.retention_days.saturating_mul(24 * 3600 * 1000))
    }
}

const COLUMNS: &str =
    "id, volume_id, app_id, host_id, status, size, volume_size, digest, retention_days, created_at";

fn snapshot_from(row: &AnyRow) -> Result<SnapshotRecord, StoreError> {
    const WHAT: &str = "snapshot";
    let host: Option<String> = column(row, WHAT, "host_id")?;
    Ok(SnapshotRecord {
        id: typed(row, WHAT, "id")?,
        volume_id: typed(row, WHAT, "volume_id")?,
        app_id: typed(row, WHAT, "app_id")?,
        host_id: host.map(|h| crate::parse("host id", &h)).transpose()?,
        status: typed(row, WHAT, "status")?,
        size: column(row, WHAT, "size")?,
        volume_size: column(row, WHAT, "volume_size")?,
        digest: column(row, WHAT, "digest")?,
        retention_days: column(row, WHAT, "retention_days")?,
        created_at: column(row, WHAT, "created_at")?,
    })
}

impl Store {
    /// Records a snapshot about to be taken of `volume` (status `creating`).
    pub async fn begin_snapshot(
        &self,
        volume: &crate::VolumeRecord,
    ) -> Result<SnapshotRecord, StoreError> {
        let snapshot = SnapshotRecord {
            id: SnapshotId::generate(random()),
            volume_id: volume.id.clone(),
            app_id: volume.app_id.clone(),
            host_id: volume.host_id.clone(),
            status: SnapshotStatus::Creating,
            size: 0,
            volume_size: volume.size_gb,
            digest: String::new(),
            retention_days: volume.snapshot_retention,
            created_at: now_ms(),
        };
        sqlx::query(&format!(
            "INSERT INTO volume_snapshots ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(snapshot.id.as_str())
        .bind(snapshot.volume_id.as_str())
        .bind(snapshot.app_id.as_str())
        .bind(snapshot.host_id.as_ref().map(ToString::to_string))
        .bind(snapshot.status.as_str())
        .bind(snapshot.size)
        .bind(snapshot.volume_size)
        .bind(&snapshot.digest)
        .bind(snapshot.retention_days)
        .bind(snapshot.created_at)
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "recording a snapshot",
            "volume",
            volume.id.as_str(),
        ))?;
        Ok(snapshot)
    }

    /// Marks a snapshot written, with its archive's size and digest.
    pub async fn finish_snapshot(
        &self,
        id: &SnapshotId,
        size: i64,
        digest: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE volume_snapshots SET status = 'created', size = $1, digest = $2 WHERE id = $3",
        )
        .bind(size)
        .bind(digest)
        .bind(id.as_str())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "finishing a snapshot",
            "snapshot",
            id.as_str(),
        ))?;
        Ok(())
    }

    /// Marks a snapshot failed (its host refused or could not be reached).
    pub async fn fail_snapshot(&self, id: &SnapshotId) -> Result<(), StoreError> {
        sqlx::query("UPDATE volume_snapshots SET status = 'failed' WHERE id = $1")
            .bind(id.as_str())
            .execute(self.pool())
            .await
            .map_err(StoreError::database(
                "failing a snapshot",
                "snapshot",
                id.as_str(),
            ))?;
        Ok(())
    }

    /// Marks failed every snapshot still `creating` that began before `before` (its
    /// taker died with it: the control plane restarted). Returns how many.
    pub async fn fail_unfinished_snapshots(&self, before: i64) -> Result<u64, StoreError> {
        let updated = sqlx::query(
            "UPDATE volume_snapshots SET status = 'failed' WHERE status = 'creating' AND created_at < $1",
        )
        .bind(before)
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "failing unfinished snapshots",
            "snapshot",
            "all",
        ))?;
        Ok(updated.rows_affected())
    }

    /// One snapshot of an app.
    pub async fn snapshot(
        &self,
        app_id: &AppId,
        id: &SnapshotId,
    ) -> Result<SnapshotRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM volume_snapshots WHERE id = $1 AND app_id = $2"
        ))
        .bind(id.as_str())
        .bind(app_id.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database(
            "finding a snapshot",
            "snapshot",
            id.as_str(),
        ))?;
        row.as_ref()
            .map(snapshot_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                what: "snapshot",
                id: id.to_string(),
            })
    }

    /// A volume's snapshots, oldest first.
    pub async fn snapshots_of_volume(
        &self,
        volume: &VolumeId,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM volume_snapshots WHERE volume_id = $1 ORDER BY created_at, id"
        ))
        .bind(volume.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing snapshots",
            "volume",
            volume.as_str(),
        ))?;
        rows.iter().map(snapshot_from).collect()
    }

    /// An app's snapshots, of all its volumes, oldest first.
    pub async fn snapshots_of_app(&self, app: &AppId) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM volume_snapshots WHERE app_id = $1 ORDER BY created_at, id"
        ))
        .bind(app.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing snapshots",
            "app",
            app.as_str(),
        ))?;
        rows.iter().map(snapshot_from).collect()
    }

    /// Every snapshot, oldest first (for the retention sweep).
    pub async fn all_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM volume_snapshots ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("listing snapshots", "snapshot", "all"))?;
        rows.iter().map(snapshot_from).collect()
    }

    /// Volumes due their daily snapshot: in use (`created`), with daily snapshots on,
    /// made by `before`, with no
    /// snapshot (but failed ones) taken since `before`.
    pub async fn volumes_due_snapshot(
        &self,
        before: i64,
    ) -> Result<Vec<crate::VolumeRecord>, StoreError> {
        let columns = crate::volumes::COLUMNS
            .split(", ")
            .map(|c| format!("v.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM volumes v WHERE v.state = 'created' AND v.auto_backup_enabled = 1 AND v.created_at <= $1 \
             AND NOT EXISTS (SELECT 1 FROM volume_snapshots s WHERE s.volume_id = v.id \
             AND s.status <> 'failed' AND s.created_at >= $1) ORDER BY v.created_at, v.id"
        ))
        .bind(before)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "finding volumes due a snapshot",
            "volume",
            "all",
        ))?;
        rows.iter().map(crate::volumes::volume_from).collect()
    }

    /// Destroys every volume still `restoring` (its restorer died with the control plane
    /// that was filling it; the create never answered). Returns how many.
    pub async fn abandon_restoring_volumes(&self) -> Result<u64, StoreError> {
        let updated = sqlx::query(
            "UPDATE volumes SET state = 'destroyed', updated_at = $1 WHERE state = 'restoring'",
        )
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "abandoning unfinished restores",
            "volume",
            "all",
        ))?;
        Ok(updated.rows_affected())
    }

    /// Forgets a snapshot (after its host deleted the archive).
    pub async fn delete_snapshot(&self, id: &SnapshotId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM volume_snapshots WHERE id = $1")
            .bind(id.as_str())
            .execute(self.pool())
            .await
            .map_err(StoreError::database(
                "deleting a snapshot",
                "snapshot",
                id.as_str(),
            ))?;
        Ok(())
    }
}
