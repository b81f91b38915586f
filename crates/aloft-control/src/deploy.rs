// Over 800 lines: the deployer (API, runner, strategies, release command, rollback, smoke checks); split along those jobs is issue 16 item 6.
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

use std::sync::Arc;
use std::time::Duration;

use aloft_store::{App, DeploymentRecord, DeploymentStep, MachineRecord, ReleaseRecord};
use aloft_types::api::{
    DeployRequest, DeploymentResponse, DeploymentStepResponse, ErrorBody, MachineRequest,
    ReleaseResponse,
};
use aloft_types::deploy::{DeploymentStatus, ReleaseStatus, StepKind, Strategy};
use aloft_types::machine::{
    METADATA_PLATFORM_VERSION, METADATA_PROCESS_GROUP, METADATA_RELEASE_ID,
    METADATA_RELEASE_VERSION, MachineConfig,
};
use aloft_types::time::rfc3339;
use aloft_types::{CheckStatus, EventKind, MachineId, MachineState};
use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apps::app_for;
use crate::json::Body;
use crate::{ApiError, Inner, Principal};

/// Fly's defaults: `max_unavailable` 0.33 and a 5-minute `wait_timeout`.
const DEFAULT_MAX_UNAVAILABLE: f64 = 0.33;
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);
/// At most this long for one machine (one hour).
const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(3600);
/// flyctl's smoke checks: a new machine must keep running this long without an exit.
const DEFAULT_SMOKE_CHECK: Duration = Duration::from_secs(10);
/// At most this long for the smoke checks of one machine.
const MAX_SMOKE_CHECK: Duration = Duration::from_secs(300);

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
    Ok(DeploymentResponse {
        id: deployment.id.clone(),
        release: release_response(&release),
        strategy: deployment.strategy,
        max_unavailable: deployment.max_unavailable,
        wait_timeout: u64::try_from(deployment.wait_timeout_ms / 1000).unwrap_or(0),
        smoke_check_seconds: u64::try_from(deployment.smoke_check_ms / 1000).unwrap_or(0),
        status: deployment.status,
        error: deployment.error.clone(),
        steps: steps.iter().map(step_response).collect(),
        created_at: rfc3339(deployment.created_at),
        updated_at: rfc3339(deployment.updated_at),
    })
}

#[utoipa::path(post, path = "/v1/apps/{app}/deployments", tag = "deployments", params(("app" = String, Path, description = "The app's name")), request_body = DeployRequest, responses((status = 200, description = "The deployment, started; follow it with GET", body = DeploymentResponse), (status = "4XX", description = "Bad input, missing or invalid token, no such app", body = ErrorBody), (status = 409, description = "Another deployment of the app is running", body = ErrorBody)), operation_id = "Deployments_create")]
async fn create(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(app): Path<String>,
    Body(request): Body<DeployRequest>,
) -> Result<Json<DeploymentResponse>, ApiError> {
    let app = app_for(&inner, &principal, &app, true).await?;
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
        (_, None) => DEFAULT_SMOKE_CHECK,
        (_, Some(seconds)) if seconds == 0 || seconds > MAX_SMOKE_CHECK.as_secs() => {
            return Err(ApiError::BadRequest(format!(
                "smoke_check_seconds must be between 1 and {} seconds (turn smoke checks off with smoke_checks: false)",
                MAX_SMOKE_CHECK.as_secs()
            )));
        }
        (_, Some(seconds)) => Duration::from_secs(seconds),
    };
    crate::machines::ensure_fits(&inner, request.config.guest.as_ref(), None).await?;
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
            smoke_check_ms: i64::try_from(smoke_check.as_millis()).unwrap_or(i64::MAX),
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
    Path((app, version)): Path<(String, i64)>,
) -> Result<Json<DeploymentResponse>, ApiError> {
    let app = app_for(&inner, &principal, &app, true).await?;
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
                i64::try_from(DEFAULT_SMOKE_CHECK.as_millis()).unwrap_or(i64::MAX),
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
            smoke_check_ms,
        })
        .await?;
    tracing::info!(app = %app.name, deployment = %deployment.id, version, "rollback started");
    spawn(inner.clone(), app, deployment.clone());
    Ok(Json(deployment_response(&inner, &deployment).await?))
}

#[utoipa::path(get, path = "/v1/apps/{app}/deployments", tag = "deployments", params(("app" = String, Path, description = "The app's name")), responses((status = 200, description = "The app's deployments, newest first", body = Vec<DeploymentResponse>), (status = "4XX", description = "Missing or invalid token, no such app", body = ErrorBody)), operation_id = "Deployments_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(app): Path<String>,
) -> Result<Json<Vec<DeploymentResponse>>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
    let mut shown = Vec::new();
    for deployment in inner.store.deployments_of(&app.id).await? {
        shown.push(deployment_response(&inner, &deployment).await?);
    }
    Ok(Json(shown))
}

#[utoipa::path(get, path = "/v1/apps/{app}/deployments/{id}", tag = "deployments", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The deployment's id")), responses((status = 200, body = DeploymentResponse), (status = "4XX", description = "Missing or invalid token, no such app or deployment", body = ErrorBody)), operation_id = "Deployments_show")]
async fn show(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<DeploymentResponse>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
    let deployment = inner.store.deployment(&app.id, &id).await?;
    Ok(Json(deployment_response(&inner, &deployment).await?))
}

