//! Choosing a machine for a request: balancing by load within the nearest region that
//! has room, forced and preferred instances and regions, and starting a stopped machine
//! (autostart) or stopping idle ones (autostop).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aloft_types::machine::HttpResponseOptions;
use http::header::HeaderName;
use http::{Response, StatusCode};
use tokio_util::sync::CancellationToken;

use super::headers::{
    FLY_FORCE_INSTANCE_ID, FLY_FORCE_REGION, FLY_PREFER_INSTANCE_ID, FLY_PREFER_REGION,
};
use super::{Proxy, ProxyBody};
use crate::autoscale::{machines_to_stop, nearest};
use crate::balance::Lease;
use crate::body::text;
use crate::routes::{Backend, Route};

/// What routing learned about a request, for its response and metrics.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The route's `http_options.response`.
    pub(super) options: Option<Arc<HttpResponseOptions>>,
    /// The app the request was for.
    pub(super) app: Option<String>,
    /// The route's `http_options.idle_timeout` (seconds), for the client connection.
    pub(super) idle_timeout: Option<u32>,
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

/// Why a client's routing headers leave no machine to send its request to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum Unroutable {
    #[error("machine {0} is not taking requests")]
    Instance(String),
    #[error("no machine in region {0} is taking requests")]
    Region(String),
}

impl Choice {
    /// Whether `region` is one of the regions that go first.
    pub(crate) fn in_regions(&self, region: &str) -> bool {
        self.regions.iter().any(|r| r == region)
    }

    /// Reads the client's routing headers: `fly-force-instance-id` and
    /// `fly-force-region` narrow the machines (and fail when none is left),
    /// `fly-prefer-instance-id` and `fly-prefer-region` only reorder them.
    pub(super) fn of(
        headers: &http::HeaderMap,
        mut backends: Vec<Backend>,
        edge_region: &str,
    ) -> Result<Choice, Unroutable> {
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
                return Err(Unroutable::Instance(forced.to_owned()));
            }
        }
        if let Some(forced) = named(&FLY_FORCE_REGION) {
            let regions = list(forced);
            backends.retain(|b| regions.iter().any(|r| *r == *b.region));
            if backends.is_empty() {
                return Err(Unroutable::Region(forced.to_owned()));
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

impl Proxy {
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
    pub(super) fn wake(&self, app: &str, route: &Route) -> bool {
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
    pub(super) async fn backends_after_start(
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
}
