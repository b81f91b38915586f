// Over 800 lines: listeners, connection handling, forwarding, headers, replay and balancing share the Proxy state; the split along those jobs is issue 16 item 6.
//! The HTTP side of the proxy: a shared listener routes by `Host` to `<app>.<apps_domain>`,
//! picks a machine and forwards the request over the private network with Fly's headers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aloft_types::catalog::Catalog;
use aloft_types::machine::{Handler, HttpResponseOptions, ResponseHeader, TlsOptions, TlsVersion};
use aloft_types::{CheckStatus, MachineState};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::autoscale::{Lifecycle, Traffic, machines_to_stop, nearest};
use crate::balance::{Lease, Loads};
use crate::metrics::{OpenConnection, ProxyMetrics, escape};
use crate::replay::{
    FailReason, Fallback, MAX_REPLAY_BODY, MAX_REPLAYS, REPLAY_JSON, Replay, Transform,
    failed_header, parse_header, parse_json, source_header,
};
use crate::routes::{Backend, Route, RouteTable};
use crate::tls::{Certificates, LocalCa};

impl Traffic for Proxy {
    fn load(&self, machine: &str) -> u32 {
        self.loads.load(machine)
    }

    fn idle_for(&self, machine: &str) -> Duration {
        let since_start = self
            .started_at
            .lock()
            .ok()
            .and_then(|s| s.get(machine).map(Instant::elapsed))
            .unwrap_or(Duration::ZERO);
        match self.loads.idle_for(machine) {
            Some(idle) => idle.min(since_start),
            None => since_start,
        }
    }
}

type MachineClient = Client<crate::connect::Connector, ProxyBody>;

/// A client connection, plain or TLS.
trait ClientStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ClientStream for T {}

thread_local! {
    /// Each thread's clients to machines, by proxy.
    static CLIENTS: std::cell::RefCell<HashMap<usize, MachineClient>> =
        std::cell::RefCell::new(HashMap::new());
}

/// The error type of every body the proxy sends.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// How long a client gets to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one connection; when `stop` fires, lets requests in flight finish (up to
/// `drain`), answers no new ones, and closes. A connection with no request in flight and
/// no byte moved for `idle` is closed the same way.
async fn drive<I, S>(
    connection: hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, TokioExecutor>,
    stop: &CancellationToken,
    drain: Duration,
    activity: &Activity,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<ProxyBody>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Reads the clock a few times per idle timeout, never per byte moved.
    let watchdog = async {
        let mut seen = activity.moves();
        let mut quiet_since = Instant::now();
        loop {
            let limit = activity.limit();
            let now = Instant::now();
            let moves = activity.moves();
            if moves != seen || activity.in_flight() > 0 {
                seen = moves;
                quiet_since = now;
            }
            let quiet = now.duration_since(quiet_since);
            if quiet >= limit {
                return;
            }
            let wait = (limit - quiet)
                .min(limit / 8)
                .max(Duration::from_millis(100));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = activity.limit_changed.notified() => {}
            }
        }
    };
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(drain, connection).await;
        }
        () = watchdog => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(drain, connection).await;
        }
    }
}

/// Whether a connection moves bytes, and how many of its requests are in flight.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Reads and writes that moved a byte, counted (cheaper than reading the clock).
    moves: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
    /// The idle timeout in milliseconds: the default, then the route's once known.
    limit_millis: std::sync::atomic::AtomicU64,
    /// Wakes the watchdog when the limit changes.
    limit_changed: tokio::sync::Notify,
}

impl Activity {
    fn new(limit: Duration) -> Arc<Activity> {
        Arc::new(Activity {
            moves: std::sync::atomic::AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            limit_millis: std::sync::atomic::AtomicU64::new(
                u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            ),
            limit_changed: tokio::sync::Notify::new(),
        })
    }

