//! `/v1/certs/ca` (Aloft's own): the local certificate authority whose certificates the
//! edge serves, for clients to trust (`aloft certs ca > ca.crt; curl --cacert ca.crt`).

use std::sync::Arc;

use aloft_types::api::ErrorBody;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiError, Inner, Principal};

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new().routes(routes!(ca))
}

#[utoipa::path(get, path = "/v1/certs/ca", tag = "certificates", responses((status = 200, description = "The local CA's certificate, PEM", content_type = "application/x-pem-file", body = String), (status = "4XX", description = "Missing or invalid token", body = ErrorBody), (status = 503, description = "No edge with a local CA runs with this control plane", body = ErrorBody)), operation_id = "Certificates_ca")]
async fn ca(
    State(inner): State<Arc<Inner>>,
    _principal: Principal,
) -> Result<impl IntoResponse, ApiError> {
    let pem = inner
        .local_ca
        .read()
        .ok()
        .and_then(|ca| ca.clone())
        .ok_or_else(|| {
            ApiError::Unavailable("no edge with a local CA runs with this control plane".to_owned())
        })?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem))
}
