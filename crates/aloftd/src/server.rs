//! `aloftd server`: every role in one process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aloft_agent::{Agent, AgentConfig, NetworkSettings};
use aloft_control::{Control, ControlConfig, ControlParts, LogRetention, PlatformReason};
use aloft_dns::{Listener, Resolver, Sockets};
use aloft_proxy::autoscale::LifecycleError;
use aloft_runtime::DockerRuntime;
use aloft_store::Store;
use aloft_types::HostId;
use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogConfig, LogFormat};

/// Where the host's identity is kept in the data directory.
pub const HOST_ID_FILE: &str = "host-id";
/// Where the API's URL is written once it listens.
pub const API_URL_FILE: &str = "api-url";
/// The dashboard's session key (sessions outlive a restart).
const WEB_KEY_FILE: &str = "web-session.key";
/// Where the operators' DNS address is written once it listens.
pub const DNS_ADDR_FILE: &str = "dns-addr";
/// Where the proxy's plain-HTTP address is written once it listens.
pub const HTTP_ADDR_FILE: &str = "http-addr";
/// Where the proxy's HTTPS address is written once it listens.
pub const HTTPS_ADDR_FILE: &str = "https-addr";
/// The local CA and its files, under the data directory.
pub const TLS_DIR: &str = "tls";

/// The proxy's way to start and stop machines: the control plane, recording why.
#[derive(Debug)]
struct PlatformLifecycle(Control);

impl PlatformLifecycle {
    fn power(
        &self,
        machine: String,
        start: bool,
        reason: PlatformReason,
    ) -> aloft_proxy::autoscale::BoxFuture<Result<(), LifecycleError>> {
        let control = self.0.clone();
        Box::pin(async move {
            let id: aloft_types::MachineId = match machine.parse() {
                Ok(id) => id,
                Err(error) => {
                    return Err(LifecycleError::BadId {
                        machine,
                        source: Box::new(error),
                    });
                }
            };
            control
                .platform_power(&id, start, reason)
                .await
                .map_err(|error| LifecycleError::Refused {
                    machine,
                    source: Box::new(error),
                })
        })
    }
}

impl aloft_proxy::autoscale::Lifecycle for PlatformLifecycle {
    fn start(
        &self,
        machine: String,
    ) -> aloft_proxy::autoscale::BoxFuture<Result<(), LifecycleError>> {
        self.power(machine, true, PlatformReason::Autostart)
    }

    fn stop(
        &self,
        machine: String,
    ) -> aloft_proxy::autoscale::BoxFuture<Result<(), LifecycleError>> {
        self.power(machine, false, PlatformReason::Autostop)
    }
}

/// The proxy's way to open machines' files (`[[statics]]`): the control plane, through
/// the host's agent.
#[derive(Debug)]
struct PlatformStatics(Control);

impl aloft_proxy::statics::Statics for PlatformStatics {
    fn open(
        &self,
        machine: String,
        guest_path: String,
        path: String,
    ) -> aloft_proxy::autoscale::BoxFuture<
        Result<Option<aloft_proxy::statics::StaticFile>, Box<dyn std::error::Error + Send + Sync>>,
    > {
        let control = self.0.clone();
        Box::pin(async move {
            let id: aloft_types::MachineId = machine.parse()?;
            let file = control.open_static(&id, &guest_path, &path).await?;
            Ok(file.map(|file| aloft_proxy::statics::StaticFile {
                length: file.length,
                body: file.body,
            }))
        })
    }
}

/// The proxy's two shared listeners, bound before anything else starts so that the
/// control plane knows the port apps' URLs carry.
struct EdgeListeners {
    http: tokio::net::TcpListener,
    https: tokio::net::TcpListener,
    /// The port users reach the HTTPS listener at.
    public_https_port: u16,
}

impl EdgeListeners {
    async fn bind(config: &Config) -> anyhow::Result<EdgeListeners> {
        let http = tokio::net::TcpListener::bind(config.proxy.http_listen)
            .await
            .with_context(|| format!("the proxy listening on {}", config.proxy.http_listen))?;
        let https = tokio::net::TcpListener::bind(config.proxy.https_listen)
            .await
            .with_context(|| format!("the proxy listening on {}", config.proxy.https_listen))?;
        let bound = https
            .local_addr()
            .context("reading the proxy's HTTPS address")?;
        Ok(EdgeListeners {
            http,
            https,
            public_https_port: config.proxy.public_https_port.unwrap_or(bound.port()),
        })
    }
}