    fn limit(&self) -> Duration {
        Duration::from_millis(self.limit_millis.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The route's `idle_timeout` (seconds), learnt from a request.
    fn set_limit_seconds(&self, seconds: u32) {
        let millis = u64::from(seconds.max(1)) * 1000;
        let before = self
            .limit_millis
            .swap(millis, std::sync::atomic::Ordering::Relaxed);
        if before != millis {
            self.limit_changed.notify_one();
        }
    }

    fn touch(&self) {
        self.moves
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn moves(&self) -> u64 {
        self.moves.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A client stream that counts the reads and writes that moved bytes.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Fly's default `http_options.idle_timeout`.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Header names the proxy reads or writes on every request, made once (a name given as
/// text is parsed and hashed anew at every use).
const FLY_CLIENT_IP: HeaderName = HeaderName::from_static("fly-client-ip");
const FLY_FORWARDED_PORT: HeaderName = HeaderName::from_static("fly-forwarded-port");
const FLY_REGION: HeaderName = HeaderName::from_static("fly-region");
const FLY_REQUEST_ID: HeaderName = HeaderName::from_static("fly-request-id");
const FLY_FORCE_INSTANCE_ID: HeaderName = HeaderName::from_static("fly-force-instance-id");
const FLY_PREFER_INSTANCE_ID: HeaderName = HeaderName::from_static("fly-prefer-instance-id");
const FLY_FORCE_REGION: HeaderName = HeaderName::from_static("fly-force-region");
const FLY_PREFER_REGION: HeaderName = HeaderName::from_static("fly-prefer-region");
const FLY_REPLAY: HeaderName = HeaderName::from_static("fly-replay");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_SSL: HeaderName = HeaderName::from_static("x-forwarded-ssl");
const VIA_ALOFT: HeaderValue = HeaderValue::from_static("1.1 aloft");

/// Settings of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Apps answer at `<app>.<apps_domain>`.
    pub apps_domain: String,
    /// The port users reach the HTTPS listener at: `force_https` redirects go there.
    pub public_https_port: u16,
    /// This edge's region (`Fly-Region`, the request id's suffix).
    pub region: String,
    /// The network namespace the private network lives in (`None`: the process's own).
    pub namespace: Option<PathBuf>,
    /// How long a request waits for a machine under its hard limit before a 503.
    pub queue_timeout: Duration,
    /// After a stop, how long open connections get to finish their requests.
    pub drain_timeout: Duration,
    /// How long a request waits for a machine it started (autostart) to take traffic.
    pub start_timeout: Duration,
    /// How often idle machines are looked for (autostop); also how long a machine must
    /// have been idle to be stopped.
    pub autostop_interval: Duration,
    /// Threads serving the shared listeners, each with a runtime and connection pool of
    /// its own (no hand-offs between threads per request); 0: one per core.
    pub workers: usize,
    /// Distances between regions (either order), for sending a request to the closest
    /// other region when the edge's own cannot take it; regions without one come last.
    pub region_distances: Vec<(String, String, u32)>,
}

impl ProxyConfig {
    /// How far `region` is from this edge's region (0 for its own; `u32::MAX` unknown).
    fn distance_to(&self, region: &str) -> u32 {
        if region == self.region {
            return 0;
        }
        self.region_distances
            .iter()
            .find(|(a, b, _)| {
                (a == &self.region && b == region) || (b == &self.region && a == region)
            })
            .map_or(u32::MAX, |(_, _, distance)| *distance)
    }
}

/// The proxy: its routes follow the catalog.
#[derive(Debug)]
pub struct Proxy {
    pub(crate) config: ProxyConfig,
    /// `Fly-Region`'s value, made once.
    region_header: HeaderValue,
    routes: RwLock<Arc<RouteTable>>,
    /// The catalog the routes were made from (autostop reads it).
    catalog: RwLock<Arc<Catalog>>,
    /// Woken on every new route table (requests waiting for a started machine).
    routes_changed: tokio::sync::Notify,
    loads: Arc<Loads>,
    /// Makes connections to machines (each thread pools its own, see [`Proxy::clients`]).
    connector: crate::connect::Connector,
    /// Starts and stops machines (autostart, autostop); none: neither happens.
    lifecycle: std::sync::OnceLock<Arc<dyn Lifecycle>>,
    /// Per app, the machine being started for requests and since when.
    waking: Mutex<HashMap<String, (String, Instant)>>,
    /// When each started machine was first seen started (a new one is not idle yet).
    started_at: Mutex<HashMap<String, Instant>>,
    /// The certificates of the HTTPS listener, for `tls` handlers on apps' own addresses.
    pub(crate) tls: std::sync::OnceLock<Arc<rustls::ServerConfig>>,
    /// Listeners on apps' own addresses, each stopped by its token.
    pub(crate) dedicated: Mutex<HashMap<SocketAddr, CancellationToken>>,
    pub(crate) metrics: ProxyMetrics,
    /// The HTTPS listener's certificates and the CA that issues apps' hostnames theirs.
    certificates: std::sync::OnceLock<(Arc<Certificates>, Arc<LocalCa>)>,
    /// Apps' hostnames whose certificates are being served, with what they came from.
    served_names: Mutex<HashMap<String, Option<(String, String)>>>,
    /// TLS settings made for ports' `tls_options`, by ALPN list and versions.
    tls_variants: Mutex<HashMap<TlsKey, Arc<rustls::ServerConfig>>>,
}

type TlsKey = (Vec<String>, Vec<TlsVersion>);

impl Proxy {
    pub fn new(config: ProxyConfig) -> Arc<Proxy> {
        let connector = crate::connect::Connector::new(config.namespace.clone());

        let region_header = HeaderValue::from_str(&config.region)
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Arc::new(Proxy {
            config,
            region_header,
            routes: RwLock::new(Arc::new(RouteTable::default())),
            catalog: RwLock::new(Arc::new(Catalog::default())),
            routes_changed: tokio::sync::Notify::new(),
            loads: Arc::new(Loads::default()),
            connector,
            lifecycle: std::sync::OnceLock::new(),
            waking: Mutex::new(HashMap::new()),
            started_at: Mutex::new(HashMap::new()),
            tls: std::sync::OnceLock::new(),
            dedicated: Mutex::new(HashMap::new()),
            metrics: ProxyMetrics::default(),
            tls_variants: Mutex::new(HashMap::new()),
            certificates: std::sync::OnceLock::new(),
            served_names: Mutex::new(HashMap::new()),
        })
    }

    /// This proxy's key in the threads' connection pools.
    fn pool_id(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// This thread's HTTP/2 client to machines (`h2_backend`; HTTP/1.1 goes through
    /// [`crate::pool`]): a pooled connection is driven by the thread that made it, so
    /// requests of a worker never wait on another thread.
    fn http2_client(&self) -> MachineClient {
        CLIENTS.with(|clients| {
            clients
                .borrow_mut()
                .entry(self.pool_id())
                .or_insert_with(|| {
                    Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(Duration::from_secs(4))
                        .http2_only(true)
                        .build(self.connector.clone())
                })
                .clone()
        })
    }

    /// Lets the proxy serve apps' own hostnames: it adds their certificates to
    /// `certificates` (imported ones as given, the others issued by `ca`) as the catalog
    /// names them, and removes them when they go.
    pub fn attach_certificates(&self, certificates: Arc<Certificates>, ca: Arc<LocalCa>) {
        let _ = self.certificates.set((certificates, ca));
        let catalog = self.catalog.read().map(|c| c.clone()).unwrap_or_default();
        self.sync_certificates(&catalog);
    }

    /// Brings the served certificates in line with the apps' hostnames in `catalog`.
    fn sync_certificates(&self, catalog: &Catalog) {
        let Some((certificates, ca)) = self.certificates.get() else {
            return;
        };
        let Ok(mut served) = self.served_names.lock() else {
            return;
        };
        let wanted: HashMap<&str, &Option<(String, String)>> = catalog
            .apps
            .iter()
            .flat_map(|a| a.hostnames.iter().map(|h| (h.name.as_str(), &h.custom)))
            .collect();
        served.retain(|name, _| {
            let keep = wanted.contains_key(name.as_str());
            if !keep {
                certificates.remove(name);
            }
            keep
        });
        for (name, custom) in wanted {
            if served.get(name) == Some(custom) {
                continue;
            }
            let made = match custom {
                Some((chain, key)) => crate::tls::from_pem(chain, key),
                None => ca.issue(&[name.to_owned()]),
            };
            match made {
                Ok(cert) => {
                    certificates.insert(name, cert);
                    served.insert(name.to_owned(), custom.clone());
                }
                Err(error) => {
                    tracing::warn!(hostname = %name, error = %error, "no certificate for a hostname");
                }
            }
        }
    }

    /// Lets the proxy start and stop machines (autostart and autostop).
    pub fn attach_lifecycle(&self, lifecycle: Arc<dyn Lifecycle>) {
        let _ = self.lifecycle.set(lifecycle);
    }

    /// Replaces the routes with those of `catalog`.
    pub fn set_catalog(&self, catalog: &Arc<Catalog>) {
        let table = Arc::new(RouteTable::new(catalog));
        let now = Instant::now();
        if let Ok(mut started) = self.started_at.lock() {
            started.retain(|machine, _| {
                catalog
                    .machines
                    .iter()
                    .any(|m| &m.id == machine && m.state == MachineState::Started)
            });
            for machine in &catalog.machines {
                if machine.state == MachineState::Started {
                    started.entry(machine.id.clone()).or_insert(now);
                }
            }
        }
        let live: std::collections::HashSet<&str> =
            catalog.machines.iter().map(|m| m.id.as_str()).collect();
        self.loads.retain(|machine| live.contains(machine));
        if let Ok(mut waking) = self.waking.lock() {
            // A start is over once its machine takes traffic, or after the start timeout.
            waking.retain(|_, (machine, since)| {
                since.elapsed() < self.config.start_timeout && !table.serves(machine)
            });
        }
        if let Ok(mut routes) = self.routes.write() {
            *routes = table;
        }
        if let Ok(mut current) = self.catalog.write() {
            *current = catalog.clone();
        }
        self.sync_certificates(catalog);
        self.routes_changed.notify_waiters();
    }

    /// Stops idle machines by Fly's autostop rules every `autostop_interval`, until
    /// `stop` is cancelled. Nothing happens without a lifecycle.
    pub fn run_autostop(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let proxy = self.clone();
        tokio::spawn(async move {
            let period = proxy.config.autostop_interval;
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let Some(lifecycle) = proxy.lifecycle.get().cloned() else {
                    continue;
                };
                let catalog = proxy.catalog.read().map(|c| c.clone()).unwrap_or_default();
                for machine in
                    machines_to_stop(&catalog, proxy.as_ref(), period, &proxy.config.region)
                {
                    tracing::info!(%machine, "autostop: stopping an idle machine");
                    if let Err(error) = lifecycle.stop(machine.clone()).await {
                        tracing::warn!(%machine, %error, "autostop failed");
                    }
                }
            }
        })
    }

    /// Starts a stopped machine of `app` for a request, unless one is being started.
    /// Returns whether a start is under way.
    fn wake(&self, app: &str, route: &Route) -> bool {
        let Some(lifecycle) = self.lifecycle.get().cloned() else {
            return false;
        };
        let Ok(mut waking) = self.waking.lock() else {
            return false;
        };
        if let Some((_, since)) = waking.get(app)
            && since.elapsed() < self.config.start_timeout
        {
            return true;
        }
        let Some(sleeper) = nearest(&route.sleepers, &self.config.region) else {
            return false;
        };
        let machine = sleeper.machine.clone();
        waking.insert(app.to_owned(), (machine.clone(), Instant::now()));
        tracing::info!(%app, %machine, "autostart: starting a machine for a request");
        tokio::spawn(async move {
            if let Err(error) = lifecycle.start(machine.clone()).await {
                tracing::warn!(%machine, %error, "autostart failed");
            }
        });
        true
    }

    /// The started machines of `app` on `port`, waiting up to the start timeout for one
    /// when none is (a machine is being started for the request).
    async fn backends_after_start(
        &self,
        app: &str,
        port: u16,
        deadline: tokio::time::Instant,
    ) -> Vec<Backend> {
        loop {
            let changed = self.routes_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let backends = self
                .routes()
                .route(app, port)
                .map(|r| r.backends.clone())
                .unwrap_or_default();
            if !backends.is_empty() {
                return backends;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Keeps the routes current with `catalog` until it closes or `stop` is cancelled.
    pub fn follow(
        self: &Arc<Self>,
        mut catalog: watch::Receiver<Arc<Catalog>>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let proxy = self.clone();
        tokio::spawn(async move {
            loop {
                let latest = catalog.borrow_and_update().clone();
                proxy.set_catalog(&latest);
                proxy.listen_on_app_addresses(&latest, &stop);
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = catalog.changed() => if changed.is_err() { return },
                }
            }
        })
    }

    /// The proxy's metrics in Prometheus' text format, with each machine's load and each
    /// check's status as they are now.
    pub fn render_metrics(&self) -> String {
        let catalog = self.catalog.read().map(|c| c.clone()).unwrap_or_default();
        let mut gauges = String::from(
            "# HELP aloft_proxy_machine_concurrency Requests or connections in flight per machine.\n# TYPE aloft_proxy_machine_concurrency gauge\n",
        );
        for machine in &catalog.machines {
            if machine.state != MachineState::Started {
                continue;
            }
            gauges.push_str(&format!(
                "aloft_proxy_machine_concurrency{{app=\"{}\",machine=\"{}\"}} {}\n",
                escape(&machine.app),
                escape(&machine.id),
                self.loads.load(&machine.id)
            ));
        }
        gauges.push_str("# HELP aloft_check_status Each health check's current status (1 for the status it has).\n# TYPE aloft_check_status gauge\n");
        for machine in &catalog.machines {
            for check in &machine.checks {
                for status in [
                    CheckStatus::Passing,
                    CheckStatus::Warning,
                    CheckStatus::Critical,
                ] {
                    gauges.push_str(&format!(
                        "aloft_check_status{{app=\"{}\",machine=\"{}\",check=\"{}\",status=\"{status}\"}} {}\n",
                        escape(&machine.app),
                        escape(&machine.id),
                        escape(&check.name),
                        u8::from(check.status == status)
                    ));
                }
            }
        }
        self.metrics.render(&gauges)
    }

    /// The load on a machine now (requests in flight through this proxy).
    pub fn load(&self, machine: &str) -> u32 {
        self.loads.load(machine)
    }

    pub(crate) fn routes(&self) -> Arc<RouteTable> {
        self.routes
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Serves plain HTTP (public port 80 of every app) on `listener` until `stop`.
    pub async fn serve_http(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        self.serve_on_workers(listener, stop, None).await;
    }

    /// Serves a shared listener from `workers` threads, each accepting on it with a
    /// single-threaded runtime of its own, as nginx's worker processes do: a request and
    /// its machine connection stay on one thread. Returns when every worker has drained.
    async fn serve_on_workers(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) {
        let workers = match self.config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(80);
        let mut queues = Vec::new();
        let mut finished = Vec::new();
        for number in 0..workers {
            let (queue, mut incoming) =
                tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
            let (done, wait) = tokio::sync::oneshot::channel::<()>();
            let (proxy, stop, tls) = (self.clone(), stop.clone(), tls.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("aloft-edge-{number}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            tracing::error!(error = %error, "a proxy worker cannot start");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let connections = tokio_util::task::TaskTracker::new();
                        while let Some((stream, client)) = incoming.recv().await {
                            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                                continue;
                            };
                            connections.spawn(proxy.clone().connection(
                                stream,
                                client,
                                local_port,
                                tls.clone(),
                                None,
                                stop.clone(),
                            ));
                        }
                        connections.close();
                        connections.wait().await;
                    });
                    let _ = done.send(());
                });
            match spawned {
                Ok(_) => {
                    queues.push(queue);
                    finished.push(wait);
                }
                Err(error) => tracing::error!(error = %error, "a proxy worker cannot start"),
            }
        }
        if queues.is_empty() {
            return self.serve(listener, stop, tls, None).await;
        }
        // One acceptor hands connections to the workers in turn, so load spreads evenly.
        let mut turn = 0usize;
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, client)) = accepted else {
                continue;
            };
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let _ = queues[turn % queues.len()].send((stream, client));
            turn = turn.wrapping_add(1);
        }
        // No new connections; each worker drains its own and ends.
        drop(queues);
        for worker in finished {
            let _ = worker.await;
        }
    }

    /// Serves HTTPS (public port 443 of every app), certificates chosen by SNI.
    pub async fn serve_https(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        stop: CancellationToken,
    ) {
        let _ = self.tls.set(tls.clone());
        self.serve_on_workers(listener, stop, Some(tls)).await;
    }

    /// Ends TLS on a client connection with the settings of the route it is for: the
    /// port's `tls_options` (ALPN protocols, TLS versions) when the app (by SNI, or
    /// `fixed`) has any, else `base`.
    pub(crate) async fn accept_tls<S>(
        &self,
        stream: S,
        base: Arc<rustls::ServerConfig>,
        fixed: Option<&(String, u16)>,
    ) -> Option<(tokio_rustls::server::TlsStream<S>, Option<(String, u16)>)>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await
                .ok()?;
        let route_key = match fixed {
            Some((app, port)) => Some((app.clone(), *port)),
            None => start
                .client_hello()
                .server_name()
                .and_then(|name| self.routes().app_for_host(name, &self.config.apps_domain))
                .map(|app| (app, 443)),
        };
        let options = route_key.as_ref().and_then(|(app, port)| {
            self.routes()
                .route(app, *port)
                .and_then(|r| r.tls_options.clone())
        });
        let config = match options {
            Some(options) if !options.alpn.is_empty() || !options.versions.is_empty() => {
                self.tls_config_with(&base, &options)
            }
            _ => base,
        };
        let stream = start.into_stream(config).await.ok()?;
        Some((stream, route_key))
    }

