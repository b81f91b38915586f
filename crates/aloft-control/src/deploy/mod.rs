//! Server-side deployments (Aloft's own API): `POST /v1/apps/{app}/deployments` numbers a
//! release and rolls it out in the control plane, not in the CLI; `GET` follows it.
//!
//! A deployment is a durable record with a step log. Its deployer:
//! 1. runs the release command, when there is one, in a temporary machine of the release;
//!    a non-zero exit ends the deployment `failed` before any machine changes;
//! 2. creates the first machines when the app has none of the release's process group, or
//! 3. replaces the machines whose config differs: a batch at a time (`rolling`, batches of
//!    `max_unavailable`), all at once (`immediate`), after one new machine passed its checks
//!    (`canary`), or by a full new set next to the old one, which is destroyed once every
//!    new machine passes (`bluegreen`); each machine must start and pass its service checks
//!    within `wait_timeout`;
//! 4. on a failure, restores every machine it changed to the config it had (the `update`
//!    steps keep it), destroys the machines it created, and ends `rolled_back`.
//!
//! Every decision is re-derived from the store, so a control plane that restarts resumes
//! its running deployments (`resume`) and finishes their rollbacks.

mod act;
mod health;
mod plan;
mod release_command;
mod run;
mod scope;
mod steps;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aloft_store::{App, DeploymentRecord, DeploymentStep, ReleaseRecord};
use aloft_types::api::{
    DeployRequest, DeploymentResponse, DeploymentStepResponse, ErrorBody, ReleaseResponse,
};
use aloft_types::deploy::{ReleaseStatus, Strategy};
use aloft_types::time::rfc3339;
use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{ReadApp, WriteApp};
use crate::json::Body;
use crate::{ApiError, Inner, Principal};
use run::spawn;
use steps::group_of;

pub(crate) use run::resume;

/// Fly's defaults: `max_unavailable` 0.33 and a 5-minute `wait_timeout`.
const DEFAULT_MAX_UNAVAILABLE: f64 = 0.33;

const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);

/// At most this long for one machine (one hour).
const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(3600);

/// At most this long for the smoke checks of one machine.
const MAX_SMOKE_CHECK: Duration = Duration::from_secs(300);
/// The largest fly.toml kept with a release.
const MAX_FLY_TOML: usize = 256 * 1024;

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(releases))
        .routes(routes!(rollback))
}

fn release_response(release: &ReleaseRecord) -> ReleaseResponse {
    ReleaseResponse {
        id: release.id.clone(),
        version: release.version,
        image: release.image.clone(),
        status: release.status,
        process_group: group_of(&release.config).to_owned(),
        description: release.description.clone(),
        user: release.created_by.clone(),
        created_at: rfc3339(release.created_at),
    }
}

fn step_response(step: &DeploymentStep) -> DeploymentStepResponse {
    DeploymentStepResponse {
        number: step.number,
        machine_id: step.machine_id.as_ref().map(ToString::to_string),
        kind: step.kind,
        message: step.message.clone(),
        at: rfc3339(step.at),
    }
}

async fn deployment_response(
    inner: &Inner,
    deployment: &DeploymentRecord,
) -> Result<DeploymentResponse, ApiError> {
    let release = inner.store.release(&deployment.release_id).await?;
    let steps = inner.store.steps_of(&deployment.id).await?;
    Ok(response_of(deployment, &release, &steps))
}

/// A deployment as the API shows it, from its release and steps.
fn response_of(
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    steps: &[DeploymentStep],
) -> DeploymentResponse {
    DeploymentResponse {
        id: deployment.id.clone(),
        release: release_response(release),
        strategy: deployment.strategy,
        max_unavailable: deployment.max_unavailable,
        wait_timeout: u64::try_from(deployment.wait_timeout_ms / 1000).unwrap_or(0),
        smoke_check_seconds: u64::try_from(deployment.smoke_check_ms / 1000).unwrap_or(0),
        status: deployment.status,
        error: deployment.error.clone(),
        scope: deployment.scope.clone(),
        steps: steps.iter().map(step_response).collect(),
        created_at: rfc3339(deployment.created_at),
        updated_at: rfc3339(deployment.updated_at),
    }
}

