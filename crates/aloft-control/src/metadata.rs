//! A machine's metadata, read and changed in place as Fly's API does it (no new version,
//! no restart), and `suspend`, which a container cannot do: it stops the machine and says
//! so in the event, as Fly does where suspend is not available.

use std::collections::BTreeMap;
use std::sync::Arc;

use aloft_types::api::{ErrorBody, OkResponse};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::ReadApp;
use crate::json::Body;
use crate::machines::{machine_for, stop_machine, writable_machine};
use crate::{ApiError, Inner, Principal};

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(get_all, update_put, update_patch))
        .routes(routes!(get_one, set_one, delete_one))
        .routes(routes!(suspend))
}

/// `POST .../metadata/{key}`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
struct SetMetadata {
    value: String,
}

/// `PUT|PATCH .../metadata` (Fly's `updateMetadataRequest`): keys to set, a `null` or
/// empty value removes one; `machine_version`, when given, must be the machine's current
/// version (its number or its `instance_id`), else 412.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
struct UpdateMetadata {
    #[serde(default)]
    metadata: BTreeMap<String, Option<String>>,
    #[serde(default)]
    machine_version: Option<String>,
}

/// `GET .../metadata/{key}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct MetadataValue {
    value: String,
}

/// Longest key and value accepted.
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 4096;

fn check_key(key: &str) -> Result<(), ApiError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "metadata key {key:?}: 1 to {MAX_KEY} letters, digits, `_`, `-` or `.`"
        )))
    }
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/metadata", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, description = "The machine's metadata, key to value", body = BTreeMap<String, String>), (status = "4XX", description = "Missing or invalid token, not found", body = ErrorBody)), operation_id = "Machines_metadata_get")]
async fn get_all(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    Ok(Json(machine.config.metadata))
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/metadata/{key}", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id"), ("key" = String, Path)), responses((status = 200, body = MetadataValue), (status = "4XX", description = "Missing or invalid token, no such machine or key", body = ErrorBody)), operation_id = "Machines_metadata_get_key")]
async fn get_one(
    State(inner): State<Arc<Inner>>,
    Path((_, id, key)): Path<(String, String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<MetadataValue>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    machine
        .config
        .metadata
        .get(&key)
        .map(|value| {
            Json(MetadataValue {
                value: value.clone(),
            })
        })
        .ok_or_else(|| ApiError::not_found(format!("metadata key {key} of machine {id}")))
}

#[utoipa::path(put, path = "/v1/apps/{app}/machines/{id}/metadata", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), request_body = UpdateMetadata, responses((status = 204, description = "Changed, without a restart"), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody), (status = 412, description = "machine_version is not the machine's current version", body = ErrorBody)), operation_id = "Machines_metadata_update_put")]
async fn update_put(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(request): Body<UpdateMetadata>,
) -> Result<StatusCode, ApiError> {
    update(&inner, &principal, &app, &id, &headers, request).await
}

#[utoipa::path(patch, path = "/v1/apps/{app}/machines/{id}/metadata", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), request_body = UpdateMetadata, responses((status = 204, description = "Changed, without a restart"), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody), (status = 412, description = "machine_version is not the machine's current version", body = ErrorBody)), operation_id = "Machines_metadata_update")]
async fn update_patch(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(request): Body<UpdateMetadata>,
) -> Result<StatusCode, ApiError> {
    update(&inner, &principal, &app, &id, &headers, request).await
}

/// Sets and removes several keys at once (Fly's PUT and PATCH do the same).
async fn update(
    inner: &Inner,
    principal: &Principal,
    app: &str,
    id: &str,
    headers: &HeaderMap,
    request: UpdateMetadata,
) -> Result<StatusCode, ApiError> {
    for (key, value) in &request.metadata {
        check_key(key)?;
        if value.as_ref().is_some_and(|v| v.len() > MAX_VALUE) {
            return Err(ApiError::BadRequest(format!(
                "metadata value of {key}: at most {MAX_VALUE} bytes"
            )));
        }
    }
    let (app, machine) = writable_machine(inner, principal, app, id, headers).await?;
    let expected = match request.machine_version.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(given) if given == machine.instance_id || given == machine.version.to_string() => {
            Some(machine.version)
        }
        Some(given) => {
            return Err(ApiError::PreconditionFailed(format!(
                "machine_version {given:?}: machine {id} is at version {} (instance {})",
                machine.version, machine.instance_id
            )));
        }
    };
    let changes: Vec<(&str, Option<&str>)> = request
        .metadata
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_deref().filter(|v| !v.is_empty())))
        .collect();
    match inner
        .store
        .change_machine_metadata(&app.id, &machine.id, &changes, expected)
        .await
    {
        Ok(_) => {}
        // The machine changed between the check and the write.
        Err(aloft_store::StoreError::Conflict { reason, .. }) if expected.is_some() => {
            return Err(ApiError::PreconditionFailed(format!(
                "machine_version: machine {id} changed meanwhile ({reason})"
            )));
        }
        Err(error) => return Err(error.into()),
    }
    inner.catalog_dirty.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/metadata/{key}", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id"), ("key" = String, Path)), request_body = SetMetadata, responses((status = 204, description = "Set, without a restart"), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_metadata_set")]
async fn set_one(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    Body(request): Body<SetMetadata>,
) -> Result<StatusCode, ApiError> {
    check_key(&key)?;
    if request.value.len() > MAX_VALUE {
        return Err(ApiError::BadRequest(format!(
            "metadata value of {key}: at most {MAX_VALUE} bytes"
        )));
    }
    let (app, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    inner
        .store
        .set_machine_metadata(&app.id, &machine.id, &key, Some(&request.value))
        .await?;
    // Metadata feeds the catalog (`fly_process_group`, DNS), so it is rebuilt now.
    inner.catalog_dirty.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/apps/{app}/machines/{id}/metadata/{key}", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id"), ("key" = String, Path)), responses((status = 204, description = "Removed (or was not there)"), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_metadata_delete")]
async fn delete_one(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    check_key(&key)?;
    let (app, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    inner
        .store
        .set_machine_metadata(&app.id, &machine.id, &key, None)
        .await?;
    inner.catalog_dirty.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/suspend", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, description = "A container cannot be suspended: the machine is stopped instead, and its `suspend` event says so", body = OkResponse), (status = "4XX", description = "Missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_suspend")]
async fn suspend(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    let note = "machines here run as containers, which cannot be suspended: stopped instead";
    stop_machine(
        &inner,
        &machine,
        (aloft_types::EventKind::Suspend, json!({ "note": note })),
        None,
        None,
    )
    .await
}