    /// `base` with a port's ALPN protocols and TLS versions, made once per set.
    fn tls_config_with(
        &self,
        base: &Arc<rustls::ServerConfig>,
        options: &TlsOptions,
    ) -> Arc<rustls::ServerConfig> {
        let key = (options.alpn.clone(), options.versions.clone());
        if let Ok(cache) = self.tls_variants.lock()
            && let Some(config) = cache.get(&key)
        {
            return config.clone();
        }
        match crate::tls::server_config_with(
            base.cert_resolver.clone(),
            &options.alpn,
            &options.versions,
        ) {
            Ok(config) => {
                let config = Arc::new(config);
                if let Ok(mut cache) = self.tls_variants.lock() {
                    cache.insert(key, config.clone());
                }
                config
            }
            Err(error) => {
                tracing::warn!(error = %error, ?options, "tls_options cannot be honoured; using the defaults");
                base.clone()
            }
        }
    }

    /// Serves HTTP on `listener`: by `Host` for every app, or for one app's public port
    /// when `fixed` (an app's own address).
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
        tls: Option<Arc<rustls::ServerConfig>>,
        fixed: Option<(String, u16)>,
    ) {
        let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(80);
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, client)) = accepted else {
                continue;
            };
            connections.spawn(self.clone().connection(
                stream,
                client,
                local_port,
                tls.clone(),
                fixed.clone(),
                stop.clone(),
            ));
        }
        // Stopped: no new connections; those open finish their requests (up to the drain
        // timeout each) and close.
        connections.close();
        connections.wait().await;
    }

    /// Serves one client connection: TLS first when `tls`, then HTTP/1.1 or HTTP/2.
    async fn connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        client: SocketAddr,
        local_port: u16,
        tls: Option<Arc<rustls::ServerConfig>>,
        fixed: Option<(String, u16)>,
        stop: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let _open = OpenConnection::new(&self.metrics.open_connections);
        let activity = Activity::new(DEFAULT_IDLE_TIMEOUT);
        let stream = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        let drain = self.config.drain_timeout;
        let secure = tls.is_some();
        // The route's timeouts, when the connection's app is known before its first
        // request: an app's own address, or the TLS server name.
        let (stream, known): (Box<dyn ClientStream>, Option<(String, u16)>) = match tls {
            None => (Box::new(stream), fixed.clone()),
            Some(base) => {
                let handshake = tokio::time::timeout(
                    TLS_HANDSHAKE_TIMEOUT,
                    self.accept_tls(stream, base, fixed.as_ref()),
                )
                .await;
                let Ok(Some((stream, known))) = handshake else {
                    return;
                };
                (Box::new(stream), known)
            }
        };
        let options = known.as_ref().and_then(|(app, port)| {
            self.routes()
                .route(app, *port)
                .and_then(|r| r.http_options.clone())
        });
        if let Some(seconds) = options.as_ref().and_then(|o| o.idle_timeout) {
            activity.set_limit_seconds(seconds);
        }
        let headers_read = options
            .as_ref()
            .and_then(|o| o.headers_read_timeout)
            .map_or(HEADER_READ_TIMEOUT, |s| {
                Duration::from_secs(u64::from(s.max(1)))
            });
        let proxy = self.clone();
        let counting = activity.clone();
        let service = hyper::service::service_fn(move |request| {
            let proxy = proxy.clone();
            let fixed = fixed.clone();
            let counting = counting.clone();
            async move {
                counting
                    .in_flight
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let response = proxy
                    .handle_for(request, client, local_port, secure, fixed, Some(&counting))
                    .await;
                counting
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(headers_read);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        drive(connection, &stop, drain, &activity).await;
    }

    /// Answers one request that arrived on a shared listener (`tls`: the HTTPS one).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
        local_port: u16,
        tls: bool,
    ) -> Response<ProxyBody> {
        self.handle_for(request, client, local_port, tls, None, None)
            .await
    }

    /// Answers one request: for the app its `Host` names, or for `fixed` (an app and its
    /// public port) on an app's own address.
    async fn handle_for(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
        local_port: u16,
        tls: bool,
        fixed: Option<(String, u16)>,
        activity: Option<&Activity>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = request_id_at(&self.config.region, started);
        let handler = match (&fixed, tls) {
            (Some(_), _) => "app_address",
            (None, true) => "https",
            (None, false) => "http",
        };
        let mut seen = Seen::default();
        let mut response = self
            .route(request, client, local_port, tls, fixed, &mut seen)
            .await;
        let Seen {
            options,
            app,
            idle_timeout,
        } = seen;
        if let (Some(activity), Some(seconds)) = (activity, idle_timeout) {
            activity.set_limit_seconds(seconds);
        }
        if let Some(app) = &app {
            self.metrics
                .request(app, response.status().as_u16(), handler, started.elapsed());
        }
        let headers = response.headers_mut();
        if !options.as_ref().and_then(|o| o.pristine).unwrap_or(false) {
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                headers.insert(FLY_REQUEST_ID, value);
            }
            headers.append(header::VIA, VIA_ALOFT);
            headers.insert(header::SERVER, HeaderValue::from_static("Aloft/1"));
        }
        if let Some(options) = &options {
            apply_response_headers(headers, options);
        }
        response
    }

    async fn route(
        &self,
        mut request: Request<Incoming>,
        client: SocketAddr,
        local_port: u16,
        tls: bool,
        fixed: Option<(String, u16)>,
        seen: &mut Seen,
    ) -> Response<ProxyBody> {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let (app, public_port) = match fixed {
            Some(fixed) => fixed,
            None => {
                let Some(app) = self.routes().app_for_host(&host, &self.config.apps_domain) else {
                    return text(
                        StatusCode::NOT_FOUND,
                        format!(
                            "no app answers at {host:?}: apps answer at <app>.{} and at hostnames added with `aloft certs add`\n",
                            self.config.apps_domain
                        ),
                    );
                };
                (app, if tls { 443 } else { 80 })
            }
        };
        let routes = self.routes();
        if !routes.has_app(&app) {
            return text(StatusCode::NOT_FOUND, format!("there is no app {app}\n"));
        }
        seen.app = Some(app.clone());
        let Some(route) = routes.route(&app, public_port) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("app {app} has no service on port {public_port}\n"),
            );
        };
        seen.options.clone_from(&route.response);
        seen.idle_timeout = route.http_options.as_ref().and_then(|o| o.idle_timeout);
        if !route.handlers.contains(&Handler::Http) {
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                format!("app {app}'s port {public_port} does not speak HTTP\n"),
            );
        }
        if route.force_https && !tls {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let name = host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n);
            let mut response = text(StatusCode::MOVED_PERMANENTLY, String::new());
            let authority = aloft_types::https_authority(name, self.config.public_https_port);
            if let Ok(location) = HeaderValue::from_str(&format!("https://{authority}{path}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            return response;
        }
        let backends = match self.started_backends(&app, public_port, route).await {
            Ok(backends) => backends,
            Err(response) => return response,
        };
        // An upgrade (WebSocket, say) keeps its two headers and becomes a tunnel on 101.
        let upgrade = wants_upgrade(request.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let choice = match Choice::of(request.headers(), backends, &self.config.region) {
            Ok(choice) => Choice {
                h2_backend: route.h2_backend(),
                ..choice
            },
            Err(why) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("app {app}: {why}\n"),
                );
            }
        };
        self.forwarded_headers(request.headers_mut(), &host, client, local_port, tls);
        if let Some(protocol) = &upgrade {
            let headers = request.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        let (parts, body) = request.into_parts();
        // A body of known size up to 1 MiB is read first: the request can then be sent again
        // (to another machine when one refuses the connection, or by fly-replay).
        let mut body = if upgrade.is_none() && buffers(&parts.headers, &body) {
            match body.collect().await {
                Ok(collected) => OutgoingBody::Buffered(collected.to_bytes()),
                Err(error) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("reading the request body failed: {error}\n"),
                    );
                }
            }
        } else {
            OutgoingBody::Streaming(Some(body.map_err(BoxError::from).boxed()))
        };
        let (response, lease, backend) = match self
            .send(&app, &choice, &parts, &mut body, self.config.queue_timeout)
            .await
        {
            Ok(sent) => sent,
            Err(failure) => return failure.into_response(&app),
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return tunnel(response, client_upgrade, lease, backend.machine);
        }
        let mut response = response;
        let mut lease = lease;
        let mut backend = backend;
        for _ in 0..MAX_REPLAYS {
            let replay = match replay_of(response).await {
                Ok(Ok(replay)) => replay,
                Ok(Err(answered)) => {
                    response = answered;
                    break;
                }
                Err(bad) => {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "machine {} of app {app} asked for a replay the proxy cannot read: {bad}\n",
                            backend.machine
                        ),
                    );
                }
            };
            let OutgoingBody::Buffered(_) = &body else {
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "machine {} of app {app} asked for a replay, but only requests with a body of known size up to {MAX_REPLAY_BODY} bytes can be replayed\n",
                        backend.machine
                    ),
                );
            };
            drop(lease);
            match self
                .replay(&app, public_port, &backend, &replay, &parts, &mut body)
                .await
            {
                Ok((next, next_lease, next_backend)) => {
                    (response, lease, backend) = (next, next_lease, next_backend);
                }
                Err(failed) => return failed,
            }
        }
        let (mut parts, body) = response.into_parts();
        for name in &HOP_BY_HOP {
            parts.headers.remove(name);
        }
        let body = Leased {
            inner: body,
            held: lease,
            ended: false,
        };
        Response::from_parts(parts, body.map_err(BoxError::from).boxed())
    }

    /// The machines that can take a request for `route` now, starting one (autostart) and
    /// waiting for it when none is started.
    pub(crate) async fn started_backends(
        &self,
        app: &str,
        port: u16,
        route: &Route,
    ) -> Result<Vec<Backend>, Response<ProxyBody>> {
        // Autostart: when every started machine is at its soft limit (or none is started),
        // a stopped one starts; a request with no machine at all waits for it.
        let backends = route.backends.clone();
        let saturated = backends
            .iter()
            .all(|b| self.loads.load(&b.machine) >= b.soft_limit);
        let waking = saturated && !route.sleepers.is_empty() && self.wake(app, route);
        if !backends.is_empty() {
            return Ok(backends);
        }
        if !waking {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("app {app} has no started machine to take the request\n"),
            ));
        }
        let deadline = tokio::time::Instant::now() + self.config.start_timeout;
        let backends = self.backends_after_start(app, port, deadline).await;
        let backends = self.listening(backends, deadline).await;
        if backends.is_empty() {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "app {app}: a machine was started for this request but took no traffic within {:?}\n",
                    self.config.start_timeout
                ),
            ));
        }
        Ok(backends)
    }

    /// Sends the request to a machine `choice` allows: least-loaded, nearest first, waiting
    /// up to `queue` for one under its hard limit. A machine that refuses the connection
    /// is left for another when the body can be sent again.
    async fn send(
        &self,
        app: &str,
        choice: &Choice,
        parts: &http::request::Parts,
        body: &mut OutgoingBody,
        queue: Duration,
    ) -> Result<(Response<Incoming>, Held, Backend), SendFailure> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut failed: Vec<Arc<str>> = Vec::new();
        let attempts = if matches!(body, OutgoingBody::Buffered(_)) {
            3
        } else {
            1
        };
        for attempt in 0..attempts {
            // The clock is read only when the request has to wait.
            let mut picked = self.pick(choice, &failed, Duration::ZERO).await;
            let mut waited = Duration::ZERO;
            if picked.is_none() && attempt == 0 && !queue.is_zero() {
                let since = Instant::now();
                picked = self.pick(choice, &failed, queue).await;
                waited = since.elapsed();
            }
            if let Some((backend, _)) = &picked {
                self.metrics.queued(app, &backend.machine, waited);
            }
            let Some((backend, lease)) = picked else {
                return Err(if failed.is_empty() {
                    SendFailure::Full(queue)
                } else {
                    SendFailure::Refused(failed)
                });
            };
            let mut outgoing = Request::new(body.take());
            *outgoing.method_mut() = parts.method.clone();
            *outgoing.headers_mut() = parts.headers.clone();
            let asked = Instant::now();
            let sent = if choice.h2_backend {
                let target = format!("http://[{}]:{}{path}", backend.address, backend.port);
                let Ok(uri) = target.parse::<Uri>() else {
                    return Err(SendFailure::BadPath(path.to_owned()));
                };
                *outgoing.uri_mut() = uri;
                // HTTP/2's :authority names the machine the pool connects to; the client's
                // host goes along as X-Forwarded-Host.
                *outgoing.version_mut() = http::Version::HTTP_2;
                if let Some(host) = parts.headers.get(header::HOST).cloned() {
                    outgoing
                        .headers_mut()
                        .insert(HeaderName::from_static("x-forwarded-host"), host);
                }
                self.http2_client()
                    .request(outgoing)
                    .await
                    .map(|response| (response, None))
                    .map_err(|error| (error.is_connect(), error.to_string()))
            } else {
                // Origin-form, as HTTP/1.1 sends it; the connection names the machine.
                if let Some(path) = parts.uri.path_and_query() {
                    *outgoing.uri_mut() = Uri::from(path.clone());
                }
                let address = SocketAddr::new(backend.address.into(), backend.port);
                crate::pool::send(
                    self.pool_id(),
                    self.config.namespace.as_deref(),
                    address,
                    outgoing,
                )
                .await
                .map(|(response, checkin)| (response, Some(checkin)))
                .map_err(|error| {
                    (
                        matches!(error, crate::pool::SendError::Connect(_)),
                        error.to_string(),
                    )
                })
            };
            match sent {
                Ok((response, checkin)) => {
                    self.metrics.app_time(app, asked.elapsed());
                    return Ok((
                        response,
                        Held {
                            _lease: lease,
                            checkin,
                        },
                        backend,
                    ));
                }
                Err((true, error)) if attempt + 1 < attempts => {
                    tracing::debug!(machine = %backend.machine, %error, "connecting failed; trying another machine");
                    failed.push(backend.machine.clone());
                }
                // A machine that closed the connection before any answer (stopped by a
                // deploy while the request was on its way, or a kept-alive connection it
                // had just closed): an idempotent request goes to another one, as nginx's
                // `proxy_next_upstream error` does.
                Err((false, error)) if attempt + 1 < attempts && idempotent(&parts.method) => {
                    tracing::debug!(machine = %backend.machine, %error, "no answer; trying another machine");
                    failed.push(backend.machine.clone());
                }
                Err((connect, error)) => {
                    tracing::debug!(machine = %backend.machine, %error, "forwarding failed");
                    if connect {
                        failed.push(backend.machine.clone());
                        return Err(SendFailure::Refused(failed));
                    }
                    return Err(SendFailure::NoAnswer(backend.machine));
                }
            }
        }
        Err(SendFailure::Refused(failed))
    }

    /// A machine for one more request: the preferred instance when it has room, then the
    /// preferred (or the edge's) regions, then any other; waits up to `queue` when every
    /// machine is at its hard limit.
    pub(crate) async fn pick(
        &self,
        choice: &Choice,
        failed: &[Arc<str>],
        queue: Duration,
    ) -> Option<(Backend, Lease)> {
        let open = |b: &Backend| !failed.contains(&b.machine);
        let backends = &choice.backends;
        let preferred = self.loads.try_pick_where(backends, |b| {
            open(b) && choice.preferred_instance.as_deref() == Some(&*b.machine)
        });
        if let Some(picked) = preferred {
            return Some(picked);
        }
        // The preferred (or the edge's own) regions first; then the other regions, closest
        // first: a region is used only when every closer one is full or has no machine.
        if let Some(picked) = self
            .loads
            .try_pick_where(backends, |b| open(b) && choice.in_regions(&b.region))
        {
            return Some(picked);
        }
        let mut others: Vec<&str> = backends
            .iter()
            .map(|b| &*b.region)
            .filter(|r| !choice.regions.iter().any(|p| p == r))
            .collect();
        others.sort_by_key(|r| (self.config.distance_to(r), *r));
        others.dedup();
        for region in others {
            if let Some(picked) = self
                .loads
                .try_pick_where(backends, |b| open(b) && &*b.region == region)
            {
                return Some(picked);
            }
        }
        if backends.iter().any(open) {
            self.loads.pick_where(backends, open, queue).await
        } else {
            None
        }
    }

    /// Delivers the request again where `replay` says, with `fly-replay-src`; when that
    /// fails, back to the asking machine with `fly-replay-failed` if the replay has a
    /// fallback, else an error for the client.
    async fn replay(
        &self,
        origin_app: &str,
        public_port: u16,
        origin: &Backend,
        replay: &Replay,
        parts: &http::request::Parts,
        body: &mut OutgoingBody,
    ) -> Result<(Response<Incoming>, Held, Backend), Response<ProxyBody>> {
        let started = Instant::now();
        let target_app = replay
            .app
            .as_deref()
            .unwrap_or(origin_app)
            .to_ascii_lowercase();
        let catalog = self.catalog.read().map(|c| c.clone()).unwrap_or_default();
        let network = |name: &str| {
            catalog
                .apps
                .iter()
                .find(|a| a.name == name)
                .map(|a| (a.org_id.clone(), a.network))
        };
        if network(&target_app).is_none() || network(&target_app) != network(origin_app) {
            return Err(text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "fly-replay from app {origin_app} to app {target_app}: no such app in its organization's network\n"
                ),
            ));
        }
        let routes = self.routes();
        let mut backends: Vec<Backend> = routes
            .route(&target_app, public_port)
            .map(|r| r.backends.clone())
            .unwrap_or_default();
        backends.retain(|b| {
            (replay.regions.is_empty() || replay.regions.iter().any(|r| *r == *b.region))
                && replay.instance.as_ref().is_none_or(|i| *b.machine == **i)
                && !(replay.elsewhere && b.machine == origin.machine)
        });
        let mut replayed = parts.clone();
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        if let Ok(value) = HeaderValue::from_str(&source_header(
            &origin.machine,
            &origin.region,
            micros,
            replay.state.as_deref(),
        )) {
            replayed
                .headers
                .insert(HeaderName::from_static("fly-replay-src"), value);
        }
        apply_transform(&mut replayed, &replay.transform);
        let reason = if backends.is_empty() {
            FailReason::NoCandidate
        } else {
            let choice = Choice {
                backends,
                h2_backend: routes
                    .route(&target_app, public_port)
                    .is_some_and(Route::h2_backend),
                preferred_instance: replay.prefer_instance.clone(),
                regions: vec![self.config.region.clone()],
            };
            let queue = replay.timeout.unwrap_or(self.config.queue_timeout);
            let sent = tokio::time::timeout(
                replay.timeout.unwrap_or(Duration::MAX),
                self.send(&target_app, &choice, &replayed, body, queue),
            )
            .await;
            match sent {
                Ok(Ok(sent)) => return Ok(sent),
                Ok(Err(_)) => FailReason::RetriesExhausted,
                Err(_) => FailReason::Timeout,
            }
        };
        let failed = failed_header(
            replay,
            &target_app,
            &origin.machine,
            reason,
            started.elapsed(),
        );
        tracing::debug!(app = %origin_app, %failed, "a replay failed");
        let Some(fallback) = replay.fallback else {
            return Err(text(
                StatusCode::BAD_GATEWAY,
                format!("fly-replay failed: {failed}\n"),
            ));
        };
        // Back to the machine that asked (or, for prefer_self, any of its app's).
        let mut back = parts.clone();
        if let Ok(value) = HeaderValue::from_str(&failed) {
            back.headers
                .insert(HeaderName::from_static("fly-replay-failed"), value);
        }
        let own: Vec<Backend> = routes
            .route(origin_app, public_port)
            .map(|r| r.backends.clone())
            .unwrap_or_default();
        let choice = Choice {
            h2_backend: routes
                .route(origin_app, public_port)
                .is_some_and(Route::h2_backend),
            backends: match fallback {
                Fallback::ForceSelf => vec![origin.clone()],
                Fallback::PreferSelf if own.is_empty() => vec![origin.clone()],
                Fallback::PreferSelf => own,
            },
            preferred_instance: Some(origin.machine.to_string()),
            regions: vec![self.config.region.clone()],
        };
        self.send(origin_app, &choice, &back, body, self.config.queue_timeout)
            .await
            .map_err(|failure| failure.into_response(origin_app))
    }

    /// Those of `backends` whose port accepts connections, waiting (until `deadline`) for
    /// at least one: a machine just started may not listen yet, and a request's body can
    /// be sent only once.
    async fn listening(
        &self,
        backends: Vec<Backend>,
        deadline: tokio::time::Instant,
    ) -> Vec<Backend> {
        let mut pause = Duration::from_millis(20);
        loop {
            let mut ready = Vec::new();
            for backend in &backends {
                let address = SocketAddr::new(backend.address.into(), backend.port);
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                let probe = aloft_net::netns::connect_tcp(
                    self.config.namespace.as_deref(),
                    address,
                    remaining.min(Duration::from_secs(1)),
                )
                .await;
                if probe.is_ok() {
                    ready.push(backend.clone());
                }
            }
            if !ready.is_empty() || tokio::time::Instant::now() + pause > deadline {
                return ready;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Fly's request headers, the original `Host`, and no hop-by-hop headers.
    fn forwarded_headers(
        &self,
        headers: &mut http::HeaderMap,
        host: &str,
        client: SocketAddr,
        local_port: u16,
        tls: bool,
    ) {
        // Headers the client's `Connection` names are hop-by-hop too (rare: parsed only
        // when present beyond the usual `keep-alive`/`close`).
        if let Some(named) = headers
            .get(header::CONNECTION)
            .and_then(|c| c.to_str().ok())
            .filter(|c| {
                c.split(',').any(|n| {
                    let n = n.trim();
                    !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close")
                })
            })
            .map(|c| {
                c.split(',')
                    .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                    .collect::<Vec<_>>()
            })
        {
            for name in named {
                headers.remove(name);
            }
        }
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        if let Ok(value) = HeaderValue::from_str(host) {
            headers.insert(header::HOST, value);
        }
        headers.remove(FLY_FORCE_INSTANCE_ID);
        headers.remove(FLY_PREFER_INSTANCE_ID);
        let client_ip = client.ip().to_canonical();
        let client_ip_value =
            HeaderValue::from_maybe_shared(Bytes::from(client_ip.to_string())).ok();
        let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) => {
                HeaderValue::from_maybe_shared(Bytes::from(format!("{earlier}, {client_ip}"))).ok()
            }
            None => client_ip_value.clone(),
        };
        let port = HeaderValue::from(local_port);
        if let Some(value) = client_ip_value {
            headers.insert(FLY_CLIENT_IP, value);
        }
        if let Some(value) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(FLY_FORWARDED_PORT, port.clone());
        headers.insert(X_FORWARDED_PORT, port);
        headers.insert(FLY_REGION, self.region_header.clone());
        let (proto, ssl) = if tls {
            ("https", "on")
        } else {
            ("http", "off")
        };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        headers.insert(X_FORWARDED_SSL, HeaderValue::from_static(ssl));
        headers.append(header::VIA, VIA_ALOFT);
    }
}

