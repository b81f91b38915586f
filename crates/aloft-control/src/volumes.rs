//! `/v1/apps/{app}/volumes`: a named piece of one host's disk, mounted by at most one
//! machine, growing but never shrinking. Machines that mount it are pinned to its host.

use std::sync::Arc;

use aloft_store::{NewVolume, VolumeRecord};
use aloft_types::api::ErrorBody;
use aloft_types::api::{
    CreateVolumeRequest, ExtendResponse, ExtendVolumeRequest, UpdateVolumeRequest, VolumeResponse,
    VolumeSnapshotResponse,
};
use aloft_types::{RegionCode, VolumeId};
use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{ReadApp, WriteApp};
use crate::json::Body;
use crate::{ApiError, Inner};

/// Largest volume, in GB (Fly's limit).
pub(crate) const MAX_VOLUME_GB: i64 = 500;

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, destroy))
        .routes(routes!(extend))
        .routes(routes!(list_snapshots, create_snapshot))
}

fn check_retention(days: i64) -> Result<i64, ApiError> {
    if (1..=60).contains(&days) {
        Ok(days)
    } else {
        Err(ApiError::BadRequest(format!(
            "snapshot_retention is {days}; keep snapshots 1 to 60 days"
        )))
    }
}

#[utoipa::path(put, path = "/v1/apps/{app}/volumes/{id}", tag = "volumes", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The volume's id")), request_body = UpdateVolumeRequest, responses((status = 200, body = VolumeResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found", body = ErrorBody), (status = 422, description = "A volume setting Aloft cannot honour", body = ErrorBody)), operation_id = "Volumes_update")]
async fn update(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    WriteApp(app): WriteApp,
    Body(request): Body<UpdateVolumeRequest>,
) -> Result<Json<VolumeResponse>, ApiError> {
    let volume = volume_for(&inner, &app, &id).await?;
    let retention = request
        .snapshot_retention
        .map(check_retention)
        .transpose()?;
    let volume = inner
        .store
        .update_volume_settings(&app.id, &volume.id, retention, request.auto_backup_enabled)
        .await?;
    Ok(Json(response(&volume)))
}

/// What Fly's API offers for a new volume that Aloft cannot do: said, never ignored
/// (fly-go sends each of these as `null`, which is fine).
fn refuse_unsupported(request: &CreateVolumeRequest) -> Result<(), ApiError> {
    let refused = |what: String| Err(ApiError::Unprocessable(what));
    if let Some(fstype) = request.fstype.as_deref().filter(|f| *f != "ext4") {
        return refused(format!(
            "fstype {fstype:?}: a volume is a directory on the host's filesystem here; only \"ext4\" is supported"
        ));
    }
    if let Some(source) = &request.source_volume_id {
        return refused(format!(
            "source_volume_id {source:?}: forking a volume is not supported; create an empty one and copy the data"
        ));
    }
    Ok(())
}

pub(crate) fn response(volume: &VolumeRecord) -> VolumeResponse {
    VolumeResponse {
        id: volume.id.to_string(),
        name: volume.name.clone(),
        state: volume.state.as_str().to_owned(),
        size_gb: volume.size_gb,
        region: volume.region.clone(),
        zone: volume
            .host_id
            .as_ref()
            .map(|h| h.as_str()[..4].to_owned())
            .unwrap_or_default(),
        encrypted: volume.encrypted,
        attached_machine_id: volume.attached_machine_id.as_ref().map(ToString::to_string),
        attached_alloc_id: volume.attached_machine_id.as_ref().map(ToString::to_string),
        snapshot_retention: volume.snapshot_retention,
        host_status: "ok".to_owned(),
        created_at: aloft_types::time::rfc3339(volume.created_at),
        auto_backup_enabled: volume.auto_backup_enabled,
        fstype: "ext4".to_owned(),
        host_dedication_id: String::new(),
    }
}

fn check_volume_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 30
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "volume name {name:?} must be 1 to 30 lowercase letters, digits or underscores"
        )))
    }
}