#[utoipa::path(get, path = "/v1/apps/{app}/releases", tag = "deployments", params(("app" = String, Path, description = "The app's name")), responses((status = 200, description = "The app's releases, newest first", body = Vec<ReleaseResponse>), (status = "4XX", description = "Missing or invalid token, no such app", body = ErrorBody)), operation_id = "Releases_list")]
async fn releases(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(app): Path<String>,
) -> Result<Json<Vec<ReleaseResponse>>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
    let releases = inner.store.releases_of(&app.id).await?;
    Ok(Json(releases.iter().map(release_response).collect()))
}

/// Resumes every deployment a previous run of the control plane left running.
pub(crate) async fn resume(inner: &Arc<Inner>) -> Result<usize, ApiError> {
    let active = inner.store.active_deployments().await?;
    let count = active.len();
    for deployment in active {
        let app = inner.store.app(&deployment.app_id).await?;
        tracing::info!(app = %app.name, deployment = %deployment.id, status = %deployment.status, "resuming a deployment");
        spawn(inner.clone(), app, deployment);
    }
    Ok(count)
}

fn spawn(inner: Arc<Inner>, app: App, deployment: DeploymentRecord) {
    let stopping = inner.stopping.clone();
    let tasks = inner.tasks.clone();
    tasks.spawn(async move {
        tokio::select! {
            outcome = run(&inner, &app, &deployment) => {
                if let Err(error) = outcome {
                    // The store itself failed: the deployment stays active and resumes on
                    // the next start; say so.
                    tracing::error!(app = %app.name, deployment = %deployment.id, %error, "a deployment stopped; it resumes when aloftd restarts");
                }
            }
            () = stopping.cancelled() => {
                tracing::info!(app = %app.name, deployment = %deployment.id, "the control plane stops; the deployment resumes at its next start");
            }
        }
    });
}

/// The process group a config belongs to (`app` when it names none).
fn group_of(config: &MachineConfig) -> &str {
    config
        .metadata
        .get(METADATA_PROCESS_GROUP)
        .map_or("app", String::as_str)
}

/// Whether a machine already runs `target` (the platform's own metadata aside).
fn runs(machine: &MachineConfig, target: &MachineConfig) -> bool {
    let plain = |config: &MachineConfig| {
        let mut config = config.clone();
        config.metadata.remove(METADATA_PLATFORM_VERSION);
        // Which deployment created a machine is the machine's, not the release's.
        config.metadata.remove(METADATA_DEPLOYMENT);
        config.metadata.remove(METADATA_DEPLOYMENT_STEP);
        // Which volume a mount got (and its size then) is the machine's, not the release's.
        for mount in &mut config.mounts {
            mount.volume.clear();
            mount.size_gb = 0;
            mount.encrypted = false;
        }
        serde_json::to_value(config).ok()
    };
    plain(machine) == plain(target)
}

/// How many machines one batch replaces, as flyctl reads `max_unavailable`: 1 or more is
/// a count of machines (`1` is one machine, not all of them), below 1 a fraction of the
/// group, rounded up (`0.33` of 3 machines is 1, of 10 is 4). Never 0, never more than the
/// group.
fn batch_size(strategy: Strategy, max_unavailable: f64, machines: usize) -> usize {
    if strategy == Strategy::Immediate {
        return machines.max(1);
    }
    let size = if max_unavailable >= 1.0 {
        max_unavailable.trunc() as usize
    } else {
        // The epsilon keeps 0.1 of 30 machines at 3 (the product is 3.0000000000000004).
        (max_unavailable * machines as f64 - 1e-9).ceil().max(0.0) as usize
    };
    size.clamp(1, machines.max(1))
}

/// The app's machines of `group` that are not being destroyed, oldest first.
async fn machines_of(
    inner: &Inner,
    app: &App,
    group: &str,
) -> Result<Vec<MachineRecord>, ApiError> {
    let mut machines: Vec<MachineRecord> = inner
        .store
        .list_machines(&app.id, &aloft_store::MachineFilter::default())
        .await?
        .into_iter()
        .filter(|m| {
            !m.state.is_terminal()
                && m.state != MachineState::Destroying
                && m.desired != aloft_store::Desired::Destroyed
                && group_of(&m.config) == group
        })
        .collect();
    machines.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(machines)
}

async fn step(
    inner: &Inner,
    deployment: &DeploymentRecord,
    machine: Option<&MachineId>,
    kind: StepKind,
    message: &str,
    previous: Option<&MachineConfig>,
) -> Result<(), ApiError> {
    tracing::info!(deployment = %deployment.id, machine = ?machine.map(MachineId::as_str), %kind, message, "deployment step");
    inner
        .store
        .append_step(&deployment.id, machine, kind, message, previous)
        .await?;
    if let Some(machine) = machine {
        let text = format!("deploy {}: {kind}: {message}", deployment.id);
        crate::logs::platform_line(&inner.logs, &inner.store, machine, text).await;
    }
    Ok(())
}

/// How a roll-out ended.
enum Outcome {
    /// Every machine runs the release and passes its checks.
    Done,
    /// Nothing was changed (the release command failed): the deployment fails as is.
    Abort(String),
    /// Machines were changed and the release failed: put them back.
    RollBack(String),
}

