//! Volumes and their snapshots as the API shows them (Fly's field names).

use serde::{Deserialize, Serialize};

/// `POST /v1/apps/{app}/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateVolumeRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<i64>,
    /// Encrypt the volume's files at rest (the default, as on Fly); `false` keeps them
    /// plain. `true` on a host that cannot encrypt is refused (422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_unique_zone: Option<bool>,
    /// Daily snapshots (flyctl's `--scheduled-snapshots`); on unless `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
    /// `ext4` (the default) only: a volume is a directory on the host's filesystem here,
    /// so `raw` block volumes are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// A snapshot of the app (`vs_...`) to fill the new volume from; the volume is made on
    /// the snapshot's host, at least as big as the snapshot's volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Forking another volume: refused (not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume_id: Option<String>,
}

impl CreateVolumeRequest {
    /// A volume named `name`, everything else as the API defaults it.
    pub fn named(name: impl Into<String>) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: name.into(),
            region: None,
            size_gb: None,
            encrypted: None,
            snapshot_retention: None,
            require_unique_zone: None,
            auto_backup_enabled: None,
            fstype: None,
            snapshot_id: None,
            source_volume_id: None,
        }
    }
}

/// `PUT /v1/apps/{app}/volumes/{id}`: Fly's volume update.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateVolumeRequest {
    /// Days snapshots are kept (1 to 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention: Option<i64>,
    /// Daily snapshots on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_backup_enabled: Option<bool>,
}

/// `PUT /v1/apps/{app}/volumes/{id}/extend`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExtendVolumeRequest {
    pub size_gb: i64,
}

/// A volume as the API shows it (Fly's fields).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeResponse {
    pub id: String,
    pub name: String,
    pub state: String,
    pub size_gb: i64,
    pub region: String,
    pub zone: String,
    /// Whether the volume's files are encrypted at rest on its host (ext4 encryption with
    /// the volume's own key).
    pub encrypted: bool,
    pub attached_machine_id: Option<String>,
    pub attached_alloc_id: Option<String>,
    pub snapshot_retention: i64,
    pub host_status: String,
    pub created_at: String,
    /// Whether it gets a snapshot a day.
    #[serde(default)]
    pub auto_backup_enabled: bool,
    /// Always `ext4`.
    #[serde(default)]
    pub fstype: String,
    /// Always empty (no dedicated hosts).
    #[serde(default)]
    pub host_dedication_id: String,
}

/// A volume's snapshot as the API shows it (Fly's `VolumeSnapshot`): a copy of the
/// volume's files kept on its host, from which a new volume can be created
/// (`snapshot_id`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeSnapshotResponse {
    pub id: String,
    /// Bytes the snapshot takes.
    pub size: i64,
    /// The volume's size in GB when it was taken (a volume restored from it is at least
    /// this big).
    pub volume_size: i64,
    /// `sha256:` of the snapshot's archive; empty until it is `created`.
    pub digest: String,
    /// RFC 3339.
    pub created_at: String,
    /// `creating`, `created` or `failed`.
    pub status: String,
    /// Days it is kept (the volume's `snapshot_retention` when it was taken).
    pub retention_days: Option<i64>,
}

/// The answer to an extend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExtendResponse {
    pub volume: VolumeResponse,
    pub needs_restart: bool,
}