/// `http_options.response.headers`: `false` removes a header, a string sets it, a list
/// sets every value.
fn apply_response_headers(headers: &mut http::HeaderMap, options: &HttpResponseOptions) {
    for (name, rule) in &options.headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        match rule {
            ResponseHeader::Keep(false) => {
                headers.remove(&name);
            }
            ResponseHeader::Keep(true) => {}
            ResponseHeader::One(value) => {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(name, value);
                }
            }
            ResponseHeader::Many(values) => {
                headers.remove(&name);
                for value in values {
                    if let Ok(value) = HeaderValue::from_str(value) {
                        headers.append(name.clone(), value);
                    }
                }
            }
        }
    }
}

/// What routing learned about a request, for its response and metrics.
#[derive(Debug, Default)]
struct Seen {
    /// The route's `http_options.response`.
    options: Option<Arc<HttpResponseOptions>>,
    /// The app the request was for.
    app: Option<String>,
    /// The route's `http_options.idle_timeout` (seconds), for the client connection.
    idle_timeout: Option<u32>,
}

/// Where a request may go: its machines, the one it prefers, and the regions to try
/// first.
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub(crate) backends: Vec<Backend>,
    /// Speak HTTP/2 (prior knowledge) to the machine.
    pub(crate) h2_backend: bool,
    pub(crate) preferred_instance: Option<String>,
    /// Regions whose machines go before the others: the client's preferred regions, else
    /// the edge's own.
    pub(crate) regions: Vec<String>,
}

