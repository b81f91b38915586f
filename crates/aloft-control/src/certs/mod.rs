//! Certificates: `/v1/certs/ca` (Aloft's own: the local certificate authority whose
//! certificates the edge serves for `local` hostnames, for clients to trust), and Fly's
//! Certificates resource under `/v1/apps/{app}/certificates`: hostnames an app answers at,
//! each with an ACME certificate (`acme`: ordered once the hostname's DNS points at the
//! app, see [`crate::acme`]), an imported one (`custom`, the key sealed like secrets), or
//! one from the edge's local CA (`local`, Aloft's, for names no public CA will certify).

mod detail;
mod names;

use std::sync::Arc;

use aloft_store::{AcmeState, CertificateRecord};
use aloft_types::api::{
    AddCertificateRequest, CertificateDetail, CertificateList, ErrorBody, ImportCertificateRequest,
};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{ReadApp, WriteApp};
use crate::json::Body;
use crate::{ApiError, Inner, Principal};
use detail::{detail, summary};
use names::{claimable, hostname};

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(ca))
        .routes(routes!(list))
        .routes(routes!(add_acme))
        .routes(routes!(add_local))
        .routes(routes!(import))
        .routes(routes!(show, remove))
        .routes(routes!(check))
        .routes(routes!(remove_acme))
        .routes(routes!(remove_custom))
}

/// The query of a list: Fly's filter and cursor paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only hostnames containing this.
    filter: Option<String>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
    /// Hostnames per page (default 100, at most 1,000).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/apps/{app}/certificates", tag = "certificates", params(("app" = String, Path, description = "The app's name"), ListQuery), responses((status = 200, body = CertificateList), (status = "4XX", description = "Missing or invalid token, or no such app", body = ErrorBody)), operation_id = "Certificates_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
    Query(query): Query<ListQuery>,
) -> Result<Json<CertificateList>, ApiError> {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let filter = query.filter.unwrap_or_default().to_ascii_lowercase();
    let matching: Vec<CertificateRecord> = inner
        .store
        .certificates_of_app(&app.id)
        .await?
        .into_iter()
        .filter(|c| c.hostname.contains(&filter))
        .collect();
    let total_count = u64::try_from(matching.len()).unwrap_or(u64::MAX);
    let after = query.cursor.unwrap_or_default();
    let page: Vec<&CertificateRecord> = matching
        .iter()
        .filter(|c| after.is_empty() || c.hostname.as_str() > after.as_str())
        .take(limit + 1)
        .collect();
    let next_cursor = (page.len() > limit).then(|| page[limit - 1].hostname.clone());
    Ok(Json(CertificateList {
        certificates: page.iter().take(limit).map(|c| summary(c)).collect(),
        total_count,
        next_cursor,
    }))
}

#[utoipa::path(post, path = "/v1/apps/{app}/certificates/acme", tag = "certificates", params(("app" = String, Path, description = "The app's name")), request_body = AddCertificateRequest, responses((status = 201, body = CertificateDetail), (status = "4XX", description = "Bad hostname, missing or invalid token, no such app; a wildcard (422: it needs DNS-01)", body = ErrorBody), (status = 409, description = "Another app answers at the hostname", body = ErrorBody), (status = 503, description = "No ACME directory is configured", body = ErrorBody)), operation_id = "Certificates_acme")]
async fn add_acme(
    State(inner): State<Arc<Inner>>,
    WriteApp(app): WriteApp,
    Body(request): Body<AddCertificateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(issuer) = inner.acme.clone() else {
        return Err(ApiError::Unavailable(
            inner.acme_unavailable.clone().unwrap_or_default(),
        ));
    };
    let name = hostname(&request.hostname)?;
    claimable(&inner, &app, &name).await?;
    if name.starts_with("*.") {
        return Err(ApiError::Unprocessable(format!(
            "hostname: {name} is a wildcard, which ACME certifies only by DNS-01, which Aloft does not answer; import a certificate for it (`aloft certs import`) or use the edge's local CA (`aloft certs add --local`)"
        )));
    }
    let mut record = held_or_new(&inner, &app, &name, "acme").await?;
    if record.acme.is_none() {
        record.acme = Some(AcmeState::default());
        inner.store.put_certificate(&record).await?;
        record = inner.store.certificate(&app.id, &name).await?;
    }
    issuer.poke(&name);
    tracing::info!(app = %app.name, hostname = %name, "a certificate was asked of the ACME directory");
    Ok((
        StatusCode::CREATED,
        Json(detail(&inner, &app, &record, None).await?),
    ))
}

