//! Certificates: `/v1/certs/ca` (Aloft's own), the local certificate authority whose
//! certificates the edge serves, for clients to trust (`aloft certs ca > ca.crt; curl
//! --cacert ca.crt`); and `/v1/apps/{app}/certificates` (Fly's paths), the hostnames an
//! app answers at with where their certificates come from: the local CA (`local`, until
//! ACME) or imported (`custom`, the key sealed like secrets).

use std::sync::Arc;

use aloft_store::{CertificateRecord, now_ms};
use aloft_types::api::{
    AddCertificateRequest, CertificateResponse, ErrorBody, ImportCertificateRequest, OkResponse,
};
use aloft_types::time::rfc3339;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{ReadApp, WriteApp};
use crate::json::Body;
use crate::{ApiError, Inner, Principal};

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(ca))
        .routes(routes!(list))
        .routes(routes!(add_local))
        .routes(routes!(import))
        .routes(routes!(remove))
}

/// A hostname as certificates name it: lowercase labels of letters, digits and `-`, at
/// least two, optionally `*.` first.
fn hostname(text: &str) -> Result<String, ApiError> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = name.strip_prefix("*.").unwrap_or(&name);
    let labels: Vec<&str> = bare.split('.').collect();
    let valid = name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(name)
    } else {
        Err(ApiError::BadRequest(format!(
            "hostname: {text:?} is not a hostname (such as www.example.com or *.example.com)"
        )))
    }
}

/// Refuses a hostname `app` may not claim: one under the platform's apps domain (the
/// platform answers there for every app: claiming `*.<apps_domain>` would take every
/// app's traffic), or one that overlaps another app's (a wildcard over its names, or a
/// name under its wildcard).
async fn claimable(inner: &Inner, app: &aloft_store::App, name: &str) -> Result<(), ApiError> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    if let Some(edge) = &inner.config.edge {
        let domain = edge.apps_domain.to_ascii_lowercase();
        if bare == domain || bare.ends_with(&format!(".{domain}")) {
            return Err(ApiError::Forbidden(format!(
                "hostname: {name} is under the platform's apps domain {domain}, where the platform answers for every app; each app already has https://<app>.{domain}/"
            )));
        }
    }
    let parent = |host: &str| host.split_once('.').map(|(_, rest)| rest.to_owned());
    for other in inner.store.all_certificates().await? {
        if other.app_id == app.id {
            continue;
        }
        let theirs = other.hostname.as_str();
        // The same name is the store's conflict (it says so itself).
        let overlaps = match (name.strip_prefix("*."), theirs.strip_prefix("*.")) {
            (Some(domain), None) => parent(theirs).as_deref() == Some(domain),
            (None, Some(domain)) => parent(name).as_deref() == Some(domain),
            _ => false,
        };
        if overlaps {
            return Err(ApiError::Conflict(format!(
                "hostname: {name} overlaps {theirs}, which another app answers at"
            )));
        }
    }
    Ok(())
}

fn response(record: &CertificateRecord) -> CertificateResponse {
    CertificateResponse {
        hostname: record.hostname.clone(),
        source: record.source.clone(),
        created_at: rfc3339(record.created_at),
    }
}

#[utoipa::path(get, path = "/v1/apps/{app}/certificates", tag = "certificates", params(("app" = String, Path, description = "The app's name")), responses((status = 200, body = Vec<CertificateResponse>), (status = "4XX", description = "Missing or invalid token, or no such app", body = ErrorBody)), operation_id = "Certificates_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
) -> Result<Json<Vec<CertificateResponse>>, ApiError> {
    let records = inner.store.certificates_of_app(&app.id).await?;
    Ok(Json(records.iter().map(response).collect()))
}