impl Choice {
    /// Whether `region` is one of the regions that go first.
    pub(crate) fn in_regions(&self, region: &str) -> bool {
        self.regions.iter().any(|r| r == region)
    }

    /// Reads the client's routing headers: `fly-force-instance-id` and
    /// `fly-force-region` narrow the machines (and fail when none is left),
    /// `fly-prefer-instance-id` and `fly-prefer-region` only reorder them.
    fn of(
        headers: &http::HeaderMap,
        mut backends: Vec<Backend>,
        edge_region: &str,
    ) -> Result<Choice, String> {
        let named = |name: &HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let list = |value: &str| -> Vec<String> {
            value
                .split(',')
                .map(|r| r.trim().to_ascii_lowercase())
                .filter(|r| !r.is_empty())
                .collect()
        };
        if let Some(forced) = named(&FLY_FORCE_INSTANCE_ID) {
            backends.retain(|b| &*b.machine == forced);
            if backends.is_empty() {
                return Err(format!("machine {forced} is not taking requests"));
            }
        }
        if let Some(forced) = named(&FLY_FORCE_REGION) {
            let regions = list(forced);
            backends.retain(|b| regions.iter().any(|r| *r == *b.region));
            if backends.is_empty() {
                return Err(format!("no machine in region {forced} is taking requests"));
            }
        }
        let regions = match named(&FLY_PREFER_REGION) {
            Some(preferred) => list(preferred),
            None => vec![edge_region.to_owned()],
        };
        Ok(Choice {
            backends,
            h2_backend: false,
            preferred_instance: named(&FLY_PREFER_INSTANCE_ID).map(str::to_owned),
            regions,
        })
    }
}

