//! `/v1/apps/{app}/volumes`: a named piece of one host's disk, mounted by at most one
//! machine, growing but never shrinking. Machines that mount it are pinned to its host.

use std::sync::Arc;

use aloft_store::{NewVolume, VolumeRecord};
use aloft_types::api::ErrorBody;
use aloft_types::api::{
    CreateVolumeRequest, ExtendResponse, ExtendVolumeRequest, UpdateVolumeRequest, VolumeResponse,
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

fn refuse_backups(asked: Option<bool>) -> Result<(), ApiError> {
    if asked == Some(true) {
        return Err(ApiError::Unprocessable(
            "auto_backup_enabled: Aloft takes no volume backups; back the data up from the machine (pg_dump, say) and leave this unset or false".to_owned(),
        ));
    }
    Ok(())
}

#[utoipa::path(put, path = "/v1/apps/{app}/volumes/{id}", tag = "volumes", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The volume's id")), request_body = UpdateVolumeRequest, responses((status = 200, body = VolumeResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found", body = ErrorBody), (status = 422, description = "auto_backup_enabled asked for (Aloft takes no backups)", body = ErrorBody)), operation_id = "Volumes_update")]
async fn update(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    WriteApp(app): WriteApp,
    Body(request): Body<UpdateVolumeRequest>,
) -> Result<Json<VolumeResponse>, ApiError> {
    let volume = volume_for(&inner, &app, &id).await?;
    refuse_backups(request.auto_backup_enabled)?;
    let volume = match request.snapshot_retention {
        Some(days) => {
            inner
                .store
                .set_volume_retention(&app.id, &volume.id, check_retention(days)?)
                .await?
        }
        None => volume,
    };
    Ok(Json(response(&volume)))
}

/// What Fly's API offers for a new volume that Aloft cannot do: said, never ignored
/// (fly-go sends each of these as `null`, which is fine).
fn refuse_unsupported(request: &CreateVolumeRequest) -> Result<(), ApiError> {
    let refused = |what: String| Err(ApiError::Unprocessable(what));
    refuse_backups(request.auto_backup_enabled)?;
    if let Some(fstype) = request.fstype.as_deref().filter(|f| *f != "ext4") {
        return refused(format!(
            "fstype {fstype:?}: a volume is a directory on the host's filesystem here; only \"ext4\" is supported"
        ));
    }
    if let Some(snapshot) = &request.snapshot_id {
        return refused(format!(
            "snapshot_id {snapshot:?}: Aloft keeps no volume snapshots to restore from"
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
        auto_backup_enabled: false,
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

/// A volume of the app named `name` in `region` that no machine uses, or a new one of
/// `size_gb` (1 when 0), on a host of the region.
pub(crate) async fn free_or_new(
    inner: &Inner,
    app: &aloft_store::App,
    name: &str,
    region: &str,
    size_gb: u32,
) -> Result<VolumeRecord, ApiError> {
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
                && v.state != aloft_store::VolumeState::Destroyed
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
    let host = crate::machines::place(
        inner,
        region,
        crate::machines::Placing::Volume { app: &app.id },
    )
    .await?;
    let volume = inner
        .store
        .create_volume(NewVolume {
            app_id: app.id.clone(),
            name: name.to_owned(),
            region: region.to_owned(),
            host_id: Some(host),
            size_gb,
            encrypted: true,
            snapshot_retention: 5,
        })
        .await?;
    tracing::info!(app = %app.name, volume = %volume.id, name, region, size_gb, "created a volume for a mount");
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
    let size_gb = request.size_gb.unwrap_or(1);
    if !(1..=MAX_VOLUME_GB).contains(&size_gb) {
        return Err(ApiError::BadRequest(format!(
            "size_gb is {size_gb}; a volume is 1 to {MAX_VOLUME_GB} GB"
        )));
    }
    let retention = check_retention(request.snapshot_retention.unwrap_or(5))?;
    let region = request
        .region
        .unwrap_or_else(|| inner.config.default_region.clone());
    let region: RegionCode = region
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("region: {e}")))?;
    let host = crate::machines::place(
        &inner,
        region.as_str(),
        crate::machines::Placing::Volume { app: &app.id },
    )
    .await?;
    let volume = inner
        .store
        .create_volume(NewVolume {
            app_id: app.id.clone(),
            name: request.name,
            region: region.to_string(),
            host_id: Some(host),
            size_gb,
            encrypted: request.encrypted.unwrap_or(true),
            snapshot_retention: retention,
        })
        .await?;
    Ok(Json(response(&volume)))
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
    let volume = inner
        .store
        .extend_volume(&app.id, &volume.id, request.size_gb)
        .await?;
    Ok(Json(ExtendResponse {
        volume: response(&volume),
        needs_restart: false,
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
    let volume = inner.store.destroy_volume(&app.id, &volume.id).await?;
    Ok(Json(response(&volume)))
}
