//! Server-side deployments (Aloft's own API): `POST /v1/apps/{app}/deployments` numbers a
//! release and rolls it out in the control plane, not in the CLI; `GET` follows it.
//!
//! A deployment is a durable record with a step log. Its deployer:
//! 1. creates the first machines when the app has none of the release's process group, or
//! 2. replaces the machines whose config differs, a batch at a time (`rolling`, batches of
//!    `max_unavailable`) or all at once (`immediate`), each batch started and passing its
//!    service checks (checked after the update) within `wait_timeout` before the next;
//! 3. on a failure, restores every machine it changed to the config it had (the `update`
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
use aloft_types::machine::{METADATA_PLATFORM_VERSION, METADATA_PROCESS_GROUP, MachineConfig};
use aloft_types::time::rfc3339;
use aloft_types::{CheckStatus, MachineId, MachineState};
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

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(releases))
}

fn release_response(release: &ReleaseRecord) -> ReleaseResponse {
    ReleaseResponse {
        id: release.id.clone(),
        version: release.version,
        image: release.image.clone(),
        status: release.status.clone(),
        description: release.description.clone(),
        user: release.created_by.clone(),
        created_at: rfc3339(release.created_at),
    }
}

fn step_response(step: &DeploymentStep) -> DeploymentStepResponse {
    DeploymentStepResponse {
        number: step.number,
        machine_id: step.machine_id.as_ref().map(ToString::to_string),
        kind: step.kind.clone(),
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
        strategy: deployment.strategy.clone(),
        max_unavailable: deployment.max_unavailable,
        wait_timeout: u64::try_from(deployment.wait_timeout_ms / 1000).unwrap_or(0),
        status: deployment.status.clone(),
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
    let strategy = request.strategy.as_deref().unwrap_or("rolling");
    if !matches!(strategy, "rolling" | "immediate") {
        return Err(ApiError::BadRequest(format!(
            "strategy {strategy:?}: use \"rolling\" or \"immediate\" (canary and bluegreen are not available yet)"
        )));
    }
    let max_unavailable = request.max_unavailable.unwrap_or(DEFAULT_MAX_UNAVAILABLE);
    if !(max_unavailable > 0.0 && max_unavailable.is_finite())
        || (max_unavailable > 1.0 && max_unavailable.fract() != 0.0)
    {
        return Err(ApiError::BadRequest(format!(
            "max_unavailable {max_unavailable}: a fraction above 0 and up to 1, or a whole count"
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
    let mut config = request.config;
    config.image = image.to_owned();
    let initial_count = match request.initial_count {
        Some(count) if count > 0 => i64::from(count),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "initial_count must be at least 1".to_owned(),
            ));
        }
        None if config.services.is_empty() => 1,
        None => 2,
    };
    let description = request
        .description
        .unwrap_or_else(|| format!("deploy image {image}"));
    let (_, deployment) = inner
        .store
        .insert_deployment(aloft_store::NewDeployment {
            app_id: app.id.clone(),
            image: image.to_owned(),
            config,
            description,
            created_by: principal.token.name.clone(),
            strategy: strategy.to_owned(),
            max_unavailable,
            wait_timeout_ms: i64::try_from(wait_timeout.as_millis()).unwrap_or(i64::MAX),
            initial_count,
        })
        .await?;
    tracing::info!(app = %app.name, deployment = %deployment.id, %strategy, "deployment started");
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
    tokio::spawn(async move {
        if let Err(error) = run(&inner, &app, &deployment).await {
            // The store itself failed: the deployment stays active and resumes on the next
            // start; say so.
            tracing::error!(app = %app.name, deployment = %deployment.id, %error, "a deployment stopped; it resumes when aloftd restarts");
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
        serde_json::to_value(config).ok()
    };
    plain(machine) == plain(target)
}

/// How many machines one batch replaces.
fn batch_size(strategy: &str, max_unavailable: f64, machines: usize) -> usize {
    if strategy == "immediate" {
        return machines.max(1);
    }
    let size = if max_unavailable > 1.0 {
        max_unavailable as usize
    } else {
        (max_unavailable * machines as f64).floor() as usize
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
    kind: &str,
    message: &str,
    previous: Option<&MachineConfig>,
) -> Result<(), ApiError> {
    tracing::info!(deployment = %deployment.id, machine = ?machine.map(MachineId::as_str), kind, message, "deployment step");
    inner
        .store
        .append_step(&deployment.id, machine, kind, message, previous)
        .await?;
    Ok(())
}

async fn run(inner: &Arc<Inner>, app: &App, deployment: &DeploymentRecord) -> Result<(), ApiError> {
    let release = inner.store.release(&deployment.release_id).await?;
    if deployment.status == "rolling_back" {
        let why = deployment
            .error
            .clone()
            .unwrap_or_else(|| "the deployment failed".to_owned());
        return roll_back(inner, app, deployment, &release, &why).await;
    }
    match roll_out(inner, app, deployment, &release).await? {
        Ok(()) => {
            inner
                .store
                .set_release_status(&release.id, "complete")
                .await?;
            inner
                .store
                .set_deployment_status(&deployment.id, "succeeded", None)
                .await?;
            tracing::info!(app = %app.name, deployment = %deployment.id, version = release.version, "deployment succeeded");
            Ok(())
        }
        Err(why) => {
            inner
                .store
                .set_deployment_status(&deployment.id, "rolling_back", Some(&why))
                .await?;
            roll_back(inner, app, deployment, &release, &why).await
        }
    }
}

/// Creates or replaces the machines; the inner error says why the release failed.
async fn roll_out(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
) -> Result<Result<(), String>, ApiError> {
    let target = &release.config;
    let group = group_of(target).to_owned();
    let wait = Duration::from_millis(u64::try_from(deployment.wait_timeout_ms).unwrap_or(0));
    let steps = inner.store.steps_of(&deployment.id).await?;
    let created: Vec<MachineId> = steps
        .iter()
        .filter(|s| s.kind == "create")
        .filter_map(|s| s.machine_id.clone())
        .collect();
    let machines = machines_of(inner, app, &group).await?;
    // Check results older than the deployment are not its (a passing check is recorded
    // when it changes, not at every probe).
    let since = release_start(&steps);
    let first = steps.is_empty() && machines.is_empty() || !created.is_empty();
    if first {
        // The app's first machines of this group (or the rest of them, after a restart).
        let wanted = usize::try_from(deployment.initial_count).unwrap_or(1);
        let mut made = created.clone();
        if steps.is_empty() {
            step(
                inner,
                deployment,
                None,
                "note",
                &format!(
                    "creating {wanted} machine(s) of process group {group} with release v{}",
                    release.version
                ),
                None,
            )
            .await?;
        }
        while made.len() < wanted {
            let request = MachineRequest::new(target.clone());
            let machine =
                crate::machines::create_machine(inner, app, request, &release.created_by).await?;
            step(
                inner,
                deployment,
                Some(&machine.id),
                "create",
                &format!("created machine {} in {}", machine.id, machine.region),
                None,
            )
            .await?;
            made.push(machine.id);
        }
        for id in &made {
            if let Err(why) = healthy(inner, app, deployment, id, since, wait).await? {
                return Ok(Err(why));
            }
        }
        return Ok(Ok(()));
    }
    let pending: Vec<&MachineRecord> = machines
        .iter()
        .filter(|m| !runs(&m.config, target))
        .collect();
    let size = batch_size(
        &deployment.strategy,
        deployment.max_unavailable,
        machines.len(),
    );
    if steps.is_empty() {
        step(
            inner,
            deployment,
            None,
            "note",
            &format!(
                "{} strategy: {} of {} machine(s) to update, {size} at a time, to release v{}",
                deployment.strategy,
                pending.len(),
                machines.len(),
                release.version
            ),
            None,
        )
        .await?;
    }
    // Machines a resumed deployment already updated are checked like the others.
    for id in steps
        .iter()
        .filter(|s| s.kind == "update")
        .filter_map(|s| s.machine_id.as_ref())
    {
        if machines
            .iter()
            .any(|m| &m.id == id && runs(&m.config, target))
            && let Err(why) = healthy(inner, app, deployment, id, since, wait).await?
        {
            return Ok(Err(why));
        }
    }
    for batch in pending.chunks(size) {
        let since = aloft_store::now_ms();
        for machine in batch {
            step(
                inner,
                deployment,
                Some(&machine.id),
                "update",
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
            if let Err(why) = healthy(inner, app, deployment, &machine.id, since, wait).await? {
                return Ok(Err(why));
            }
        }
    }
    Ok(Ok(()))
}

/// When the deployment's first step was logged (results older than that are not its).
fn release_start(steps: &[DeploymentStep]) -> i64 {
    steps.first().map_or_else(aloft_store::now_ms, |s| s.at)
}

/// Waits until `machine` runs its current version, started, with every service check
/// passing in a result newer than `since`; the inner error says what failed.
async fn healthy(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    machine: &MachineId,
    since: i64,
    wait: Duration,
) -> Result<Result<(), String>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut observed = inner.observed.subscribe();
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
        let started = current.state == MachineState::Started;
        if started && passing >= expected {
            let message = if expected == 0 {
                format!("machine {machine} started (no service checks)")
            } else {
                format!("machine {machine} started and passes its {expected} service check(s)")
            };
            step(inner, deployment, Some(machine), "healthy", &message, None).await?;
            return Ok(Ok(()));
        }
        if current.state == MachineState::Failed {
            // The agent's `launch` event says why.
            let events = inner.store.events(machine).await?;
            let reason = events
                .iter()
                .filter(|e| e.kind == "launch" && e.status == "failed")
                .max_by_key(|e| e.seq)
                .and_then(|e| e.request.get("error").and_then(|v| v.as_str()))
                .unwrap_or("no reason recorded")
                .to_owned();
            let why = format!("machine {machine} failed to launch: {reason}");
            step(inner, deployment, Some(machine), "failed", &why, None).await?;
            return Ok(Err(why));
        }
        if tokio::time::Instant::now() >= deadline {
            let why = match failing {
                Some(check) => format!(
                    "machine {machine}: check {} is {} after {}s: {}",
                    check.name,
                    check.status,
                    wait.as_secs(),
                    check.output.trim()
                ),
                None => format!(
                    "machine {machine} is {} and passes {passing} of {expected} service check(s) after {}s",
                    current.state,
                    wait.as_secs()
                ),
            };
            step(inner, deployment, Some(machine), "failed", &why, None).await?;
            return Ok(Err(why));
        }
        // Woken by any observed change; re-checked at least every second regardless.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), observed.recv()).await;
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
    for update in steps.iter().filter(|s| s.kind == "update") {
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
                "rollback",
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
        .filter(|s| s.kind == "create")
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
                "rollback",
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
        if healthy(inner, app, deployment, id, since, wait)
            .await?
            .is_err()
        {
            intact = false;
        }
    }
    inner
        .store
        .set_release_status(&release.id, "failed")
        .await?;
    let status = if intact { "rolled_back" } else { "failed" };
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
    fn batches_follow_max_unavailable() {
        assert_eq!(batch_size("rolling", 0.33, 3), 1);
        assert_eq!(batch_size("rolling", 0.33, 10), 3);
        assert_eq!(batch_size("rolling", 0.5, 1), 1, "never zero");
        assert_eq!(batch_size("rolling", 2.0, 5), 2, "a count");
        assert_eq!(batch_size("rolling", 9.0, 5), 5, "at most all");
        assert_eq!(batch_size("immediate", 0.33, 5), 5);
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
