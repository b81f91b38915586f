// Over 800 lines: machine handlers plus placement, leases and access; split along those jobs is issue 16 item 6.
//! `/v1/apps/{app}/machines`: Fly's machine endpoints. Handlers record desired state and
//! tell the agents; the agents converge and report the observed state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aloft_store::{App, Desired, MachineEvent, MachineFilter, MachineRecord, NewMachine};
use aloft_types::api::{ErrorBody, WaitResponse};
use aloft_types::{EventKind, MachineId, MachineState, RegionCode};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::apps::app_for;
use crate::json::{Body, OptionalBody};
use crate::wire::{
    EventResponse, ExecRequest, ExecResponse, MachineRequest, MachineResponse, OkResponse,
    SignalRequest, StopRequest, VersionResponse,
};
use crate::{ApiError, Inner, Principal};
use aloft_agent_api::{Command, MachineChange};

/// The longest `wait` Fly allows.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Events shown with a machine.
const EVENTS_SHOWN: usize = 20;
/// The header that carries a lease's nonce.
pub(crate) const LEASE_NONCE_HEADER: &str = "fly-machine-lease-nonce";

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, destroy))
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(restart))
        .routes(routes!(signal))
        .routes(routes!(wait))
        .routes(routes!(cordon))
        .routes(routes!(uncordon))
        .routes(routes!(exec))
        .routes(routes!(events))
        .routes(routes!(versions))
        .routes(routes!(show_lease, acquire_lease, release_lease))
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

/// While a lease is held, a mutation must carry its nonce.
fn check_lease(machine: &MachineRecord, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(lease) = &machine.lease else {
        return Ok(());
    };
    match headers
        .get(LEASE_NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(nonce) if nonce == lease.nonce => Ok(()),
        Some(_) => Err(ApiError::PreconditionFailed(format!(
            "the lease nonce does not match the lease on machine {}",
            machine.id
        ))),
        None => Err(ApiError::PreconditionFailed(format!(
            "machine {} is leased by {} until {}; send its nonce in `{LEASE_NONCE_HEADER}`",
            machine.id,
            lease.owner,
            aloft_types::time::rfc3339(lease.expires_at)
        ))),
    }
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
    crate::logs::platform_line(&inner.logs, &inner.store, machine, text).await;
    Ok(())
}

fn validate_request(request: &MachineRequest) -> Result<(), ApiError> {
    if request.config.image.trim().is_empty() {
        return Err(ApiError::Unprocessable(
            "config.image is required: the image the machine runs".to_owned(),
        ));
    }
    if let Some(name) = &request.name {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if !valid {
            return Err(ApiError::BadRequest(format!(
                "name {name:?} must be 1 to 63 lowercase letters, digits or dashes, not starting with a dash"
            )));
        }
    }
    for name in request.config.env.keys() {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(ApiError::BadRequest(format!(
                "config.env: invalid variable name {name:?}"
            )));
        }
    }
    Ok(())
}

/// Refuses a guest that no host (in `region`, when given) can hold: more CPUs or memory
/// than the largest host has. Hosts that report no memory size are not checked for it.
pub(crate) async fn ensure_fits(
    inner: &Inner,
    guest: Option<&aloft_types::machine::MachineGuest>,
    region: Option<&str>,
) -> Result<(), ApiError> {
    let Some(guest) = guest else { return Ok(()) };
    let hosts: Vec<_> = inner
        .store
        .list_hosts()
        .await?
        .into_iter()
        .filter(|h| region.is_none_or(|r| h.region == r))
        .collect();
    if hosts.is_empty() {
        return Ok(());
    }
    let fits = |h: &aloft_store::Host| {
        i64::from(guest.cpus) <= h.cpus.max(1)
            && (h.memory_mb <= 0 || i64::from(guest.memory_mb) <= h.memory_mb)
    };
    if hosts.iter().any(fits) {
        return Ok(());
    }
    let cpus = hosts.iter().map(|h| h.cpus).max().unwrap_or(0);
    let memory = hosts.iter().map(|h| h.memory_mb).max().unwrap_or(0);
    let place = region.map_or_else(String::new, |r| format!(" in region {r}"));
    Err(ApiError::Unprocessable(format!(
        "no host{place} can hold a machine of {} CPUs and {} MB: the largest has {cpus} CPUs and {memory} MB; pick a smaller size",
        guest.cpus, guest.memory_mb
    )))
}

