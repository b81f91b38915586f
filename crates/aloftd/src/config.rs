//! `aloftd`'s configuration file (TOML), with documented defaults. Every role reads the
//! same file; command-line flags override it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default API address: loopback, port 4280 (Fly's Machines API port).
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:4280";
/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/aloft";
/// The default region of this host.
pub const DEFAULT_REGION: &str = "local";

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// State, host identity, machines' files and volumes live here.
    pub data_dir: PathBuf,
    /// This host's region (a lowercase name such as `local`, `ams`, `eu1`).
    pub region: String,
    pub api: ApiConfig,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub agent: AgentSettings,
    pub network: NetworkConfig,
    pub proxy: ProxySettings,
    pub logs: LogsSettings,
    pub quotas: crate::quota_config::QuotaSettings,
    pub build: crate::build_config::BuildSettings,
    pub limits: LimitsSettings,
    pub deploys: DeploySettings,
    pub hosts: HostSettings,
    pub acme: crate::acme_config::AcmeConfig,
}

/// `[hosts]`: when a host that stopped answering counts as down.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSettings {
    /// Seconds without a heartbeat (agents send one every 2 s) before a host is declared
    /// down and its machines without volumes move to other hosts: 5 to 3600.
    pub down_after_seconds: u64,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            down_after_seconds: 10,
        }
    }
}

/// `[deploys]`: what a deploy does when it does not say.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploySettings {
    /// How long each machine a deploy starts must run without exiting (smoke checks), when
    /// the deploy does not say: 1 to 300 seconds.
    pub smoke_check_seconds: u64,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            smoke_check_seconds: 10,
        }
    }
}

/// `[limits]`: how much one app or organization may run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSettings {
    /// The most live (not destroyed) machines one app may have.
    pub machines_per_app: u32,
    /// The most live machines one organization may have, all its apps together.
    pub machines_per_org: u32,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        LimitsSettings {
            machines_per_app: 100,
            machines_per_org: 1000,
        }
    }
}

impl LimitsSettings {
    /// The limits as the store checks them.
    pub fn machine_caps(&self) -> aloft_store::MachineCaps {
        aloft_store::MachineCaps {
            per_app: i64::from(self.machines_per_app),
            per_org: i64::from(self.machines_per_org),
        }
    }
}

/// `[logs]`: how long the machines' log lines are kept (in `<data_dir>/logs`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsSettings {
    /// Lines older than this many days are dropped.
    pub max_age_days: u64,
    /// The store's size limit in GiB: the oldest lines go first.
    pub max_size_gb: u64,
    /// The size of one segment file, in MiB.
    pub segment_mb: u64,
    /// Per-organization retention in days, by slug (`{ acme = 90, trial = 7 }`): each
    /// organization sees its own window; lines are kept as long as the longest one.
    pub org_max_age_days: std::collections::BTreeMap<String, u64>,
    /// Networks log sinks may reach besides global addresses (`["10.0.0.0/8"]` for a
    /// collector on the LAN). Loopback, link-local (cloud metadata), private and the
    /// machines' own network are refused unless listed.
    pub sink_allowed_networks: Vec<String>,
}

impl LogsSettings {
    /// `sink_allowed_networks`, each checked.
    pub fn sink_reach(&self) -> Result<aloft_logs::SinkReach, aloft_logs::BadNetwork> {
        let networks = self
            .sink_allowed_networks
            .iter()
            .map(|n| n.parse())
            .collect::<Result<Vec<aloft_logs::Network>, _>>()?;
        Ok(aloft_logs::SinkReach::allowing(networks))
    }
}

impl Default for LogsSettings {
    fn default() -> Self {
        LogsSettings {
            max_age_days: 30,
            max_size_gb: 10,
            segment_mb: 64,
            org_max_age_days: std::collections::BTreeMap::new(),
            sink_allowed_networks: Vec::new(),
        }
    }
}