#[utoipa::path(post, path = "/v1/apps/{app}/deployments", tag = "deployments", params(("app" = String, Path, description = "The app's name")), request_body = DeployRequest, responses((status = 200, description = "The deployment, started; follow it with GET", body = DeploymentResponse), (status = "4XX", description = "Bad input, missing or invalid token, no such app", body = ErrorBody), (status = 409, description = "Another deployment of the app is running", body = ErrorBody)), operation_id = "Deployments_create")]
async fn create(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    WriteApp(app): WriteApp,
    Body(request): Body<DeployRequest>,
) -> Result<Json<DeploymentResponse>, ApiError> {
    let image = request.image.trim();
    if image.is_empty() {
        return Err(ApiError::Unprocessable(
            "image is required: the image the release runs".to_owned(),
        ));
    }
    let strategy = match request.strategy.as_deref() {
        None => Strategy::Rolling,
        Some(name) => name.parse::<Strategy>().map_err(|_| {
            let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!(
                "strategy {name:?}: use one of {}",
                names.join(", ")
            ))
        })?,
    };
    let release_command = match request.release_command {
        Some(words) if words.is_empty() || words[0].trim().is_empty() => {
            return Err(ApiError::BadRequest(
                "release_command is empty: give the command and its arguments, or leave it out"
                    .to_owned(),
            ));
        }
        other => other,
    };
    let release_command_timeout = match request.release_command_timeout {
        Some(seconds) if seconds == 0 || seconds > MAX_WAIT_TIMEOUT.as_secs() => {
            return Err(ApiError::BadRequest(format!(
                "release_command_timeout must be between 1 and {} seconds",
                MAX_WAIT_TIMEOUT.as_secs()
            )));
        }
        Some(seconds) => Some(i64::try_from(seconds * 1000).unwrap_or(i64::MAX)),
        None => None,
    };
    let max_unavailable = request.max_unavailable.unwrap_or(DEFAULT_MAX_UNAVAILABLE);
    if !(max_unavailable > 0.0 && max_unavailable.is_finite())
        || (max_unavailable >= 1.0 && max_unavailable.fract() != 0.0)
    {
        return Err(ApiError::BadRequest(format!(
            "max_unavailable {max_unavailable}: a fraction of the machines above 0 and below 1, or a whole count of machines (1 is one machine)"
        )));
    }
    let wait_timeout = request
        .wait_timeout
        .map_or(DEFAULT_WAIT_TIMEOUT, Duration::from_secs);
    if wait_timeout.is_zero() || wait_timeout > MAX_WAIT_TIMEOUT {
        return Err(ApiError::BadRequest(format!(
            "wait_timeout must be between 1 and {} seconds",
            MAX_WAIT_TIMEOUT.as_secs()
        )));
    }
    let smoke_check = match (request.smoke_checks, request.smoke_check_seconds) {
        (Some(false), _) => Duration::ZERO,
        (_, None) => inner.config.smoke_check,
        (_, Some(seconds)) if seconds == 0 || seconds > MAX_SMOKE_CHECK.as_secs() => {
            return Err(ApiError::BadRequest(format!(
                "smoke_check_seconds must be between 1 and {} seconds (turn smoke checks off with smoke_checks: false)",
                MAX_SMOKE_CHECK.as_secs()
            )));
        }
        (_, Some(seconds)) => Duration::from_secs(seconds),
    };
    crate::machines::ensure_fits(&inner, request.config.guest.as_ref(), None).await?;
    if let Some(guest) = &request.release_command_guest {
        crate::machines::ensure_fits(&inner, Some(guest), None)
            .await
            .map_err(|e| match e {
                ApiError::Unprocessable(why) => {
                    ApiError::Unprocessable(format!("release_command_guest: {why}"))
                }
                other => other,
            })?;
    }
    ensure_idle(&inner, &app).await?;
    // A release runs an image by its id (a content digest) when the engine has it, so a
    // tag moved later does not change what the release runs.
    let resolved = match inner.builder() {
        Ok(builder) => builder
            .resolve(image)
            .await
            .map_err(|e| ApiError::Unavailable(format!("looking up image {image}: {e}")))?,
        Err(_) => None,
    };
    let requested = image;
    let image = resolved.as_deref().unwrap_or(image);
    let mut config = request.config;
    config.image = image.to_owned();
    let initial_count = match request.initial_count {
        Some(count) if count > 0 => i64::from(count),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "initial_count must be at least 1".to_owned(),
            ));
        }
        // Fly's first deploy: 1 machine for a group with volumes or without services.
        None if config.services.is_empty() || !config.mounts.is_empty() => 1,
        None => 2,
    };
    if !config.mounts.is_empty() && strategy.creates_machines() {
        return Err(ApiError::BadRequest(format!(
            "strategy \"{strategy}\" cannot be used with volumes (config.mounts): its new machines would need volumes of their own; use \"rolling\" or \"immediate\""
        )));
    }
    let scope = scope::of(
        &inner,
        &app,
        &config,
        strategy,
        request.only_machines,
        request.regions,
    )
    .await?;
    let fly_toml = request.fly_toml.filter(|text| !text.trim().is_empty());
    if let Some(text) = &fly_toml
        && text.len() > MAX_FLY_TOML
    {
        return Err(ApiError::BadRequest(format!(
            "fly_toml is {} bytes; at most {MAX_FLY_TOML} are kept",
            text.len()
        )));
    }
    let description = request
        .description
        .unwrap_or_else(|| format!("deploy image {requested}"));
    let (_, deployment) = inner
        .store
        .insert_deployment(aloft_store::NewDeployment {
            app_id: app.id.clone(),
            image: image.to_owned(),
            config,
            description,
            created_by: principal.token.name.clone(),
            strategy,
            max_unavailable,
            wait_timeout_ms: i64::try_from(wait_timeout.as_millis()).unwrap_or(i64::MAX),
            initial_count,
            release_command,
            release_command_timeout_ms: release_command_timeout,
            release_command_guest: request.release_command_guest,
            smoke_check_ms: i64::try_from(smoke_check.as_millis()).unwrap_or(i64::MAX),
            scope,
            fly_toml,
        })
        .await?;
    tracing::info!(app = %app.name, deployment = %deployment.id, %strategy, "deployment started");
    spawn(inner.clone(), app, deployment.clone());
    Ok(Json(deployment_response(&inner, &deployment).await?))
}

