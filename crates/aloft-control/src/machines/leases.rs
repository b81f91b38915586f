//! Machine leases (Fly's `/lease`): a nonce that a writer must present while it holds
//! the lease.

use std::sync::Arc;

use aloft_store::MachineRecord;
use aloft_types::api::{ErrorBody, LeaseData, LeaseResponse};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;

use super::{LEASE_NONCE_HEADER, machine_for};
use crate::access::{ReadApp, WriteApp};
use crate::json::OptionalBody;
use crate::wire::OkResponse;
use crate::{ApiError, Inner, Principal};

/// While a lease is held, a mutation must carry its nonce.
pub(super) fn check_lease(machine: &MachineRecord, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(lease) = &machine.lease else {
        return Ok(());
    };
    match headers
        .get(LEASE_NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(nonce) if nonce == lease.nonce => Ok(()),
        Some(_) => Err(ApiError::PreconditionFailed(format!(
            "the lease nonce does not match the lease on machine {}",
            machine.id
        ))),
        None => Err(ApiError::PreconditionFailed(format!(
            "machine {} is leased by {} until {}; send its nonce in `{LEASE_NONCE_HEADER}`",
            machine.id,
            lease.owner,
            aloft_types::time::rfc3339(lease.expires_at)
        ))),
    }
}

/// `POST .../lease` body.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
pub(super) struct LeaseRequest {
    /// Seconds.
    #[serde(default)]
    pub(super) ttl: Option<u64>,
    #[serde(default)]
    pub(super) description: Option<String>,
}

pub(super) fn lease_json(machine: &MachineRecord, lease: &aloft_store::Lease) -> LeaseResponse {
    LeaseResponse {
        status: "success".to_owned(),
        data: LeaseData {
            nonce: lease.nonce.clone(),
            expires_at: lease.expires_at / 1000,
            owner: lease.owner.clone(),
            description: lease.description.clone(),
            version: machine.version.to_string(),
        },
    }
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/lease", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = LeaseResponse), (status = "4XX", description = "Missing or invalid token, no such machine, or no lease on it (404)", body = ErrorBody)), operation_id = "Machines_show_lease")]
pub(super) async fn show_lease(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<LeaseResponse>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    let lease = machine
        .lease
        .as_ref()
        .ok_or_else(|| ApiError::not_found(format!("lease on machine {id}")))?;
    Ok(Json(lease_json(&machine, lease)))
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/lease", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), request_body = Option<LeaseRequest>, responses((status = 200, body = LeaseResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_acquire_lease")]
pub(super) async fn acquire_lease(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((_, id)): Path<(String, String)>,
    WriteApp(app): WriteApp,
    headers: HeaderMap,
    OptionalBody(request): OptionalBody<LeaseRequest>,
) -> Result<Json<LeaseResponse>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    let ttl = request.ttl.unwrap_or(30).clamp(1, 3600);
    let nonce = headers
        .get(LEASE_NONCE_HEADER)
        .and_then(|v| v.to_str().ok());
    let lease = inner
        .store
        .acquire_lease(
            &app.id,
            &machine.id,
            i64::try_from(ttl).unwrap_or(3600) * 1000,
            &principal.token.name,
            request.description.as_deref().unwrap_or(""),
            nonce,
        )
        .await?;
    Ok(Json(lease_json(&machine, &lease)))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/machines/{id}/lease", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_release_lease")]
pub(super) async fn release_lease(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    WriteApp(app): WriteApp,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    let nonce = headers
        .get(LEASE_NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("send the lease's nonce in `{LEASE_NONCE_HEADER}`"))
        })?;
    inner
        .store
        .release_lease(&app.id, &machine.id, nonce)
        .await?;
    Ok(Json(OkResponse {
        ok: true,
        previous_state: None,
    }))
}