/// `[proxy]`: the edge proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// The shared plain-HTTP listener (every app's public port 80).
    pub http_listen: SocketAddr,
    /// The shared HTTPS listener (every app's public port 443), certificates by SNI.
    pub https_listen: SocketAddr,
    /// Apps answer at `<app>.<apps_domain>`; `aloft.localhost` resolves to loopback
    /// without any DNS setup.
    pub apps_domain: String,
    /// The port users reach the HTTPS listener at, when a port forward puts it elsewhere
    /// than `https_listen`'s port; apps' URLs and `force_https` redirects carry it.
    pub public_https_port: Option<u16>,
    /// Seconds a request waits for a machine under its hard limit before a 503.
    pub queue_timeout_seconds: u64,
    /// Seconds a request waits for a machine started for it (autostart) to take traffic.
    pub autostart_timeout_seconds: u64,
    /// Seconds between looks for idle machines to stop (autostop); a machine must also
    /// have been idle this long.
    pub autostop_interval_seconds: u64,
    /// Threads serving the shared listeners (each with its own runtime and connection
    /// pool); 0: one per core.
    pub workers: usize,
    /// Distances between regions, `"ams-fra" = 9` (any unit, either order): when the
    /// edge's region cannot take a request, the closest other region does.
    pub region_distances: std::collections::BTreeMap<String, u32>,
    /// Where apps' dedicated IPv4 addresses come from (CIDR). The default is on loopback,
    /// which needs no setup on a single host.
    pub ipv4_pool: String,
    /// The addresses the internet reaches the shared listeners at (this host's public
    /// IPv4 and IPv6): apps' hostnames may point there, and `aloft certs` says so.
    pub public_addresses: Vec<std::net::IpAddr>,
}

/// A `region_distances` key that is not two region codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not two region codes joined by '-' (such as \"ams-fra\")")]
pub struct RegionPairError(pub String);

impl ProxySettings {
    /// `region_distances` as (region, region, distance), each key checked.
    pub fn region_distances(&self) -> Result<Vec<(String, String, u32)>, RegionPairError> {
        self.region_distances
            .iter()
            .map(|(pair, distance)| {
                let (a, b) = pair
                    .split_once('-')
                    .filter(|(a, b)| {
                        a.parse::<aloft_types::RegionCode>().is_ok()
                            && b.parse::<aloft_types::RegionCode>().is_ok()
                    })
                    .ok_or_else(|| RegionPairError(pair.clone()))?;
                Ok((a.to_owned(), b.to_owned(), *distance))
            })
            .collect()
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            https_listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            apps_domain: "aloft.localhost".to_owned(),
            public_https_port: None,
            queue_timeout_seconds: 10,
            autostart_timeout_seconds: 60,
            autostop_interval_seconds: 120,
            ipv4_pool: aloft_net::DEFAULT_IPV4_POOL.to_owned(),
            workers: 0,
            region_distances: std::collections::BTreeMap::new(),
            public_addresses: Vec::new(),
        }
    }
}

/// The default address of the operators' DNS listener.
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:8053";

/// `[network]`: the private network (6PN) and its DNS server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// A network namespace file (such as `/run/netns/aloft`) holding the host's side of
    /// the private network; default: aloftd's own namespace.
    pub namespace: Option<PathBuf>,
    /// MTU of the bridges and machines' interfaces.
    pub mtu: u32,
    /// The DNS server's port on `fdaa::3`, where machines ask.
    pub dns_port: u16,
    /// Where operators on this host can ask the DNS server (every network's names).
    pub dns_listen: SocketAddr,
    /// Resolvers for names outside `.internal`; default: the name servers of
    /// `/etc/resolv.conf`.
    pub dns_upstream: Option<Vec<SocketAddr>>,
    /// Machines reach the internet: an IPv4 address each from `machine_ipv4`, and both
    /// families masqueraded behind the host's addresses. `false`: 6PN only.
    pub egress: bool,
    /// The block machines' IPv4 addresses come from (`a.b.c.d/N`, N from 8 to 24), one
    /// per machine by its number on the host; it must not be a network the host uses.
    pub machine_ipv4: String,
    /// Destinations machines never reach (the host's LAN, link-local and metadata
    /// addresses...), IPv4 and IPv6 networks in CIDR form.
    pub egress_denied_networks: Vec<String>,
}