pub(crate) async fn volume_for(
    inner: &Inner,
    app: &aloft_store::App,
    id: &str,
) -> Result<VolumeRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("volume {id}"));
    let parsed: VolumeId = id.parse().map_err(|_| not_found())?;
    match inner.store.volume(&app.id, &parsed).await {
        Ok(volume) if volume.state != aloft_store::VolumeState::Destroyed => Ok(volume),
        Ok(_) | Err(aloft_store::StoreError::NotFound { .. }) => Err(not_found()),
        Err(error) => Err(error.into()),
    }
}

/// A volume of the app named as `mount` names it, in `region`, that no machine uses, or a
/// new one of the mount's `size_gb` (1 when 0) and snapshot settings, on a host of the
/// region.
pub(crate) async fn free_or_new(
    inner: &Inner,
    app: &aloft_store::App,
    mount: &aloft_types::machine::MachineMount,
    region: &str,
) -> Result<VolumeRecord, ApiError> {
    let (name, size_gb) = (mount.name.as_str(), mount.size_gb);
    let retention = match mount.snapshot_retention {
        0 => 5,
        days => check_retention(i64::from(days))
            .map_err(|e| ApiError::BadRequest(format!("config.mounts[0].{e}")))?,
    };
    check_volume_name(name)?;
    if let Some(free) = inner
        .store
        .list_volumes(&app.id)
        .await?
        .into_iter()
        .find(|v| {
            v.name == name
                && v.region == region
                && v.attached_machine_id.is_none()
                && v.state == aloft_store::VolumeState::Created
        })
    {
        return Ok(free);
    }
    let size_gb = i64::from(size_gb.max(1));
    if size_gb > MAX_VOLUME_GB {
        return Err(ApiError::BadRequest(format!(
            "volume {name}: size_gb is {size_gb}; a volume is 1 to {MAX_VOLUME_GB} GB"
        )));
    }
    // The machine's create or update holds the organization's quota lock.
    let org = inner.store.org(&app.org_id).await?;
    crate::quotas::fits(inner, &org, crate::quotas::Ask::VolumeGb(size_gb)).await?;
    let host = crate::machines::place(
        inner,
        region,
        crate::machines::Placing::Volume { app: &app.id },
    )
    .await?;
    let key_sealed = crate::volume_keys::key_for(inner, &host, None).await?;
    let volume = inner
        .store
        .create_volume(NewVolume {
            app_id: app.id.clone(),
            name: name.to_owned(),
            region: region.to_owned(),
            host_id: Some(host),
            size_gb,
            encrypted: key_sealed.is_some(),
            key_sealed,
            snapshot_retention: retention,
            auto_backup_enabled: mount.scheduled_snapshots.unwrap_or(true),
        })
        .await?;
    tracing::info!(app = %app.name, volume = %volume.id, name, region, size_gb, "created a volume for a mount");
    aloft_crash::reach(aloft_crash::Point::VolumeStored);
    Ok(volume)
}