/// A request body on its way to a machine: read whole (it can be sent again) or streamed
/// (once).
enum OutgoingBody {
    Buffered(Bytes),
    Streaming(Option<ProxyBody>),
}

impl OutgoingBody {
    /// The body for one attempt.
    fn take(&mut self) -> ProxyBody {
        match self {
            OutgoingBody::Buffered(bytes) => http_body_util::Full::new(bytes.clone())
                .map_err(|never| match never {})
                .boxed(),
            OutgoingBody::Streaming(body) => body.take().unwrap_or_else(empty),
        }
    }
}

/// Whether a request's body is read before it is sent: none, or a length up to 1 MiB.
fn buffers(headers: &http::HeaderMap, body: &Incoming) -> bool {
    if body.is_end_stream() {
        return true;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|length| length <= MAX_REPLAY_BODY)
}

/// Methods that may be sent twice without harm (RFC 9110, 9.2.2).
fn idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

/// Why a request reached no machine.
#[derive(Debug)]
enum SendFailure {
    /// Every machine stayed at its hard limit for the whole wait.
    Full(Duration),
    /// These machines refused the connection.
    Refused(Vec<Arc<str>>),
    /// This machine took the connection and gave no answer.
    NoAnswer(Arc<str>),
    BadPath(String),
}