/// A host in `region` for a new machine: the one running the fewest machines.
pub(crate) async fn place(inner: &Inner, region: &str) -> Result<aloft_types::HostId, ApiError> {
    let hosts = inner.store.list_hosts().await?;
    let mut candidates = Vec::new();
    for host in hosts.iter().filter(|h| h.region == region) {
        let load = inner.store.machines_on_host(&host.id).await?.len();
        candidates.push((load, host.id.clone()));
    }
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .map(|(_, id)| id)
        .ok_or_else(|| {
            let regions: std::collections::BTreeSet<&str> =
                hosts.iter().map(|h| h.region.as_str()).collect();
            ApiError::PreconditionFailed(format!(
                "no host in region {region} can take the machine (regions with hosts: {})",
                if regions.is_empty() {
                    "none".to_owned()
                } else {
                    regions.into_iter().collect::<Vec<_>>().join(", ")
                }
            ))
        })
}

async fn respond(
    inner: &Inner,
    machine: &MachineRecord,
) -> Result<Json<MachineResponse>, ApiError> {
    let events = inner.store.events(&machine.id).await?;
    let shown = &events[..events.len().min(EVENTS_SHOWN)];
    let checks = inner.store.checks_of(&machine.id).await?;
    Ok(Json(crate::wire::machine_response(machine, shown, &checks)))
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines", tag = "machines", params(("app" = String, Path, description = "The app's name")), request_body = MachineRequest, responses((status = 200, body = MachineResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_create")]
async fn create(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(app): Path<String>,
    Body(request): Body<MachineRequest>,
) -> Result<Json<MachineResponse>, ApiError> {
    let app = app_for(&inner, &principal, &app, true).await?;
    let machine = create_machine(&inner, &app, request, &principal.token.name).await?;
    respond(&inner, &machine).await
}

/// Creates a machine of `app` as asked (`holder` names who takes the lease it may ask
/// for), places it, and tells its host's agent.
pub(crate) async fn create_machine(
    inner: &Inner,
    app: &App,
    request: MachineRequest,
    holder: &str,
) -> Result<MachineRecord, ApiError> {
    create_machine_as(inner, app, request, holder, false).await
}

/// [`create_machine`], the machine `cordoned` (out of the proxy's rotation) from the
/// start, before its agent hears of it: a bluegreen deployment's green machines.
pub(crate) async fn create_machine_as(
    inner: &Inner,
    app: &App,
    request: MachineRequest,
    holder: &str,
    cordoned: bool,
) -> Result<MachineRecord, ApiError> {
    validate_request(&request)?;
    // Go clients send an unset region as "".
    let region = request
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| inner.config.default_region.clone());
    let region: RegionCode = region
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("region: {e}")))?;
    if let Some(min) = request.min_secrets_version
        && u64::try_from(app.secrets_version).unwrap_or(0) < min
    {
        return Err(ApiError::PreconditionFailed(format!(
            "app {} has secrets version {}; the machine needs at least {min}",
            app.name, app.secrets_version
        )));
    }
    let mut config = request.config;
    let volume = mounted_volume(inner, app, &mut config, region.as_str(), None).await?;
    let host = match volume.as_ref().and_then(|v| v.host_id.clone()) {
        // A machine that mounts a volume runs where the volume is.
        Some(host) => host,
        None => place(inner, region.as_str()).await?,
    };
    config
        .metadata
        .entry(aloft_types::machine::METADATA_PLATFORM_VERSION.to_owned())
        .or_insert_with(|| aloft_types::machine::PLATFORM_VERSION.to_owned());
    let name = request
        .name
        .unwrap_or_else(|| format!("machine-{}", hex(&aloft_store::random::<4>())));
    let desired = if request.skip_launch {
        Desired::Stopped
    } else {
        Desired::Started
    };
    ensure_fits(inner, config.guest.as_ref(), Some(region.as_str())).await?;
    let machine = inner
        .store
        .insert_machine_within(NewMachine {
            app_id: app.id.clone(),
            name: name.clone(),
            region: region.to_string(),
            host_id: Some(host),
            private_ip: None,
            config,
            state: MachineState::Created,
            desired,
        }, inner.config.machine_caps)
        .await
        .map_err(|error| match error {
            aloft_store::StoreError::Conflict { .. } => ApiError::Conflict(format!(
                "a machine named {name} already exists in app {}",
                app.name
            )),
            aloft_store::StoreError::LimitReached { scope, count, limit } => {
                let (whose, key) = if scope == "app" {
                    (format!("app {}", app.name), "machines_per_app")
                } else {
                    ("its organization".to_owned(), "machines_per_org")
                };
                ApiError::Unprocessable(format!(
                    "{whose} already has {count} machines, the most this platform allows ([limits] {key} = {limit} in aloftd's config); destroy machines first, or ask the operator to raise the limit"
                ))
            }
            other => other.into(),
        })?;
    if let Some(volume) = &volume {
        inner
            .store
            .attach_volume(&app.id, &volume.id, &machine.id)
            .await?;
    }
    if cordoned {
        inner.store.set_cordoned(&app.id, &machine.id, true).await?;
    }
    crate::catalog::private_address(&inner.store, &machine.id).await?;
    user_event(inner, &machine.id, EventKind::Launch, "created", json!({})).await?;
    if let Some(ttl) = request.lease_ttl {
        inner
            .store
            .acquire_lease(
                &app.id,
                &machine.id,
                i64::try_from(ttl)
                    .unwrap_or(i64::MAX / 2)
                    .saturating_mul(1000),
                holder,
                "",
                None,
            )
            .await?;
    }
    // Read before the agent hears of it: the answer shows the machine as created.
    let created = inner.store.machine(&app.id, &machine.id).await?;
    notify(inner, &machine, Command::Converge);
    Ok(created)
}

