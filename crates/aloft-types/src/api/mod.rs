//! Request and response bodies of the Machines API, with Fly's field names, shared by
//! the control plane (which serves them) and clients. Requests ignore fields they do not
//! know, as Fly's API does: its clients (fly-go, Terraform providers) send fields that
//! any one server version does not read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::machine::MachineConfig;
use crate::{Duration, Signal};

mod certificates;
mod lease;
mod orgs;
mod platform;
mod volumes;

pub use certificates::{
    AddCertificateRequest, CertificateDetail, CertificateList, CertificateSummary,
    CertificateValidation, DnsRecords, DnsRequirements, HostCertificate, ImportCertificateRequest,
    IssuedKey, ValidationError,
};
pub use lease::{LeaseData, LeaseResponse};
pub use orgs::{OrgMachine, OrgMachineConfig, OrgMachinesResponse, OrgVolume, OrgVolumesResponse};
pub use platform::{
    AssignIpRequest, IpAssignment, IpAssignments, Placements, PlacementsRequest, PlatformHost,
    PlatformHosts, PlatformRegion, PlatformRegions, RegionPlacement,
};
pub use volumes::{
    CreateVolumeRequest, ExtendResponse, ExtendVolumeRequest, UpdateVolumeRequest, VolumeResponse,
    VolumeSnapshotResponse,
};

/// `POST /v1/apps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateAppRequest {
    /// The app's name (`name` in fly-go's requests).
    #[serde(alias = "name")]
    pub app_name: String,
    #[serde(default)]
    pub org_slug: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
}

/// An app as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppResponse {
    pub id: String,
    pub name: String,
    pub organization: OrgRef,
    pub network: String,
    /// `pending` (no machine yet), `deployed` (a machine runs or is on its way),
    /// `suspended` (every machine is stopped, crashed ones included) or `failed` (none
    /// runs and one could not be launched).
    pub status: String,
    pub machine_count: usize,
    /// Its volumes (Fly's `volume_count`).
    #[serde(default)]
    pub volume_count: usize,
    pub created_at: String,
    /// `<app>.<apps_domain>`, where the edge serves the app (absent without an edge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `https://<app>.<apps_domain>[:port]/`, the app's public URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The organization an app belongs to.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgRef {
    pub slug: String,
    pub name: String,
}

/// `GET /v1/apps`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppList {
    pub total_apps: usize,
    pub apps: Vec<AppResponse>,
}

/// `POST /v1/apps/{app}/machines` and `POST /v1/apps/{app}/machines/{id}` (update).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineRequest {
    pub config: MachineConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub skip_launch: bool,
    #[serde(default)]
    pub skip_service_registration: bool,
    #[serde(default)]
    pub skip_secrets: bool,
    #[serde(default)]
    pub lease_ttl: Option<u64>,
    #[serde(default)]
    pub min_secrets_version: Option<u64>,
    /// Update only: the version the caller believes is current.
    #[serde(default)]
    pub current_version: Option<String>,
}

impl MachineRequest {
    /// A request for `config`, everything else at its default (launch it, any name, the
    /// default region).
    pub fn new(config: MachineConfig) -> MachineRequest {
        MachineRequest {
            config,
            region: None,
            name: None,
            skip_launch: false,
            skip_service_registration: false,
            skip_secrets: false,
            lease_ttl: None,
            min_secrets_version: None,
            current_version: None,
        }
    }
}

/// `POST .../stop` and `POST .../restart` bodies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StopRequest {
    #[serde(default)]
    pub signal: Option<Signal>,
    #[serde(default)]
    pub timeout: Option<Duration>,
}

/// `POST .../signal`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalRequest {
    /// A name (`SIGTERM`) or, as fly-go's `Kill` sends it, a number (`9`).
    #[serde(deserialize_with = "signal_name_or_number")]
    pub signal: Signal,
}

fn signal_name_or_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Signal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(i64),
        Name(String),
    }
    match Given::deserialize(deserializer)? {
        Given::Number(number) => Signal::ALL
            .into_iter()
            .find(|s| i64::from(s.number()) == number)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown signal number {number}"))),
        Given::Name(name) => name.parse().map_err(serde::de::Error::custom),
    }
}

/// `POST .../exec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecRequest {
    /// The command and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// A shell command line, split into words when `command` is empty.
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub stdin: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// One process of a machine (`GET .../ps`, Fly's `ProcessStat`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessStat {
    /// Its pid inside the machine.
    pub pid: i32,
    /// When it started, in Unix seconds.
    pub stime: u64,
    /// How long it has run, in seconds.
    pub rtime: u64,
    /// Its command line, arguments separated by spaces.
    pub command: String,
    /// Its working directory.
    pub directory: String,
    /// The CPU time it used (user and system), in milliseconds.
    pub cpu: u64,
    /// Its resident memory, in bytes.
    pub rss: u64,
    /// The TCP ports it listens on and the UDP ports it has bound.
    pub listen_sockets: Vec<ListenSocket>,
}