impl SendFailure {
    fn into_response(self, app: &str) -> Response<ProxyBody> {
        match self {
            SendFailure::Full(waited) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("every machine of app {app} is at its hard limit; waited {waited:?}\n"),
            ),
            SendFailure::Refused(machines) => text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "no machine of app {app} answered (tried {})\n",
                    machines.join(", ")
                ),
            ),
            SendFailure::NoAnswer(machine) => text(
                StatusCode::BAD_GATEWAY,
                format!("machine {machine} of app {app} did not answer\n"),
            ),
            SendFailure::BadPath(path) => {
                text(StatusCode::BAD_REQUEST, format!("bad path {path:?}\n"))
            }
        }
    }
}

/// Joins the client's and the machine's upgraded connections (a WebSocket, say); the
/// machine's lease is held until the tunnel closes.
fn tunnel(
    mut response: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    lease: Held,
    machine: Arc<str>,
) -> Response<ProxyBody> {
    let backend_upgrade = hyper::upgrade::on(&mut response);
    if let Some(client_upgrade) = client_upgrade {
        tokio::spawn(async move {
            let _lease = lease;
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((client_io, backend_io)) => {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(client_io),
                        &mut TokioIo::new(backend_io),
                    )
                    .await;
                }
                Err(error) => {
                    tracing::debug!(%machine, error = %error, "an upgrade failed");
                }
            }
        });
    }
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, empty())
}

