//! Fly's platform endpoints: `/v1/platform/regions` (the regions that have hosts, with
//! Fly's names and locations for its codes, and the CPUs left there) and
//! `/v1/platform/placements` (where machines of a size would go, without creating any);
//! and Aloft's `/v1/platform/hosts` (every host, for the platform operator only).
//!
//! Aloft places a machine on a host of the region it asks for that is up and has room
//! (`placement`), so "capacity" is the CPUs of a region's up hosts not taken by started
//! machines, and a placement of `count` machines goes to the first region of the request
//! that has a host big enough, spread over its hosts. The operator cordons, uncordons and
//! drains hosts here too.

use std::collections::BTreeMap;
use std::sync::Arc;

use aloft_store::{Desired, Host, HostRecord};
use aloft_types::api::{
    ErrorBody, Placements, PlacementsRequest, PlatformHost, PlatformHosts, PlatformRegion,
    PlatformRegions, RegionPlacement,
};
use aloft_types::regions::fly_region;
use aloft_types::{HostId, HostState};
use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::json::Body;
use crate::placement::Need;
use crate::{ApiError, Inner, Principal};

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(regions))
        .routes(routes!(placements))
        .routes(routes!(hosts))
        .routes(routes!(cordon))
        .routes(routes!(uncordon))
        .routes(routes!(drain))
}

#[utoipa::path(get, path = "/v1/platform/hosts", tag = "platform", responses((status = 200, body = PlatformHosts, description = "Every host of the platform: its region, state, size, what its machines reserve, its machines, its last heartbeat"), (status = "4XX", description = "Missing or invalid token, or not the platform operator's (403)", body = ErrorBody)), operation_id = "Platform_hosts")]
async fn hosts(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
) -> Result<Json<PlatformHosts>, ApiError> {
    principal.require_operator("listing the platform's hosts")?;
    let mut hosts = Vec::new();
    for record in inner.store.host_records().await? {
        hosts.push(host_view(&inner, record).await?);
    }
    Ok(Json(PlatformHosts { hosts }))
}

async fn host_view(inner: &Inner, record: HostRecord) -> Result<PlatformHost, ApiError> {
    let host = &record.host;
    let machines: Vec<_> = inner
        .store
        .machines_on_host(&host.id)
        .await?
        .into_iter()
        .filter(|m| m.desired != Desired::Destroyed)
        .collect();
    let started: Vec<_> = machines
        .iter()
        .filter(|m| m.desired == Desired::Started)
        .collect();
    let reserved = machines.iter().fold(Need::NOTHING, |sum, m| {
        sum.plus(Need::of(m.config.guest.as_ref()))
    });
    Ok(PlatformHost {
        cpus_used: started.iter().map(|m| cpus_of(m)).sum(),
        machines_started: u64::try_from(started.len()).unwrap_or(u64::MAX),
        machines: u64::try_from(machines.len()).unwrap_or(u64::MAX),
        last_heartbeat: aloft_types::time::rfc3339(host.last_heartbeat),
        id: host.id.to_string(),
        region: host.region.clone(),
        cpus: host.cpus,
        memory_mb: host.memory_mb,
        state: record.state().to_string(),
        address: host.address.clone(),
        cpu_shares_reserved: reserved.shares,
        memory_reserved_mb: reserved.memory_mb,
    })
}

/// Sets a host's state (`cordon`, `uncordon`, `drain`) for the operator.
async fn set_state(
    inner: &Arc<Inner>,
    principal: &Principal,
    id: &str,
    state: HostState,
) -> Result<Json<PlatformHost>, ApiError> {
    principal.require_operator("changing a host's state")?;
    let id: HostId = id
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("host: {e}")))?;
    inner.store.set_host_state(&id, state).await?;
    let record = inner.store.host_record(&id).await?;
    tracing::info!(host = %id, %state, "the operator set a host's state");
    Ok(Json(host_view(inner, record).await?))
}

#[utoipa::path(post, path = "/v1/platform/hosts/{host}/cordon", tag = "platform", params(("host" = String, Path, description = "The host's id")), responses((status = 200, body = PlatformHost, description = "The host takes no new machines; its machines run on"), (status = "4XX", description = "Missing or invalid token, not the operator's (403), or no such host (404)", body = ErrorBody)), operation_id = "Platform_hosts_cordon")]
async fn cordon(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(host): Path<String>,
) -> Result<Json<PlatformHost>, ApiError> {
    set_state(&inner, &principal, &host, HostState::Cordoned).await
}

#[utoipa::path(post, path = "/v1/platform/hosts/{host}/uncordon", tag = "platform", params(("host" = String, Path, description = "The host's id")), responses((status = 200, body = PlatformHost, description = "The host takes new machines again (a drain stops where it is)"), (status = "4XX", description = "Missing or invalid token, not the operator's (403), or no such host (404)", body = ErrorBody)), operation_id = "Platform_hosts_uncordon")]
async fn uncordon(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(host): Path<String>,
) -> Result<Json<PlatformHost>, ApiError> {
    set_state(&inner, &principal, &host, HostState::Up).await
}

