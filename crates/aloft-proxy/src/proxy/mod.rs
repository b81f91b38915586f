//! The HTTP side of the proxy: a shared listener routes by `Host` to `<app>.<apps_domain>`,
//! picks a machine and forwards the request over the private network with Fly's headers.

mod acme;
mod conn;
mod files;
mod fly_replay;
mod forward;
mod headers;
mod lease;
mod pick;
mod replay_cache;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aloft_types::catalog::Catalog;
use aloft_types::machine::TlsVersion;
use aloft_types::{CheckStatus, MachineState};
use http::header::HeaderValue;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::autoscale::{Lifecycle, Traffic};
use crate::balance::Loads;
use crate::metrics::{ProxyMetrics, escape};
use crate::routes::RouteTable;
use crate::tls::{Certificates, LocalCa};

pub use headers::request_id;
pub(crate) use pick::Choice;

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

pub use crate::body::{BoxError, ProxyBody};

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
    /// Makes connections to machines (each thread pools its own, see [`CLIENTS`]).
    connector: crate::connect::Connector,
    /// Starts and stops machines (autostart, autostop); none: neither happens.
    lifecycle: std::sync::OnceLock<Arc<dyn Lifecycle>>,
    /// Opens machines' files for `[[statics]]`; none: every request goes to the app.
    statics: std::sync::OnceLock<Arc<dyn crate::statics::Statics>>,
    /// Per app, the machine being started for requests and since when.
    waking: Mutex<HashMap<String, (String, Instant)>>,
    /// When each started machine was first seen started (a new one is not idle yet).
    started_at: Mutex<HashMap<String, Instant>>,
    /// The certificates of the HTTPS listener, for `tls` handlers on apps' own addresses.
    pub(crate) tls: std::sync::OnceLock<Arc<rustls::ServerConfig>>,
    /// Listeners on apps' own addresses, each stopped by its token.
    pub(crate) dedicated: Mutex<HashMap<SocketAddr, CancellationToken>>,
    /// UDP sockets on apps' own addresses, each stopped by its token.
    pub(crate) dedicated_udp: Mutex<HashMap<SocketAddr, CancellationToken>>,
    pub(crate) metrics: ProxyMetrics,
    /// The HTTPS listener's certificates and the CA that issues apps' hostnames theirs.
    certificates: std::sync::OnceLock<(Arc<Certificates>, Arc<LocalCa>)>,
    /// Apps' hostnames whose certificates are being served, with what they came from.
    served_names: Mutex<HashMap<String, Option<(String, String)>>>,
    /// TLS settings made for ports' `tls_options`, by ALPN list and versions.
    tls_variants: Mutex<HashMap<TlsKey, Arc<rustls::ServerConfig>>>,
    /// Replay decisions remembered (`replay_cache`, `fly-replay-cache`).
    replay_caches: replay_cache::ReplayCaches,
    /// ACME challenges answered for the control plane's orders.
    acme: RwLock<acme::Challenges>,
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
            statics: std::sync::OnceLock::new(),
            waking: Mutex::new(HashMap::new()),
            started_at: Mutex::new(HashMap::new()),
            tls: std::sync::OnceLock::new(),
            dedicated: Mutex::new(HashMap::new()),
            dedicated_udp: Mutex::new(HashMap::new()),
            metrics: ProxyMetrics::default(),
            tls_variants: Mutex::new(HashMap::new()),
            certificates: std::sync::OnceLock::new(),
            served_names: Mutex::new(HashMap::new()),
            replay_caches: replay_cache::ReplayCaches::default(),
            acme: RwLock::new(acme::Challenges::default()),
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

    /// Lets the proxy answer `[[statics]]` from machines' files.
    pub fn attach_statics(&self, statics: Arc<dyn crate::statics::Statics>) {
        let _ = self.statics.set(statics);
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
        self.follow_challenges(&catalog.acme_challenges);
        self.routes_changed.notify_waiters();
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
                proxy.listen_udp_on_app_addresses(&latest, &stop);
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = catalog.changed() => if changed.is_err() { return },
                }
            }
        })
    }

    /// Each app's requests by status class and latency buckets, counted since start.
    pub fn edge_counters(
        &self,
    ) -> std::collections::BTreeMap<String, aloft_types::history::EdgeCounters> {
        self.metrics.edge_counters()
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Backend;

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
            statics: Arc::from(Vec::new()),
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