#[utoipa::path(post, path = "/v1/apps/{app}/certificates/local", tag = "certificates", params(("app" = String, Path, description = "The app's name")), request_body = AddCertificateRequest, responses((status = 200, body = CertificateResponse), (status = "4XX", description = "Bad hostname, missing or invalid token, no such app", body = ErrorBody), (status = 409, description = "Another app answers at the hostname", body = ErrorBody)), operation_id = "Certificates_local")]
async fn add_local(
    State(inner): State<Arc<Inner>>,
    WriteApp(app): WriteApp,
    Body(request): Body<AddCertificateRequest>,
) -> Result<Json<CertificateResponse>, ApiError> {
    let name = hostname(&request.hostname)?;
    claimable(&inner, &app, &name).await?;
    let record = CertificateRecord {
        hostname: name,
        app_id: app.id.clone(),
        source: "local".to_owned(),
        fullchain: None,
        private_key_sealed: None,
        created_at: now_ms(),
    };
    inner.store.put_certificate(&record).await?;
    inner.catalog_dirty.notify_one();
    tracing::info!(app = %app.name, hostname = %record.hostname, "added a hostname");
    Ok(Json(response(&record)))
}

#[utoipa::path(post, path = "/v1/apps/{app}/certificates/custom", tag = "certificates", params(("app" = String, Path, description = "The app's name")), request_body = ImportCertificateRequest, responses((status = 200, body = CertificateResponse), (status = "4XX", description = "Bad hostname or PEM, missing or invalid token, no such app", body = ErrorBody), (status = 409, description = "Another app answers at the hostname", body = ErrorBody)), operation_id = "Certificates_custom")]
async fn import(
    State(inner): State<Arc<Inner>>,
    WriteApp(app): WriteApp,
    Body(request): Body<ImportCertificateRequest>,
) -> Result<Json<CertificateResponse>, ApiError> {
    use rustls_pki_types::pem::PemObject;
    let name = hostname(&request.hostname)?;
    claimable(&inner, &app, &name).await?;
    let chain: Vec<_> =
        rustls_pki_types::CertificateDer::pem_slice_iter(request.fullchain.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::BadRequest(format!("fullchain: not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(ApiError::BadRequest(
            "fullchain: no CERTIFICATE block in it".to_owned(),
        ));
    }
    rustls_pki_types::PrivateKeyDer::from_pem_slice(request.private_key.as_bytes())
        .map_err(|e| ApiError::BadRequest(format!("private_key: not a PEM private key: {e}")))?;
    let record = CertificateRecord {
        hostname: name,
        app_id: app.id.clone(),
        source: "custom".to_owned(),
        fullchain: Some(request.fullchain),
        private_key_sealed: Some(inner.secrets_key.encrypt(&request.private_key)?),
        created_at: now_ms(),
    };
    inner.store.put_certificate(&record).await?;
    inner.catalog_dirty.notify_one();
    tracing::info!(app = %app.name, hostname = %record.hostname, "imported a certificate");
    Ok(Json(response(&record)))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/certificates/{hostname}", tag = "certificates", params(("app" = String, Path, description = "The app's name"), ("hostname" = String, Path, description = "The hostname")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Missing or invalid token, no such app or hostname", body = ErrorBody)), operation_id = "Certificates_delete")]
async fn remove(
    State(inner): State<Arc<Inner>>,
    Path((_, name)): Path<(String, String)>,
    WriteApp(app): WriteApp,
) -> Result<Json<OkResponse>, ApiError> {
    inner
        .store
        .delete_certificate(&app.id, &name.to_ascii_lowercase())
        .await?;
    inner.catalog_dirty.notify_one();
    Ok(Json(OkResponse {
        ok: true,
        previous_state: None,
    }))
}

#[utoipa::path(get, path = "/v1/certs/ca", tag = "certificates", responses((status = 200, description = "The local CA's certificate, PEM", content_type = "application/x-pem-file", body = String), (status = "4XX", description = "Missing or invalid token", body = ErrorBody), (status = 503, description = "No edge with a local CA runs with this control plane", body = ErrorBody)), operation_id = "Certificates_ca")]
async fn ca(
    State(inner): State<Arc<Inner>>,
    _principal: Principal,
) -> Result<impl IntoResponse, ApiError> {
    let pem = inner.local_ca.clone().ok_or_else(|| {
        ApiError::Unavailable("no edge with a local CA runs with this control plane".to_owned())
    })?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem))
}
