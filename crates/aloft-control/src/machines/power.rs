//! Changing a machine: update, start, stop, restart, signal, cordon, exec and destroy;
//! each records the desired state and an event, then tells the machine's agent. Also the
//! platform's own starts and stops (autostart, autostop).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aloft_store::{App, Desired, MachineRecord};
use aloft_types::api::{ErrorBody, ProcessStat};
use aloft_types::{EventKind, MachineId, MachineState};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde_json::json;

use super::create::{ensure_fits, mounted_volume, validate_request};
use super::{
    host_link, machine_for, notify, refuse_if_gone, respond, user_event, writable_machine,
};
use crate::access::{ReadApp, WriteApp};
use crate::json::{Body, OptionalBody};
use crate::wire::{
    ExecRequest, ExecResponse, MachineRequest, MachineResponse, OkResponse, SignalRequest,
    StopRequest,
};
use crate::{ApiError, Inner, Principal};
use aloft_agent_api::Command;

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), request_body = MachineRequest, responses((status = 200, body = MachineResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_update")]
pub(super) async fn update(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(request): Body<MachineRequest>,
) -> Result<Json<MachineResponse>, ApiError> {
    let (app, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    validate_request(&request)?;
    if let Some(region) = request.region.as_ref().filter(|r| !r.is_empty())
        && region != &machine.region
    {
        return Err(ApiError::BadRequest(format!(
            "a machine cannot change region ({} to {region}); create a new one",
            machine.region
        )));
    }
    ensure_fits(&inner, request.config.guest.as_ref(), Some(&machine.region)).await?;
    let expected = match &request.current_version {
        Some(version) => Some(version.parse::<i64>().map_err(|_| {
            ApiError::BadRequest(format!("current_version {version:?} is not a version"))
        })?),
        None => None,
    };
    update_machine(
        &inner,
        &app,
        &machine,
        request.config,
        request.skip_launch,
        expected,
    )
    .await?;
    respond(&inner, &inner.store.machine(&app.id, &machine.id).await?).await
}

/// Gives `machine` a new config version (when its current version is `expected`, if
/// given) and tells its agent. A started machine shows `updating` until its new version
/// reports `started`, so a waiter never mistakes the old run for the new one.
pub(crate) async fn update_machine(
    inner: &Inner,
    app: &App,
    machine: &MachineRecord,
    mut config: aloft_types::machine::MachineConfig,
    skip_launch: bool,
    expected: Option<i64>,
) -> Result<MachineRecord, ApiError> {
    // A bigger size counts against the organization's quota (the old one is given back).
    let quota = crate::quotas::check_app(
        inner,
        app,
        crate::quotas::Ask::Machine {
            guest: config.guest.as_ref(),
            replacing: Some(machine.config.guest.as_ref()),
        },
    )
    .await?;
    mounted_volume(inner, app, &mut config, &machine.region, Some(machine)).await?;
    config
        .metadata
        .entry(aloft_types::machine::METADATA_PLATFORM_VERSION.to_owned())
        .or_insert_with(|| aloft_types::machine::PLATFORM_VERSION.to_owned());
    let updated = inner
        .store
        .update_machine_config(&app.id, &machine.id, &config, expected)
        .await?;
    drop(quota);
    inner
        .store
        .set_desired(
            &machine.id,
            if skip_launch {
                Desired::Stopped
            } else {
                Desired::Started
            },
        )
        .await?;
    if updated.state == MachineState::Started && !skip_launch {
        match inner
            .store
            .set_machine_state(&machine.id, MachineState::Updating)
            .await
        {
            // The agent moved it meanwhile (to the new run, or stopping): as good.
            Ok(_) | Err(aloft_store::StoreError::Conflict { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    user_event(
        inner,
        &machine.id,
        EventKind::Update,
        "pending",
        json!({ "version": updated.version }),
    )
    .await?;
    notify(inner, &updated, Command::Converge);
    Ok(inner.store.machine(&app.id, &machine.id).await?)
}

#[utoipa::path(delete, path = "/v1/apps/{app}/machines/{id}", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id"), ("force" = Option<bool>, Query, description = "Destroy even a started machine")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_destroy")]
pub(super) async fn destroy(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    let force = ["force", "kill"]
        .iter()
        .any(|k| query.get(*k).is_some_and(|v| v == "true" || v == "1"));
    if machine.state.is_terminal() {
        return Err(ApiError::not_found(format!("machine {id}")));
    }
    if matches!(
        machine.state,
        MachineState::Started | MachineState::Starting | MachineState::Restarting
    ) && !force
    {
        return Err(ApiError::PreconditionFailed(format!(
            "machine {id} is {}; stop it first, or destroy it with force=true",
            machine.state
        )));
    }
    destroy_forcibly(&inner, &machine, force).await?;
    Ok(Json(OkResponse {
        ok: true,
        previous_state: Some(machine.state.to_string()),
    }))
}

/// Destroys a machine whatever its state (the agent stops it first, briefly).
pub(crate) async fn destroy_forcibly(
    inner: &Inner,
    machine: &MachineRecord,
    force: bool,
) -> Result<(), ApiError> {
    inner
        .store
        .set_desired(&machine.id, Desired::Destroyed)
        .await?;
    // The agent may report a state at the same moment (the machine exiting after a
    // kill, say): the move to `destroying` is tried again from the state it reported.
    let mut attempts = 0;
    loop {
        let current = inner.store.machine_by_id(&machine.id).await?;
        if matches!(current.state, MachineState::Destroying) || current.state.is_terminal() {
            break;
        }
        match inner
            .store
            .set_machine_state(&machine.id, MachineState::Destroying)
            .await
        {
            Ok(_) => break,
            Err(aloft_store::StoreError::Conflict { .. }) if attempts < 5 => attempts += 1,
            Err(error) => return Err(error.into()),
        }
    }
    user_event(
        inner,
        &machine.id,
        EventKind::Destroy,
        "destroying",
        json!({ "force": force }),
    )
    .await?;
    notify(inner, machine, Command::Converge);
    Ok(())
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/start", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_start")]
pub(super) async fn start(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    refuse_if_gone(&machine)?;
    inner
        .store
        .set_desired(&machine.id, Desired::Started)
        .await?;
    user_event(
        &inner,
        &machine.id,
        EventKind::Start,
        "requested",
        json!({}),
    )
    .await?;
    notify(&inner, &machine, Command::Converge);
    Ok(Json(OkResponse {
        ok: true,
        previous_state: Some(machine.state.to_string()),
    }))
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/stop", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), request_body = Option<StopRequest>, responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_stop")]
pub(super) async fn stop(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    OptionalBody(request): OptionalBody<StopRequest>,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    let event = json!({
        "signal": request.signal.map(|s| s.name()),
        "timeout": request.timeout.map(|t| t.to_string()),
    });
    stop_machine(
        &inner,
        &machine,
        (EventKind::Stop, event),
        request.signal,
        request.timeout.map(|t| t.as_std()),
    )
    .await
}

/// Stops a machine for good (until started), recording `event` (its kind and request).
pub(crate) async fn stop_machine(
    inner: &Inner,
    machine: &MachineRecord,
    (kind, request): (EventKind, serde_json::Value),
    signal: Option<aloft_types::Signal>,
    timeout: Option<Duration>,
) -> Result<Json<OkResponse>, ApiError> {
    refuse_if_gone(machine)?;
    inner
        .store
        .set_desired(&machine.id, Desired::Stopped)
        .await?;
    user_event(inner, &machine.id, kind, "requested", request).await?;
    notify(inner, machine, Command::Stop { signal, timeout });
    Ok(Json(OkResponse {
        ok: true,
        previous_state: Some(machine.state.to_string()),
    }))
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/restart", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id"), ("signal" = Option<String>, Query), ("timeout" = Option<String>, Query), ("force_stop" = Option<bool>, Query, description = "Kill the old run at once (SIGKILL) instead of stopping it")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_restart")]
pub(super) async fn restart(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    refuse_if_gone(&machine)?;
    let signal = query
        .get("signal")
        .map(|s| {
            s.parse::<aloft_types::Signal>()
                .map_err(|e| ApiError::BadRequest(format!("signal: {e}")))
        })
        .transpose()?;
    let timeout = query
        .get("timeout")
        .map(|t| {
            t.parse::<aloft_types::Duration>()
                .map_err(|e| ApiError::BadRequest(format!("timeout: {e}")))
        })
        .transpose()?;
    // Fly's `force_stop=true`: the old run is killed at once, not asked to stop.
    let force_stop = query
        .get("force_stop")
        .is_some_and(|v| v == "true" || v == "1");
    let signal = if force_stop {
        Some(aloft_types::Signal::Kill)
    } else {
        signal
    };
    inner
        .store
        .set_desired(&machine.id, Desired::Started)
        .await?;
    // `restarting` from now, as an update shows `updating`: a wait for `started` that
    // follows sees the new run, not the one being stopped. (The agent may have moved it
    // meanwhile; then its report stands.)
    if machine.state == MachineState::Started
        && let Err(error) = inner
            .store
            .set_machine_state(&machine.id, MachineState::Restarting)
            .await
        && !matches!(error, aloft_store::StoreError::Conflict { .. })
    {
        return Err(error.into());
    }
    user_event(
        &inner,
        &machine.id,
        EventKind::Restart,
        "requested",
        json!({ "force_stop": force_stop }),
    )
    .await?;
    notify(
        &inner,
        &machine,
        Command::Restart {
            signal,
            timeout: timeout.map(|t| t.as_std()),
        },
    );
    Ok(Json(OkResponse {
        ok: true,
        previous_state: Some(machine.state.to_string()),
    }))
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/signal", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), request_body = SignalRequest, responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_signal")]
pub(super) async fn signal(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(request): Body<SignalRequest>,
) -> Result<Json<OkResponse>, ApiError> {
    let (_, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    if machine.state != MachineState::Started {
        return Err(ApiError::PreconditionFailed(format!(
            "machine {id} is {}; only a started machine can be signalled",
            machine.state
        )));
    }
    user_event(
        &inner,
        &machine.id,
        EventKind::Signal,
        "requested",
        json!({ "signal": request.signal.name() }),
    )
    .await?;
    notify(&inner, &machine, Command::Signal(request.signal));
    Ok(Json(OkResponse {
        ok: true,
        previous_state: None,
    }))
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/cordon", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_cordon")]
pub(super) async fn cordon(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    set_cordon(inner, principal, app, id, headers, true).await
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/uncordon", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_uncordon")]
pub(super) async fn uncordon(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    set_cordon(inner, principal, app, id, headers, false).await
}

pub(super) async fn set_cordon(
    inner: Arc<Inner>,
    principal: Principal,
    app: String,
    id: String,
    headers: HeaderMap,
    cordoned: bool,
) -> Result<Json<OkResponse>, ApiError> {
    let (app, machine) = writable_machine(&inner, &principal, &app, &id, &headers).await?;
    inner
        .store
        .set_cordoned(&app.id, &machine.id, cordoned)
        .await?;
    // The proxy's routes follow at once, not at the catalog's next refresh.
    inner.catalog_dirty.notify_one();
    user_event(
        &inner,
        &machine.id,
        if cordoned {
            EventKind::Cordon
        } else {
            EventKind::Uncordon
        },
        "done",
        json!({}),
    )
    .await?;
    Ok(Json(OkResponse {
        ok: true,
        previous_state: None,
    }))
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/exec", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), request_body = ExecRequest, responses((status = 200, body = ExecResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_exec")]
pub(super) async fn exec(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    WriteApp(app): WriteApp,
    Body(request): Body<ExecRequest>,
) -> Result<Json<ExecResponse>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    let command = if !request.command.is_empty() {
        request.command
    } else {
        let line = request.cmd.unwrap_or_default();
        shlex::split(&line)
            .filter(|words| !words.is_empty())
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "give `command` (a list of words) or `cmd` (a command line)".to_owned(),
                )
            })?
    };
    if machine.state != MachineState::Started {
        return Err(ApiError::PreconditionFailed(format!(
            "machine {id} is {}; commands run only in a started machine",
            machine.state
        )));
    }
    let timeout = Duration::from_secs(request.timeout.unwrap_or(30).clamp(1, 3600));
    let link = host_link(&inner, &machine)?;
    let output = link
        .exec(
            &machine,
            command,
            request.stdin.map(String::into_bytes),
            timeout,
        )
        .await?;
    Ok(Json(output))
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/ps", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = Vec<ProcessStat>, description = "The machine's processes (Fly's ProcessStat): pid in the machine, start time and run time in seconds, command, working directory, CPU time in ms, resident bytes, and the TCP ports it listens on and UDP ports it has bound"), (status = "4XX", description = "Missing or invalid token, not found, or the machine is not started (412)", body = ErrorBody)), operation_id = "Machines_ps")]
pub(super) async fn ps(
    State(inner): State<Arc<Inner>>,
    Path((_, id)): Path<(String, String)>,
    ReadApp(app): ReadApp,
) -> Result<Json<Vec<ProcessStat>>, ApiError> {
    let machine = machine_for(&inner, &app, &id).await?;
    if machine.state != MachineState::Started {
        return Err(ApiError::PreconditionFailed(format!(
            "machine {id} is {}; only a started machine has processes",
            machine.state
        )));
    }
    let link = host_link(&inner, &machine)?;
    Ok(Json(link.processes(&machine).await?))
}

