//! `/v1/apps`: create, list, show and delete apps.

use std::collections::HashMap;
use std::sync::Arc;

use aloft_store::{App, MachineFilter};
use aloft_types::AppName;
use aloft_types::api::{AppConfigResponse, ErrorBody};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::app_for;
use crate::json::Body;
use crate::wire::{AppList, AppResponse, CreateAppRequest};
use crate::{ApiError, Inner, Principal};

/// How long deleting an app waits for its machines to be destroyed.
const APP_DESTROY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, delete))
        .routes(routes!(config))
}

/// Whether `given` (a request's `org_slug`) names the token's organization `slug`: its
/// slug, or `personal` and the empty string, which Fly's clients send for "mine".
fn names_org(given: &str, slug: &str) -> bool {
    given == slug || given.is_empty() || given == "personal"
}

async fn response(inner: &Inner, app: &App) -> Result<AppResponse, ApiError> {
    let org = inner.store.org(&app.org_id).await?;
    let machines = inner
        .store
        .list_machines(&app.id, &MachineFilter::default())
        .await?;
    let volumes = inner.store.list_volumes(&app.id).await?.len();
    Ok(crate::wire::app_response(
        app,
        &org,
        &machines,
        volumes,
        inner.config.edge.as_ref(),
    ))
}

#[utoipa::path(get, path = "/v1/apps", tag = "apps", params(("org_slug" = Option<String>, Query, description = "Only this organization (the token's)")), responses((status = 200, body = AppList), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Apps_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<AppList>, ApiError> {
    if let Some(slug) = query.get("org_slug") {
        let org = inner.store.org(principal.org_id()).await?;
        if !names_org(slug, &org.slug) {
            return Err(ApiError::not_found(format!("organization {slug}")));
        }
    }
    let mut apps = Vec::new();
    for app in inner.store.list_apps(principal.org_id()).await? {
        if principal.may_read_app(app.name.as_str()) {
            apps.push(response(&inner, &app).await?);
        }
    }
    Ok(Json(AppList {
        total_apps: apps.len(),
        apps,
    }))
}

#[utoipa::path(post, path = "/v1/apps", tag = "apps", request_body = CreateAppRequest, responses((status = 201, body = AppResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Apps_create")]
async fn create(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Body(request): Body<CreateAppRequest>,
) -> Result<(StatusCode, Json<AppResponse>), ApiError> {
    if !principal.may_manage_org() {
        return Err(ApiError::Forbidden(
            "creating apps needs an org token".to_owned(),
        ));
    }
    let name: AppName = request
        .app_name
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("app_name: {e}")))?;
    let org = inner.store.org(principal.org_id()).await?;
    if let Some(slug) = &request.org_slug
        && !names_org(slug, &org.slug)
    {
        return Err(ApiError::not_found(format!("organization {slug}")));
    }
    // Go clients send an unset network as "".
    let network = request
        .network
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    if network.is_empty()
        || network.len() > 63
        || !network
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::BadRequest(format!(
            "network {network:?} must be 1 to 63 letters, digits, `-` or `_`"
        )));
    }
    let quota = crate::quotas::check(&inner, &org, crate::quotas::Ask::App).await?;
    // The network gets its number (its /48 of the private network) with its first app.
    inner.store.network(&org.id, &network).await?;
    let app = inner
        .store
        .create_app(&name, &org.id, &network)
        .await
        .map_err(|error| match error {
            aloft_store::StoreError::Conflict { .. } => {
                ApiError::Conflict(format!("the app name {name} is taken"))
            }
            other => other.into(),
        })?;
    drop(quota);
    inner.catalog_dirty.notify_one();
    Ok((StatusCode::CREATED, Json(response(&inner, &app).await?)))
}

#[utoipa::path(get, path = "/v1/apps/{app}", tag = "apps", params(("app" = String, Path, description = "The app's name")), responses((status = 200, body = AppResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Apps_show")]
async fn show(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<AppResponse>, ApiError> {
    let app = app_for(&inner, &principal, &name, false).await?;
    Ok(Json(response(&inner, &app).await?))
}

#[utoipa::path(delete, path = "/v1/apps/{app}", tag = "apps", params(("app" = String, Path, description = "The app's name")), responses((status = 202, description = "Deleted, with its machines, volumes and secrets"), (status = 408, description = "Its machines are still being destroyed; retry", body = ErrorBody), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Apps_delete")]
async fn delete(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let app = app_for(&inner, &principal, &name, true).await?;
    // Like `fly apps destroy`: every machine goes (forcibly), then the app with its
    // volumes and secrets.
    let machines = inner
        .store
        .list_machines(&app.id, &MachineFilter::default())
        .await?;
    for machine in &machines {
        crate::machines::destroy_forcibly(&inner, machine, true).await?;
    }
    let deadline = tokio::time::Instant::now() + APP_DESTROY_WAIT;
    let mut observed = inner.observed.subscribe();
    loop {
        let left = inner
            .store
            .list_machines(&app.id, &MachineFilter::default())
            .await?;
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Timeout(format!(
                "{} machine(s) of app {name} are still being destroyed; delete the app again in a moment",
                left.len()
            )));
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), observed.recv()).await;
    }
    crate::snapshots::delete_app_files(&inner, &app).await?;
    inner.store.delete_app(&app.id).await?;
    inner.catalog_dirty.notify_one();
    // Its builds go too: nothing can run them any more. A failure leaves them behind
    // (logged), not the app.
    if let Ok(builder) = inner.builder() {
        let repository = crate::builds::repository_of(app.name.as_str());
        match builder.remove_repository(&repository).await {
            Ok(removed) => tracing::info!(app = %name, removed, "removed the app's built images"),
            Err(error) => {
                tracing::warn!(app = %name, %error, "removing the app's built images failed")
            }
        }
    }
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/v1/apps/{app}/config", tag = "apps", params(("app" = String, Path, description = "The app's name")), responses((status = 200, description = "The fly.toml of the app's newest complete release (else of its newest), as it was deployed", body = AppConfigResponse), (status = "4XX", description = "Missing or invalid token, no such app, or no release deployed with its fly.toml", body = ErrorBody)), operation_id = "Apps_config")]
async fn config(
    State(inner): State<Arc<Inner>>,
    crate::access::ReadApp(app): crate::access::ReadApp,
) -> Result<Json<AppConfigResponse>, ApiError> {
    let (release, fly_toml) = inner.store.app_fly_toml(&app.id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "a fly.toml of app {} (no release was deployed with one; `aloft deploy` sends it)",
            app.name
        ))
    })?;
    Ok(Json(AppConfigResponse { release, fly_toml }))
}
