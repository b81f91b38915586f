//! The control plane: Fly's Machines API (same paths, JSON fields, status codes and
//! states) over the store, with token auth, placement, and the link to host agents.
//!
//! Invariants:
//! - Every endpoint needs a token; a token sees only its own organization, and objects of
//!   another organization answer 404, not 403.
//! - The control plane never talks to a container engine: it records desired state and
//!   tells agents a change happened; agents converge and report what they observe through
//!   [`AgentGateway`].
//! - Bad input is a 4xx naming the problem; 5xx is only for our own faults.
//!
//! Main types: [`Control`], [`AgentGateway`], [`HostLink`], [`ApiError`].

mod access;
mod acme;
mod apps;
mod auth;
mod builds;
mod catalog;
mod certs;
mod deploy;
mod dns;
mod error;
mod history;
mod hosts;
mod hostwatch;
mod ips;
mod json;
mod logs;
mod machines;
mod memory;
mod metadata;
mod org_lists;
mod orgs;
mod periodic;
mod placement;
mod platform;
mod quotas;
mod samples;
mod schedule;
mod secrets;
mod sinks;
mod snapshots;
pub mod ssh;
mod statics;
mod volume_keys;
mod volumes;
pub mod wire;

use std::path::Path;
use std::sync::Arc;

use aloft_store::{Store, StoreError, TokenKind};
use aloft_types::HostId;
use aloft_types::catalog::Catalog;
use axum::Router;
use tokio::sync::broadcast;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use acme::AcmeSettings;
pub use aloft_agent_api::{
    BoxFuture, Command, ControlPlane, HostLink, LinkError, MachineChange, SshStream, SshTrust,
};
pub use aloft_types::time::rfc3339;
pub use auth::{Principal, TOKEN_PREFIX, hash_secret, new_secret};
pub use builds::ImageBuilder;
pub use error::ApiError;
pub use hosts::AgentGateway;
pub use machines::PlatformReason;
pub use quotas::{Quota, Quotas, Usage};
pub use secrets::{SECRETS_KEY_FILE, SecretsKey};

/// The document's fixed parts; the paths come from the handlers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Aloft Machines API",
        description = "Fly.io's Machines API (same paths, JSON fields, status codes and states), plus Aloft's organizations and tokens. Every endpoint needs `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The organization `aloftd server` creates on its first start.
pub const DEFAULT_ORG: &str = "personal";
/// Where the first admin token is written (mode 0600) in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The region new machines land in when a request names none.
    pub default_region: String,
    /// Encrypts secrets at rest; kept outside the database.
    pub secrets_key: SecretsKey,
    /// Where apps' dedicated IPv4 addresses come from.
    pub ipv4_pool: aloft_net::Ipv4Pool,
    /// Where the edge serves apps, for their URLs (`None`: no edge, no URLs).
    pub edge: Option<EdgeAddress>,
    /// The most live machines an app, and an organization, may have.
    pub machine_caps: aloft_store::MachineCaps,
    /// How long each machine a deploy starts must run without exiting, when the deploy
    /// does not say (`smoke_check_seconds`).
    pub smoke_check: std::time::Duration,
    /// How long a host may go without a heartbeat before it is declared down and its
    /// machines without volumes move to other hosts.
    pub host_down_after: std::time::Duration,
    /// What each organization may use (apps, CPUs, memory, volume GB, IPs).
    pub quotas: quotas::Quotas,
    /// Where `certificates/acme` gets certificates (`None`: it answers 503).
    pub acme: Option<acme::AcmeSettings>,
}

/// Where the edge serves apps: `https://<app>.<apps_domain>[:https_port]/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeAddress {
    pub apps_domain: String,
    /// The port users reach the HTTPS listener at (443 is left out of URLs).
    pub https_port: u16,
    /// The addresses the internet reaches the shared listeners at: every app answers
    /// there by Host and SNI, so hostnames may point at them (`[proxy] public_addresses`).
    pub public_addresses: Vec<std::net::IpAddr>,
}