/// A socket a process listens on: `tcp` or `udp`, and `address:port` (IPv6 in brackets).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListenSocket {
    pub proto: String,
    pub address: String,
}

/// The result of `POST .../exec`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecResponse {
    pub exit_code: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<i64>,
    pub stdout: String,
    pub stderr: String,
}

/// What start, stop, restart, signal, cordon and similar calls answer.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OkResponse {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<String>,
}

/// The answer of `GET .../wait`, as Fly's: the state reached, the machine's latest event
/// and its version (instance id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitResponse {
    pub ok: bool,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A machine event, as Fly shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventResponse {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub source: String,
    pub timestamp: i64,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub request: serde_json::Value,
}

/// The image a machine runs, split as Fly shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub labels: BTreeMap<String, String>,
}

impl ImageRef {
    pub fn parse(image: &str) -> ImageRef {
        let (name, digest) = image.split_once('@').unwrap_or((image, ""));
        let (name, tag) = match name.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (name, "latest"),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((host, rest))
                if host.contains('.') || host.contains(':') || host == "localhost" =>
            {
                (host, rest)
            }
            _ => ("", name),
        };
        ImageRef {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            digest: digest.to_owned(),
            labels: BTreeMap::new(),
        }
    }
}

/// A machine as the API shows it (Fly's `Machine` object).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineResponse {
    pub id: String,
    pub name: String,
    pub state: String,
    pub region: String,
    pub instance_id: String,
    pub version: String,
    pub private_ip: String,
    pub config: MachineConfig,
    pub image_ref: ImageRef,
    pub events: Vec<EventResponse>,
    pub checks: Vec<CheckResponse>,
    pub host_status: String,
    pub cordoned: bool,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Aloft's: the id of the host the machine is placed on (`aloft platform hosts`
    /// lists them); Fly's clients ignore it. Absent before placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// One of an app's public addresses (`aloft ips list`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IpResponse {
    pub address: String,
    #[serde(rename = "type")]
    pub kind: crate::IpKind,
    pub region: String,
    /// RFC 3339.
    pub created_at: String,
}

/// `POST /v1/apps/{app}/ips`: an address to allocate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AllocateIpRequest {
    /// `v4`: a dedicated IPv4 address from the operator's pool.
    #[serde(rename = "type")]
    pub kind: String,
    /// Defaults to the control plane's region.
    #[serde(default)]
    pub region: Option<String>,
}

/// A check's latest result on a machine (Fly's `checks[]` entry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckResponse {
    pub name: String,
    pub status: crate::CheckStatus,
    pub output: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A config version, as `GET .../versions` lists them.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionResponse {
    pub version: String,
    pub instance_id: String,
    pub user_config: MachineConfig,
    pub created_at: String,
}

/// A secret as listed: its name and a keyed digest, never its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretInfo {
    pub name: String,
    pub digest: String,
    pub version: i64,
    pub created_at: String,
}

/// `POST /v1/apps/{app}/secrets`: set and unset (a `null` value) in one change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretsUpdate {
    pub values: BTreeMap<String, Option<String>>,
}

/// `GET /v1/apps/{app}/secrets`, in Fly's shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

/// The app's secrets version after a change, and (for `POST /v1/apps/{app}/secrets`,
/// as Fly answers it) its secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretsVersion {
    pub version: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretInfo>,
}

/// `GET /v1/apps/{app}/config`: the fly.toml an app's release was deployed from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppConfigResponse {
    /// The release's version.
    pub release: i64,
    /// The file, as it was deployed.
    pub fly_toml: String,
}

/// A running machine's memory (Fly's `main.memoryResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoryResponse {
    /// The limit it runs under now, in MB.
    pub limit_mb: u64,
    /// The most the limit may be set to: the machine's size (`guest.memory_mb`).
    pub available_mb: u64,
}

/// `PUT /v1/apps/{app}/machines/{id}/memory` (Fly's `main.setMemoryLimitRequest`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetMemoryLimitRequest {
    pub limit_mb: Option<u64>,
}

/// An organization as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgResponse {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub created_at: String,
}

