//! `/v1/apps/{app}/ips` (Aloft's own): an app's dedicated IPv4 addresses, from the
//! operator's pool. The proxy listens on them for the app's service ports other than the
//! shared 80 and 443.

use std::sync::Arc;

use aloft_store::IpRecord;
use aloft_types::IpKind;
use aloft_types::api::{AllocateIpRequest, ErrorBody, IpResponse, OkResponse};
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
    if request.kind != IpKind::V4.as_str() {
        return Err(ApiError::BadRequest(format!(
            "type: {:?} cannot be allocated; use \"v4\" (a dedicated IPv4 address)",
            request.kind
        )));
    }
    let region = match request.region {
        Some(region) => region
            .parse::<aloft_types::RegionCode>()
            .map_err(|e| ApiError::BadRequest(format!("region: {e}")))?
            .to_string(),
        None => inner.config.default_region.clone(),
    };
    let pool = inner.config.ipv4_pool;
    let record = inner
        .store
        .allocate_ip(
            &app.id,
            IpKind::V4,
            &region,
            pool.addresses().map(|a| a.to_string()),
        )
        .await?;
    inner.catalog_dirty.notify_one();
    tracing::info!(app = %app.name, address = %record.address, "allocated an IPv4 address");
    Ok(Json(response(&record)))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/ips/{address}", tag = "network", params(("app" = String, Path, description = "The app's name"), ("address" = String, Path, description = "The address to release")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Missing or invalid token, no such app or address", body = ErrorBody)), operation_id = "Ips_release")]
async fn release(
    State(inner): State<Arc<Inner>>,
    Path((_, address)): Path<(String, String)>,
    WriteApp(app): WriteApp,
) -> Result<Json<OkResponse>, ApiError> {
    inner.store.release_ip(&app.id, &address).await?;
    inner.catalog_dirty.notify_one();
    tracing::info!(app = %app.name, %address, "released an IPv4 address");
    Ok(Json(OkResponse {
        ok: true,
        previous_state: None,
    }))
}