#[utoipa::path(post, path = "/v1/apps/{app}/volumes", tag = "volumes", params(("app" = String, Path, description = "The app's name")), request_body = CreateVolumeRequest, responses((status = 200, body = VolumeResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Volumes_create")]
async fn create(
    State(inner): State<Arc<Inner>>,
    WriteApp(app): WriteApp,
    Body(request): Body<CreateVolumeRequest>,
) -> Result<Json<VolumeResponse>, ApiError> {
    check_volume_name(&request.name)?;
    refuse_unsupported(&request)?;
    let source = match request.snapshot_id.as_deref().filter(|s| !s.is_empty()) {
        Some(id) => Some(crate::snapshots::source_of(&inner, &app, id).await?),
        None => None,
    };
    // Restored, a volume is at least as big as the one the snapshot was taken of.
    let smallest = source.as_ref().map_or(1, |s| s.volume_size.max(1));
    let size_gb = request.size_gb.unwrap_or(smallest);
    if !(1..=MAX_VOLUME_GB).contains(&size_gb) {
        return Err(ApiError::BadRequest(format!(
            "size_gb is {size_gb}; a volume is 1 to {MAX_VOLUME_GB} GB"
        )));
    }
    if size_gb < smallest {
        return Err(ApiError::BadRequest(format!(
            "size_gb is {size_gb}; the snapshot is of a {smallest} GB volume, so its copy needs at least {smallest} GB"
        )));
    }
    let retention = check_retention(request.snapshot_retention.unwrap_or(5))?;
    let quota =
        crate::quotas::check_app(&inner, &app, crate::quotas::Ask::VolumeGb(size_gb)).await?;
    // A snapshot is kept on its volume's host: its copy is made there, in its region.
    let kept = match &source {
        Some(snapshot) => Some(snapshot_host(&inner, snapshot).await?),
        None => None,
    };
    let region = request
        .region
        .filter(|r| !r.is_empty())
        .or_else(|| kept.as_ref().map(|(_, region)| region.clone()))
        .unwrap_or_else(|| inner.config.default_region.clone());
    let region: RegionCode = region
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("region: {e}")))?;
    let host = match (&source, kept) {
        (Some(snapshot), Some((host, kept_in))) => {
            if kept_in != region.as_str() {
                return Err(ApiError::BadRequest(format!(
                    "region is {region}; snapshot {} is kept in {kept_in}, where its copy must be made",
                    snapshot.id
                )));
            }
            host
        }
        _ => {
            crate::machines::place(
                &inner,
                region.as_str(),
                crate::machines::Placing::Volume { app: &app.id },
            )
            .await?
        }
    };
    let key_sealed = crate::volume_keys::key_for(&inner, &host, request.encrypted).await?;
    let volume = inner
        .store
        .create_volume(NewVolume {
            app_id: app.id.clone(),
            name: request.name,
            region: region.to_string(),
            host_id: Some(host),
            size_gb,
            encrypted: key_sealed.is_some(),
            key_sealed,
            snapshot_retention: retention,
            auto_backup_enabled: request.auto_backup_enabled.unwrap_or(true),
        })
        .await?;
    drop(quota);
    let volume = match &source {
        Some(snapshot) => {
            let restoring = inner
                .store
                .set_volume_state(&app.id, &volume.id, aloft_store::VolumeState::Restoring)
                .await?;
            crate::snapshots::restore(&inner, snapshot, &restoring).await?
        }
        None => volume,
    };
    Ok(Json(response(&volume)))
}

/// The host that keeps `snapshot`, with its region: a volume restored from it is made
/// there.
async fn snapshot_host(
    inner: &Inner,
    snapshot: &aloft_store::SnapshotRecord,
) -> Result<(aloft_types::HostId, String), ApiError> {
    let id = &snapshot.id;
    let host = snapshot
        .host_id
        .clone()
        .ok_or_else(|| ApiError::Unavailable(format!("snapshot {id} is kept on no host")))?;
    let record = inner
        .store
        .list_hosts()
        .await?
        .into_iter()
        .find(|h| h.id == host)
        .ok_or_else(|| {
            ApiError::Unavailable(format!(
                "snapshot {id} is kept on host {host}, which is gone"
            ))
        })?;
    Ok((host, record.region))
}