/// `POST /v1/orgs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateOrgRequest {
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The answer to `POST /v1/orgs`: the organization and an org token for it (shown once).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedOrg {
    pub org: OrgResponse,
    pub token: String,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenRequest {
    /// `org`, `deploy`, `readonly` or `ssh`; `operator` with an operator token only.
    pub kind: String,
    /// The one app a `deploy` or `ssh` token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How long the token lives, e.g. `"720h"`; forever when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Duration>,
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub app: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// The answer to `POST /v1/tokens`: the token's record and its secret (shown once).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: TokenResponse,
    pub token: String,
}

/// Every error answer: `{"error": "what is wrong"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs_split_like_fly() {
        let r = ImageRef::parse("registry.fly.io/my-app:deployment-01H");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("registry.fly.io", "my-app", "deployment-01H")
        );
        let r = ImageRef::parse("nginx");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("", "nginx", "latest")
        );
        let r = ImageRef::parse("localhost:5000/a/b@sha256:abc");
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.digest.as_str()
            ),
            ("localhost:5000", "a/b", "sha256:abc")
        );
    }
}

/// The answer of `GET /v1/apps/{app}/dns` (Aloft's own): what the app's machines get
/// when they ask the private network's DNS server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DigResponse {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...
    pub status: String,
    pub answers: Vec<DnsRecord>,
    /// The zone's SOA with negative answers.
    #[serde(default)]
    pub authority: Vec<DnsRecord>,
}

/// One DNS record in presentation form.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub ttl: u32,
    pub data: String,
}

/// `POST /v1/apps/{app}/deployments`: roll out a new release of the app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployRequest {
    /// The image every machine of the release runs (it replaces `config.image`).
    pub image: String,
    /// The machine config of the release (what fly.toml lowers to).
    #[serde(default)]
    pub config: crate::machine::MachineConfig,
    /// `rolling` (default), `immediate`, `canary` (one new machine checked first, then
    /// rolling) or `bluegreen` (a full new set checked next to the old, which is then
    /// destroyed).
    #[serde(default)]
    pub strategy: Option<String>,
    /// For `rolling` and `canary`: how many machines may be replaced at once, as Fly reads
    /// it: below 1 a fraction of the group, rounded up (`0.33`, the default), from 1 up a
    /// count of machines (`1` is one machine at a time).
    #[serde(default)]
    pub max_unavailable: Option<f64>,
    /// How long each machine gets to start and pass its checks, in seconds (default 300).
    #[serde(default)]
    pub wait_timeout: Option<u64>,
    /// Machines to create when the app has none (default: 2 when the config has
    /// services, else 1).
    #[serde(default)]
    pub initial_count: Option<u32>,
    #[serde(default)]
    pub description: Option<String>,
    /// Run once, before any machine changes, in a temporary machine of the release (its
    /// env and secrets, no services, no volumes); a non-zero exit fails the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_command: Option<Vec<String>>,
    /// Seconds the release command may run (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_command_timeout: Option<u64>,
    /// The release command machine's size (fly.toml's `[deploy.release_command_vm]`);
    /// without it, the release's own `config.guest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_command_guest: Option<crate::machine::MachineGuest>,
    /// Smoke checks, as flyctl runs them (default on): each new machine must keep running
    /// for `smoke_check_seconds` after it starts, without an exit; one that exits, crash
    /// loops or fails to launch fails the deployment at once, with its exit code and last
    /// log lines. `false` turns them off (a machine that stops for good still fails it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_checks: Option<bool>,
    /// How long a new machine must keep running for its smoke checks, in seconds
    /// (default 10, as flyctl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_check_seconds: Option<u64>,
    /// Only these machines of the group change (flyctl's `--only-machines`, by id); the
    /// others keep their release. Each must be a live machine of the group. Rolling and
    /// immediate deploys only; no machine is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_machines: Option<Vec<String>>,
    /// Only the group's machines in these regions change (flyctl's `--regions`); at
    /// least one must be there. Rolling and immediate deploys only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
    /// The fly.toml the release is deployed from, as written (`aloft config save` writes
    /// it back later); at most 256 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fly_toml: Option<String>,
}

/// One line of a build's NDJSON output (`POST /v1/apps/{app}/builds`): the builder's
/// output as it comes, then either the image or the error.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BuildEvent {
    /// Builder output (may hold several lines, or part of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The built image's id (`sha256:...`): what a release of it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The tag the image also got (`aloft/APP:build-ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Why the build failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One release of an app (`aloft releases`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseResponse {
    pub id: String,
    pub version: i64,
    pub image: String,
    pub status: crate::deploy::ReleaseStatus,
    /// The process group the release's machines belong to.
    pub process_group: String,
    pub description: String,
    /// The token that deployed it.
    pub user: String,
    /// RFC 3339.
    pub created_at: String,
}