#[utoipa::path(post, path = "/v1/apps/{app}/certificates/local", tag = "certificates", params(("app" = String, Path, description = "The app's name")), request_body = AddCertificateRequest, responses((status = 201, body = CertificateDetail), (status = "4XX", description = "Bad hostname, missing or invalid token, no such app", body = ErrorBody), (status = 409, description = "Another app answers at the hostname", body = ErrorBody)), operation_id = "Certificates_local")]
async fn add_local(
    State(inner): State<Arc<Inner>>,
    WriteApp(app): WriteApp,
    Body(request): Body<AddCertificateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let name = hostname(&request.hostname)?;
    claimable(&inner, &app, &name).await?;
    let record = CertificateRecord::new(name, app.id.clone(), "local");
    inner.store.put_certificate(&record).await?;
    inner.catalog_dirty.notify_one();
    tracing::info!(app = %app.name, hostname = %record.hostname, "added a hostname");
    let record = inner.store.certificate(&app.id, &record.hostname).await?;
    Ok((
        StatusCode::CREATED,
        Json(detail(&inner, &app, &record, None).await?),
    ))
}

#[utoipa::path(post, path = "/v1/apps/{app}/certificates/custom", tag = "certificates", params(("app" = String, Path, description = "The app's name")), request_body = ImportCertificateRequest, responses((status = 201, body = CertificateDetail), (status = "4XX", description = "Bad hostname or PEM, missing or invalid token, no such app", body = ErrorBody), (status = 409, description = "Another app answers at the hostname", body = ErrorBody)), operation_id = "Certificates_custom")]
async fn import(
    State(inner): State<Arc<Inner>>,
    WriteApp(app): WriteApp,
    Body(request): Body<ImportCertificateRequest>,
) -> Result<impl IntoResponse, ApiError> {
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
    aloft_acme::describe(&request.fullchain)
        .map_err(|e| ApiError::BadRequest(format!("fullchain: {e}")))?;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(request.private_key.as_bytes())
        .map_err(|e| ApiError::BadRequest(format!("private_key: not a PEM private key: {e}")))?;
    // An ACME certificate the hostname has stays, as the fallback.
    let mut record = held_or_new(&inner, &app, &name, "custom").await?;
    record.fullchain = Some(request.fullchain);
    record.private_key_sealed = Some(inner.secrets_key.encrypt(&request.private_key)?);
    inner.store.put_certificate(&record).await?;
    inner.catalog_dirty.notify_one();
    tracing::info!(app = %app.name, hostname = %record.hostname, "imported a certificate");
    let record = inner.store.certificate(&app.id, &name).await?;
    Ok((
        StatusCode::CREATED,
        Json(detail(&inner, &app, &record, None).await?),
    ))
}

/// The app's record of `name`, or a new one added as `source` says.
async fn held_or_new(
    inner: &Inner,
    app: &aloft_store::App,
    name: &str,
    source: &str,
) -> Result<CertificateRecord, ApiError> {
    match inner.store.certificate(&app.id, name).await {
        Ok(existing) => Ok(existing),
        Err(aloft_store::StoreError::NotFound { .. }) => Ok(CertificateRecord::new(
            name.to_owned(),
            app.id.clone(),
            source,
        )),
        Err(error) => Err(error.into()),
    }
}