/// Starts the edge proxy's shared HTTP listener, following the catalog.
async fn start_proxy(
    config: &Config,
    control: &Control,
    listeners: EdgeListeners,
    ca: Arc<aloft_proxy::tls::LocalCa>,
    stop: &CancellationToken,
) -> anyhow::Result<(Arc<aloft_proxy::Proxy>, Vec<tokio::task::JoinHandle<()>>)> {
    let proxy = aloft_proxy::Proxy::new(aloft_proxy::ProxyConfig {
        apps_domain: config.proxy.apps_domain.clone(),
        public_https_port: listeners.public_https_port,
        region: config.region.clone(),
        namespace: config.network.namespace.clone(),
        queue_timeout: Duration::from_secs(config.proxy.queue_timeout_seconds),
        drain_timeout: Duration::from_secs(config.api.shutdown_grace_seconds),
        start_timeout: Duration::from_secs(config.proxy.autostart_timeout_seconds),
        autostop_interval: Duration::from_secs(config.proxy.autostop_interval_seconds),
        workers: config.proxy.workers,
        region_distances: config
            .proxy
            .region_distances()
            .map_err(|e| anyhow::anyhow!("[proxy] region_distances: {e}"))?,
    });
    proxy.attach_lifecycle(Arc::new(PlatformLifecycle(control.clone())));
    proxy.attach_statics(Arc::new(PlatformStatics(control.clone())));
    proxy.follow(control.catalog(), stop.clone());
    proxy.run_autostop(stop.clone());
    let listener = listeners.http;
    let address = listener
        .local_addr()
        .context("reading the proxy's address")?;
    std::fs::write(config.data_dir.join(HTTP_ADDR_FILE), format!("{address}\n"))
        .context("writing the proxy's address")?;
    let plain = tokio::spawn(proxy.clone().serve_http(listener, stop.clone()));
    let metrics = proxy.clone();

    let domain = &config.proxy.apps_domain;
    let certificates = Arc::new(aloft_proxy::tls::Certificates::default());
    let wildcard = ca
        .issue(&[format!("*.{domain}"), domain.clone()])
        .context("issuing the apps domain's certificate")?;
    certificates.insert(&format!("*.{domain}"), wildcard.clone());
    // Clients that connect by address send no server name: they get the apps domain's.
    certificates.set_fallback(wildcard);
    // Apps' own hostnames (`aloft certs add|import`) get theirs as the catalog names them.
    proxy.attach_certificates(certificates.clone(), ca.clone());
    let tls = Arc::new(aloft_proxy::tls::server_config(certificates).context("setting up TLS")?);
    let secure = listeners.https;
    let secure_address = secure.local_addr().context("reading the proxy's address")?;
    std::fs::write(
        config.data_dir.join(HTTPS_ADDR_FILE),
        format!("{secure_address}\n"),
    )
    .context("writing the proxy's HTTPS address")?;
    let secure = tokio::spawn(proxy.serve_https(secure, tls, stop.clone()));
    tracing::info!(http = %address, https = %secure_address, apps_domain = %domain, "the proxy is up");
    Ok((metrics, vec![plain, secure]))
}

/// The DNS resolver (answering from the catalog once it follows one), forwarding other
/// names to `[network] dns_upstream` or the host's resolvers.
fn resolver(config: &Config) -> Arc<Resolver> {
    let upstream = match &config.network.dns_upstream {
        Some(upstream) => upstream.clone(),
        None => aloft_dns::upstream_from_resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ),
    };
    Resolver::new(config.region.clone(), upstream)
}

/// Starts the DNS server: on `[fdaa::3]:53` in the private network's namespace for
/// machines, and on the operators' address, both following the control plane's catalog.
fn start_dns(
    config: &Config,
    control: &Control,
    resolver: Arc<Resolver>,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<Resolver>> {
    resolver.follow(control.catalog(), stop.clone());
    let private = std::net::SocketAddr::new(
        std::net::IpAddr::V6(aloft_net::DNS_ADDRESS),
        config.network.dns_port,
    );
    let sockets = Sockets::bind(private, config.network.namespace.as_deref())
        .with_context(|| format!("starting DNS on {private}"))?;
    tokio::spawn(sockets.serve(resolver.clone(), Listener::Private, stop.clone()));
    let operators = Sockets::bind(config.network.dns_listen, None)
        .with_context(|| format!("starting DNS on {}", config.network.dns_listen))?;
    let address = operators.local_addr().context("reading the DNS address")?;
    std::fs::write(config.data_dir.join(DNS_ADDR_FILE), format!("{address}\n"))
        .context("writing the DNS address")?;
    tokio::spawn(operators.serve(resolver.clone(), Listener::Operator, stop.clone()));
    tracing::info!(%private, operators = %address, "DNS is up");
    Ok(resolver)
}

/// Knobs for embedding the server (tests use them; the binary uses the defaults).
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Cancelled to shut down as SIGTERM would.
    pub shutdown: Option<CancellationToken>,
}