async fn run(inner: &Arc<Inner>, app: &App, deployment: &DeploymentRecord) -> Result<(), ApiError> {
    let release = inner.store.release(&deployment.release_id).await?;
    adopt_created(inner, app, deployment).await?;
    if deployment.status == DeploymentStatus::RollingBack {
        let why = deployment
            .error
            .clone()
            .unwrap_or_else(|| "the deployment failed".to_owned());
        return roll_back(inner, app, deployment, &release, &why).await;
    }
    match roll_out(inner, app, deployment, &release).await? {
        Outcome::Done => {
            inner
                .store
                .set_release_status(&release.id, ReleaseStatus::Complete)
                .await?;
            inner
                .store
                .set_deployment_status(&deployment.id, DeploymentStatus::Succeeded, None)
                .await?;
            tracing::info!(app = %app.name, deployment = %deployment.id, version = release.version, "deployment succeeded");
            Ok(())
        }
        Outcome::Abort(why) => {
            inner
                .store
                .set_release_status(&release.id, ReleaseStatus::Failed)
                .await?;
            inner
                .store
                .set_deployment_status(&deployment.id, DeploymentStatus::Failed, Some(&why))
                .await?;
            tracing::warn!(app = %app.name, deployment = %deployment.id, why, "deployment failed before changing any machine");
            Ok(())
        }
        Outcome::RollBack(why) => {
            inner
                .store
                .set_deployment_status(&deployment.id, DeploymentStatus::RollingBack, Some(&why))
                .await?;
            roll_back(inner, app, deployment, &release, &why).await
        }
    }
}

/// The machines steps of `kind` name, in order.
fn machines_in(steps: &[DeploymentStep], kind: StepKind) -> Vec<MachineId> {
    steps
        .iter()
        .filter(|s| s.kind == kind)
        .filter_map(|s| s.machine_id.clone())
        .collect()
}

/// Whether a step of `kind` names `machine`.
fn logged(steps: &[DeploymentStep], kind: StepKind, machine: &MachineId) -> bool {
    steps
        .iter()
        .any(|s| s.kind == kind && s.machine_id.as_ref() == Some(machine))
}

/// The config the release's machines run: the release's, with its version and id in the
/// metadata (Fly's keys), so `aloft status` can say which release a machine runs.
fn target_of(release: &ReleaseRecord) -> MachineConfig {
    let mut config = release.config.clone();
    config.metadata.insert(
        METADATA_RELEASE_VERSION.to_owned(),
        release.version.to_string(),
    );
    config
        .metadata
        .insert(METADATA_RELEASE_ID.to_owned(), release.id.clone());
    config
}

/// Creates one machine of the release (in `region`, else the default one).
async fn create_for(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    region: Option<&str>,
    kind: StepKind,
) -> Result<MachineRecord, ApiError> {
    let mut request = MachineRequest::new(created_by(target_of(release), deployment, kind));
    request.region = region.map(str::to_owned);
    // Green machines take no traffic until the switch.
    let cordoned = kind == StepKind::Green;
    crate::machines::create_machine_as(inner, app, request, &release.created_by, cordoned).await
}

/// Metadata naming the deployment that created a machine, and the step kind it was
/// created for (`create`, `canary`, `green`, `release_command`). The step is logged once
/// the machine exists (it names the machine's id); a machine created just before a
/// restart, whose step was not logged yet, is found by these and adopted when the
/// deployment resumes, instead of being left behind.
const METADATA_DEPLOYMENT: &str = "aloft_deployment";
const METADATA_DEPLOYMENT_STEP: &str = "aloft_deployment_step";

fn created_by(
    mut config: MachineConfig,
    deployment: &DeploymentRecord,
    kind: StepKind,
) -> MachineConfig {
    config
        .metadata
        .insert(METADATA_DEPLOYMENT.to_owned(), deployment.id.clone());
    config.metadata.insert(
        METADATA_DEPLOYMENT_STEP.to_owned(),
        kind.as_str().to_owned(),
    );
    config
}

/// Logs a step for every live machine the deployment created whose step a restart kept
/// from being logged (see [`METADATA_DEPLOYMENT`]).
async fn adopt_created(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
) -> Result<(), ApiError> {
    let steps = inner.store.steps_of(&deployment.id).await?;
    let machines = inner
        .store
        .list_machines(&app.id, &aloft_store::MachineFilter::default())
        .await?;
    for machine in machines {
        if machine.state.is_terminal()
            || machine.config.metadata.get(METADATA_DEPLOYMENT) != Some(&deployment.id)
            || steps
                .iter()
                .any(|s| s.machine_id.as_ref() == Some(&machine.id))
        {
            continue;
        }
        // The metadata can be written through the API: only a creating kind counts.
        let Some(kind) = machine
            .config
            .metadata
            .get(METADATA_DEPLOYMENT_STEP)
            .and_then(|kind| kind.parse::<StepKind>().ok())
            .filter(|kind| StepKind::CREATING.contains(kind) || *kind == StepKind::ReleaseCommand)
        else {
            continue;
        };
        let message = format!(
            "adopted machine {} in {}, created before a restart",
            machine.id, machine.region
        );
        step(inner, deployment, Some(&machine.id), kind, &message, None).await?;
    }
    Ok(())
}