/// Why the platform itself (not a user) starts or stops a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformReason {
    /// The proxy starts a stopped machine for a request (`auto_start_machines`).
    Autostart,
    /// The proxy stops an idle machine (`auto_stop_machines`).
    Autostop,
    /// A scheduled machine's period has passed (`schedule`).
    Schedule,
    /// The host of the machine this one stands by for is down (`standbys`).
    Standby,
}

impl PlatformReason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            PlatformReason::Autostart => "autostart",
            PlatformReason::Autostop => "autostop",
            PlatformReason::Schedule => "schedule",
            PlatformReason::Standby => "standby",
        }
    }
}

impl crate::Control {
    /// Starts (`start == true`) or stops a machine for the platform's own reason,
    /// recorded as a `flyd` event. A machine already heading there is left alone; a
    /// destroyed one is refused.
    pub async fn platform_power(
        &self,
        id: &MachineId,
        start: bool,
        reason: PlatformReason,
    ) -> Result<(), ApiError> {
        platform_power(&self.inner, id, start, reason).await
    }
}

/// See [`crate::Control::platform_power`].
pub(crate) async fn platform_power(
    inner: &Inner,
    id: &MachineId,
    start: bool,
    reason: PlatformReason,
) -> Result<(), ApiError> {
    let machine = inner.store.machine_by_id(id).await?;
    refuse_if_gone(&machine)?;
    let (desired, kind, command) = if start {
        (Desired::Started, EventKind::Start, Command::Converge)
    } else {
        (
            Desired::Stopped,
            EventKind::Stop,
            Command::Stop {
                signal: None,
                timeout: None,
            },
        )
    };
    if machine.desired == desired {
        return Ok(());
    }
    inner.store.set_desired(&machine.id, desired).await?;
    inner
        .store
        .append_event(
            &machine.id,
            kind,
            "requested",
            "flyd",
            &json!({ "reason": reason.as_str() }),
        )
        .await?;
    tracing::info!(machine = %machine.id, reason = reason.as_str(), action = %kind, "the platform powers a machine");
    notify(inner, &machine, command);
    Ok(())
}
