//! The control plane alone, serving its API on a loopback port.

use std::path::Path;

use aloft_client::Client;
use aloft_control::{Control, ControlConfig, ControlParts, SecretsKey};
use aloft_store::{Host, Store};
use aloft_testkit::postgres::TestDatabase;
use aloft_types::HostId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where the store lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A file in the platform's temp dir.
    Sqlite,
    /// A database of its own on the local PostgreSQL server, dropped at the end.
    Postgres,
}

/// How to start a [`ControlApi`].
pub struct ControlOptions {
    pub backend: Backend,
    /// The control plane's parts (log store, DNS, builder...); none by default.
    pub parts: ControlParts,
    /// A host recorded in the store (no agent runs it), so that machines and volumes can
    /// be placed.
    pub host: Option<HostId>,
    /// Whether that host can encrypt volumes at rest (as ext4 on a Debian kernel can);
    /// yes by default.
    pub encrypts_volumes: bool,
    /// The region of that host and the platform's default.
    pub region: String,
    /// Where the edge serves apps (their URLs, the reserved apps domain); none by default.
    pub edge: Option<aloft_control::EdgeAddress>,
    /// Organizations' quotas; none (unlimited) by default.
    pub quotas: Option<aloft_control::Quotas>,
    /// Where certificates come from (`certificates/acme`); none (503) by default.
    pub acme: Option<aloft_control::AcmeSettings>,
}

impl ControlOptions {
    /// SQLite, no parts, one idle host in region `local`.
    pub fn new(backend: Backend) -> ControlOptions {
        ControlOptions {
            backend,
            parts: ControlParts::default(),
            host: Some(HostId::generate([1; 8])),
            encrypts_volumes: true,
            region: "local".to_owned(),
            edge: None,
            quotas: None,
            acme: None,
        }
    }
}

/// The settings every test platform's control plane runs with.
pub(crate) fn config(region: &str, dir: &Path) -> ControlConfig {
    ControlConfig {
        default_region: region.to_owned(),
        secrets_key: SecretsKey::load_or_create(dir)
            .unwrap_or_else(|error| panic!("a secrets key in {}: {error}", dir.display())),
        ipv4_pool: aloft_net::DEFAULT_IPV4_POOL
            .parse()
            .unwrap_or_else(|error| panic!("the default IPv4 pool: {error}")),
        edge: None,
        machine_caps: aloft_store::MachineCaps::NONE,
        smoke_check: std::time::Duration::from_secs(10),
        host_down_after: std::time::Duration::from_secs(10),
        // Tests that are not about quotas run with room for anything.
        quotas: aloft_control::Quotas {
            default: aloft_control::Quota {
                apps: i64::MAX,
                cpus: i64::MAX,
                memory_mb: i64::MAX,
                volume_gb: i64::MAX,
                ips: i64::MAX,
            },
            by_org: std::collections::BTreeMap::new(),
        },
        acme: None,
    }
}

/// Serves `control`'s API on a fresh loopback port until `stop`; its base URL.
pub(crate) async fn serve(control: &Control, stop: CancellationToken) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("a loopback port: {error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("its address: {error}"));
    let router = control.router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    (format!("http://{address}"), task)
}

/// The control plane and its API, with an admin token of the `personal` organization.
pub struct ControlApi {
    pub control: Control,
    pub store: Store,
    /// The API's base URL.
    pub url: String,
    /// The admin token.
    pub token: String,
    /// A client with the admin token.
    pub client: Client,
    pub dir: tempfile::TempDir,
    database: Option<TestDatabase>,
    stop: CancellationToken,
    api: JoinHandle<()>,
}

impl ControlApi {
    pub async fn start(options: ControlOptions) -> ControlApi {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("a temp dir: {error}"));
        let (url, database) = match options.backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("state.db").display()),
                None,
            ),
            Backend::Postgres => {
                let database = TestDatabase::create("aloft_api_test").await;
                (database.url.clone(), Some(database))
            }
        };
        let store = Store::open(&url)
            .await
            .unwrap_or_else(|error| panic!("the store at {url}: {error}"));
        if let Some(host) = options.host {
            store
                .upsert_host(&Host {
                    id: host,
                    region: options.region.clone(),
                    // No agent runs machines here: room for any test or benchmark
                    // (placement counts what machines reserve).
                    cpus: 1024,
                    memory_mb: 16 * 1024 * 1024,
                    address: None,
                    last_heartbeat: aloft_store::now_ms(),
                    encrypts_volumes: options.encrypts_volumes,
                })
                .await
                .unwrap_or_else(|error| panic!("recording the host: {error}"));
        }
        let control = Control::new(
            store.clone(),
            {
                let mut config = config(&options.region, dir.path());
                config.edge = options.edge;
                config.acme = options.acme;
                if let Some(quotas) = options.quotas {
                    config.quotas = quotas;
                }
                config
            },
            options.parts,
        );
        let token = control
            .bootstrap(dir.path())
            .await
            .unwrap_or_else(|error| panic!("bootstrap: {error}"))
            .unwrap_or_else(|| panic!("a fresh store gives an admin token"));
        let stop = CancellationToken::new();
        let (url, api) = serve(&control, stop.clone()).await;
        ControlApi {
            client: Client::new(&url, &token),
            control,
            store,
            url,
            token,
            dir,
            database,
            stop,
            api,
        }
    }

    /// Stops the API and the control plane's tasks, closes the store and drops a
    /// PostgreSQL database.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.api.await;
        self.control.shutdown().await;
        self.store.close().await;
        if let Some(database) = self.database {
            database.drop_database().await;
        }
    }
}

impl std::fmt::Debug for ControlOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlOptions").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ControlApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlApi").finish_non_exhaustive()
    }
}