/// Runs the release command (once), then creates or replaces the machines; `Abort` and
/// `RollBack` say why the release failed.
async fn roll_out(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
) -> Result<Outcome, ApiError> {
    if let Some(command) = &deployment.release_command
        && let Err(why) = release_command(inner, app, deployment, release, command).await?
    {
        return Ok(Outcome::Abort(why));
    }
    let target = &target_of(release);
    let group = group_of(target).to_owned();
    let wait = Duration::from_millis(u64::try_from(deployment.wait_timeout_ms).unwrap_or(0));
    let steps = inner.store.steps_of(&deployment.id).await?;
    let created = machines_in(&steps, StepKind::Create);
    let machines = machines_of(inner, app, &group).await?;
    // Check results older than the deployment are not its (a passing check is recorded
    // when it changes, not at every probe).
    let since = release_start(&steps);
    let replacing = steps.iter().any(|s| {
        matches!(
            s.kind,
            StepKind::Update | StepKind::Canary | StepKind::Green | StepKind::Retire
        )
    });
    let noted = steps.iter().any(|s| s.kind == StepKind::Note);
    if !created.is_empty() || (machines.is_empty() && !replacing) {
        // The app's first machines of this group (or the rest of them, after a restart).
        let wanted = usize::try_from(deployment.initial_count).unwrap_or(1);
        let mut made = created;
        if !noted {
            let message = format!(
                "creating {wanted} machine(s) of process group {group} with release v{}",
                release.version
            );
            step(inner, deployment, None, StepKind::Note, &message, None).await?;
        }
        while made.len() < wanted {
            let machine =
                create_for(inner, app, deployment, release, None, StepKind::Create).await?;
            let message = format!("created machine {} in {}", machine.id, machine.region);
            step(
                inner,
                deployment,
                Some(&machine.id),
                StepKind::Create,
                &message,
                None,
            )
            .await?;
            made.push(machine.id);
        }
        for id in &made {
            if let Err(why) =
                healthy(inner, app, deployment, id, since, wait, Smoke::Deployment).await?
            {
                return Ok(Outcome::RollBack(why));
            }
        }
        return Ok(Outcome::Done);
    }
    let strategy = deployment.strategy;
    if strategy == Strategy::Bluegreen {
        return bluegreen(inner, app, deployment, release, &steps, machines, wait).await;
    }
    let pending: Vec<&MachineRecord> = machines
        .iter()
        .filter(|m| !runs(&m.config, target))
        .collect();
    let size = batch_size(strategy, deployment.max_unavailable, machines.len());
    if !noted {
        let message = format!(
            "{strategy} strategy: {} of {} machine(s) to update, {size} at a time, to release v{}",
            pending.len(),
            machines.len(),
            release.version
        );
        step(inner, deployment, None, StepKind::Note, &message, None).await?;
    }
    if strategy == Strategy::Canary
        && (!pending.is_empty() || !machines_in(&steps, StepKind::Canary).is_empty())
        && let Err(why) = canary(inner, app, deployment, release, &steps, &machines, wait).await?
    {
        return Ok(Outcome::RollBack(why));
    }
    // Machines a resumed deployment already updated are checked like the others.
    for id in machines_in(&steps, StepKind::Update) {
        if machines
            .iter()
            .any(|m| m.id == id && runs(&m.config, target))
            && let Err(why) =
                healthy(inner, app, deployment, &id, since, wait, Smoke::Deployment).await?
        {
            return Ok(Outcome::RollBack(why));
        }
    }
    for batch in pending.chunks(size) {
        let since = aloft_store::now_ms();
        for machine in batch {
            step(
                inner,
                deployment,
                Some(&machine.id),
                StepKind::Update,
                &format!(
                    "updating machine {} to release v{}",
                    machine.id, release.version
                ),
                Some(&machine.config),
            )
            .await?;
            let current = inner.store.machine(&app.id, &machine.id).await?;
            crate::machines::update_machine(inner, app, &current, target.clone(), false, None)
                .await?;
        }
        for machine in batch {
            if let Err(why) = healthy(
                inner,
                app,
                deployment,
                &machine.id,
                since,
                wait,
                Smoke::Deployment,
            )
            .await?
            {
                return Ok(Outcome::RollBack(why));
            }
        }
    }
    Ok(Outcome::Done)
}

/// `canary`: one new machine of the release, next to the others, must start and pass its
/// checks; it is then destroyed and the rolling update follows.
async fn canary(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    steps: &[DeploymentStep],
    machines: &[MachineRecord],
    wait: Duration,
) -> Result<Result<(), String>, ApiError> {
    let id = match machines_in(steps, StepKind::Canary).into_iter().next() {
        Some(id) => id,
        None => {
            let region = machines.first().map(|m| m.region.as_str());
            let machine =
                create_for(inner, app, deployment, release, region, StepKind::Canary).await?;
            let message = format!(
                "created canary machine {} in {} with release v{}",
                machine.id, machine.region, release.version
            );
            step(
                inner,
                deployment,
                Some(&machine.id),
                StepKind::Canary,
                &message,
                None,
            )
            .await?;
            machine.id
        }
    };
    if logged(steps, StepKind::Retire, &id) {
        // Its destroy was asked for; a restart may have come between the step and the
        // destroy itself, so it is asked for again (a no-op once done).
        destroy_retired(inner, app, &id).await?;
        return Ok(Ok(()));
    }
    let since = release_start(steps);
    if let Err(why) = healthy(inner, app, deployment, &id, since, wait, Smoke::Deployment).await? {
        return Ok(Err(why));
    }
    retire(
        inner,
        app,
        deployment,
        &id,
        "the canary passed; destroying it",
    )
    .await?;
    Ok(Ok(()))
}