impl NetworkConfig {
    /// The agent's egress settings, or `None` when machines have none.
    pub fn egress(&self) -> Result<Option<aloft_net::Egress>, aloft_net::egress::EgressError> {
        if !self.egress {
            return Ok(None);
        }
        self.fence().map(Some)
    }

    /// What machines (and builds) may not reach, whether or not machines have egress.
    pub fn fence(&self) -> Result<aloft_net::Egress, aloft_net::egress::EgressError> {
        let mut egress = aloft_net::Egress::new(self.machine_ipv4.parse()?);
        egress.denied = self
            .egress_denied_networks
            .iter()
            .map(|network| network.parse())
            .collect::<Result<_, _>>()?;
        Ok(egress)
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            namespace: None,
            mtu: 1420,
            dns_port: 53,
            dns_listen: DEFAULT_DNS_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8053))),
            dns_upstream: None,
            egress: true,
            machine_ipv4: aloft_net::egress::DEFAULT_MACHINE_IPV4.to_owned(),
            egress_denied_networks: aloft_net::egress::DEFAULT_DENIED
                .iter()
                .map(|network| (*network).to_owned())
                .collect(),
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the Machines API listens.
    pub listen: SocketAddr,
    /// Seconds to finish requests in flight after SIGTERM.
    pub shutdown_grace_seconds: u64,
    /// Seconds between steps of the apps' short history (the dashboard's graphs: the last
    /// 360 steps, and a day in minutes), 1 to 60.
    pub history_step_seconds: u64,
    /// The operator's Grafana (its base URL, `https://grafana.example.com`), with
    /// `deploy/grafana/aloft-app.json` imported: the dashboard's metrics pages link to it.
    pub grafana_url: Option<String>,
    /// HTTPS: `"auto"` (plain HTTP on a loopback `listen` only, HTTPS anywhere else),
    /// `"on"`, or `"off"` (plain HTTP anywhere: only behind a proxy that terminates TLS).
    pub tls: ApiTlsMode,
    /// A certificate chain (PEM) to serve instead of one from the platform's CA.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Names and addresses clients reach the API at, for the certificate from the
    /// platform's CA (which always covers the listening address, loopback and the host's
    /// name); the first is the host of the URL printed at the first start.
    pub tls_names: Vec<String>,
}

/// `[api] tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiTlsMode {
    /// HTTPS unless the API listens on a loopback address.
    #[default]
    Auto,
    /// HTTPS always.
    On,
    /// Plain HTTP on any address (only behind a proxy that terminates TLS).
    Off,
}

impl ApiConfig {
    /// Whether the API serves HTTPS.
    pub fn serves_tls(&self) -> bool {
        match self.tls {
            ApiTlsMode::On => true,
            ApiTlsMode::Off => false,
            ApiTlsMode::Auto => !self.listen.ip().is_loopback(),
        }
    }

    /// Checks the TLS settings: the key that is wrong and why.
    pub(crate) fn check_tls(&self) -> Result<(), (&'static str, String)> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err((
                    "api.tls_key",
                    "api.tls_cert is set: give its private key too".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "api.tls_cert",
                    "api.tls_key is set: give its certificate too".to_owned(),
                ));
            }
            _ => {}
        }
        if self.tls == ApiTlsMode::Off && self.tls_cert.is_some() {
            return Err((
                "api.tls",
                "\"off\" with api.tls_cert: a certificate is only used with \"auto\" or \"on\""
                    .to_owned(),
            ));
        }
        if let Some(name) = self.tls_names.iter().find(|name| !valid_name(name)) {
            return Err((
                "api.tls_names",
                format!("{name:?} is neither a DNS name nor an IP address"),
            ));
        }
        Ok(())
    }
}

