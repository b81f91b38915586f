//! `/v1/apps/{app}/machines/{id}/memory` (Fly's paths): a running machine's memory limit,
//! read and changed in place. Fly moves a microVM's balloon; here the container's memory
//! limit changes (no restart), up to the machine's size, until the machine next starts
//! (then its config's size applies again). Reclaiming memory from a balloon has no
//! counterpart for a container, whose unused memory is already the host's: it is refused
//! with that reason.

use std::sync::Arc;

use aloft_types::api::{ErrorBody, MemoryResponse, SetMemoryLimitRequest};
use aloft_types::machine::MachineGuest;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::ReadApp;
use crate::json::Body;
use crate::machines::{host_link, machine_for, writable_machine};
use crate::{ApiError, Inner, Principal};

/// The least memory a limit may be set to, in MB.
const SMALLEST_MB: u64 = 64;

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(show, set))
        .routes(routes!(reclaim))
}

fn size_of(machine: &aloft_store::MachineRecord) -> u64 {
    u64::from(MachineGuest::limits(machine.config.guest.as_ref()).memory_mb)
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/memory", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = MemoryResponse), (status = "4XX", description = "Missing or invalid token, not found, or the machine is not running", body = ErrorBody)), operation_id = "Machines_get_memory")]
async fn show(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<MemoryResponse>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    let limit_mb = host_link(&inner, &machine)?.memory_limit(&machine).await?;
    Ok(Json(MemoryResponse {
        limit_mb,
        available_mb: size_of(&machine),
    }))
}

#[utoipa::path(put, path = "/v1/apps/{app}/machines/{id}/memory", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), request_body = SetMemoryLimitRequest, responses((status = 200, body = MemoryResponse), (status = "4XX", description = "A limit out of range, missing or invalid token, not found, or the machine is not running", body = ErrorBody)), operation_id = "Machines_set_memory_limit")]
async fn set(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(request): Body<SetMemoryLimitRequest>,
) -> Result<Json<MemoryResponse>, ApiError> {
    let (_, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    let size = size_of(&machine);
    let limit_mb = request
        .limit_mb
        .ok_or_else(|| ApiError::BadRequest("limit_mb: say the new limit in MB".to_owned()))?;
    if !(SMALLEST_MB..=size).contains(&limit_mb) {
        return Err(ApiError::BadRequest(format!(
            "limit_mb is {limit_mb}; machine {id} may run under {SMALLEST_MB} to {size} MB (its size; change the size with a machine update)"
        )));
    }
    let link = host_link(&inner, &machine)?;
    link.set_memory_limit(&machine, limit_mb).await?;
    let limit_mb = link.memory_limit(&machine).await?;
    Ok(Json(MemoryResponse {
        limit_mb,
        available_mb: size,
    }))
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/memory/reclaim", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 422, description = "Refused: a container has no balloon; its unused memory is already the host's", body = ErrorBody), (status = "4XX", description = "Missing or invalid token, or no such app or machine", body = ErrorBody)), operation_id = "Machines_reclaim_memory")]
async fn reclaim(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<()>, ApiError> {
    writable_machine(&inner, &principal, &app, &id, &headers).await?;
    Err(ApiError::Unprocessable(format!(
        "machine {id} runs as a container, which has no memory balloon: its unused memory is already the host's; lower its limit with PUT .../memory instead"
    )))
}