pub(crate) fn init_tracing(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a redirected log gets no escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The host's id, created on the first start and kept in the data directory.
fn host_id(data_dir: &Path) -> anyhow::Result<HostId> {
    let path = data_dir.join(HOST_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("reading the host id in {}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random)
                .map_err(|e| anyhow::anyhow!("generating a host id: {e}"))?;
            let id = HostId::generate(random);
            aloft_crash::write_file(&path, format!("{id}\n").as_bytes(), 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// What this host opens before any role starts: the state store and its secrets key, the
/// edge's listeners (apps' URLs carry their port), the Docker Engine, the log store, the
/// edge's CA and the DNS resolver.
struct HostParts {
    store: Store,
    secrets_key: aloft_control::SecretsKey,
    edge_listeners: EdgeListeners,
    runtime: DockerRuntime,
    logs: aloft_logs::LogStore,
    logs_dir: PathBuf,
    ca: Arc<aloft_proxy::tls::LocalCa>,
    resolver: Arc<Resolver>,
}

fn days(count: u64) -> Duration {
    Duration::from_secs(count * 86_400)
}

impl HostParts {
    async fn open(config: &Config) -> anyhow::Result<HostParts> {
        let database = config.database_url();
        let store = Store::open(&database)
            .await
            .with_context(|| format!("opening the state store ({database})"))?;
        let secrets_key = aloft_control::SecretsKey::load_or_create(&config.data_dir)
            .context("loading the secrets key")?;
        let edge_listeners = EdgeListeners::bind(config).await?;
        let runtime = DockerRuntime::connect()
            .await
            .context("connecting to Docker Engine (is dockerd running?)")?;
        let logs_dir = config.data_dir.join("logs");
        let longest = config
            .logs
            .org_max_age_days
            .values()
            .copied()
            .chain([config.logs.max_age_days])
            .max()
            .unwrap_or(config.logs.max_age_days);
        let logs = aloft_logs::LogStore::open(aloft_logs::LogConfig {
            dir: logs_dir.clone(),
            segment_bytes: config.logs.segment_mb << 20,
            max_age: days(longest),
            max_bytes: config.logs.max_size_gb << 30,
        })
        .with_context(|| format!("opening the log store in {}", logs_dir.display()))?;
        let ca = Arc::new(
            aloft_proxy::tls::LocalCa::load_or_create(&config.data_dir.join(TLS_DIR))
                .context("loading the local certificate authority")?,
        );
        Ok(HostParts {
            store,
            secrets_key,
            edge_listeners,
            runtime,
            logs,
            logs_dir,
            ca,
            resolver: resolver(config),
        })
    }
}

/// The control plane, built whole from the host's parts.
fn control_of(
    config: &Config,
    host_id: &HostId,
    parts: &HostParts,
    builder: Arc<crate::builder::EngineBuilder>,
) -> anyhow::Result<Control> {
    Ok(Control::new(
        parts.store.clone(),
        ControlConfig {
            default_region: config.region.clone(),
            secrets_key: parts.secrets_key.clone(),
            ipv4_pool: config
                .proxy
                .ipv4_pool
                .parse()
                .context("reading [proxy] ipv4_pool")?,
            edge: Some(aloft_control::EdgeAddress {
                apps_domain: config.proxy.apps_domain.clone(),
                https_port: parts.edge_listeners.public_https_port,
                public_addresses: config.proxy.public_addresses.clone(),
            }),
            machine_caps: config.limits.machine_caps(),
            quotas: config.quotas.quotas(),
            smoke_check: std::time::Duration::from_secs(config.deploys.smoke_check_seconds),
            host_down_after: std::time::Duration::from_secs(config.hosts.down_after_seconds),
            acme: config.acme.settings(),
        },
        ControlParts {
            dns: Some(parts.resolver.clone()),
            local_ca: Some(parts.ca.cert_pem().to_owned()),
            builder: Some(builder),
            logs: Some((host_id.clone(), parts.logs.clone())),
            log_retention: LogRetention {
                default: Some(days(config.logs.max_age_days)),
                by_org: config
                    .logs
                    .org_max_age_days
                    .iter()
                    .map(|(slug, d)| (slug.clone(), days(*d)))
                    .collect(),
            },
            sink_reach: config
                .logs
                .sink_reach()
                .context("reading [logs] sink_allowed_networks")?,
        },
    ))
}

/// This host's agent, registered with the control plane.
fn agent_of(
    config: &Config,
    control: &Control,
    host_id: &HostId,
    parts: &HostParts,
    counters: Arc<aloft_agent::AgentCounters>,
) -> Agent<DockerRuntime> {
    let agent = Agent::new(
        parts.runtime.clone(),
        Arc::new(control.gateway()),
        AgentConfig {
            host_id: host_id.clone(),
            region: config.region.clone(),
            data_dir: config.data_dir.clone(),
            cpus: i64::try_from(std::thread::available_parallelism().map_or(1, |n| n.get()))
                .unwrap_or(1),
            memory_mb: host_memory_mb(),
            reconcile_interval: Duration::from_secs(config.agent.reconcile_interval_seconds),
            network: Some(NetworkSettings {
                namespace: config.network.namespace.clone(),
                mtu: config.network.mtu,
                served: aloft_net::firewall::Served::new(
                    config.network.dns_port,
                    config.agent.ssh_listen.map(|address| address.port()),
                ),
                // Checked when the configuration was read.
                egress: config.network.egress().ok().flatten(),
            }),
            logs: Some(parts.logs.clone()),
            counters,
            helper: config
                .agent
                .helper
                .clone()
                .or_else(|| std::env::current_exe().ok()),
            ssh_listen: config.agent.ssh_listen,
            ssh_limits: aloft_agent::SshLimits {
                login_grace: Duration::from_secs(config.agent.ssh_login_grace_seconds),
                startups_per_source: config.agent.ssh_max_startups_per_source,
                startups: config.agent.ssh_max_startups,
            },
            volumes: match config.agent.volumes {
                crate::config::VolumeSetting::Ext4 => aloft_agent::VolumeBacking::Ext4,
                crate::config::VolumeSetting::Directory => aloft_agent::VolumeBacking::Directory,
            },
        },
    );
    control.register_host(host_id.clone(), agent.link());
    agent
}

/// Says where the API is; on the first start, with the command that logs in to it.
fn announce(
    config: &Config,
    url: &str,
    tls: Option<&crate::api_tls::ApiTls>,
    host_id: &HostId,
    first_token: Option<String>,
) {
    let ca = tls.and_then(|tls| tls.ca.as_ref());
    match ca {
        Some((_, fingerprint)) => tracing::info!(
            %url, host = %host_id, region = %config.region, ca = %fingerprint,
            ca_file = %crate::api_tls::ca_file(&config.data_dir).display(),
            "aloftd server is up"
        ),
        None => {
            tracing::info!(%url, host = %host_id, region = %config.region, "aloftd server is up")
        }
    }
    if let Some(token) = first_token {
        let pin = ca.map_or(String::new(), |(_, fingerprint)| {
            format!(" \\\n      --ca-fingerprint {fingerprint}")
        });
        #[allow(
            clippy::print_stdout,
            reason = "the admin token is shown once, on the first start"
        )]
        {
            println!(
                "Created organization `{}` and the platform operator's token (also saved to {}). Log in with:\n\n  aloft auth login --token {token} --api-url {url}{pin}\n",
                aloft_control::DEFAULT_ORG,
                config
                    .data_dir
                    .join(aloft_control::ADMIN_TOKEN_FILE)
                    .display()
            );
        }
    }
}

/// The dashboard's session key (sessions outlive a restart).
fn web_key_of(config: &Config) -> anyhow::Result<aloft_web::SessionKey> {
    aloft_web::SessionKey::load_or_create(&config.data_dir.join(WEB_KEY_FILE))
        .context("reading the dashboard's session key")
}

/// Steps the apps' short history every `seconds` with the edge's counters, until `stop`.
fn spawn_history(
    control: &Control,
    edge: &Arc<aloft_proxy::Proxy>,
    seconds: u64,
    stop: &CancellationToken,
) {
    let (control, edge, stop) = (control.clone(), edge.clone(), stop.clone());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(seconds.max(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => control.history_step(&edge.edge_counters()),
            }
        }
    });
}

/// SIGTERM cancels `stop` (a graceful drain); SIGINT notifies the returned `Notify` (exit
/// at once).
fn watch_signals(stop: &CancellationToken) -> anyhow::Result<Arc<tokio::sync::Notify>> {
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let graceful = stop.clone();
    let fast = Arc::new(tokio::sync::Notify::new());
    let fast_signal = fast.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM: draining"); graceful.cancel(); }
            _ = interrupt.recv() => { tracing::info!("SIGINT: exiting now"); fast_signal.notify_one(); }
            () = graceful.cancelled() => {}
        }
    });
    Ok(fast)
}

