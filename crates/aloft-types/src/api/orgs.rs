//! An organization's machines and volumes across its apps (Fly's `/v1/orgs/{org}/machines`
//! and `/v1/orgs/{org}/volumes`), oldest change first, a page at a time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::VolumeResponse;
use crate::machine::MachineGuest;

/// A machine's config as the organization's list shows it (Fly's `MachineOverviewConfig`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgMachineConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<MachineGuest>,
    pub image: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One machine of the organization (Fly's `OrgMachine`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgMachine {
    pub id: String,
    pub name: String,
    pub app_name: String,
    pub state: String,
    pub region: String,
    pub private_ip: String,
    pub version: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Left out with `summary=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<OrgMachineConfig>,
}

/// `GET /v1/orgs/{slug}/machines` (Fly's `OrgMachinesResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgMachinesResponse {
    pub machines: Vec<OrgMachine>,
    /// Ask again with `cursor` set to it for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_machine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_at: Option<String>,
    /// Regions whose machines could not be read (always empty: one store holds them all).
    pub error_regions: Vec<String>,
}

/// One volume of the organization (Fly's `OrgVolume`: a volume with its app's name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgVolume {
    #[serde(flatten)]
    pub volume: VolumeResponse,
    pub app_name: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// `GET /v1/orgs/{slug}/volumes` (Fly's `OrgVolumesResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgVolumesResponse {
    pub volumes: Vec<OrgVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_volume_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_at: Option<String>,
}
