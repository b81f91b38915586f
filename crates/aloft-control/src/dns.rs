//! `/v1/apps/{app}/dns` (Aloft's own): asks the private network's DNS server as a machine
//! of the app's network would (`aloft dig`).

use std::collections::HashMap;
use std::sync::Arc;

use aloft_types::api::{DigResponse, DnsRecord, ErrorBody};
use axum::Json;
use axum::extract::{Query, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::ReadApp;
use crate::{ApiError, Inner};

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new().routes(routes!(dig))
}

fn records(records: Vec<aloft_types::dig::DigRecord>) -> Vec<DnsRecord> {
    records
        .into_iter()
        .map(|r| DnsRecord {
            name: r.name,
            record_type: r.record_type,
            ttl: r.ttl,
            data: r.data,
        })
        .collect()
}

#[utoipa::path(get, path = "/v1/apps/{app}/dns", tag = "network", params(("app" = String, Path, description = "The app's name"), ("name" = String, Query, description = "The name to look up, such as `<app>.internal`"), ("type" = Option<String>, Query, description = "The record type (default AAAA)")), responses((status = 200, body = DigResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found", body = ErrorBody), (status = 503, description = "No DNS server runs with this control plane", body = ErrorBody)), operation_id = "Network_dig")]
async fn dig(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<DigResponse>, ApiError> {
    let name = query
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("query parameter `name` is required".to_owned()))?;
    let record_type = query.get("type").map_or("AAAA", String::as_str);
    let resolver = inner.dns.clone().ok_or_else(|| {
        ApiError::Unavailable("no DNS server runs with this control plane".to_owned())
    })?;
    let network = inner.store.network(&app.org_id, &app.network).await?;
    let network =
        crate::catalog::number(network.number, aloft_net::NetworkNumber::new, "network")?.get();
    let answer = resolver
        .dig(name, record_type, network)
        .await
        .map_err(|error| match error {
            aloft_types::dig::DigError::NoAnswer => ApiError::Unavailable(error.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        })?;
    Ok(Json(DigResponse {
        status: answer.status,
        answers: records(answer.answers),
        authority: records(answer.authority),
    }))
}