/// One step of a deployment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentStepResponse {
    pub number: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    pub kind: crate::deploy::StepKind,
    pub message: String,
    /// RFC 3339.
    pub at: String,
}

/// A deployment and its steps so far.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentResponse {
    pub id: String,
    pub release: ReleaseResponse,
    pub strategy: crate::deploy::Strategy,
    pub max_unavailable: f64,
    pub wait_timeout: u64,
    /// How long each new machine must keep running without an exit (smoke checks), in
    /// seconds; 0 when they are off.
    #[serde(default)]
    pub smoke_check_seconds: u64,
    pub status: crate::deploy::DeploymentStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The machines it changes, when it does not change the whole group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<crate::deploy::DeployScope>,
    pub steps: Vec<DeploymentStepResponse>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// The header of `POST /v1/apps/{app}/builds` that carries one build secret:
/// `ID=<value in base64>`, repeated per secret.
pub const BUILD_SECRET_HEADER: &str = "aloft-build-secret";

/// The last line of a followed stream when the server ends it (`GET .../logs/stream`):
/// `end` is `shutting_down` (the server is stopping) or `app_destroyed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamEnd {
    pub end: String,
    /// What happened and what to do, for people.
    pub message: String,
}

/// A line of a followed log stream: a log line, or the server's end of the stream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum LogStreamLine {
    End(StreamEnd),
    Entry(LogEntryResponse),
}

/// One log line (`GET /v1/apps/{app}/logs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntryResponse {
    /// Unique per line (`<host>-<seq>`): a sink or a client that sees a line twice can
    /// drop it by this.
    pub id: String,
    /// When the line was written, RFC 3339 with nanoseconds.
    pub timestamp: String,
    pub timestamp_ns: i64,
    pub app: String,
    /// The machine's id (Fly's `instance` in its log entries).
    pub machine: String,
    pub region: String,
    /// The machine's config version that wrote the line.
    pub instance: String,
    /// `stdout`, `stderr` or `platform` (the platform's events about the machine).
    pub stream: String,
    pub message: String,
}

/// A page of log lines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogsResponse {
    /// Oldest first.
    pub entries: Vec<LogEntryResponse>,
    /// Pass as `cursor` to get the lines after these (opaque).
    pub next_cursor: String,
}

/// `POST /v1/log_sinks`: ship the organization's (or one app's) log lines somewhere.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateLogSinkRequest {
    /// `http` (NDJSON POSTs), `loki` (the push API) or `syslog` (RFC 5424 over TCP).
    pub kind: String,
    /// `http(s)://host:port/path` for `http` and `loki`; `tcp://host:port` or
    /// `tls://host:port` for `syslog`.
    pub url: String,
    /// Sent with every request (`http`, `loki`): credentials, say. Stored encrypted.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Only this app's lines (default: every app of the organization).
    #[serde(default)]
    pub app: Option<String>,
    /// A certificate authority (PEM) the collector's certificate may chain to, besides the
    /// public ones (`https://`, `tls://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// A log sink and how its shipping goes (`aloft logs ship list`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogSinkResponse {
    pub id: String,
    pub kind: crate::SinkKind,
    pub url: String,
    /// The app whose lines it gets; none: every app of the organization.
    pub app: Option<String>,
    pub created_at: String,
    /// Lines delivered, lines skipped because the sink fell too far behind, failed
    /// deliveries (each retried), and lines stored but not delivered yet.
    pub sent: u64,
    pub dropped: u64,
    pub failures: u64,
    pub lag: u64,
}

/// `POST /v1/orgs/{slug}/ssh/certificates`: a user certificate for a public key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SshCertificateRequest {
    /// The key to certify, in `authorized_keys` format (`ssh-ed25519 AAAA…`).
    pub public_key: String,
    /// How long it is valid, in hours (default 24, at most 720; never beyond the token's
    /// own expiry).
    #[serde(default)]
    pub hours: Option<u32>,
    /// Limit the certificate to one app (an app-scoped token's always is).
    #[serde(default)]
    pub app: Option<String>,
}

/// A signed user certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SshCertificate {
    /// OpenSSH's one-line format (`ssh-ed25519-cert-v01@openssh.com AAAA…`).
    pub certificate: String,
    /// The organization's CA (for `TrustedUserCAKeys` or `@cert-authority` lines).
    pub ca_public_key: String,
    /// Who it is for, shown in machines' audit events.
    pub key_id: String,
    /// `org:<slug>` (every app) or `app:<slug>/<app>`.
    pub principals: Vec<String>,
    pub valid_after: String,
    pub valid_before: String,
}