/// A hostname as a path names it (`%2A.example.com` for a wildcard).
fn path_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[utoipa::path(get, path = "/v1/apps/{app}/certificates/{hostname}", tag = "certificates", params(("app" = String, Path, description = "The app's name"), ("hostname" = String, Path, description = "The hostname")), responses((status = 200, body = CertificateDetail), (status = "4XX", description = "Missing or invalid token, no such app or hostname", body = ErrorBody)), operation_id = "Certificates_show")]
async fn show(
    State(inner): State<Arc<Inner>>,
    Path((_, name)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<CertificateDetail>, ApiError> {
    let record = inner.store.certificate(&app.id, &path_name(&name)).await?;
    Ok(Json(detail(&inner, &app, &record, None).await?))
}

#[utoipa::path(post, path = "/v1/apps/{app}/certificates/{hostname}/check", tag = "certificates", params(("app" = String, Path, description = "The app's name"), ("hostname" = String, Path, description = "The hostname")), responses((status = 200, body = CertificateDetail), (status = "4XX", description = "Missing or invalid token, no such app or hostname", body = ErrorBody), (status = 503, description = "No ACME directory is configured (DNS is looked up by its issuer)", body = ErrorBody)), operation_id = "Certificates_check")]
async fn check(
    State(inner): State<Arc<Inner>>,
    Path((_, name)): Path<(String, String)>,
    WriteApp(app): WriteApp,
) -> Result<Json<CertificateDetail>, ApiError> {
    let Some(issuer) = inner.acme.clone() else {
        return Err(ApiError::Unavailable(
            inner.acme_unavailable.clone().unwrap_or_default(),
        ));
    };
    let record = inner.store.certificate(&app.id, &path_name(&name)).await?;
    let (records, _) = crate::acme::look(&inner, &issuer, &record).await?;
    if record.acme.is_some() {
        issuer.poke(&record.hostname);
    }
    Ok(Json(detail(&inner, &app, &record, Some(records)).await?))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/certificates/{hostname}", tag = "certificates", params(("app" = String, Path, description = "The app's name"), ("hostname" = String, Path, description = "The hostname")), responses((status = 204, description = "The hostname and its certificates are gone"), (status = "4XX", description = "Missing or invalid token, no such app or hostname", body = ErrorBody)), operation_id = "Certificates_delete")]
async fn remove(
    State(inner): State<Arc<Inner>>,
    Path((_, name)): Path<(String, String)>,
    WriteApp(app): WriteApp,
) -> Result<StatusCode, ApiError> {
    inner
        .store
        .delete_certificate(&app.id, &path_name(&name))
        .await?;
    inner.catalog_dirty.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/apps/{app}/certificates/{hostname}/acme", tag = "certificates", params(("app" = String, Path, description = "The app's name"), ("hostname" = String, Path, description = "The hostname")), responses((status = 200, body = CertificateDetail), (status = "4XX", description = "Missing or invalid token, no such app or hostname", body = ErrorBody)), operation_id = "Certificates_delete_acme")]
async fn remove_acme(
    State(inner): State<Arc<Inner>>,
    Path((_, name)): Path<(String, String)>,
    WriteApp(app): WriteApp,
) -> Result<Json<CertificateDetail>, ApiError> {
    let mut record = inner.store.certificate(&app.id, &path_name(&name)).await?;
    record.acme = None;
    record.acme_key_sealed = None;
    inner.store.put_certificate(&record).await?;
    inner.catalog_dirty.notify_one();
    let record = inner.store.certificate(&app.id, &record.hostname).await?;
    Ok(Json(detail(&inner, &app, &record, None).await?))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/certificates/{hostname}/custom", tag = "certificates", params(("app" = String, Path, description = "The app's name"), ("hostname" = String, Path, description = "The hostname")), responses((status = 200, body = CertificateDetail), (status = "4XX", description = "Missing or invalid token, no such app or hostname", body = ErrorBody)), operation_id = "Certificates_delete_custom")]
async fn remove_custom(
    State(inner): State<Arc<Inner>>,
    Path((_, name)): Path<(String, String)>,
    WriteApp(app): WriteApp,
) -> Result<Json<CertificateDetail>, ApiError> {
    let mut record = inner.store.certificate(&app.id, &path_name(&name)).await?;
    record.fullchain = None;
    record.private_key_sealed = None;
    inner.store.put_certificate(&record).await?;
    inner.catalog_dirty.notify_one();
    let record = inner.store.certificate(&app.id, &record.hostname).await?;
    Ok(Json(detail(&inner, &app, &record, None).await?))
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

/// When `record` was last touched, as the API shows it.
fn touched(record: &CertificateRecord) -> i64 {
    record.updated_at.max(record.created_at)
}