/// The API's router with every role's Prometheus metrics at `/metrics`, for the platform
/// operator's token only (they name every organization's apps, machines and sinks).
fn api_router(
    web: aloft_web::Web,
    control: &Control,
    metrics: crate::metrics::Metrics,
    api: Arc<crate::metrics::ApiMetrics>,
) -> axum::Router {
    let metrics = Arc::new(metrics);
    let gate = control.clone();
    control
        .router()
        .merge(web.router())
        .route_layer(axum::middleware::from_fn_with_state(
            api,
            crate::metrics::track,
        ))
        .route(
            "/metrics",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let metrics = metrics.clone();
                let gate = gate.clone();
                async move {
                    use axum::response::IntoResponse as _;
                    if let Err(refused) = gate
                        .require_operator(&headers, "the platform's metrics")
                        .await
                    {
                        return refused.into_response();
                    }
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render().await,
                    )
                        .into_response()
                }
            }),
        )
}

/// What runs until the server stops, and stops in order afterwards.
struct Running {
    control: Control,
    agent_stop: CancellationToken,
    agent: tokio::task::JoinHandle<Result<(), aloft_agent::AgentError>>,
    edge_stop: CancellationToken,
    proxy: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops the agent, the edge and the control plane's tasks, each within what is left
    /// of the grace period at `deadline`, then closes the store.
    async fn shut_down(self, deadline: tokio::time::Instant, grace: Duration) {
        self.agent_stop.cancel();
        match tokio::time::timeout_at(deadline, self.agent).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(error = %error, "the agent stopped with an error"),
            Ok(Err(error)) => tracing::warn!(error = %error, "the agent task failed"),
            Err(_) => tracing::warn!(?grace, "the agent did not stop within the grace period"),
        }
        self.edge_stop.cancel();
        for listener in self.proxy {
            if tokio::time::timeout_at(deadline, listener).await.is_err() {
                tracing::warn!(?grace, "the proxy did not drain within the grace period");
            }
        }
        // Deployments in flight stop at their next step and resume at the next start.
        if tokio::time::timeout_at(deadline, self.control.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "the control plane's tasks did not stop within the grace period"
            );
        }
        self.control.store().close().await;
        tracing::info!("aloftd server stopped");
    }
}