/// Checks the config's mount (at most one) and fills in the volume's name and size. On an
/// update, `existing` is the machine: its volume cannot be swapped for another.
async fn mounted_volume(
    inner: &Inner,
    app: &App,
    config: &mut aloft_types::machine::MachineConfig,
    region: &str,
    existing: Option<&MachineRecord>,
) -> Result<Option<aloft_store::VolumeRecord>, ApiError> {
    if config.mounts.len() > 1 {
        return Err(ApiError::BadRequest(
            "config.mounts: a machine mounts at most one volume".to_owned(),
        ));
    }
    let Some(mount) = config.mounts.first_mut() else {
        return Ok(None);
    };
    if !mount.path.starts_with('/') || mount.path == "/" {
        return Err(ApiError::BadRequest(format!(
            "config.mounts[0].path {:?} must be an absolute path other than /",
            mount.path
        )));
    }
    if mount.volume.is_empty() {
        // Aloft's addition to Fly's API (what fly.toml's `[[mounts]]` lower to): a mount
        // that names a volume by `name` only keeps the machine's current volume, or takes
        // a free one of that name in the region, or a new one of `size_gb` (default 1).
        mount.volume = match existing
            .and_then(|m| m.config.mounts.first())
            .filter(|m| !m.volume.is_empty())
        {
            Some(current) => current.volume.clone(),
            None if !mount.name.is_empty() => {
                crate::volumes::free_or_new(inner, app, &mount.name, region, mount.size_gb)
                    .await?
                    .id
                    .to_string()
            }
            None => {
                return Err(ApiError::BadRequest(
                    "config.mounts[0]: give the volume's id (`volume`) or its name (`name`)"
                        .to_owned(),
                ));
            }
        };
    }
    let volume = crate::volumes::volume_for(inner, app, &mount.volume)
        .await
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "config.mounts[0].volume: app {} has no volume {:?}",
                app.name, mount.volume
            ))
        })?;
    if volume.region != region {
        return Err(ApiError::BadRequest(format!(
            "volume {} is in region {}, the machine in {region}",
            volume.id, volume.region
        )));
    }
    match (&volume.attached_machine_id, existing) {
        (Some(holder), Some(machine)) if holder != &machine.id => {
            return Err(ApiError::Conflict(format!(
                "volume {} is attached to machine {holder}",
                volume.id
            )));
        }
        (Some(holder), None) => {
            return Err(ApiError::Conflict(format!(
                "volume {} is attached to machine {holder}",
                volume.id
            )));
        }
        _ => {}
    }
    if let Some(machine) = existing {
        let before = machine.config.mounts.first().map(|m| m.volume.as_str());
        if before.is_some_and(|before| before != volume.id.as_str()) {
            return Err(ApiError::BadRequest(
                "a machine's volume cannot be swapped for another; create a new machine".to_owned(),
            ));
        }
    }
    mount.name = volume.name.clone();
    mount.size_gb = u32::try_from(volume.size_gb).unwrap_or(0);
    mount.encrypted = volume.encrypted;
    Ok(Some(volume))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("region" = Option<String>, Query), ("include_deleted" = Option<bool>, Query), ("state" = Option<String>, Query, description = "Only machines in these states (comma-separated)"), ("metadata.KEY" = Option<String>, Query, description = "Only machines whose metadata has KEY with this value")), responses((status = 200, body = Vec<MachineResponse>), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(app): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<MachineResponse>>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
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
    Ok(Json(
        machines
            .iter()
            .map(|m| crate::wire::machine_response(m, &[], &checks))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = MachineResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_show")]
async fn show(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<MachineResponse>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
    let machine = machine_for(&inner, &app, &id).await?;
    respond(&inner, &machine).await
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), request_body = MachineRequest, responses((status = 200, body = MachineResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_update")]
async fn update(
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
    mounted_volume(inner, app, &mut config, &machine.region, Some(machine)).await?;
    config
        .metadata
        .entry(aloft_types::machine::METADATA_PLATFORM_VERSION.to_owned())
        .or_insert_with(|| aloft_types::machine::PLATFORM_VERSION.to_owned());
    let updated = inner
        .store
        .update_machine_config(&app.id, &machine.id, &config, expected)
        .await?;
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
async fn destroy(
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

pub(crate) fn refuse_if_gone(machine: &MachineRecord) -> Result<(), ApiError> {
    if machine.state.is_terminal() || machine.desired == Desired::Destroyed {
        return Err(ApiError::PreconditionFailed(format!(
            "machine {} is {}",
            machine.id, machine.state
        )));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/start", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_start")]
async fn start(
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
async fn stop(
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
async fn restart(
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
async fn signal(
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

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/wait", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id"), ("state" = Option<String>, Query, description = "started (default), stopped, suspended or destroyed; repeat it to wait for any of several"), ("timeout" = Option<u64>, Query, description = "Seconds, at most 60"), ("instance_id" = Option<String>, Query, description = "Wait on this version of the machine (`version` is the same)")), responses((status = 200, body = WaitResponse), (status = 408, description = "The state was not reached in time", body = ErrorBody), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_wait")]
async fn wait(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<WaitResponse>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
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

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/cordon", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_cordon")]
async fn cordon(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    set_cordon(inner, principal, app, id, headers, true).await
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/uncordon", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_uncordon")]
async fn uncordon(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    set_cordon(inner, principal, app, id, headers, false).await
}

async fn set_cordon(
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
async fn exec(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    Body(request): Body<ExecRequest>,
) -> Result<Json<ExecResponse>, ApiError> {
    let app = app_for(&inner, &principal, &app, true).await?;
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

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/events", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = Vec<EventResponse>), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_events")]
async fn events(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Vec<EventResponse>>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
    let machine = machine_for(&inner, &app, &id).await?;
    let events = inner.store.events(&machine.id).await?;
    Ok(Json(
        events.iter().map(crate::wire::event_response).collect(),
    ))
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/versions", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = Vec<VersionResponse>), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_versions")]
async fn versions(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Vec<VersionResponse>>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
    let machine = machine_for(&inner, &app, &id).await?;
    let versions = inner.store.versions(&machine.id).await?;
    Ok(Json(
        versions.iter().map(crate::wire::version_response).collect(),
    ))
}

/// `POST .../lease` body.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
struct LeaseRequest {
    /// Seconds.
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    description: Option<String>,
}

fn lease_json(machine: &MachineRecord, lease: &aloft_store::Lease) -> serde_json::Value {
    json!({
        "status": "success",
        "data": {
            "nonce": lease.nonce,
            "expires_at": lease.expires_at / 1000,
            "owner": lease.owner,
            "description": lease.description,
            "version": machine.version.to_string(),
        }
    })
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/lease", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = Object), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_show_lease")]
async fn show_lease(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
    let machine = machine_for(&inner, &app, &id).await?;
    let lease = machine
        .lease
        .as_ref()
        .ok_or_else(|| ApiError::not_found(format!("lease on machine {id}")))?;
    Ok(Json(lease_json(&machine, lease)))
}

#[utoipa::path(post, path = "/v1/apps/{app}/machines/{id}/lease", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), request_body = Option<LeaseRequest>, responses((status = 200, body = Object), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_acquire_lease")]
async fn acquire_lease(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    OptionalBody(request): OptionalBody<LeaseRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let app = app_for(&inner, &principal, &app, true).await?;
    let machine = machine_for(&inner, &app, &id).await?;
    let ttl = request.ttl.unwrap_or(30).clamp(1, 3600);
    let nonce = headers
        .get(LEASE_NONCE_HEADER)
        .and_then(|v| v.to_str().ok());
    let lease = inner
        .store
        .acquire_lease(
            &app.id,
            &machine.id,
            i64::try_from(ttl).unwrap_or(3600) * 1000,
            &principal.token.name,
            request.description.as_deref().unwrap_or(""),
            nonce,
        )
        .await?;
    Ok(Json(lease_json(&machine, &lease)))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/machines/{id}/lease", tag = "machines", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_release_lease")]
async fn release_lease(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    let app = app_for(&inner, &principal, &app, true).await?;
    let machine = machine_for(&inner, &app, &id).await?;
    let nonce = headers
        .get(LEASE_NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("send the lease's nonce in `{LEASE_NONCE_HEADER}`"))
        })?;
    inner
        .store
        .release_lease(&app.id, &machine.id, nonce)
        .await?;
    Ok(Json(OkResponse {
        ok: true,
        previous_state: None,
    }))
}

/// Why the platform itself (not a user) starts or stops a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformReason {
    /// The proxy starts a stopped machine for a request (`auto_start_machines`).
    Autostart,
    /// The proxy stops an idle machine (`auto_stop_machines`).
    Autostop,
}

impl PlatformReason {
    fn as_str(self) -> &'static str {
        match self {
            PlatformReason::Autostart => "autostart",
            PlatformReason::Autostop => "autostop",
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
        let inner = &self.inner;
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
}
