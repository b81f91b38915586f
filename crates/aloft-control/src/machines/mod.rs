//! `/v1/apps/{app}/machines`: Fly's machine endpoints. Handlers record desired state and
//! tell the agents; the agents converge and report the observed state.
//!
//! `create` (validation, placement, volumes), `power` (update, start, stop, restart,
//! signal, cordon, exec, destroy, and the platform's own starts and stops) and `leases`
//! hold the handlers that change machines; this module holds access (`machine_for`,
//! `writable_machine`), events and the read-only handlers.

mod create;
mod leases;
mod placing;
mod power;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aloft_store::{App, Desired, MachineEvent, MachineFilter, MachineRecord};
use aloft_types::api::{ErrorBody, WaitResponse};
use aloft_types::{EventKind, MachineId, MachineState};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use tokio::time::Instant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::{ReadApp, app_for};
use crate::wire::{EventResponse, MachineResponse, VersionResponse};
use crate::{ApiError, Inner, Principal};
use aloft_agent_api::{Command, MachineChange};
use leases::check_lease;

pub(crate) use create::{create_machine, create_machine_as, ensure_fits};
pub(crate) use placing::{Placing, place};
pub use power::PlatformReason;
pub(crate) use power::{destroy_forcibly, platform_power, stop_machine, update_machine};

/// The longest `wait` Fly allows.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Events shown with a machine.
const EVENTS_SHOWN: usize = 20;

/// The header that carries a lease's nonce.
pub(crate) const LEASE_NONCE_HEADER: &str = "fly-machine-lease-nonce";

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list, create::create))
        .routes(routes!(show, power::update, power::destroy))
        .routes(routes!(power::start))
        .routes(routes!(power::stop))
        .routes(routes!(power::restart))
        .routes(routes!(power::signal))
        .routes(routes!(wait))
        .routes(routes!(power::cordon))
        .routes(routes!(power::uncordon))
        .routes(routes!(power::exec))
        .routes(routes!(power::ps))
        .routes(routes!(events))
        .routes(routes!(versions))
        .routes(routes!(
            leases::show_lease,
            leases::acquire_lease,
            leases::release_lease
        ))
}

/// A machine of an app the caller may see; an unknown or malformed id is a 404.
pub(crate) async fn machine_for(
    inner: &Inner,
    app: &App,
    id: &str,
) -> Result<MachineRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("machine {id}"));
    let id: MachineId = id.parse().map_err(|_| not_found())?;
    match inner.store.machine(&app.id, &id).await {
        Ok(machine) => Ok(machine),
        Err(aloft_store::StoreError::NotFound { .. }) => Err(not_found()),
        Err(error) => Err(error.into()),
    }
}

/// The app and machine a mutation is about: the token may change the app, and a lease
/// held on the machine is this caller's.
pub(crate) async fn writable_machine(
    inner: &Inner,
    principal: &Principal,
    app: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<(App, MachineRecord), ApiError> {
    let app = app_for(inner, principal, app, true).await?;
    let machine = machine_for(inner, &app, id).await?;
    check_lease(&machine, headers)?;
    Ok((app, machine))
}

/// The link to the host `machine` runs on.
pub(crate) fn host_link(
    inner: &Inner,
    machine: &MachineRecord,
) -> Result<Arc<dyn crate::HostLink>, ApiError> {
    let id = &machine.id;
    let host = machine
        .host_id
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable(format!("machine {id} is on no host")))?;
    inner
        .links
        .get(host)
        .ok_or_else(|| ApiError::Unavailable(format!("the host of machine {id} is not connected")))
}

pub(crate) fn notify(inner: &Inner, machine: &MachineRecord, command: Command) {
    // No agent listening yet is fine: agents reconcile everything when they start.
    let _ = inner.changes.send(MachineChange {
        machine_id: machine.id.clone(),
        host_id: machine.host_id.clone(),
        command,
    });
}

pub(crate) async fn user_event(
    inner: &Inner,
    machine: &MachineId,
    kind: EventKind,
    status: &str,
    request: serde_json::Value,
) -> Result<(), ApiError> {
    inner
        .store
        .append_event(machine, kind, status, "user", &request)
        .await?;
    let text = crate::logs::event_text(kind.as_str(), status, "user", &request);
    crate::logs::platform_line(inner.logs.as_ref(), &inner.store, machine, text).await;
    Ok(())
}

async fn respond(
    inner: &Inner,
    machine: &MachineRecord,
) -> Result<Json<MachineResponse>, ApiError> {
    let events = inner.store.events(&machine.id).await?;
    let shown = &events[..events.len().min(EVENTS_SHOWN)];
    let checks = inner.store.checks_of(&machine.id).await?;
    let down = down_hosts(inner).await?;
    Ok(Json(crate::wire::machine_response(
        machine, shown, &checks, &down,
    )))
}