#[utoipa::path(post, path = "/v1/platform/hosts/{host}/drain", tag = "platform", params(("host" = String, Path, description = "The host's id")), responses((status = 200, body = PlatformHost, description = "The host takes no new machines, and its machines without volumes are replaced on other hosts one by one: each replacement starts and passes its checks before the machine it replaces is stopped"), (status = "4XX", description = "Missing or invalid token, not the operator's (403), or no such host (404)", body = ErrorBody)), operation_id = "Platform_hosts_drain")]
async fn drain(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(host): Path<String>,
) -> Result<Json<PlatformHost>, ApiError> {
    set_state(&inner, &principal, &host, HostState::Draining).await
}

/// The CPUs a machine takes: its guest's, or one.
fn cpus_of(machine: &aloft_store::MachineRecord) -> i64 {
    i64::from(machine.config.guest.as_ref().map_or(1, |g| g.cpus.max(1)))
}

/// A region's hosts and the CPUs they have left.
struct RegionHosts {
    hosts: Vec<Host>,
    free_cpus: i64,
}

async fn by_region(inner: &Inner) -> Result<BTreeMap<String, RegionHosts>, ApiError> {
    let mut regions: BTreeMap<String, RegionHosts> = BTreeMap::new();
    for record in inner.store.host_records().await? {
        let up = record.state() == HostState::Up;
        let host = record.host;
        let used: i64 = inner
            .store
            .machines_on_host(&host.id)
            .await?
            .iter()
            .filter(|m| m.desired == Desired::Started)
            .map(cpus_of)
            .sum();
        let entry = regions
            .entry(host.region.clone())
            .or_insert_with(|| RegionHosts {
                hosts: Vec::new(),
                free_cpus: 0,
            });
        // A region is listed while it has hosts; only up ones have room.
        if up {
            entry.free_cpus += (host.cpus - used).max(0);
            entry.hosts.push(host);
        }
    }
    Ok(regions)
}

#[utoipa::path(get, path = "/v1/platform/regions", tag = "platform", responses((status = 200, body = PlatformRegions, description = "The regions that have hosts (Fly's names and locations for Fly's codes), each with the CPUs its hosts have left; Nearest is the control plane's region"), (status = "4XX", description = "Missing or invalid token", body = ErrorBody)), operation_id = "Platform_regions")]
async fn regions(
    State(inner): State<Arc<Inner>>,
    _principal: Principal,
) -> Result<Json<PlatformRegions>, ApiError> {
    let regions = by_region(&inner)
        .await?
        .into_iter()
        .map(|(code, hosts)| {
            let fly = fly_region(&code);
            PlatformRegion {
                name: fly.map_or_else(|| code.clone(), |r| r.name.to_owned()),
                latitude: fly.map_or(0.0, |r| r.latitude),
                longitude: fly.map_or(0.0, |r| r.longitude),
                geo_region: fly.map_or_else(String::new, |r| r.geo_region.to_owned()),
                // WireGuard peers join the private network with the network issue.
                gateway_available: false,
                requires_paid_plan: false,
                deprecated: false,
                capacity: hosts.free_cpus,
                mpg_available: false,
                code,
            }
        })
        .collect();
    Ok(Json(PlatformRegions {
        regions,
        nearest: inner.config.default_region.clone(),
    }))
}

#[utoipa::path(post, path = "/v1/platform/placements", tag = "platform", request_body = PlacementsRequest, responses((status = 200, body = Placements, description = "Where the machines would go: with a count, all in the first region of the request that has a host big enough, spread over its hosts; with none, how many fit in each region of the request without sharing CPUs"), (status = "4XX", description = "Bad input (an unknown region), missing or invalid token", body = ErrorBody)), operation_id = "Platform_placements")]
async fn placements(
    State(inner): State<Arc<Inner>>,
    _principal: Principal,
    Body(request): Body<PlacementsRequest>,
) -> Result<Json<Placements>, ApiError> {
    let all = by_region(&inner).await?;
    let cpus = i64::from(request.compute.as_ref().map_or(1, |g| g.cpus.max(1)));
    let expression = if request.region.trim().is_empty() {
        format!("{},any", inner.config.default_region)
    } else {
        request.region.clone()
    };
    let mut wanted: Vec<&str> = Vec::new();
    for name in expression
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        if name == "any" {
            wanted.extend(all.keys().map(String::as_str));
        } else if all.contains_key(name) {
            wanted.push(name);
        } else {
            return Err(ApiError::BadRequest(format!(
                "region: {name:?} has no hosts (regions with hosts: {})",
                all.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let mut seen = std::collections::HashSet::new();
    wanted.retain(|r| seen.insert(*r));
    let fits = |hosts: &RegionHosts| hosts.hosts.iter().any(|h| h.cpus.max(1) >= cpus);
    let placed = if request.count == 0 {
        wanted
            .iter()
            .filter_map(|r| Some((*r, all.get(*r)?)))
            .map(|(region, hosts)| RegionPlacement {
                region: region.to_owned(),
                count: u64::try_from(hosts.free_cpus / cpus).unwrap_or(0),
                concurrency: 1,
            })
            .collect()
    } else {
        wanted
            .iter()
            .filter_map(|r| Some((*r, all.get(*r)?)))
            .find(|(_, hosts)| fits(hosts))
            .map(|(region, hosts)| {
                let spread = u64::try_from(hosts.hosts.len()).unwrap_or(1).max(1);
                vec![RegionPlacement {
                    region: region.to_owned(),
                    count: request.count,
                    concurrency: request.count.div_ceil(spread),
                }]
            })
            .unwrap_or_default()
    };
    Ok(Json(Placements { regions: placed }))
}