/// The replay a machine's response asks for (`fly-replay` header or a replay JSON body);
/// the response itself when it asks for none; an error for a replay that cannot be read.
async fn replay_of(
    response: Response<Incoming>,
) -> Result<Result<Replay, Response<Incoming>>, String> {
    if let Some(value) = response.headers().get(FLY_REPLAY) {
        let value = value
            .to_str()
            .map_err(|_| "the fly-replay header is not text".to_owned())?;
        return parse_header(value).map(Ok);
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(REPLAY_JSON))
        });
    if !json {
        return Ok(Err(response));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_REPLAY_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the replay body: {e}"))?
        .to_bytes();
    parse_json(&body).map(Ok)
}

/// A replay's `transform`: a new path, headers removed and set.
fn apply_transform(parts: &mut http::request::Parts, transform: &Transform) {
    if let Some(path) = &transform.path
        && let Ok(uri) = path.parse::<Uri>()
    {
        parts.uri = uri;
    }
    for name in &transform.delete_headers {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            parts.headers.remove(name);
        }
    }
    for set in &transform.set_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(set.name.as_bytes()),
            HeaderValue::from_str(&set.value),
        ) {
            parts.headers.insert(name, value);
        }
    }
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` and `Upgrade: X`).
fn wants_upgrade(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asked
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// A machine's lease for one request, and the connection it went over (given back to the
/// pool when the response was read to its end).
#[derive(Debug)]
pub(crate) struct Held {
    _lease: Lease,
    checkin: Option<crate::pool::Checkin>,
}

/// A response body that holds its machine's lease until the last byte is sent.
struct Leased {
    inner: Incoming,
    held: Held,
    /// The body gave its last frame.
    ended: bool,
}

impl Drop for Leased {
    fn drop(&mut self) {
        // Read to the end: the connection can take the next request.
        if (self.ended || self.inner.is_end_stream())
            && let Some(checkin) = self.held.checkin.take()
        {
            checkin.release();
        }
    }
}

impl Body for Leased {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// An empty body.
fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A plain-text response made by the proxy itself.
fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 128 random bits for request ids: SplitMix64 per thread, seeded from the OS once
/// (ids must be unique, not secret; a system call per request cost more than the rest of
/// the id).
fn random_u128() -> u128 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_le_bytes(seed)
        });
    }
    let next = || {
        STATE.with(|state| {
            let value = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(value);
            let mut z = value;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    };
    (u128::from(next()) << 64) | u128::from(next())
}

/// `Fly-Request-Id`: a ULID (time-ordered, 26 Crockford base32 characters) and the region.
pub fn request_id(region: &str) -> String {
    request_id_at(region, Instant::now())
}

/// Milliseconds since the Unix epoch at `now`, from a wall-clock reading this thread takes
/// once a second (the wall clock is a system call on some virtual machines).
fn unix_millis(now: Instant) -> u128 {
    thread_local! {
        static BASE: std::cell::Cell<Option<(Instant, u128)>> = const { std::cell::Cell::new(None) };
    }
    BASE.with(|base| {
        let (at, millis) = match base.get() {
            Some((at, millis)) if now >= at && now.duration_since(at) < Duration::from_secs(1) => {
                (at, millis)
            }
            _ => {
                let millis = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                base.set(Some((now, millis)));
                (now, millis)
            }
        };
        millis + now.duration_since(at).as_millis()
    })
}

/// [`request_id`] for a request that arrived at `now`.
fn request_id_at(region: &str, now: Instant) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = unix_millis(now) & ((1 << 48) - 1);
    let value = (millis << 80) | (random_u128() & ((1 << 80) - 1));
    let mut text = String::with_capacity(26 + 1 + region.len());
    for index in (0..26).rev() {
        let digit = ((value >> (5 * index)) & 0x1f) as usize;
        text.push(char::from(ALPHABET[digit]));
    }
    text.push('-');
    text.push_str(region);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(region: &str, distances: &[(&str, &str, u32)]) -> ProxyConfig {
        ProxyConfig {
            apps_domain: "aloft.localhost".into(),
            public_https_port: 443,
            region: region.into(),
            namespace: None,
            queue_timeout: Duration::from_millis(10),
            drain_timeout: Duration::from_secs(1),
            start_timeout: Duration::from_secs(1),
            autostop_interval: Duration::from_secs(60),
            workers: 1,
            region_distances: distances
                .iter()
                .map(|(a, b, d)| ((*a).to_owned(), (*b).to_owned(), *d))
                .collect(),
        }
    }

    fn backend(machine: &str, region: &str) -> Backend {
        Backend {
            machine: Arc::from(machine),
            address: std::net::Ipv6Addr::LOCALHOST,
            port: 8080,
            region: Arc::from(region),
            soft_limit: 1,
            hard_limit: 1,
            kind: aloft_types::machine::ConcurrencyKind::Requests,
        }
    }

    #[tokio::test]
    async fn other_regions_take_requests_closest_first_only_when_the_own_is_full() {
        let proxy = Proxy::new(config("ams", &[("ams", "fra", 9), ("syd", "ams", 250)]));
        let choice = Choice {
            backends: vec![
                backend("s", "syd"),
                backend("x", "xyz"),
                backend("f", "fra"),
                backend("a", "ams"),
            ],
            h2_backend: false,
            preferred_instance: None,
            regions: vec!["ams".to_owned()],
        };
        let mut order = Vec::new();
        let mut leases = Vec::new();
        while let Some((backend, lease)) = proxy.pick(&choice, &[], Duration::ZERO).await {
            order.push(backend.machine.to_string());
            leases.push(lease);
        }
        // Own region, then by distance, unknown distance last.
        assert_eq!(order, ["a", "f", "s", "x"]);
        assert_eq!(proxy.config.distance_to("fra"), 9);
        assert_eq!(proxy.config.distance_to("syd"), 250);
        assert_eq!(proxy.config.distance_to("xyz"), u32::MAX);
    }

    #[test]
    fn request_ids_are_ulids_with_the_region() {
        let id = request_id("ams");
        let (ulid, region) = id.split_once('-').unwrap();
        assert_eq!((ulid.len(), region), (26, "ams"));
        assert!(
            ulid.bytes()
                .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
        );
        assert_ne!(request_id("ams"), id, "random part");
        // Unique across threads (each seeds its own generator).
        let other =
            std::thread::spawn(|| (0..10_000).map(|_| request_id("ams")).collect::<Vec<_>>());
        let mut all: std::collections::HashSet<String> =
            (0..10_000).map(|_| request_id("ams")).collect();
        all.extend(other.join().unwrap());
        assert_eq!(all.len(), 20_000);
    }
}