/// `bluegreen`: as many new machines as the group has, created next to the old ones,
/// cordoned (no traffic reaches them), and all passing their checks; then traffic
/// switches to all of them at once (one write uncordons them) and the old machines are
/// destroyed. A rollback destroys the green machines, which never served.
async fn bluegreen(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    steps: &[DeploymentStep],
    machines: Vec<MachineRecord>,
    wait: Duration,
) -> Result<Outcome, ApiError> {
    let target = &target_of(release);
    let mut green = machines_in(steps, StepKind::Green);
    // Past the switch (logged before it is made), nothing is checked again: the switch
    // is made (again: it is idempotent) and blue goes.
    let retiring = steps.iter().any(|s| s.kind == StepKind::Switch);
    let blue: Vec<MachineRecord> = machines
        .into_iter()
        .filter(|m| !green.contains(&m.id))
        .collect();
    if !retiring {
        if green.is_empty() && blue.iter().all(|m| runs(&m.config, target)) {
            let message = format!(
                "bluegreen strategy: every machine already runs release v{}",
                release.version
            );
            step(inner, deployment, None, StepKind::Note, &message, None).await?;
            return Ok(Outcome::Done);
        }
        if !steps.iter().any(|s| s.kind == StepKind::Note) {
            let message = format!(
                "bluegreen strategy: {} green machine(s) of release v{} next to {} blue one(s)",
                blue.len(),
                release.version,
                blue.len()
            );
            step(inner, deployment, None, StepKind::Note, &message, None).await?;
        }
        for old in blue.iter().skip(green.len()) {
            let machine = create_for(
                inner,
                app,
                deployment,
                release,
                Some(&old.region),
                StepKind::Green,
            )
            .await?;
            let message = format!(
                "created green machine {} in {} with release v{}",
                machine.id, machine.region, release.version
            );
            step(
                inner,
                deployment,
                Some(&machine.id),
                StepKind::Green,
                &message,
                None,
            )
            .await?;
            green.push(machine.id);
        }
        let since = release_start(steps);
        for id in &green {
            if let Err(why) =
                healthy(inner, app, deployment, id, since, wait, Smoke::Deployment).await?
            {
                return Ok(Outcome::RollBack(why));
            }
        }
        // The switch: logged first (its time bounds when green may first answer), then
        // every green machine enters the rotation in one write.
        let message = format!(
            "all {} green machine(s) pass their checks; switching traffic to them, then destroying the blue ones",
            green.len()
        );
        step(inner, deployment, None, StepKind::Switch, &message, None).await?;
    }
    inner.store.set_cordoned_all(&app.id, &green, false).await?;
    inner.catalog_dirty.notify_one();
    for old in &blue {
        retire(inner, app, deployment, &old.id, "blue machine replaced").await?;
    }
    Ok(Outcome::Done)
}

/// Destroys a machine the release no longer needs (logged as `retire`).
async fn retire(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    id: &MachineId,
    why: &str,
) -> Result<(), ApiError> {
    let machine = inner.store.machine(&app.id, id).await?;
    if machine.state.is_terminal() || machine.desired == aloft_store::Desired::Destroyed {
        return Ok(());
    }
    let message = format!("destroying machine {id}: {why}");
    step(
        inner,
        deployment,
        Some(id),
        StepKind::Retire,
        &message,
        None,
    )
    .await?;
    destroy_retired(inner, app, id).await
}

/// Destroys a machine a `retire` step names, unless that was done already.
async fn destroy_retired(inner: &Arc<Inner>, app: &App, id: &MachineId) -> Result<(), ApiError> {
    let machine = inner.store.machine(&app.id, id).await?;
    if machine.state.is_terminal() || machine.desired == aloft_store::Desired::Destroyed {
        return Ok(());
    }
    crate::machines::destroy_forcibly(inner, &machine, false).await
}

/// The process group of release command machines (Fly's name).
const RELEASE_COMMAND_GROUP: &str = "fly_app_release_command";
/// How long a release command may run unless the deployment says otherwise.
const DEFAULT_RELEASE_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How many of a machine's last log lines a failure shows.
const LOG_LINES_SHOWN: usize = 20;

/// Runs the release command once in a temporary machine of the release (its env and
/// secrets; no services, checks or volumes), and destroys the machine; the inner error
/// says why the command failed, with its output.
async fn release_command(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    command: &[String],
) -> Result<Result<(), String>, ApiError> {
    let steps = inner.store.steps_of(&deployment.id).await?;
    if steps.iter().any(|s| s.kind == StepKind::Released) {
        return Ok(Ok(()));
    }
    let shown = command.join(" ");
    let id = match machines_in(&steps, StepKind::ReleaseCommand)
        .into_iter()
        .next()
    {
        Some(id) => id,
        None => {
            let mut config = target_of(release);
            config.init.cmd = command.to_vec();
            config.init.exec.clear();
            config.services.clear();
            config.checks.clear();
            config.mounts.clear();
            config.statics.clear();
            config.metrics = None;
            config.schedule = None;
            config.auto_destroy = false;
            config.restart = Some(aloft_types::machine::MachineRestart {
                policy: Some(aloft_types::machine::RestartPolicy::No),
                max_retries: 0,
            });
            config.metadata.insert(
                METADATA_PROCESS_GROUP.to_owned(),
                RELEASE_COMMAND_GROUP.to_owned(),
            );
            let request =
                MachineRequest::new(created_by(config, deployment, StepKind::ReleaseCommand));
            let machine =
                crate::machines::create_machine(inner, app, request, &release.created_by).await?;
            let message = format!(
                "running release command `{shown}` in temporary machine {}",
                machine.id
            );
            step(
                inner,
                deployment,
                Some(&machine.id),
                StepKind::ReleaseCommand,
                &message,
                None,
            )
            .await?;
            machine.id
        }
    };
    let timeout = deployment
        .release_command_timeout_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or(DEFAULT_RELEASE_COMMAND_TIMEOUT, Duration::from_millis);
    let started = release_start(&steps);
    let deadline = tokio::time::Instant::now()
        + timeout.saturating_sub(Duration::from_millis(
            u64::try_from(aloft_store::now_ms() - started).unwrap_or(0),
        ));
    let mut observed = inner.observed.subscribe();
    let exit = loop {
        let machine = inner.store.machine(&app.id, &id).await?;
        if machine.state == MachineState::Failed {
            break Err(launch_failure(inner, &id).await?);
        }
        let exit = inner
            .store
            .events(&id)
            .await?
            .into_iter()
            .filter(|e| e.kind == EventKind::Exit)
            .max_by_key(|e| e.seq)
            .and_then(|e| e.request.pointer("/exit_event/exit_code")?.as_i64());
        if let Some(code) = exit
            && machine.state != MachineState::Started
        {
            break Ok(code);
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(format!(
                "did not finish within {}s (release_command_timeout)",
                timeout.as_secs()
            ));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), observed.recv()).await;
    };
    let machine = inner.store.machine(&app.id, &id).await?;
    let output = last_lines(inner, &machine).await;
    if !machine.state.is_terminal() && machine.desired != aloft_store::Desired::Destroyed {
        crate::machines::destroy_forcibly(inner, &machine, true).await?;
    }
    let outcome = match exit {
        Ok(0) => Ok(()),
        Ok(code) => Err(format!(
            "release command `{shown}` exited with code {code}; no machine was changed{output}"
        )),
        Err(why) => Err(format!(
            "release command `{shown}` {why}; no machine was changed{output}"
        )),
    };
    match &outcome {
        Ok(()) => {
            let message = format!("release command `{shown}` exited 0{output}");
            step(
                inner,
                deployment,
                Some(&id),
                StepKind::Released,
                &message,
                None,
            )
            .await?;
        }
        Err(why) => step(inner, deployment, Some(&id), StepKind::Failed, why, None).await?,
    }
    Ok(outcome)
}