/// Refuses a second deployment of an app while one runs.
async fn ensure_idle(inner: &Inner, app: &App) -> Result<(), ApiError> {
    if let Some(running) = inner
        .store
        .deployments_of(&app.id)
        .await?
        .into_iter()
        .find(DeploymentRecord::is_active)
    {
        return Err(ApiError::Conflict(format!(
            "deployment {} of app {} is still {}; wait for it to end",
            running.id, app.name, running.status
        )));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/apps/{app}/releases/{version}/rollback", tag = "deployments", params(("app" = String, Path, description = "The app's name"), ("version" = i64, Path, description = "The release to go back to")), responses((status = 200, description = "A deployment of a new release with that release's image and config, started", body = DeploymentResponse), (status = "4XX", description = "Missing or invalid token, no such app or release", body = ErrorBody), (status = 409, description = "Another deployment of the app is running", body = ErrorBody), (status = 422, description = "The release never completed", body = ErrorBody)), operation_id = "Releases_rollback")]
async fn rollback(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((_, version)): Path<(String, i64)>,
    WriteApp(app): WriteApp,
) -> Result<Json<DeploymentResponse>, ApiError> {
    let release = inner
        .store
        .releases_of(&app.id)
        .await?
        .into_iter()
        .find(|r| r.version == version)
        .ok_or_else(|| ApiError::not_found(format!("release v{version} of app {}", app.name)))?;
    if release.status != ReleaseStatus::Complete {
        return Err(ApiError::Unprocessable(format!(
            "release v{version} of app {} is {}: only a release that was deployed completely can be rolled back to",
            app.name, release.status
        )));
    }
    ensure_idle(&inner, &app).await?;
    // The way that release was deployed, without its release command (the data it
    // migrated is already there).
    let original = inner
        .store
        .deployments_of(&app.id)
        .await?
        .into_iter()
        .find(|d| d.release_id == release.id);
    let (strategy, max_unavailable, wait_timeout_ms, initial_count, smoke_check_ms) =
        match &original {
            Some(d) => (
                d.strategy,
                d.max_unavailable,
                d.wait_timeout_ms,
                d.initial_count,
                d.smoke_check_ms,
            ),
            None => (
                Strategy::Rolling,
                DEFAULT_MAX_UNAVAILABLE,
                i64::try_from(DEFAULT_WAIT_TIMEOUT.as_millis()).unwrap_or(i64::MAX),
                2,
                i64::try_from(inner.config.smoke_check.as_millis()).unwrap_or(i64::MAX),
            ),
        };
    let (_, deployment) = inner
        .store
        .insert_deployment(aloft_store::NewDeployment {
            app_id: app.id.clone(),
            image: release.image.clone(),
            config: release.config.clone(),
            description: format!("rollback to v{version}"),
            created_by: principal.token.name.clone(),
            strategy,
            max_unavailable,
            wait_timeout_ms,
            initial_count,
            release_command: None,
            release_command_timeout_ms: None,
            release_command_guest: None,
            smoke_check_ms,
            scope: None,
            // The file of the release rolled back to is the app's again.
            fly_toml: inner.store.release_fly_toml(&release.id).await?,
        })
        .await?;
    tracing::info!(app = %app.name, deployment = %deployment.id, version, "rollback started");
    spawn(inner.clone(), app, deployment.clone());
    Ok(Json(deployment_response(&inner, &deployment).await?))
}

#[utoipa::path(get, path = "/v1/apps/{app}/deployments", tag = "deployments", params(("app" = String, Path, description = "The app's name")), responses((status = 200, description = "The app's deployments, newest first", body = Vec<DeploymentResponse>), (status = "4XX", description = "Missing or invalid token, no such app", body = ErrorBody)), operation_id = "Deployments_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
) -> Result<Json<Vec<DeploymentResponse>>, ApiError> {
    // Three queries whatever the number of deployments (clients poll this list).
    let deployments = inner.store.deployments_of(&app.id).await?;
    let releases: HashMap<String, ReleaseRecord> = inner
        .store
        .releases_of(&app.id)
        .await?
        .into_iter()
        .map(|release| (release.id.clone(), release))
        .collect();
    let mut steps = inner.store.steps_of_app(&app.id).await?;
    let mut shown = Vec::with_capacity(deployments.len());
    for deployment in &deployments {
        let release = match releases.get(&deployment.release_id) {
            Some(release) => release,
            None => &inner.store.release(&deployment.release_id).await?,
        };
        let steps = steps.remove(&deployment.id).unwrap_or_default();
        shown.push(response_of(deployment, release, &steps));
    }
    Ok(Json(shown))
}

#[utoipa::path(get, path = "/v1/apps/{app}/deployments/{id}", tag = "deployments", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The deployment's id")), responses((status = 200, body = DeploymentResponse), (status = "4XX", description = "Missing or invalid token, no such app or deployment", body = ErrorBody)), operation_id = "Deployments_show")]
async fn show(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<DeploymentResponse>, ApiError> {
    let deployment = inner.store.deployment(&app.id, &id).await?;
    Ok(Json(deployment_response(&inner, &deployment).await?))
}

#[utoipa::path(get, path = "/v1/apps/{app}/releases", tag = "deployments", params(("app" = String, Path, description = "The app's name")), responses((status = 200, description = "The app's releases, newest first", body = Vec<ReleaseResponse>), (status = "4XX", description = "Missing or invalid token, no such app", body = ErrorBody)), operation_id = "Releases_list")]
async fn releases(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
) -> Result<Json<Vec<ReleaseResponse>>, ApiError> {
    let releases = inner.store.releases_of(&app.id).await?;
    Ok(Json(releases.iter().map(release_response).collect()))
}
