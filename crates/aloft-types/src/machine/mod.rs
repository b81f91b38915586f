//! The Machines API `MachineConfig` and its parts, with the JSON field names, omitted
//! empties and enum spellings of Fly's public API (`fly-go` `machine_types.go`).
//!
//! Enums are typed here (`RestartPolicy`, `Autostop`, `Handler`, ...): a value outside the
//! documented set is refused when it is read, not discovered when it is used.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::{Duration, Signal};

mod guest;

pub use guest::{
    CpuKind, DEFAULT_GPU_GUEST_PRESET, DEFAULT_GUEST_PRESET, GUEST_PRESET_NAMES, GuestLimits,
    MAX_MEMORY_MB_PER_PERFORMANCE_CPU, MAX_MEMORY_MB_PER_SHARED_CPU,
    MIN_MEMORY_MB_PER_PERFORMANCE_CPU, MIN_MEMORY_MB_PER_SHARED_CPU, MIN_PIDS, MachineGuest,
    PIDS_PER_MEMORY_MB, PersistRootfs,
};

fn is_false(value: &bool) -> bool {
    !*value
}

pub(crate) fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Metadata key naming the process group a machine belongs to.
pub const METADATA_PROCESS_GROUP: &str = "fly_process_group";
/// Metadata key naming the platform version; always `v2` for machines apps.
/// The release a deployment gave the machine (Fly's metadata keys).
pub const METADATA_RELEASE_VERSION: &str = "fly_release_version";
pub const METADATA_RELEASE_ID: &str = "fly_release_id";
pub const METADATA_PLATFORM_VERSION: &str = "fly_platform_version";
/// The platform version Aloft writes into `fly_platform_version`.
pub const PLATFORM_VERSION: &str = "v2";
/// The process group of an app without `[processes]`.
pub const DEFAULT_PROCESS_GROUP: &str = "app";

/// A machine's whole configuration, as sent to `POST /v1/apps/{app}/machines`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineConfig {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub init: MachineInit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<MachineGuest>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MachineMount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<MachineService>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MachineMetrics>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, MachineCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statics: Vec<Static>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<MachineFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_destroy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<MachineRestart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standbys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_config: Option<StopConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<MachineRootfs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_machine_autostart: Option<bool>,
}

impl MachineConfig {
    /// The process group recorded in the metadata (`fly_process_group`), if any.
    pub fn process_group(&self) -> Option<&str> {
        self.metadata
            .get(METADATA_PROCESS_GROUP)
            .map(String::as_str)
    }
}

/// How the machine's main process is started.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineInit {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_size_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_args: Vec<String>,
}

/// A volume mounted into the machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineMount {
    #[serde(default, skip_serializing_if = "is_false")]
    pub encrypted: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size_gb: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub volume: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub extend_threshold_percent: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub add_size_gb: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size_gb_limit: u32,
    /// Aloft's: for the volume a mount by `name` creates, the days its snapshots are kept
    /// (fly.toml's `[mounts] snapshot_retention`; 0: the default, 5).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub snapshot_retention: u32,
    /// Aloft's: for the volume a mount by `name` creates, whether it gets a snapshot a day
    /// (fly.toml's `[mounts] scheduled_snapshots`; absent: yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_snapshots: Option<bool>,
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// What the proxy does with a connection on a public port before it reaches the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Handler {
    /// Speak HTTP to the client, add proxy headers, forward HTTP/1.1 (or h2c).
    Http,
    /// Terminate TLS with the app's certificate and forward the plaintext.
    Tls,
    /// TLS termination that understands Postgres' SSLRequest negotiation.
    PgTls,
    /// Prepend a PROXY protocol header.
    ProxyProto,
}

impl Handler {
    pub const NAMES: [&str; 4] = ["http", "tls", "pg_tls", "proxy_proto"];
}

/// When the proxy stops idle machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Autostop {
    Off,
    Stop,
    Suspend,
}

impl Autostop {
    pub const fn as_str(self) -> &'static str {
        match self {
            Autostop::Off => "off",
            Autostop::Stop => "stop",
            Autostop::Suspend => "suspend",
        }
    }
}

