//! Volume snapshots (served under `/v1/apps/{app}/volumes/{id}/snapshots` by
//! `volumes`): copies of a volume's files kept on its host, taken on demand and once a
//! day, kept the volume's `snapshot_retention` days, and restored into a new volume on the
//! same host (`snapshot_id` at create).
//!
//! Each step is recorded before it is acted on: a snapshot row says `creating` before the
//! host writes the archive (a control plane that dies meanwhile leaves it `failed` at its
//! next start), a volume says `restoring` until its files are in place (one left so by a
//! dead control plane is destroyed at the next start: its create never answered).

use std::sync::Arc;
use std::time::Duration;

use aloft_store::{SnapshotRecord, VolumeRecord, VolumeState, now_ms};
use aloft_types::api::VolumeSnapshotResponse;
use aloft_types::{SnapshotId, time::rfc3339};

use crate::{ApiError, Inner};

/// How often the keeper looks for volumes due their daily snapshot and for expired ones.
const EVERY: Duration = Duration::from_secs(600);
/// A day, in milliseconds: volumes get a snapshot a day.
const DAY_MS: i64 = 24 * 3600 * 1000;

pub(crate) fn response(snapshot: &SnapshotRecord) -> VolumeSnapshotResponse {
    VolumeSnapshotResponse {
        id: snapshot.id.to_string(),
        size: snapshot.size,
        volume_size: snapshot.volume_size,
        digest: snapshot.digest.clone(),
        created_at: rfc3339(snapshot.created_at),
        status: snapshot.status.as_str().to_owned(),
        retention_days: Some(snapshot.retention_days),
    }
}

fn link_of(
    inner: &Inner,
    host: Option<&aloft_types::HostId>,
    what: &str,
) -> Result<Arc<dyn crate::HostLink>, ApiError> {
    let host = host.ok_or_else(|| ApiError::Unavailable(format!("{what} is on no host")))?;
    inner.links.get(host).ok_or_else(|| {
        ApiError::Unavailable(format!("the host of {what} ({host}) is not connected"))
    })
}

/// Takes a snapshot of `volume`: recorded, written by its host, then marked created (or
/// failed, with the host's reason returned).
pub(crate) async fn take(inner: &Inner, volume: &VolumeRecord) -> Result<SnapshotRecord, ApiError> {
    let link = link_of(
        inner,
        volume.host_id.as_ref(),
        &format!("volume {}", volume.id),
    )?;
    let key = crate::volume_keys::key_of(&inner.secrets_key, volume)?;
    let snapshot = inner.store.begin_snapshot(volume).await?;
    match link
        .snapshot_volume(&volume.id, key.as_ref(), &snapshot.id)
        .await
    {
        Ok(taken) => {
            let size = i64::try_from(taken.size).unwrap_or(i64::MAX);
            inner
                .store
                .finish_snapshot(&snapshot.id, size, &taken.digest)
                .await?;
            tracing::info!(volume = %volume.id, snapshot = %snapshot.id, size, "took a snapshot");
            Ok(inner.store.snapshot(&volume.app_id, &snapshot.id).await?)
        }
        Err(error) => {
            inner.store.fail_snapshot(&snapshot.id).await?;
            tracing::warn!(volume = %volume.id, snapshot = %snapshot.id, %error, "a snapshot failed");
            Err(error.into())
        }
    }
}