/// Why the agent could not launch a machine (its `launch` event).
async fn launch_failure(inner: &Inner, machine: &MachineId) -> Result<String, ApiError> {
    let events = inner.store.events(machine).await?;
    let reason = events
        .iter()
        .filter(|e| e.kind == EventKind::Launch && e.status == "failed")
        .max_by_key(|e| e.seq)
        .and_then(|e| e.request.get("error").and_then(|v| v.as_str()))
        .unwrap_or("no reason recorded")
        .to_owned();
    Ok(format!("failed to launch: {reason}"))
}

/// The machine's last log lines as text to append to a message (empty when it has none
/// or its host cannot be asked).
async fn last_lines(inner: &Inner, machine: &MachineRecord) -> String {
    let Some(link) = machine.host_id.as_ref().and_then(|h| inner.links.get(h)) else {
        return String::new();
    };
    match link.last_lines(machine, LOG_LINES_SHOWN).await {
        Ok(lines) if !lines.is_empty() => {
            let mut text = format!("\nlast log lines of machine {}:", machine.id);
            for line in lines {
                text.push_str("\n  ");
                text.push_str(&line);
            }
            text
        }
        Ok(_) => String::new(),
        Err(error) => {
            tracing::debug!(machine = %machine.id, %error, "reading a machine's last lines failed");
            String::new()
        }
    }
}

/// When the deployment's first step was logged (results older than that are not its).
fn release_start(steps: &[DeploymentStep]) -> i64 {
    steps.first().map_or_else(aloft_store::now_ms, |s| s.at)
}

/// When the deployment last started `machine` (created at `created_at`) on a new config:
/// its last step of a [`StepKind::STARTING`] kind, else `since`. A machine the deployment created
/// counts from its creation: its step is logged after it, and under load the machine may
/// have started (and its smoke-check window begun) before the step was written.
fn started_by_deployment(
    steps: &[DeploymentStep],
    machine: &MachineId,
    created_at: i64,
    since: i64,
) -> i64 {
    steps
        .iter()
        .filter(|s| s.machine_id.as_ref() == Some(machine) && StepKind::STARTING.contains(&s.kind))
        .max_by_key(|s| (s.at, s.number))
        .map_or(since, |s| {
            if StepKind::CREATING.contains(&s.kind) {
                created_at.min(s.at)
            } else {
                s.at
            }
        })
}

/// An exit of the machine's own (not a stop the platform asked for) recorded at or after
/// `since`: the newest, as "exited with code N" (and whether the agent restarts it).
fn crash_since(events: &[aloft_store::MachineEvent], since: i64) -> Option<String> {
    let exit = events
        .iter()
        .filter(|e| e.kind == EventKind::Exit && e.at >= since)
        .filter(|e| {
            let flag = |name: &str| {
                e.request.pointer(&format!("/exit_event/{name}"))
                    == Some(&serde_json::Value::Bool(true))
            };
            // A stop the platform asked for, or a container that vanished (an agent
            // killed between removing a machine's old container and creating its new
            // one, say), is not the app exiting.
            !flag("requested_stop") && !flag("container_lost")
        })
        .max_by_key(|e| e.seq)?;
    let code = exit
        .request
        .pointer("/exit_event/exit_code")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(-1);
    let signal = exit
        .request
        .pointer("/exit_event/signal")
        .and_then(serde_json::Value::as_i64)
        .filter(|s| *s > 0);
    let oom =
        exit.request.pointer("/exit_event/oom_killed") == Some(&serde_json::Value::Bool(true));
    let mut text = match signal {
        Some(signal) => format!("was killed by signal {signal} (exit code {code})"),
        None => format!("exited with code {code}"),
    };
    if oom {
        text.push_str(", out of memory");
    }
    if exit.status == "restarting" {
        text.push_str("; the app appears to be crashing");
    }
    Some(text)
}

/// Whether [`healthy`] runs smoke checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Smoke {
    /// As the deployment says (on, for its window, unless it turned them off).
    Deployment,
    /// Off: a machine restored by a rollback.
    Off,
}

