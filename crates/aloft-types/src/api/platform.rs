//! Fly's IP assignments (`/apps/{app}/ip_assignments`) and platform endpoints
//! (`/platform/regions`, `/platform/placements`), with the field names fly-go decodes.

use serde::{Deserialize, Serialize};

/// One of an app's addresses (fly-go's `IPAssignment`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IpAssignment {
    pub ip: String,
    pub region: String,
    /// Empty: Aloft's addresses serve every service of the app.
    #[serde(default)]
    pub service_name: String,
    /// Whether other apps share the address (never, for an assigned one).
    #[serde(default)]
    pub shared: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// `GET /v1/apps/{app}/ip_assignments`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IpAssignments {
    pub ips: Vec<IpAssignment>,
}

/// `POST /v1/apps/{app}/ip_assignments` (fly-go's `AssignIPRequest`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignIpRequest {
    /// `v4`: a dedicated IPv4 address from the operator's pool (`v6`, `shared_v4` and
    /// `private_v6` are refused with a reason).
    #[serde(rename = "type")]
    pub kind: String,
    /// Defaults to the control plane's region.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub org_slug: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub service_name: Option<String>,
}

/// A region of the platform (fly-go's `Region`): one that has hosts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformRegion {
    pub code: String,
    /// Fly's name for the code, or the code itself.
    pub name: String,
    /// Fly's location for the code; 0 for a code Fly does not use.
    pub latitude: f32,
    pub longitude: f32,
    /// Whether WireGuard peers can join there (not yet on Aloft).
    pub gateway_available: bool,
    pub requires_paid_plan: bool,
    pub deprecated: bool,
    /// CPUs of the region's hosts not taken by started machines.
    pub capacity: i64,
    /// `africa`, `asia_pacific`, `europe`, `north_america`, `south_america`, or empty.
    pub geo_region: String,
    pub mpg_available: bool,
}

/// `GET /v1/platform/regions` (fly-go's `RegionData`, capitalised as Fly sends it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformRegions {
    #[serde(rename = "Regions")]
    pub regions: Vec<PlatformRegion>,
    /// The control plane's region.
    #[serde(rename = "Nearest")]
    pub nearest: String,
}

/// `POST /v1/platform/placements` (fly-go's `GetPlacementsRequest`): where `count`
/// machines of `compute` would go.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlacementsRequest {
    /// The size to place (`cpus`; performance-1x's 1 CPU when absent).
    #[serde(default)]
    pub compute: Option<crate::machine::MachineGuest>,
    /// Regions in order of preference, comma-separated; `any` for every region. Defaults
    /// to the control plane's region, then any.
    #[serde(default)]
    pub region: String,
    /// Machines to place; 0 asks how many fit in each region.
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub volume_name: String,
    #[serde(default)]
    pub volume_size_bytes: u64,
    #[serde(default)]
    pub weights: Option<std::collections::BTreeMap<String, i64>>,
    #[serde(default)]
    pub org_slug: String,
}

/// One region's share of a placement (fly-go's `RegionPlacement`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegionPlacement {
    #[serde(rename = "Region")]
    pub region: String,
    #[serde(rename = "Count")]
    pub count: u64,
    /// Machines per host there (how densely they would be packed).
    #[serde(rename = "Concurrency")]
    pub concurrency: u64,
}

/// The answer of `POST /v1/platform/placements`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Placements {
    #[serde(rename = "Regions")]
    pub regions: Vec<RegionPlacement>,
}

/// One host of the platform (`GET /v1/platform/hosts`, for the operator).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformHost {
    pub id: String,
    pub region: String,
    pub cpus: i64,
    pub memory_mb: i64,
    /// CPUs taken by its machines that should run (a machine without `guest` counts one).
    pub cpus_used: i64,
    /// Its machines that should run.
    pub machines_started: u64,
    /// Every machine placed on it, stopped ones included (destroyed ones not).
    pub machines: u64,
    /// RFC 3339: when its agent last reported.
    pub last_heartbeat: String,
    /// `up`, `cordoned` (takes no new machines), `draining` (its machines move to other
    /// hosts one by one) or `down` (missed its heartbeats; its machines without volumes
    /// moved).
    pub state: String,
    /// Where its agent can be reached, when it said.
    #[serde(default)]
    pub address: Option<String>,
    /// CPU shares (16 to a core: a shared CPU takes 1, a performance CPU 16) of the
    /// machines placed on it, stopped ones included (they keep their room).
    #[serde(default)]
    pub cpu_shares_reserved: i64,
    /// Memory of the machines placed on it, stopped ones included.
    #[serde(default)]
    pub memory_reserved_mb: i64,
}

/// `GET /v1/platform/hosts`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformHosts {
    pub hosts: Vec<PlatformHost>,
}