/// A DNS name (letters, digits, `-`, dots; a leading `*.` allowed) or an IP address.
pub(crate) fn valid_name(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// `[database]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://...`; default: `sqlite://<data_dir>/state.db`.
    pub url: Option<String>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `aloft_agent=debug,info`.
    pub filter: String,
    pub format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// Seconds between full comparisons of desired and running machines.
    pub reconcile_interval_seconds: u64,
    /// Where the SSH server listens on the host's private-network side (in the network's
    /// namespace); `""` turns it off (SSH then works only through the API's tunnel).
    #[serde(deserialize_with = "optional_address")]
    pub ssh_listen: Option<SocketAddr>,
    /// The `aloftd` binary the agent runs as `aloftd sftp-server` for SFTP sessions
    /// (default: the running one).
    pub helper: Option<PathBuf>,
    /// Seconds an SSH connection may take to log in before it is closed (OpenSSH's
    /// `LoginGraceTime`).
    pub ssh_login_grace_seconds: u64,
    /// SSH connections not logged in yet allowed from one source address on the private
    /// network; more are closed at once.
    pub ssh_max_startups_per_source: usize,
    /// SSH connections not logged in yet allowed from everywhere on the private network.
    pub ssh_max_startups: usize,
    /// How volumes are kept: `ext4` (a loop-mounted filesystem of the volume's size, so a
    /// full volume stops at its size) or `directory` (plain directories, no limit).
    pub volumes: VolumeSetting,
}

/// `[agent] volumes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeSetting {
    Ext4,
    Directory,
}

/// The address the SSH server listens on in the private network by default.
pub const DEFAULT_SSH_LISTEN: &str = "[fdaa::3]:22";

fn optional_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("{text:?} is not an address like [fdaa::3]:22"))
    })
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            region: DEFAULT_REGION.to_owned(),
            api: ApiConfig::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            agent: AgentSettings::default(),
            network: NetworkConfig::default(),
            proxy: ProxySettings::default(),
            logs: LogsSettings::default(),
            quotas: crate::quota_config::QuotaSettings::default(),
            build: crate::build_config::BuildSettings::default(),
            limits: LimitsSettings::default(),
            deploys: DeploySettings::default(),
            hosts: HostSettings::default(),
            acme: crate::acme_config::AcmeConfig::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: DEFAULT_API_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 4280))),
            shutdown_grace_seconds: 30,
            history_step_seconds: 10,
            grafana_url: None,
            tls: ApiTlsMode::Auto,
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".to_owned(),
            format: LogFormat::Plain,
        }
    }
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            reconcile_interval_seconds: 5,
            ssh_listen: DEFAULT_SSH_LISTEN.parse().ok(),
            ssh_login_grace_seconds: 30,
            ssh_max_startups_per_source: 10,
            ssh_max_startups: 100,
            helper: None,
            volumes: VolumeSetting::Ext4,
        }
    }
}

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// The build memory of [`Config::loopback`] platforms (and of every other test server).
pub const LOOPBACK_BUILD_MEMORY_MB: u64 = 512;