/// The hosts declared down: their machines show `lost`.
pub(crate) async fn down_hosts(
    inner: &Inner,
) -> Result<std::collections::BTreeSet<aloft_types::HostId>, ApiError> {
    Ok(inner
        .store
        .host_records()
        .await?
        .into_iter()
        .filter(|h| h.down_at.is_some())
        .map(|h| h.host.id)
        .collect())
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("region" = Option<String>, Query), ("include_deleted" = Option<bool>, Query), ("state" = Option<String>, Query, description = "Only machines in these states (comma-separated)"), ("metadata.KEY" = Option<String>, Query, description = "Only machines whose metadata has KEY with this value")), responses((status = 200, body = Vec<MachineResponse>), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<MachineResponse>>, ApiError> {
    let mut filter = MachineFilter::default();
    let mut states: Vec<String> = Vec::new();
    for (key, value) in query {
        if key == "state" {
            states.extend(
                value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        } else if key == "region" {
            filter.region = Some(value);
        } else if key == "include_deleted" {
            filter.include_deleted = value.parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "include_deleted: expected true or false, got {value:?}"
                ))
            })?;
        } else if let Some(metadata_key) = key.strip_prefix("metadata.") {
            filter.metadata.push((metadata_key.to_owned(), value));
        } else {
            // As Fly's API: parameters it does not know (`summary`, `include_leases`) do
            // not fail the listing.
            tracing::debug!(%key, "ignored a machine listing parameter");
        }
    }
    let mut machines = inner.store.list_machines(&app.id, &filter).await?;
    if !states.is_empty() {
        machines.retain(|m| states.iter().any(|s| s == m.state.as_str()));
    }
    let checks = inner.store.checks_of_app(&app.id).await?;
    let down = down_hosts(&inner).await?;
    Ok(Json(
        machines
            .iter()
            .map(|m| crate::wire::machine_response(m, &[], &checks, &down))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = MachineResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_show")]
async fn show(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<MachineResponse>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    respond(&inner, &machine).await
}

pub(crate) fn refuse_if_gone(machine: &MachineRecord) -> Result<(), ApiError> {
    if machine.state.is_terminal() || machine.desired == Desired::Destroyed {
        return Err(ApiError::PreconditionFailed(format!(
            "machine {} is {}",
            machine.id, machine.state
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/wait", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id"), ("state" = Option<String>, Query, description = "started (default), stopped, suspended or destroyed; repeat it to wait for any of several"), ("timeout" = Option<u64>, Query, description = "Seconds, at most 60"), ("instance_id" = Option<String>, Query, description = "Wait on this version of the machine (`version` is the same)")), responses((status = 200, body = WaitResponse), (status = 408, description = "The state was not reached in time", body = ErrorBody), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_wait")]
async fn wait(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<WaitResponse>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    let one = |key: &str| {
        query
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    // Any of several states, as fly-go asks (`state=started&state=stopped`).
    let mut wanted = Vec::new();
    for name in query.iter().filter(|(k, _)| k == "state").map(|(_, v)| v) {
        for name in name.split(',').filter(|n| !n.is_empty()) {
            let state: MachineState = name.parse().map_err(|_| {
                ApiError::BadRequest(format!("state {name:?} is not a machine state"))
            })?;
            if !matches!(
                state,
                MachineState::Started
                    | MachineState::Stopped
                    | MachineState::Suspended
                    | MachineState::Destroyed
            ) {
                return Err(ApiError::BadRequest(format!(
                    "wait for started, stopped, suspended or destroyed, not {state}"
                )));
            }
            wanted.push(state);
        }
    }
    if wanted.is_empty() {
        wanted.push(MachineState::Started);
    }
    let timeout = match one("timeout") {
        None => MAX_WAIT,
        Some(seconds) => {
            let seconds: u64 = seconds.parse().map_err(|_| {
                ApiError::BadRequest(format!("timeout {seconds:?}: expected whole seconds"))
            })?;
            if seconds == 0 || seconds > MAX_WAIT.as_secs() {
                return Err(ApiError::BadRequest(format!(
                    "timeout must be between 1 and {} seconds",
                    MAX_WAIT.as_secs()
                )));
            }
            Duration::from_secs(seconds)
        }
    };
    let answer = |current: &MachineRecord, state: MachineState, events: &[MachineEvent]| {
        Json(WaitResponse {
            ok: true,
            state: state.to_string(),
            event_id: events.first().map(|e| e.seq.to_string()),
            version: Some(current.instance_id.clone()),
        })
    };
    if let Some(instance) = one("instance_id").or_else(|| one("version"))
        && instance != machine.instance_id
    {
        let versions = inner.store.versions(&machine.id).await?;
        if !versions.iter().any(|v| v.instance_id == instance) {
            return Err(ApiError::not_found(format!(
                "instance {instance} of machine {id}"
            )));
        }
        // An older version: it has been replaced, which is what waiting on it can see.
        if let Some(state) = wanted
            .iter()
            .find(|s| matches!(s, MachineState::Stopped | MachineState::Destroyed))
        {
            let events = inner.store.events(&machine.id).await?;
            return Ok(answer(&machine, *state, &events));
        }
    }
    let deadline = Instant::now() + timeout;
    let mut observed = inner.observed.subscribe();
    loop {
        let current = inner.store.machine(&app.id, &machine.id).await?;
        if wanted.contains(&current.state) {
            let events = inner.store.events(&machine.id).await?;
            return Ok(answer(&current, current.state, &events));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let names: Vec<String> = wanted.iter().map(ToString::to_string).collect();
            return Err(ApiError::Timeout(format!(
                "machine {id} did not reach {} within {timeout:?} (it is {})",
                names.join(" or "),
                current.state
            )));
        }
        // Woken by any observed change; re-checked at least every second regardless.
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), observed.recv()).await;
    }
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/events", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = Vec<EventResponse>), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_events")]
async fn events(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<Vec<EventResponse>>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    let events = inner.store.events(&machine.id).await?;
    Ok(Json(
        events.iter().map(crate::wire::event_response).collect(),
    ))
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/versions", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = Vec<VersionResponse>), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_versions")]
async fn versions(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<Vec<VersionResponse>>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    let versions = inner.store.versions(&machine.id).await?;
    Ok(Json(
        versions.iter().map(crate::wire::version_response).collect(),
    ))
}
