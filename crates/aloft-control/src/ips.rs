//! `/v1/apps/{app}/ips` (Aloft's own) and `/v1/apps/{app}/ip_assignments` (Fly's shape
//! of the same): an app's dedicated IPv4 addresses, from the operator's pool. The proxy
//! listens on them for the app's service ports other than the shared 80 and 443.

use std::sync::Arc;

use aloft_store::IpRecord;
use aloft_types::IpKind;
use aloft_types::api::{
    AllocateIpRequest, AssignIpRequest, ErrorBody, IpAssignment, IpAssignments, IpResponse,
    OkResponse,
};
use aloft_types::time::rfc3339;
use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{ReadApp, WriteApp};
use crate::json::Body;
use crate::{ApiError, Inner};

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list, allocate))
        .routes(routes!(release))
        .routes(routes!(assignments, assign))
        .routes(routes!(unassign))
}

fn response(record: &IpRecord) -> IpResponse {
    IpResponse {
        address: record.address.clone(),
        kind: record.kind,
        region: record.region.clone(),
        created_at: rfc3339(record.created_at),
    }
}

#[utoipa::path(get, path = "/v1/apps/{app}/ips", tag = "network", params(("app" = String, Path, description = "The app's name")), responses((status = 200, body = Vec<IpResponse>), (status = "4XX", description = "Missing or invalid token, or no such app", body = ErrorBody)), operation_id = "Ips_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
) -> Result<Json<Vec<IpResponse>>, ApiError> {
    let ips = inner.store.ips_of_app(&app.id).await?;
    Ok(Json(ips.iter().map(response).collect()))
}

#[utoipa::path(post, path = "/v1/apps/{app}/ips", tag = "network", params(("app" = String, Path, description = "The app's name")), request_body = AllocateIpRequest, responses((status = 200, body = IpResponse), (status = "4XX", description = "Bad input, missing or invalid token, no such app", body = ErrorBody), (status = 409, description = "The pool has no free address", body = ErrorBody)), operation_id = "Ips_allocate")]
async fn allocate(
    State(inner): State<Arc<Inner>>,
    WriteApp(app): WriteApp,
    Body(request): Body<AllocateIpRequest>,
) -> Result<Json<IpResponse>, ApiError> {
    let record = allocate_v4(&inner, &app, &request.kind, request.region).await?;
    Ok(Json(response(&record)))
}

/// Allocates a dedicated IPv4 address of `kind` (only `v4` can be) in `region`.
async fn allocate_v4(
    inner: &Inner,
    app: &aloft_store::App,
    kind: &str,
    region: Option<String>,
) -> Result<IpRecord, ApiError> {
    if kind != IpKind::V4.as_str() {
        return Err(ApiError::BadRequest(format!(
            "type: {kind:?} cannot be allocated; use \"v4\" (a dedicated IPv4 address)"
        )));
    }
    let region = match region.filter(|r| !r.is_empty()) {
        Some(region) => region
            .parse::<aloft_types::RegionCode>()
            .map_err(|e| ApiError::BadRequest(format!("region: {e}")))?
            .to_string(),
        None => inner.config.default_region.clone(),
    };
    let pool = inner.config.ipv4_pool;
    let quota = crate::quotas::check_app(inner, app, crate::quotas::Ask::Ip).await?;
    let record = inner
        .store
        .allocate_ip(
            &app.id,
            IpKind::V4,
            &region,
            pool.addresses().map(|a| a.to_string()),
        )
        .await?;
    drop(quota);
    inner.catalog_dirty.notify_one();
    tracing::info!(app = %app.name, address = %record.address, "allocated an IPv4 address");
    Ok(record)
}

fn assignment(record: &IpRecord) -> IpAssignment {
    IpAssignment {
        ip: record.address.clone(),
        region: record.region.clone(),
        service_name: String::new(),
        shared: false,
        created_at: rfc3339(record.created_at),
    }
}

#[utoipa::path(get, path = "/v1/apps/{app}/ip_assignments", tag = "network", params(("app" = String, Path, description = "The app's name")), responses((status = 200, body = IpAssignments), (status = "4XX", description = "Missing or invalid token, or no such app", body = ErrorBody)), operation_id = "IpAssignments_list")]
async fn assignments(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
) -> Result<Json<IpAssignments>, ApiError> {
    let ips = inner.store.ips_of_app(&app.id).await?;
    Ok(Json(IpAssignments {
        ips: ips.iter().map(assignment).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/apps/{app}/ip_assignments", tag = "network", params(("app" = String, Path, description = "The app's name")), request_body = AssignIpRequest, responses((status = 200, body = IpAssignment), (status = "4XX", description = "Bad input (a type other than v4), missing or invalid token, no such app", body = ErrorBody), (status = 409, description = "The pool has no free address", body = ErrorBody)), operation_id = "IpAssignments_create")]
async fn assign(
    State(inner): State<Arc<Inner>>,
    WriteApp(app): WriteApp,
    Body(request): Body<AssignIpRequest>,
) -> Result<Json<IpAssignment>, ApiError> {
    let record = allocate_v4(&inner, &app, &request.kind, request.region).await?;
    Ok(Json(assignment(&record)))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/ip_assignments/{ip}", tag = "network", params(("app" = String, Path, description = "The app's name"), ("ip" = String, Path, description = "The address to release")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Missing or invalid token, no such app or address", body = ErrorBody)), operation_id = "IpAssignments_delete")]
async fn unassign(
    State(inner): State<Arc<Inner>>,
    Path((_, address)): Path<(String, String)>,
    WriteApp(app): WriteApp,
) -> Result<Json<OkResponse>, ApiError> {
    release_address(&inner, &app, &address).await
}

#[utoipa::path(delete, path = "/v1/apps/{app}/ips/{address}", tag = "network", params(("app" = String, Path, description = "The app's name"), ("address" = String, Path, description = "The address to release")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Missing or invalid token, no such app or address", body = ErrorBody)), operation_id = "Ips_release")]
async fn release(
    State(inner): State<Arc<Inner>>,
    Path((_, address)): Path<(String, String)>,
    WriteApp(app): WriteApp,
) -> Result<Json<OkResponse>, ApiError> {
    release_address(&inner, &app, &address).await
}

async fn release_address(
    inner: &Inner,
    app: &aloft_store::App,
    address: &str,
) -> Result<Json<OkResponse>, ApiError> {
    inner.store.release_ip(&app.id, address).await?;
    inner.catalog_dirty.notify_one();
    tracing::info!(app = %app.name, %address, "released an IPv4 address");
    Ok(Json(OkResponse {
        ok: true,
        previous_state: None,
    }))
}
