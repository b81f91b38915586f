//! Volumes' encryption keys: made when a volume is (where its host can encrypt), kept
//! sealed with the secrets key, unsealed only to hand to the volume's host.

use aloft_store::VolumeRecord;

use crate::{ApiError, Inner};

/// Whether a new volume on `host` is encrypted at rest, with its key made and sealed
/// when it is. `asked` is the request's `encrypted`: Fly encrypts unless told not to,
/// and so does Aloft where the host can (ext4 encryption); asking for it on a host that
/// cannot is refused, never quietly ignored.
pub(crate) async fn key_for(
    inner: &Inner,
    host: &aloft_types::HostId,
    asked: Option<bool>,
) -> Result<Option<String>, ApiError> {
    if asked == Some(false) {
        return Ok(None);
    }
    let record = inner.store.host_record(host).await?;
    if !record.host.encrypts_volumes {
        if asked == Some(true) {
            return Err(ApiError::Unprocessable(format!(
                "encrypted: host {host} cannot encrypt volumes at rest (its volumes are not ext4 filesystems on a kernel with ext4 encryption); ask for encrypted false (aloft volumes create --no-encryption)"
            )));
        }
        return Ok(None);
    }
    let key = aloft_agent_api::VolumeKey::from_bytes(aloft_store::random());
    inner.secrets_key.encrypt(&key.to_hex()).map(Some)
}

/// The key `volume`'s files are encrypted with, unsealed; `None` when it is not
/// encrypted.
pub(crate) fn key_of(
    secrets_key: &crate::SecretsKey,
    volume: &VolumeRecord,
) -> Result<Option<aloft_agent_api::VolumeKey>, ApiError> {
    let Some(sealed) = &volume.key_sealed else {
        return Ok(None);
    };
    let hex = secrets_key.decrypt(sealed)?;
    aloft_agent_api::VolumeKey::from_hex(&hex)
        .map(Some)
        .ok_or_else(|| {
            ApiError::Internal(format!("volume {}: its stored key is malformed", volume.id).into())
        })
}

/// What `volume`'s host needs to make it ready: its size and key.
pub(crate) fn facts_of(
    secrets_key: &crate::SecretsKey,
    volume: &VolumeRecord,
) -> Result<aloft_agent_api::VolumeFacts, ApiError> {
    Ok(aloft_agent_api::VolumeFacts {
        size_gb: u64::try_from(volume.size_gb).unwrap_or(0),
        key: key_of(secrets_key, volume)?,
    })
}