/// Runs the server until SIGTERM (graceful), SIGINT (at once) or `options.shutdown`: the
/// host's parts, then the control plane, the agent, DNS, the proxy and the API.
pub async fn run(config: Config, options: ServerOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    // Keys, tokens, state, volumes and machines' files: the host's root only.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", config.data_dir.display()))?;
    }
    let host_id = host_id(&config.data_dir)?;
    let parts = HostParts::open(&config).await?;
    let builder = Arc::new(crate::builder::EngineBuilder::of(
        &config,
        parts.runtime.clone(),
        u64::try_from(host_memory_mb()).unwrap_or(0),
    )?);
    builder.prepare().await?;
    let control = control_of(&config, &host_id, &parts, builder)?;
    // Shown once the API listens, with the command that logs in to it.
    let first_token = control
        .bootstrap(&config.data_dir)
        .await
        .context("first-start setup")?;
    let shipping = CancellationToken::new();
    let _shipping_guard = shipping.clone().drop_guard();
    control.start_shipping(parts.logs_dir.join("sinks"), shipping.clone());
    let agent_counters = Arc::new(aloft_agent::AgentCounters::default());
    let agent = agent_of(&config, &control, &host_id, &parts, agent_counters.clone());
    agent
        .open_network()
        .await
        .context("preparing the private network (bridges, fdaa::3, nftables rules)")?;
    let HostParts {
        edge_listeners,
        logs,
        ca,
        resolver,
        ..
    } = parts;
    let edge_stop = CancellationToken::new();
    // However the server ends (drained, SIGINT, or its future dropped), DNS and the proxy
    // stop: DNS's UDP thread would otherwise keep the runtime from shutting down.
    let _edge_guard = edge_stop.clone().drop_guard();
    let dns = start_dns(&config, &control, resolver, &edge_stop)?;
    let stop = options.shutdown.unwrap_or_default();
    // The proxy drains from the moment a stop is asked for, alongside the API.
    let proxy_stop = edge_stop.child_token();
    {
        let (stop, proxy_stop) = (stop.clone(), proxy_stop.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            proxy_stop.cancel();
        });
    }
    let (edge, proxy) = start_proxy(&config, &control, edge_listeners, ca, &proxy_stop).await?;

    let tls = crate::api_tls::setup(&config).context("HTTPS on the API ([api] tls)")?;
    let tcp = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("listening on {}", config.api.listen))?;
    let address = tcp.local_addr().context("reading the bound address")?;
    let (url, local_url) = match &tls {
        None => (format!("http://{address}"), format!("http://{address}")),
        Some(tls) => (
            format!("https://{}:{}", tls.url_host, address.port()),
            format!(
                "https://{}:{}",
                crate::api_tls::local_host(address),
                address.port()
            ),
        ),
    };
    std::fs::write(config.data_dir.join(API_URL_FILE), format!("{url}\n"))
        .context("writing the API URL")?;
    announce(&config, &url, tls.as_ref(), &host_id, first_token);
    let web = match &tls {
        None => aloft_web::Web::new(&local_url, web_key_of(&config)?),
        Some(tls) => {
            aloft_web::Web::new(&local_url, web_key_of(&config)?).over_https(tls.leaf.clone())
        }
    };
    let listener = crate::api_tls::ApiListener::new(tcp, tls.map(|tls| tls.server))
        .context("the API's listener")?;

    let agent_stop = CancellationToken::new();
    let agent_task = tokio::spawn(agent.run(agent_stop.clone()));
    let resumed = control
        .resume_deployments()
        .await
        .context("resuming the deployments a previous run left running")?;
    if resumed > 0 {
        tracing::info!(deployments = resumed, "resumed deployments");
    }
    control.watch_hosts();
    control.run_schedules();
    control.keep_snapshots();
    control.issue_certificates();
    spawn_history(&control, &edge, config.api.history_step_seconds, &stop);
    let fast = watch_signals(&stop)?;

    let api_metrics = Arc::new(crate::metrics::ApiMetrics::default());
    let router = api_router(
        web.with_grafana(config.api.grafana_url.as_deref()),
        &control,
        crate::metrics::Metrics {
            api: api_metrics.clone(),
            control: control.clone(),
            host: host_id.clone(),
            logs,
            edge,
            dns,
            agent: agent_counters,
        },
        api_metrics,
    );
    // Everything stops within the grace period counted from the SIGTERM: streams end at
    // once with a last line saying why, other requests get the rest of it, and whatever
    // is still open then is closed.
    let grace = Duration::from_secs(config.api.shutdown_grace_seconds);
    let drain_started = Arc::new(std::sync::OnceLock::new());
    let serve = {
        let (control, drain_started, draining) =
            (control.clone(), drain_started.clone(), stop.clone());
        axum::serve(listener, router).with_graceful_shutdown(async move {
            draining.cancelled().await;
            let _ = drain_started.set(tokio::time::Instant::now());
            control.begin_drain();
        })
    };
    let past_grace = {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        }
    };
    tokio::select! {
        served = serve => served.context("serving the API")?,
        () = past_grace => tracing::warn!(?grace, "API connections still open at the end of the grace period: closed"),
        () = fast.notified() => return Ok(()),
    }
    let deadline = drain_started
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now)
        + grace;
    Running {
        control,
        agent_stop,
        agent: agent_task,
        edge_stop,
        proxy,
    }
    .shut_down(deadline, grace)
    .await;
    Ok(())
}

/// This host's memory in MB (`MemTotal` of /proc/meminfo); 0 when it cannot be read.
fn host_memory_mb() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<i64>()
                        .ok()
                })
        })
        .map_or(0, |kb| kb / 1024)
}