/// Waits until `machine` runs its current version, started, with every service check
/// passing in a result newer than `since`, and (smoke checks, unless the deployment turned
/// them off) has kept running for the deployment's smoke check window without an exit.
/// Fails at once, without waiting for the timeout, when the machine fails to launch,
/// exits (smoke checks on) or stops for good (smoke checks off); the inner error says what
/// failed, with the machine's last log lines.
async fn healthy(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    machine: &MachineId,
    since: i64,
    wait: Duration,
    smoke: Smoke,
) -> Result<Result<(), String>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let smoke = match smoke {
        Smoke::Deployment => {
            Duration::from_millis(u64::try_from(deployment.smoke_check_ms).unwrap_or(0))
        }
        Smoke::Off => Duration::ZERO,
    };
    let steps = inner.store.steps_of(&deployment.id).await?;
    let created_at = inner.store.machine(&app.id, machine).await?.created_at;
    let touched = started_by_deployment(&steps, machine, created_at, since);
    let mut observed = inner.observed.subscribe();
    let mut reported: Option<String> = None;
    loop {
        let current = inner.store.machine(&app.id, machine).await?;
        let expected: usize = current.config.services.iter().map(|s| s.checks.len()).sum();
        let checks: Vec<_> = inner
            .store
            .checks_of(machine)
            .await?
            .into_iter()
            .filter(|c| c.service.is_some())
            .collect();
        let fresh = |c: &&aloft_store::CheckRecord| c.updated_at >= since;
        let failing = checks
            .iter()
            .filter(fresh)
            .find(|c| c.status != CheckStatus::Passing);
        let passing = checks
            .iter()
            .filter(fresh)
            .filter(|c| c.status == CheckStatus::Passing)
            .count();
        let events = inner.store.events(machine).await?;
        let crash = crash_since(&events, touched);
        // Stopped after an exit, and left to rest by its restart policy.
        let stopped_for_good = current.state == MachineState::Stopped
            && current.desired == aloft_store::Desired::Stopped
            && crash.is_some();
        if let Some(crash) = crash.filter(|_| !smoke.is_zero() || stopped_for_good) {
            let state = if stopped_for_good { " and stopped" } else { "" };
            let why = format!(
                "machine {machine} {crash}{state}{}",
                last_lines(inner, &current).await
            );
            step(
                inner,
                deployment,
                Some(machine),
                StepKind::Failed,
                &why,
                None,
            )
            .await?;
            return Ok(Err(why));
        }
        // The start of the run the smoke checks watch: the newest since the deployment
        // started the machine on this config.
        let run_started = events
            .iter()
            .filter(|e| e.kind == EventKind::Start && e.at >= touched)
            .map(|e| e.at)
            .max();
        let started = current.state == MachineState::Started;
        if started && passing >= expected {
            let settled = run_started.is_some_and(|at| {
                aloft_store::now_ms() - at >= i64::try_from(smoke.as_millis()).unwrap_or(i64::MAX)
            });
            if smoke.is_zero() || settled {
                let checks = if expected == 0 {
                    "no service checks".to_owned()
                } else {
                    format!("passes its {expected} service check(s)")
                };
                let message = if smoke.is_zero() {
                    format!("machine {machine} started ({checks})")
                } else {
                    format!(
                        "machine {machine} started, {checks}, and kept running for {}s (smoke checks)",
                        smoke.as_secs()
                    )
                };
                step(
                    inner,
                    deployment,
                    Some(machine),
                    StepKind::Healthy,
                    &message,
                    None,
                )
                .await?;
                return Ok(Ok(()));
            }
        }
        if current.state == MachineState::Failed {
            let reason = launch_failure(inner, machine).await?;
            let why = format!(
                "machine {machine} {reason}{}",
                last_lines(inner, &current).await
            );
            step(
                inner,
                deployment,
                Some(machine),
                StepKind::Failed,
                &why,
                None,
            )
            .await?;
            return Ok(Err(why));
        }
        // Check results as they change while the machine is waited for.
        let now =
            failing.map(|c| format!("check {} is {}: {}", c.name, c.status, trimmed(&c.output)));
        if now.is_some() && now != reported {
            tracing::info!(deployment = %deployment.id, %machine, check = ?now, "waiting for a machine's checks");
            if let Some(text) = &now {
                step(
                    inner,
                    deployment,
                    Some(machine),
                    StepKind::Waiting,
                    &format!("machine {machine}: {text}"),
                    None,
                )
                .await?;
            }
            reported = now;
        }
        if tokio::time::Instant::now() >= deadline {
            let why = match failing {
                Some(check) => format!(
                    "machine {machine}: check {} is {} after {}s: {}",
                    check.name,
                    check.status,
                    wait.as_secs(),
                    trimmed(&check.output)
                ),
                None => format!(
                    "machine {machine} is {} and passes {passing} of {expected} service check(s) after {}s",
                    current.state,
                    wait.as_secs()
                ),
            } + &last_lines(inner, &current).await;
            step(
                inner,
                deployment,
                Some(machine),
                StepKind::Failed,
                &why,
                None,
            )
            .await?;
            return Ok(Err(why));
        }
        // Woken by any observed change; re-checked at least every second regardless.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), observed.recv()).await;
    }
}

/// A check's output for a progress line: its first line, at most 200 characters.
fn trimmed(output: &str) -> String {
    let line = output.trim().lines().next().unwrap_or_default();
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_owned(),
    }
}