impl EdgeAddress {
    /// The app's hostname under the apps domain.
    pub fn hostname(&self, app: &str) -> String {
        format!("{app}.{}", self.apps_domain)
    }

    /// The app's URL.
    pub fn url(&self, app: &str) -> String {
        aloft_types::https_url(&self.hostname(app), self.https_port)
    }
}

/// Everything the control plane works with besides its store and settings, given when it
/// is built ([`Control::new`]); what is `None` is off (its endpoints answer 503 or
/// refuse, saying so).
#[derive(Default)]
pub struct ControlParts {
    /// Answers `GET /v1/apps/{app}/dns` (`aloft dig`).
    pub dns: Option<Arc<dyn aloft_agent_api::Dig>>,
    /// The edge's local CA certificate (PEM) that `GET /v1/certs/ca` returns.
    pub local_ca: Option<String>,
    /// Builds images (`POST /v1/apps/{app}/builds`) and names the images releases run.
    pub builder: Option<Arc<dyn ImageBuilder>>,
    /// The log store the API queries and ships from, and the host it belongs to (its id
    /// prefixes line ids). One host's for now: queries across hosts come with the
    /// many-hosts roles.
    pub logs: Option<(HostId, aloft_logs::LogStore)>,
    /// How far back log queries go.
    pub log_retention: LogRetention,
    /// Where log sinks may connect besides global addresses.
    pub sink_reach: aloft_logs::SinkReach,
}

impl std::fmt::Debug for ControlParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlParts")
            .field("dns", &self.dns.is_some())
            .field("local_ca", &self.local_ca.is_some())
            .field("builder", &self.builder.is_some())
            .field("logs", &self.logs.as_ref().map(|(host, _)| host))
            .field("log_retention", &self.log_retention)
            .field("sink_reach", &self.sink_reach)
            .finish()
    }
}

/// How far back log queries go: `default` (none: as far as the store keeps) for every
/// organization but those in `by_org` (by slug).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRetention {
    pub default: Option<std::time::Duration>,
    pub by_org: std::collections::HashMap<String, std::time::Duration>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) config: ControlConfig,
    pub(crate) secrets_key: SecretsKey,
    pub(crate) changes: broadcast::Sender<aloft_agent_api::MachineChange>,
    pub(crate) observed: broadcast::Sender<aloft_types::MachineId>,
    pub(crate) links: hosts::Links,
    /// Poked when something the catalog shows changed outside machine changes (apps).
    pub(crate) catalog_dirty: tokio::sync::Notify,
    pub(crate) catalog: std::sync::OnceLock<tokio::sync::watch::Receiver<Arc<Catalog>>>,
    /// The DNS resolver of this process, for `aloft dig`.
    pub(crate) dns: Option<Arc<dyn aloft_agent_api::Dig>>,
    /// The edge's local CA certificate (PEM), for `aloft certs ca`.
    pub(crate) local_ca: Option<String>,
    /// Builds images for `POST /v1/apps/{app}/builds` and resolves images to their ids.
    pub(crate) builder: Option<Arc<dyn builds::ImageBuilder>>,
    /// The host's log store (queries, platform lines), shared with the agent gateway.
    pub(crate) logs: Option<aloft_logs::LogStore>,
    /// The host whose log store that is (it prefixes line ids).
    pub(crate) log_host: String,
    /// Counters of the log shippers running here, by sink.
    pub(crate) shippers: sinks::Shippers,
    /// Every host's latest resource samples and apps' metrics pages.
    pub(crate) samples: Arc<samples::Samples>,
    /// Every app's short history of numbers (the dashboard's graphs).
    pub(crate) history: Arc<history::History>,
    /// How far back each organization's logs go.
    pub(crate) log_retention: LogRetention,
    /// Where log sinks may connect besides global addresses.
    pub(crate) sink_reach: aloft_logs::SinkReach,
    /// The control plane's own background work (deployments, the catalog publisher, log
    /// shipping): stopped and awaited by [`Control::shutdown`].
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// Cancelled by [`Control::shutdown`]: background work stops at its next await point,
    /// where a killed process would have stopped (everything resumes from the store).
    pub(crate) stopping: tokio_util::sync::CancellationToken,
    /// Cancelled when the server starts draining: streams (log followers) end with a
    /// last line saying so, rather than holding the shutdown up.
    pub(crate) draining: tokio_util::sync::CancellationToken,
    /// Each organization's lock over a quota check and the change it allows.
    pub(crate) quota_locks: quotas::Locks,
    /// The ACME issuer (`None`: no directory configured, or why it cannot run).
    pub(crate) acme: Option<Arc<acme::Issuer>>,
    pub(crate) acme_unavailable: Option<String>,
}