impl fmt::Display for Autostop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Autostop {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Boolean),
            )
            .item(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(["off", "stop", "suspend"])),
            )
            .description(Some(
                "\"off\", \"stop\" or \"suspend\"; answers use false/true for off/stop",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Autostop {}

impl Serialize for Autostop {
    /// The Machines API answers `false`/`true` for off/stop, for older clients.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Autostop::Off => serializer.serialize_bool(false),
            Autostop::Stop => serializer.serialize_bool(true),
            Autostop::Suspend => serializer.serialize_str("suspend"),
        }
    }
}

impl<'de> Deserialize<'de> for Autostop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AutostopVisitor;
        impl Visitor<'_> for AutostopVisitor {
            type Value = Autostop;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"off\", \"stop\", \"suspend\" or a boolean")
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Autostop, E> {
                Ok(if value { Autostop::Stop } else { Autostop::Off })
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Autostop, E> {
                match value {
                    "off" => Ok(Autostop::Off),
                    "stop" => Ok(Autostop::Stop),
                    "suspend" => Ok(Autostop::Suspend),
                    other => Err(E::unknown_variant(other, &["off", "stop", "suspend"])),
                }
            }
        }
        deserializer.deserialize_any(AutostopVisitor)
    }
}

/// A service: an internal port and the public ports the proxy maps to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineService {
    pub protocol: Protocol,
    pub internal_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<Autostop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_machines_running: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<MachinePort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<MachineCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Always present in Fly's JSON (`null` when unset).
    #[serde(default)]
    pub force_instance_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_instance_description: Option<String>,
}

/// One public port, or a range of them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachinePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handlers: Vec<Handler>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_https: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_options: Option<TlsOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_options: Option<HttpOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_proto_options: Option<ProxyProtoOptions>,
}

/// TLS settings of a `tls` handler.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TlsOptions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<TlsVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_self_signed: Option<bool>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TlsVersion {
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// HTTP settings of an `http` handler.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HttpOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponseOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_backend: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_read_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replay_cache: Vec<ReplayCache>,
}

/// How the proxy treats responses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HttpResponseOptions {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, ResponseHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pristine: Option<bool>,
}

/// A response header rule: `false` removes the header, a string or a list sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseHeader {
    /// `Name = false` removes the header (`true` is kept as written and removes nothing).
    Keep(bool),
    One(String),
    Many(Vec<String>),
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ResponseHeader {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Boolean))
            .item(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String))
            .item(
                ArrayBuilder::new()
                    .items(utoipa::openapi::ObjectBuilder::new().schema_type(Type::String)),
            )
            .description(Some("false removes the header; a string or a list sets it"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ResponseHeader {}

impl Serialize for ResponseHeader {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ResponseHeader::Keep(keep) => serializer.serialize_bool(*keep),
            ResponseHeader::One(value) => serializer.serialize_str(value),
            ResponseHeader::Many(values) => values.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ResponseHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeaderVisitor;
        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = ResponseHeader;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("false (to remove the header), a string, or a list of strings")
            }

            fn visit_bool<E: de::Error>(self, value: bool) -> Result<ResponseHeader, E> {
                Ok(ResponseHeader::Keep(value))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ResponseHeader, E> {
                Ok(ResponseHeader::One(value.to_owned()))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ResponseHeader, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<String>()? {
                    values.push(value);
                }
                Ok(ResponseHeader::Many(values))
            }
        }
        deserializer.deserialize_any(HeaderVisitor)
    }
}

/// What `fly-replay` responses are cached by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ReplayCacheKind {
    Cookie,
    Header,
}

/// A cache of `fly-replay` decisions, keyed by a cookie or header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplayCache {
    pub path_prefix: String,
    pub ttl_seconds: u32,
    #[serde(rename = "type")]
    pub kind: ReplayCacheKind,
    pub name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_bypass: bool,
}

/// PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtoVersion {
    #[default]
    V1,
    V2,
}

/// Settings of a `proxy_proto` handler.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProxyProtoOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ProxyProtoVersion>,
}

/// What counts toward a machine's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyKind {
    #[default]
    Connections,
    Requests,
}

/// Load limits of a service on one machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Concurrency {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ConcurrencyKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_limit: Option<u32>,
}