/// Puts back the config every changed machine had, destroys the machines the deployment
/// created, and ends it `rolled_back` (or `failed` when a restored machine does not come
/// back healthy).
async fn roll_back(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    why: &str,
) -> Result<(), ApiError> {
    let steps = inner.store.steps_of(&deployment.id).await?;
    let wait = Duration::from_millis(u64::try_from(deployment.wait_timeout_ms).unwrap_or(0));
    let mut restored = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for update in steps.iter().filter(|s| s.kind == StepKind::Update) {
        let (Some(id), Some(previous)) = (&update.machine_id, &update.previous_config) else {
            continue;
        };
        // The first update of a machine holds the config it had before the deployment.
        if !seen.insert(id.clone()) {
            continue;
        }
        let Ok(current) = inner.store.machine(&app.id, id).await else {
            continue;
        };
        if current.state.is_terminal() {
            continue;
        }
        if !runs(&current.config, previous) {
            step(
                inner,
                deployment,
                Some(id),
                StepKind::Rollback,
                &format!("restoring machine {id} to its previous config"),
                None,
            )
            .await?;
            crate::machines::update_machine(inner, app, &current, previous.clone(), false, None)
                .await?;
        }
        restored.push(id.clone());
    }
    for id in steps
        .iter()
        .filter(|s| StepKind::CREATING.contains(&s.kind))
        .filter_map(|s| s.machine_id.as_ref())
    {
        if let Ok(machine) = inner.store.machine(&app.id, id).await
            && !machine.state.is_terminal()
            && machine.desired != aloft_store::Desired::Destroyed
        {
            step(
                inner,
                deployment,
                Some(id),
                StepKind::Rollback,
                &format!("destroying machine {id}, created by this deployment"),
                None,
            )
            .await?;
            crate::machines::destroy_forcibly(inner, &machine, true).await?;
        }
    }
    let since = release_start(&steps);
    // A restored machine runs a config that worked: it gets at least a minute.
    let wait = wait.max(Duration::from_secs(60));
    let mut intact = true;
    for id in &restored {
        // The release it runs again worked before: it must start and pass its checks, and
        // not stop for good; the crash loop of the failed release it leaves behind may
        // still show an exit or two, which are not its own.
        if healthy(inner, app, deployment, id, since, wait, Smoke::Off)
            .await?
            .is_err()
        {
            intact = false;
        }
    }
    inner
        .store
        .set_release_status(&release.id, ReleaseStatus::Failed)
        .await?;
    let status = if intact {
        DeploymentStatus::RolledBack
    } else {
        DeploymentStatus::Failed
    };
    inner
        .store
        .set_deployment_status(&deployment.id, status, Some(why))
        .await?;
    tracing::warn!(app = %app.name, deployment = %deployment.id, %status, why, "deployment did not succeed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_machine_counts_from_its_creation_an_updated_one_from_its_step() {
        let machine: MachineId = "148e21ea7d2e89".parse().unwrap();
        let step = |number: i64, kind: StepKind, at: i64| DeploymentStep {
            number,
            machine_id: Some(machine.clone()),
            kind,
            message: String::new(),
            previous_config: None,
            at,
        };
        // Created at 100, its step written at 250 (after the agent may have started it):
        // its smoke window counts from 100, so a start at 180 is its run.
        let created = [step(1, StepKind::Create, 250)];
        assert_eq!(started_by_deployment(&created, &machine, 100, 50), 100);
        // An update is logged before it is made: it counts from its step, not from the
        // machine's creation long before (whose old starts are not this release's).
        let updated = [step(1, StepKind::Update, 500)];
        assert_eq!(started_by_deployment(&updated, &machine, 100, 50), 500);
        // Nothing of this deployment's: from when the caller started watching.
        assert_eq!(started_by_deployment(&[], &machine, 100, 50), 50);
    }

    #[test]
    fn batches_follow_max_unavailable() {
        assert_eq!(
            batch_size(Strategy::Rolling, 1.0, 3),
            1,
            "1 is one machine, not 100%"
        );
        assert_eq!(
            batch_size(Strategy::Canary, 1.0, 3),
            1,
            "1 is one machine, not 100%"
        );
        assert_eq!(batch_size(Strategy::Rolling, 1.0, 1), 1);
        assert_eq!(batch_size(Strategy::Rolling, 0.33, 3), 1);
        assert_eq!(
            batch_size(Strategy::Rolling, 0.34, 3),
            2,
            "rounded up, as flyctl does"
        );
        assert_eq!(batch_size(Strategy::Rolling, 0.33, 10), 4);
        assert_eq!(batch_size(Strategy::Rolling, 0.1, 30), 3, "no float noise");
        assert_eq!(batch_size(Strategy::Rolling, 0.5, 1), 1, "never zero");
        assert_eq!(batch_size(Strategy::Rolling, 0.01, 3), 1, "never zero");
        assert_eq!(batch_size(Strategy::Rolling, 0.999, 3), 3);
        assert_eq!(batch_size(Strategy::Rolling, 2.0, 5), 2, "a count");
        assert_eq!(batch_size(Strategy::Rolling, 2.0, 3), 2, "a count");
        assert_eq!(batch_size(Strategy::Rolling, 9.0, 5), 5, "at most all");
        assert_eq!(batch_size(Strategy::Rolling, 1.0, 0), 1);
        assert_eq!(batch_size(Strategy::Immediate, 0.33, 5), 5);
        assert_eq!(batch_size(Strategy::Immediate, 1.0, 5), 5);
    }

    #[test]
    fn a_machine_runs_a_release_whatever_the_platform_metadata() {
        let target = MachineConfig {
            image: "web:2".to_owned(),
            ..MachineConfig::default()
        };
        let mut running = target.clone();
        running
            .metadata
            .insert(METADATA_PLATFORM_VERSION.to_owned(), "v2".to_owned());
        assert!(runs(&running, &target));
        running.image = "web:1".to_owned();
        assert!(!runs(&running, &target));
        assert_eq!(group_of(&target), "app");
    }
}