/// The control plane. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The control plane over `store`, with every part it works with (`parts`); only
    /// hosts join later ([`Control::register_host`]).
    pub fn new(store: Store, config: ControlConfig, parts: ControlParts) -> Control {
        let (log_host, logs) = match parts.logs {
            Some((host, store)) => (host.to_string(), Some(store)),
            None => ("local".to_owned(), None),
        };
        let (changes, _) = broadcast::channel(1024);
        let (observed, _) = broadcast::channel(1024);
        let secrets_key = config.secrets_key.clone();
        let (acme, acme_unavailable) = match config.acme.clone().map(acme::Issuer::new) {
            None => (
                None,
                Some("no ACME directory is configured ([acme])".to_owned()),
            ),
            Some(Ok(issuer)) => (Some(Arc::new(issuer)), None),
            Some(Err(error)) => {
                tracing::error!(%error, "ACME cannot run: hostnames' DNS cannot be looked up");
                (None, Some(format!("ACME cannot run: {error}")))
            }
        };
        Control {
            inner: Arc::new(Inner {
                store,
                config,
                secrets_key,
                changes,
                observed,
                links: hosts::Links::default(),
                catalog_dirty: tokio::sync::Notify::new(),
                catalog: std::sync::OnceLock::new(),
                dns: parts.dns,
                local_ca: parts.local_ca,
                builder: parts.builder,
                logs,
                log_host,
                shippers: std::sync::Mutex::new(std::collections::HashMap::new()),
                samples: Arc::default(),
                history: Arc::default(),
                log_retention: parts.log_retention,
                sink_reach: parts.sink_reach,
                tasks: tokio_util::task::TaskTracker::new(),
                stopping: tokio_util::sync::CancellationToken::new(),
                draining: tokio_util::sync::CancellationToken::new(),
                quota_locks: quotas::Locks::default(),
                acme,
                acme_unavailable,
            }),
        }
    }

    /// The server stops taking work: open streams end now, each with a last line that
    /// says why, so that connections close within the shutdown grace.
    pub fn begin_drain(&self) {
        self.inner.draining.cancel();
    }

    /// Stops the control plane's background work (running deployments stop where they
    /// are, as in a crash; [`Control::resume_deployments`] carries them on at the next
    /// start) and waits until it has stopped.
    pub async fn shutdown(&self) {
        self.inner.stopping.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn api() -> OpenApiRouter<Arc<Inner>> {
        OpenApiRouter::with_openapi(ApiDoc::openapi())
            .merge(apps::routes())
            .merge(history::routes())
            .merge(machines::routes())
            .merge(metadata::routes())
            .merge(memory::routes())
            .merge(orgs::routes())
            .merge(org_lists::routes())
            .merge(platform::routes())
            .merge(secrets::routes())
            .merge(volumes::routes())
            .merge(dns::routes())
            .merge(certs::routes())
            .merge(ips::routes())
            .merge(deploy::routes())
            .merge(builds::routes())
            .merge(logs::routes())
            .merge(sinks::routes())
            .merge(ssh::routes())
    }

    /// Resumes the deployments a previous run left running (or rolling back); returns how
    /// many. Call once at start, inside a Tokio runtime, after the agents are attached.
    pub async fn resume_deployments(&self) -> Result<usize, ApiError> {
        deploy::resume(&self.inner).await
    }

    /// Starts watching the hosts: one that misses its heartbeats for `host_down_after` is
    /// declared down and its machines without volumes move elsewhere; a draining one has
    /// its machines moved one by one. Call once at start, inside a Tokio runtime.
    pub fn watch_hosts(&self) {
        self.inner.tasks.spawn(hostwatch::watch(self.inner.clone()));
    }

    /// Starts the scheduler of scheduled machines (`schedule`): a resting one starts
    /// again once its period has passed since its last start. Call once at start, inside
    /// a Tokio runtime.
    pub fn run_schedules(&self) {
        self.inner.tasks.spawn(schedule::watch(self.inner.clone()));
    }

    /// Starts the keeper of volume snapshots: each volume gets one a day, each snapshot
    /// is deleted after its volume's `snapshot_retention` days, and what a previous run
    /// left half done is settled first. Call once at start, inside a Tokio runtime.
    pub fn keep_snapshots(&self) {
        self.inner
            .tasks
            .spawn(snapshots::keeper(self.inner.clone()));
    }

    /// Starts the ACME issuer (when `[acme]` is configured): hostnames added with
    /// `certificates/acme` get certificates once their DNS points at their app, renewed
    /// before they expire. Call once at start, inside a Tokio runtime.
    pub fn issue_certificates(&self) {
        self.inner.tasks.spawn(acme::run(self.inner.clone()));
    }

    /// Refuses a caller that is not the platform operator (the platform-wide `/metrics`,
    /// served beside this router): a missing or unknown token is a 401, another token a
    /// 403, with the API's error body.
    pub async fn require_operator(
        &self,
        headers: &axum::http::HeaderMap,
        what: &str,
    ) -> Result<(), ApiError> {
        Principal::from_headers(&self.inner, headers)
            .await?
            .require_operator(what)
    }

    /// The API's routes.
    pub fn router(&self) -> Router {
        // The routes are the same for every instance; building them (with their OpenAPI
        // document) costs milliseconds, which a test suite that starts hundreds of control
        // planes pays once.
        static ROUTES: std::sync::OnceLock<Router<Arc<Inner>>> = std::sync::OnceLock::new();
        ROUTES
            .get_or_init(|| {
                let (router, _) = Self::api().split_for_parts();
                router
                    .fallback(|| async { ApiError::not_found("route") })
                    .layer(axum::middleware::map_response(json::json_rejections))
            })
            .clone()
            .with_state(self.inner.clone())
    }

    /// The OpenAPI document of the routes [`Control::router`] serves, generated from the
    /// handlers' own annotations (checked in as `openapi/aloft.json`).
    pub fn openapi() -> utoipa::openapi::OpenApi {
        Self::api().split_for_parts().1
    }

    /// The catalog of apps and machines, always the latest (DNS and the proxy read it).
    /// The first call starts keeping it current; it must be made inside a Tokio runtime.
    pub fn catalog(&self) -> tokio::sync::watch::Receiver<Arc<Catalog>> {
        self.inner
            .catalog
            .get_or_init(|| {
                let (sender, receiver) = tokio::sync::watch::channel(Arc::new(Catalog::default()));
                self.inner
                    .tasks
                    .spawn(catalog::publish(self.inner.clone(), sender));
                receiver
            })
            .clone()
    }

    /// The catalog as the store has it right now.
    pub async fn catalog_now(&self) -> Result<Catalog, ApiError> {
        catalog::build(&self.inner.store, &self.inner.secrets_key).await
    }

    /// What a host agent uses to learn and report.
    pub fn gateway(&self) -> AgentGateway {
        AgentGateway {
            store: self.inner.store.clone(),
            secrets_key: self.inner.secrets_key.clone(),
            changes: self.inner.changes.clone(),
            observed: self.inner.observed.clone(),
            logs: self.inner.logs.clone(),
            samples: self.inner.samples.clone(),
            history: self.inner.history.clone(),
        }
    }

    /// Ends a step of the apps' short history (the dashboard's graphs, served at
    /// `/v1/apps/{app}/metrics/history`) with the edge's counters per app as they are
    /// now; `aloftd` calls it every `[api] history_step_seconds`.
    pub fn history_step(
        &self,
        edge: &std::collections::BTreeMap<String, aloft_types::history::EdgeCounters>,
    ) {
        self.inner.history.step(aloft_store::now_ms(), edge);
    }

    /// Ships the log store's lines ([`ControlParts::logs`]) to every sink in the store
    /// until `stop` (cursors in `dir`). Call inside a Tokio runtime.
    pub fn start_shipping(
        &self,
        dir: std::path::PathBuf,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let Some(store) = self.inner.logs.clone() else {
            return;
        };
        let host = self.inner.log_host.clone();
        self.inner
            .tasks
            .spawn(sinks::manage(self.inner.clone(), store, host, dir, stop));
    }

    /// The `aloft_machine_*` series of every host's machines (for `/metrics`).
    pub fn render_machine_samples(&self, out: &mut String) {
        self.inner.samples.render(out);
    }

    /// Each log sink's counters: (id, kind, sent, dropped, failures, lag).
    pub async fn shipping_stats(&self) -> Vec<(String, String, u64, u64, u64, u64)> {
        let Ok(sinks) = self.inner.store.all_sinks().await else {
            return Vec::new();
        };
        sinks
            .into_iter()
            .map(|sink| {
                let (sent, dropped, failures, lag) = sinks::counters(&self.inner, &sink.id);
                (sink.id, sink.kind.to_string(), sent, dropped, failures, lag)
            })
            .collect()
    }

    /// Registers how to reach `host`'s agent (a host that joins, or rejoins after a
    /// restart of its agent).
    pub fn register_host(&self, host: HostId, link: Arc<dyn HostLink>) {
        if let Ok(mut hosts) = self.inner.links.hosts.write() {
            hosts.insert(host, link);
        }
    }

    /// On a fresh store: creates the `personal` organization and the platform operator's
    /// token (`admin`, of kind `operator`), writes the token to `<data_dir>/admin-token`
    /// (mode 0600) and returns it, once. Later calls return `None`.
    ///
    /// Crash-safe: the secret is written to its file first (the intent), and the
    /// organization and the token are stored in one transaction; a first start killed in
    /// between finds the file at its next start and stores that same secret, so the token
    /// in the file is always the one that works.
    pub async fn bootstrap(&self, data_dir: &Path) -> Result<Option<String>, BootstrapError> {
        match self.inner.store.org_by_slug(DEFAULT_ORG).await {
            Ok(_) => return Ok(None),
            Err(StoreError::NotFound { .. }) => {}
            Err(error) => return Err(BootstrapError::Store(error)),
        }
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        let secret = match std::fs::read_to_string(&path) {
            // A first start that was cut short wrote it and stored nothing.
            Ok(text) if auth::is_secret(text.trim()) => text.trim().to_owned(),
            _ => {
                let secret = new_secret();
                write_private(&path, &format!("{secret}\n")).map_err(|source| {
                    BootstrapError::Write {
                        path: path.clone(),
                        source,
                    }
                })?;
                secret
            }
        };
        aloft_crash::reach(aloft_crash::Point::BootstrapTokenWritten);
        match self
            .inner
            .store
            .create_org_with_token(
                DEFAULT_ORG,
                "Personal",
                TokenKind::Operator,
                "admin",
                &hash_secret(&secret),
            )
            .await
        {
            Ok(_) => {}
            // Another start of the same store got there first.
            Err(StoreError::Conflict { .. }) => return Ok(None),
            Err(error) => return Err(BootstrapError::Store(error)),
        }
        aloft_crash::reach(aloft_crash::Point::BootstrapStored);
        Ok(Some(secret))
    }
}

/// Why the first start's setup failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("creating the first organization and token")]
    Store(#[source] StoreError),
    #[error("writing {}", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes a file only its owner can read, whole or not at all.
pub(crate) fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    aloft_crash::write_file(path, content.as_bytes(), 0o600)
}