/// Fills the new `volume` (created `restoring`, on the snapshot's host) from
/// `snapshot`; it is `created` when its files are in place, destroyed when they cannot be.
pub(crate) async fn restore(
    inner: &Inner,
    snapshot: &SnapshotRecord,
    volume: &VolumeRecord,
) -> Result<VolumeRecord, ApiError> {
    let outcome = match link_of(
        inner,
        snapshot.host_id.as_ref(),
        &format!("snapshot {}", snapshot.id),
    ) {
        Ok(link) => match keys_for_restore(inner, snapshot, volume).await {
            Ok((from, into)) => link
                .restore_volume(&snapshot.id, from.as_ref(), &volume.id, &into)
                .await
                .map_err(ApiError::from),
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => {
            tracing::info!(volume = %volume.id, snapshot = %snapshot.id, "restored a volume");
            Ok(inner
                .store
                .set_volume_state(&volume.app_id, &volume.id, VolumeState::Created)
                .await?)
        }
        Err(error) => {
            // What the host may have unpacked goes too (it may not be reachable: then
            // nothing was unpacked by this attempt).
            if let Ok(link) = link_of(inner, volume.host_id.as_ref(), "the volume")
                && let Err(cleanup) = link.delete_volume(&volume.id).await
            {
                tracing::warn!(volume = %volume.id, %cleanup, "could not delete a failed restore's files");
            }
            inner
                .store
                .destroy_volume(&volume.app_id, &volume.id)
                .await?;
            Err(error)
        }
    }
}

/// The key `snapshot`'s archive was written with (its volume's, a volume destroyed since
/// included) and what the new `volume` is.
async fn keys_for_restore(
    inner: &Inner,
    snapshot: &SnapshotRecord,
    volume: &VolumeRecord,
) -> Result<
    (
        Option<aloft_agent_api::VolumeKey>,
        aloft_agent_api::VolumeFacts,
    ),
    ApiError,
> {
    let source = inner
        .store
        .volume(&snapshot.app_id, &snapshot.volume_id)
        .await?;
    Ok((
        crate::volume_keys::key_of(&inner.secrets_key, &source)?,
        crate::volume_keys::facts_of(&inner.secrets_key, volume)?,
    ))
}

/// The snapshot a new volume is to be restored from: one of the app's, and created.
pub(crate) async fn source_of(
    inner: &Inner,
    app: &aloft_store::App,
    id: &str,
) -> Result<SnapshotRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("snapshot {id}"));
    let parsed: SnapshotId = id.parse().map_err(|_| not_found())?;
    let snapshot = match inner.store.snapshot(&app.id, &parsed).await {
        Ok(snapshot) => snapshot,
        Err(aloft_store::StoreError::NotFound { .. }) => return Err(not_found()),
        Err(error) => return Err(error.into()),
    };
    if snapshot.status != aloft_store::SnapshotStatus::Created {
        return Err(ApiError::Conflict(format!(
            "snapshot_id {id}: the snapshot is {}, not created",
            snapshot.status.as_str()
        )));
    }
    Ok(snapshot)
}

/// Deletes the files of an app that is being deleted: its volumes' data and its
/// snapshots' archives, on their hosts (each host must be connected: data is not left
/// behind on a disk), then marks the volumes destroyed and forgets the snapshots. Safe to
/// run again after a failure.
pub(crate) async fn delete_app_files(
    inner: &Inner,
    app: &aloft_store::App,
) -> Result<(), ApiError> {
    for volume in inner.store.list_volumes(&app.id).await? {
        // A volume never placed has no files anywhere.
        if volume.host_id.is_some() {
            let link = link_of(
                inner,
                volume.host_id.as_ref(),
                &format!("volume {}", volume.id),
            )?;
            link.delete_volume(&volume.id).await?;
        }
        inner.store.detach_volume(&app.id, &volume.id).await?;
        inner.store.destroy_volume(&app.id, &volume.id).await?;
    }
    for snapshot in inner.store.snapshots_of_app(&app.id).await? {
        if snapshot.host_id.is_some() {
            let link = link_of(
                inner,
                snapshot.host_id.as_ref(),
                &format!("snapshot {}", snapshot.id),
            )?;
            link.delete_snapshot(&snapshot.id).await?;
        }
        inner.store.delete_snapshot(&snapshot.id).await?;
    }
    Ok(())
}

/// One pass of the keeper: deletes snapshots past their retention (archive first, then
/// the row), then takes the daily snapshot of each volume due one. A host that is not
/// connected is skipped until a later pass.
pub(crate) async fn keep(inner: &Inner, now: i64) -> Result<(), ApiError> {
    for snapshot in inner.store.all_snapshots().await? {
        if snapshot.expires_at() > now {
            continue;
        }
        let Some(link) = snapshot.host_id.as_ref().and_then(|h| inner.links.get(h)) else {
            continue;
        };
        if let Err(error) = link.delete_snapshot(&snapshot.id).await {
            tracing::warn!(snapshot = %snapshot.id, %error, "could not delete an expired snapshot");
            continue;
        }
        inner.store.delete_snapshot(&snapshot.id).await?;
        tracing::info!(snapshot = %snapshot.id, volume = %snapshot.volume_id, "deleted an expired snapshot");
    }
    for volume in inner.store.volumes_due_snapshot(now - DAY_MS).await? {
        if volume
            .host_id
            .as_ref()
            .and_then(|h| inner.links.get(h))
            .is_none()
        {
            continue;
        }
        // A failure is recorded on the snapshot and logged by take; the next pass retries.
        let _ = take(inner, &volume).await;
    }
    Ok(())
}

/// Settles what a previous run left half done, then runs [`keep`] every [`EVERY`].
pub(crate) async fn keeper(inner: Arc<Inner>) {
    match inner.store.fail_unfinished_snapshots(now_ms()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(n, "snapshots a previous run did not finish are failed"),
        Err(error) => tracing::warn!(%error, "could not settle unfinished snapshots"),
    }
    match inner.store.abandon_restoring_volumes().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            n,
            "volumes a previous run did not finish restoring are destroyed"
        ),
        Err(error) => tracing::warn!(%error, "could not settle unfinished restores"),
    }
    crate::periodic::every(
        inner,
        EVERY,
        "keeping volume snapshots",
        |inner| async move { keep(&inner, now_ms()).await },
    )
    .await;
}