#[utoipa::path(get, path = "/v1/apps/{app}/volumes", tag = "volumes", params(("app" = String, Path, description = "The app's name")), responses((status = 200, body = Vec<VolumeResponse>), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Volumes_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
) -> Result<Json<Vec<VolumeResponse>>, ApiError> {
    Ok(Json(
        inner
            .store
            .list_volumes(&app.id)
            .await?
            .iter()
            .map(response)
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/apps/{app}/volumes/{id}", tag = "volumes", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The volume's id")), responses((status = 200, body = VolumeResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Volumes_show")]
async fn show(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<VolumeResponse>, ApiError> {
    Ok(Json(response(&volume_for(&inner, &app, &id).await?)))
}

#[utoipa::path(put, path = "/v1/apps/{app}/volumes/{id}/extend", tag = "volumes", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The volume's id")), request_body = ExtendVolumeRequest, responses((status = 200, body = ExtendResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Volumes_extend")]
async fn extend(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    WriteApp(app): WriteApp,
    Body(request): Body<ExtendVolumeRequest>,
) -> Result<Json<ExtendResponse>, ApiError> {
    let volume = volume_for(&inner, &app, &id).await?;
    if request.size_gb > MAX_VOLUME_GB {
        return Err(ApiError::BadRequest(format!(
            "size_gb is {}; the largest volume is {MAX_VOLUME_GB} GB",
            request.size_gb
        )));
    }
    if request.size_gb <= volume.size_gb {
        return Err(ApiError::BadRequest(format!(
            "volume {id} is {} GB; it can only grow (asked for {} GB)",
            volume.size_gb, request.size_gb
        )));
    }
    let quota = crate::quotas::check_app(
        &inner,
        &app,
        crate::quotas::Ask::VolumeGb(request.size_gb - volume.size_gb),
    )
    .await?;
    let volume = inner
        .store
        .extend_volume(&app.id, &volume.id, request.size_gb)
        .await?;
    drop(quota);
    // The filesystem grows when its machine next starts (the agent grows it, online,
    // before binding it): a machine running on it now needs a restart to see the room.
    let needs_restart = match &volume.attached_machine_id {
        Some(machine) => matches!(
            inner.store.machine_by_id(machine).await.map(|m| m.state),
            Ok(aloft_types::MachineState::Started | aloft_types::MachineState::Starting)
        ),
        None => false,
    };
    Ok(Json(ExtendResponse {
        volume: response(&volume),
        needs_restart,
    }))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/volumes/{id}", tag = "volumes", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The volume's id")), responses((status = 200, body = VolumeResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Volumes_destroy")]
async fn destroy(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    WriteApp(app): WriteApp,
) -> Result<Json<VolumeResponse>, ApiError> {
    let volume = volume_for(&inner, &app, &id).await?;
    if let Some(machine) = &volume.attached_machine_id {
        return Err(ApiError::Conflict(format!(
            "volume {id} is attached to machine {machine}; destroy the machine first"
        )));
    }
    // The files go first (the host must be reachable: a destroyed volume's data is not
    // left behind on a disk); deleting them again on a retry is harmless.
    if let Some(host) = &volume.host_id {
        let link = inner.links.get(host).ok_or_else(|| {
            ApiError::Unavailable(format!(
                "the host of volume {id} ({host}) is not connected; its files cannot be deleted now, try again"
            ))
        })?;
        link.delete_volume(&volume.id).await?;
    }
    let volume = inner.store.destroy_volume(&app.id, &volume.id).await?;
    tracing::info!(app = %app.name, volume = %volume.id, "destroyed a volume and its files");
    Ok(Json(response(&volume)))
}

#[utoipa::path(get, path = "/v1/apps/{app}/volumes/{id}/snapshots", tag = "volumes", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The volume's id")), responses((status = 200, body = Vec<VolumeSnapshotResponse>), (status = "4XX", description = "Missing or invalid token, no such app or volume", body = ErrorBody)), operation_id = "Volumes_list_snapshots")]
async fn list_snapshots(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<Vec<VolumeSnapshotResponse>>, ApiError> {
    let volume = volume_for(&inner, &app, &id).await?;
    let snapshots = inner.store.snapshots_of_volume(&volume.id).await?;
    Ok(Json(
        snapshots.iter().map(crate::snapshots::response).collect(),
    ))
}

#[utoipa::path(post, path = "/v1/apps/{app}/volumes/{id}/snapshots", tag = "volumes", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The volume's id")), responses((status = 200, body = VolumeSnapshotResponse), (status = "4XX", description = "Missing or invalid token, no such app or volume", body = ErrorBody), (status = 503, description = "The volume's host is not connected or could not write the snapshot", body = ErrorBody)), operation_id = "Volumes_create_snapshot")]
async fn create_snapshot(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    WriteApp(app): WriteApp,
) -> Result<Json<VolumeSnapshotResponse>, ApiError> {
    let volume = volume_for(&inner, &app, &id).await?;
    if volume.state == aloft_store::VolumeState::Restoring {
        return Err(ApiError::Conflict(format!(
            "volume {id} is still being restored from a snapshot"
        )));
    }
    Ok(Json(crate::snapshots::response(
        &crate::snapshots::take(&inner, &volume).await?,
    )))
}