impl Concurrency {
    /// Fly's default limits when a service names none (fly.toml's defaults).
    pub const DEFAULT_SOFT_LIMIT: u32 = 20;
    pub const DEFAULT_HARD_LIMIT: u32 = 25;
}

/// Kind of a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Tcp,
    Http,
}

/// What a failing top-level check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Informational,
    Readiness,
}

/// Scheme of an HTTP check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CheckProtocol {
    Http,
    Https,
}

/// A health check, either one of a service's or a named top-level one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CheckType>,
    #[serde(rename = "kind", default, skip_serializing_if = "Option::is_none")]
    pub role: Option<CheckKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<CheckProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_skip_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<MachineHttpHeader>,
}

/// One header of an HTTP check, with all its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineHttpHeader {
    pub name: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// Where the platform scrapes the app's Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineMetrics {
    pub port: u16,
    pub path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub https: bool,
}

/// Files served by the platform straight from the machine's filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Static {
    pub guest_path: String,
    pub url_prefix: String,
    #[serde(default)]
    pub tigris_bucket: String,
    #[serde(default)]
    pub index_document: String,
}

/// A file written into the machine before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineFile {
    pub guest_path: String,
    /// Base64 of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_value: Option<String>,
    /// A secret whose value is the base64 of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// Restart policy, applied by the host agent when the main process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RestartPolicy {
    #[serde(rename = "no")]
    No,
    #[serde(rename = "always")]
    Always,
    #[serde(rename = "on-failure")]
    OnFailure,
}

/// When and how often a machine is restarted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineRestart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_retries: u32,
}

/// How the machine is stopped: the signal first, then SIGKILL after the timeout.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StopConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
}

/// Root filesystem persistence and size.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineRootfs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<PersistRootfs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<u32>,
}

/// DNS settings inside the machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DnsConfig {
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_registration: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn presets_match_fly() {
        let shared = MachineGuest::preset("shared-cpu-2x").unwrap();
        assert_eq!(
            (shared.cpu_kind, shared.cpus, shared.memory_mb),
            (Some(CpuKind::Shared), 2, 512)
        );
        let perf = MachineGuest::preset("performance-16x").unwrap();
        assert_eq!((perf.cpus, perf.memory_mb), (16, 32768));
        let gpu = MachineGuest::preset("a100-80gb").unwrap();
        assert_eq!((gpu.cpus, gpu.memory_mb, gpu.gpus), (8, 32768, 1));
        assert_eq!(gpu.gpu_kind.as_deref(), Some("a100-sxm4-80gb"));
        assert!(MachineGuest::preset("shared-cpu-3x").is_none());
        for name in GUEST_PRESET_NAMES {
            assert!(MachineGuest::preset(name).is_some(), "{name}");
        }
    }

    #[test]
    fn autostop_uses_fly_wire_forms() {
        assert_eq!(serde_json::to_value(Autostop::Off).unwrap(), json!(false));
        assert_eq!(serde_json::to_value(Autostop::Stop).unwrap(), json!(true));
        assert_eq!(
            serde_json::to_value(Autostop::Suspend).unwrap(),
            json!("suspend")
        );
        for (input, expected) in [
            (json!("off"), Autostop::Off),
            (json!(true), Autostop::Stop),
            (json!("suspend"), Autostop::Suspend),
        ] {
            assert_eq!(serde_json::from_value::<Autostop>(input).unwrap(), expected);
        }
        assert!(serde_json::from_value::<Autostop>(json!("sometimes")).is_err());
    }

    #[test]
    fn empty_config_serializes_like_fly_go() {
        let config = MachineConfig::default();
        assert_eq!(
            serde_json::to_value(&config).unwrap(),
            json!({ "init": {} })
        );
        let service = MachineService {
            protocol: Protocol::Tcp,
            internal_port: 8080,
            autostop: None,
            autostart: None,
            min_machines_running: None,
            ports: vec![],
            checks: vec![],
            concurrency: None,
            force_instance_key: None,
            force_instance_description: None,
        };
        assert_eq!(
            serde_json::to_value(&service).unwrap(),
            json!({ "protocol": "tcp", "internal_port": 8080, "force_instance_key": null })
        );
    }
}
