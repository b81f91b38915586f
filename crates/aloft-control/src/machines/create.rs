//! Creating machines: validating the request, placing the machine on a host with room
//! in its region, its volumes (made or attached), and recording it before its agent hears
//! of it.

use std::sync::Arc;

use aloft_store::{App, Desired, MachineRecord, NewMachine};
use aloft_types::api::ErrorBody;
use aloft_types::{EventKind, MachineState, RegionCode};
use axum::Json;
use axum::extract::State;
use serde_json::json;

use super::placing::{Placing, place};
use super::{notify, respond, user_event};
use crate::access::WriteApp;
use crate::json::Body;
use crate::wire::{MachineRequest, MachineResponse};
use crate::{ApiError, Inner, Principal};
use aloft_agent_api::Command;

pub(super) fn validate_request(request: &MachineRequest) -> Result<(), ApiError> {
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
    crate::schedule::validate(request.config.schedule.as_deref())
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

#[utoipa::path(post, path = "/v1/apps/{app}/machines", tag = "machines", params(("app" = String, Path, description = "The app's name")), request_body = MachineRequest, responses((status = 200, body = MachineResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Machines_create")]
pub(super) async fn create(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    WriteApp(app): WriteApp,
    Body(request): Body<MachineRequest>,
) -> Result<Json<MachineResponse>, ApiError> {
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
    // A size no host can hold is refused as such, before any quota is counted.
    ensure_fits(inner, config.guest.as_ref(), Some(region.as_str())).await?;
    // Held until the machine is stored: another request of the organization waits.
    let quota = crate::quotas::check_app(
        inner,
        app,
        crate::quotas::Ask::Machine {
            guest: config.guest.as_ref(),
            replacing: None,
        },
    )
    .await?;
    let volume = mounted_volume(inner, app, &mut config, region.as_str(), None).await?;
    let host = match volume.as_ref().and_then(|v| v.host_id.clone()) {
        // A machine that mounts a volume runs where the volume is.
        Some(host) => host,
        None => {
            let placing = Placing::Machine {
                app: &app.id,
                config: &config,
            };
            place(inner, region.as_str(), placing).await?
        }
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
            cordoned,
            volume: volume.as_ref().map(|v| v.id.clone()),
        }, inner.config.machine_caps)
        .await
        .map_err(|error| match error {
            aloft_store::StoreError::Conflict { what: "volume", id, reason } => {
                ApiError::Conflict(format!("volume {id}: {reason}"))
            }
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
    drop(quota);
    aloft_crash::reach(aloft_crash::Point::MachineStored);
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
pub(super) async fn mounted_volume(
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
                crate::volumes::free_or_new(inner, app, mount, region)
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

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