impl Config {
    /// Defaults with the data in `data_dir`, every listener on loopback port 0 and no
    /// upstream resolvers: a platform that runs beside others on one machine and reaches
    /// nothing outside it (tests and benchmarks).
    pub fn loopback(data_dir: &Path) -> Config {
        let mut config = Config {
            data_dir: data_dir.to_owned(),
            ..Config::default()
        };
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        config.api.listen = any_port;
        config.proxy.http_listen = any_port;
        config.proxy.https_listen = any_port;
        config.network.dns_listen = any_port;
        config.network.dns_upstream = Some(Vec::new());
        // Tests' collectors listen on loopback.
        config.logs.sink_allowed_networks = vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()];
        // Every platform on a host shares the engine's one build cgroup: one value for
        // all of them, so that none undoes another's (the build sandbox test needs it).
        config.build.memory_mb = Some(LOOPBACK_BUILD_MEMORY_MB);
        // No directory on loopback: a test that wants ACME runs Pebble and names it.
        config.acme.directory = String::new();
        config
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        if let Err(error) = self.region.parse::<aloft_types::RegionCode>() {
            return Err(invalid("region", error.to_string()));
        }
        if self.logs.max_age_days == 0 {
            return Err(invalid(
                "logs.max_age_days",
                "keep logs at least 1 day".to_owned(),
            ));
        }
        if let Some((slug, _)) = self.logs.org_max_age_days.iter().find(|(_, d)| **d == 0) {
            return Err(invalid(
                "logs.org_max_age_days",
                format!("{slug}: keep logs at least 1 day"),
            ));
        }
        if self.logs.max_size_gb == 0 {
            return Err(invalid("logs.max_size_gb", "at least 1 GiB".to_owned()));
        }
        if !(1..=1024).contains(&self.logs.segment_mb) {
            return Err(invalid(
                "logs.segment_mb",
                "a segment is 1 to 1024 MiB".to_owned(),
            ));
        }
        if let Err((key, message)) = self.build.check() {
            return Err(invalid(key, message));
        }
        if let Err((key, message)) = self.acme.check() {
            return Err(invalid(key, message));
        }
        if let Err((key, message)) = self.quotas.check() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: "quotas",
                message: format!("{key}: {message}"),
            });
        }
        if self.limits.machines_per_app == 0 {
            return Err(invalid(
                "limits.machines_per_app",
                "must be at least 1".to_owned(),
            ));
        }
        if self.limits.machines_per_org < self.limits.machines_per_app {
            return Err(invalid(
                "limits.machines_per_org",
                format!(
                    "{} is below limits.machines_per_app ({})",
                    self.limits.machines_per_org, self.limits.machines_per_app
                ),
            ));
        }
        if !(1..=300).contains(&self.deploys.smoke_check_seconds) {
            return Err(invalid(
                "deploys.smoke_check_seconds",
                format!(
                    "{} is outside 1 to 300 seconds (a deploy turns smoke checks off with \
                     smoke_checks: false)",
                    self.deploys.smoke_check_seconds
                ),
            ));
        }
        if !(5..=3600).contains(&self.hosts.down_after_seconds) {
            return Err(invalid(
                "hosts.down_after_seconds",
                format!(
                    "{} is outside 5 to 3600 seconds (agents send a heartbeat every 2 s)",
                    self.hosts.down_after_seconds
                ),
            ));
        }
        if !(1..=60).contains(&self.api.history_step_seconds) {
            return Err(invalid(
                "api.history_step_seconds",
                format!(
                    "{} is outside 1 to 60 seconds",
                    self.api.history_step_seconds
                ),
            ));
        }
        if let Some(url) = &self.api.grafana_url {
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) {
                return Err(invalid(
                    "api.grafana_url",
                    format!("{url:?} is not an http:// or https:// URL with a host"),
                ));
            }
        }
        if let Err((key, message)) = self.api.check_tls() {
            return Err(invalid(key, message));
        }
        if self.agent.reconcile_interval_seconds == 0 {
            return Err(invalid(
                "agent.reconcile_interval_seconds",
                "must be at least 1".to_owned(),
            ));
        }
        for (key, value) in [
            (
                "agent.ssh_login_grace_seconds",
                usize::try_from(self.agent.ssh_login_grace_seconds).unwrap_or(usize::MAX),
            ),
            (
                "agent.ssh_max_startups_per_source",
                self.agent.ssh_max_startups_per_source,
            ),
            ("agent.ssh_max_startups", self.agent.ssh_max_startups),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".to_owned()));
            }
        }
        if let Err(error) = self.logs.sink_reach() {
            return Err(invalid("logs.sink_allowed_networks", error.to_string()));
        }
        if let Err(error) = self.proxy.region_distances() {
            return Err(invalid("proxy.region_distances", error.to_string()));
        }
        if let Err(error) = self.network.machine_ipv4.parse::<aloft_net::Ipv4Block>() {
            return Err(invalid("network.machine_ipv4", error.to_string()));
        }
        if let Some(error) = self
            .network
            .egress_denied_networks
            .iter()
            .find_map(|network| network.parse::<aloft_net::egress::Cidr>().err())
        {
            return Err(invalid("network.egress_denied_networks", error.to_string()));
        }
        if let Err(error) = self.proxy.ipv4_pool.parse::<aloft_net::Ipv4Pool>() {
            return Err(invalid("proxy.ipv4_pool", error.to_string()));
        }
        if self.proxy.autostop_interval_seconds == 0 {
            return Err(invalid(
                "proxy.autostop_interval_seconds",
                "must be at least 1".to_owned(),
            ));
        }
        if self.proxy.apps_domain.is_empty()
            || self.proxy.apps_domain.starts_with('.')
            || !self
                .proxy
                .apps_domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(invalid(
                "proxy.apps_domain",
                format!("{:?} is not a domain name", self.proxy.apps_domain),
            ));
        }
        if !(1280..=65535).contains(&self.network.mtu) {
            return Err(invalid(
                "network.mtu",
                format!("{}: IPv6 needs 1280 to 65535", self.network.mtu),
            ));
        }
        if let Some(path) = &self.network.namespace
            && !path.exists()
        {
            return Err(invalid(
                "network.namespace",
                format!(
                    "{} does not exist (create it with `ip netns add`)",
                    path.display()
                ),
            ));
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres:")
                || url.starts_with("postgresql:"))
        {
            return Err(invalid(
                "database.url",
                format!("{url:?}: use sqlite://PATH or postgres://..."),
            ));
        }
        Ok(())
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("state.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_matches_the_defaults() {
        let example = include_str!("../aloftd.example.toml");
        let config: Config = toml::from_str(example).unwrap();
        config.validate(Path::new("aloftd.example.toml")).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn a_grafana_url_with_a_host_is_taken() {
        let config: Config =
            toml::from_str("[api]\ngrafana_url = \"https://grafana.example.com/\"\n").unwrap();
        config.validate(Path::new("c.toml")).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let error = toml::from_str::<Config>("[api]\nlisten_on = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("listen_on"), "{error}");
        let config: Config = toml::from_str("region = \"EU\"\n").unwrap();
        let error = config
            .validate(Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("c.toml: region:"), "{error}");
        for (text, key) in [
            (
                "[proxy]\nregion_distances = { amsfra = 1 }\n",
                "proxy.region_distances",
            ),
            ("[proxy]\nipv4_pool = \"10.0.0.0\"\n", "proxy.ipv4_pool"),
            (
                "[proxy]\nautostop_interval_seconds = 0\n",
                "proxy.autostop_interval_seconds",
            ),
            (
                "[deploys]\nsmoke_check_seconds = 0\n",
                "deploys.smoke_check_seconds",
            ),
            (
                "[deploys]\nsmoke_check_seconds = 301\n",
                "deploys.smoke_check_seconds",
            ),
            (
                "[hosts]\ndown_after_seconds = 4\n",
                "hosts.down_after_seconds",
            ),
            (
                "[hosts]\ndown_after_seconds = 3601\n",
                "hosts.down_after_seconds",
            ),
            ("[api]\ngrafana_url = \"grafana:3000\"\n", "api.grafana_url"),
            ("[api]\ngrafana_url = \"https://\"\n", "api.grafana_url"),
        ] {
            let config: Config = toml::from_str(text).unwrap();
            let error = config
                .validate(Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(&format!("c.toml: {key}:")), "{error}");
        }
        for seconds in [5, 3600] {
            let config: Config =
                toml::from_str(&format!("[hosts]\ndown_after_seconds = {seconds}\n")).unwrap();
            config.validate(Path::new("c.toml")).unwrap();
        }
        // The edges of the smoke-check window are taken.
        for seconds in [1, 300] {
            let config: Config =
                toml::from_str(&format!("[deploys]\nsmoke_check_seconds = {seconds}\n")).unwrap();
            config.validate(Path::new("c.toml")).unwrap();
        }
        let config: Config =
            toml::from_str("[proxy]\nregion_distances = { \"ams-fra\" = 9 }\n").unwrap();
        assert_eq!(
            config.proxy.region_distances(),
            Ok(vec![("ams".to_owned(), "fra".to_owned(), 9)])
        );
    }
}
