//! The proxy's Prometheus metrics, in the text exposition format:
//!
//! - `aloft_proxy_requests_total{app,status,handler}`: HTTP requests answered, by status
//!   class (`2xx`..`5xx`) and listener (`http`, `https`, `app_address`);
//! - `aloft_proxy_request_duration_seconds{app}`: histogram of the whole time at the edge;
//! - `aloft_proxy_app_duration_seconds{app}`: histogram of the time the machine took to
//!   answer (to the response's headers);
//! - `aloft_proxy_queue_duration_seconds{app,machine}`: histogram of the wait for a machine
//!   under its hard limit;
//! - `aloft_proxy_tcp_connections_total{app}`: connections passed through on apps' own
//!   addresses;
//! - `aloft_proxy_open_connections`: client connections open now;
//! - `aloft_proxy_machine_concurrency{app,machine}`: requests or connections in flight per
//!   machine now;
//! - `aloft_check_status{app,machine,check,status}`: 1 for each check's current status.
//!
//! Counters are kept per label set behind one lock each; rendering reads a snapshot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (the apps' short history reads them).
use aloft_types::history::LATENCY_BUCKETS as BUCKETS;
use aloft_types::history::{EdgeCounters, STATUS_CLASSES};

/// A latency histogram with the proxy's buckets (also used for the API's latency).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        let index = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[index] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of `name` with `labels`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let separator = if labels.is_empty() { "" } else { "," };
        for (index, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[index];
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

pub use aloft_types::prometheus::escape;

/// Which of an app's histograms.
type HistogramOf = fn(&AppStats) -> &Histogram;

/// One app's numbers.
#[derive(Debug, Default)]
struct AppStats {
    requests: BTreeMap<(&'static str, &'static str), u64>,
    edge: Histogram,
    app: Histogram,
    queue: BTreeMap<String, Histogram>,
    tcp: u64,
}

/// The proxy's counters and histograms, per app behind one lock (looked up without
/// allocating once an app has numbers).
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    apps: Mutex<BTreeMap<String, AppStats>>,
    pub(crate) open_connections: AtomicI64,
}

/// The class of an HTTP status: `2xx`, `4xx`...
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl ProxyMetrics {
    fn with_app(&self, app: &str, update: impl FnOnce(&mut AppStats)) {
        let Ok(mut apps) = self.apps.lock() else {
            return;
        };
        match apps.get_mut(app) {
            Some(stats) => update(stats),
            None => update(apps.entry(app.to_owned()).or_default()),
        }
    }

    /// One answered request: its status, listener and time at the edge.
    pub(crate) fn request(&self, app: &str, status: u16, handler: &'static str, took: Duration) {
        self.with_app(app, |stats| {
            *stats
                .requests
                .entry((status_class(status), handler))
                .or_default() += 1;
            stats.edge.observe(took);
        });
    }

    /// Each app's counters as they are now (requests by status class over every
    /// listener, and the edge's latency buckets), for the apps' short history.
    pub fn edge_counters(&self) -> BTreeMap<String, EdgeCounters> {
        let Ok(apps) = self.apps.lock() else {
            return BTreeMap::new();
        };
        apps.iter()
            .map(|(app, stats)| {
                let mut counters = EdgeCounters::default();
                for ((class, _), count) in &stats.requests {
                    if let Some(at) = STATUS_CLASSES.iter().position(|c| c == class) {
                        counters.requests[at] += count;
                    }
                }
                counters.latency = stats.edge.buckets;
                (app.clone(), counters)
            })
            .collect()
    }

    /// The time a machine took to answer a request's headers.
    pub(crate) fn app_time(&self, app: &str, took: Duration) {
        self.with_app(app, |stats| stats.app.observe(took));
    }

    /// The wait for a machine under its hard limit.
    pub(crate) fn queued(&self, app: &str, machine: &str, took: Duration) {
        self.with_app(app, |stats| match stats.queue.get_mut(machine) {
            Some(histogram) => histogram.observe(took),
            None => stats
                .queue
                .entry(machine.to_owned())
                .or_default()
                .observe(took),
        });
    }

    /// One TCP connection passed to a machine.
    pub(crate) fn tcp_connection(&self, app: &str) {
        self.with_app(app, |stats| stats.tcp += 1);
    }

    /// The exposition text; `gauges` adds what is read at scrape time.
    pub fn render(&self, gauges: &str) -> String {
        let mut out = String::new();
        let Ok(apps) = self.apps.lock() else {
            return out;
        };
        out.push_str("# HELP aloft_proxy_requests_total HTTP requests answered by the edge.\n");
        out.push_str("# TYPE aloft_proxy_requests_total counter\n");
        for (app, stats) in apps.iter() {
            for ((class, handler), count) in &stats.requests {
                let _ = writeln!(
                    out,
                    "aloft_proxy_requests_total{{app=\"{}\",status=\"{class}\",handler=\"{handler}\"}} {count}",
                    escape(app)
                );
            }
        }
        let histograms: [(&str, &str, HistogramOf); 2] = [
            (
                "aloft_proxy_request_duration_seconds",
                "Time from a request's arrival to its response's headers, at the edge.",
                |s| &s.edge,
            ),
            (
                "aloft_proxy_app_duration_seconds",
                "Time the machine took to answer a request's headers.",
                |s| &s.app,
            ),
        ];
        for (name, help, pick) in histograms {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (app, stats) in apps.iter() {
                let histogram = pick(stats);
                if histogram.count > 0 {
                    histogram.render(&mut out, name, &format!("app=\"{}\"", escape(app)));
                }
            }
        }
        out.push_str(
            "# HELP aloft_proxy_queue_duration_seconds Wait for a machine under its hard limit.\n",
        );
        out.push_str("# TYPE aloft_proxy_queue_duration_seconds histogram\n");
        for (app, stats) in apps.iter() {
            for (machine, histogram) in &stats.queue {
                histogram.render(
                    &mut out,
                    "aloft_proxy_queue_duration_seconds",
                    &format!("app=\"{}\",machine=\"{}\"", escape(app), escape(machine)),
                );
            }
        }
        out.push_str("# HELP aloft_proxy_tcp_connections_total TCP connections passed to machines on apps' own addresses.\n");
        out.push_str("# TYPE aloft_proxy_tcp_connections_total counter\n");
        for (app, stats) in apps.iter().filter(|(_, s)| s.tcp > 0) {
            let _ = writeln!(
                out,
                "aloft_proxy_tcp_connections_total{{app=\"{}\"}} {}",
                escape(app),
                stats.tcp
            );
        }
        out.push_str("# HELP aloft_proxy_open_connections Client connections open now.\n");
        out.push_str("# TYPE aloft_proxy_open_connections gauge\n");
        let _ = writeln!(
            out,
            "aloft_proxy_open_connections {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        out.push_str(gauges);
        out
    }
}

/// Counts a client connection as open until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection<'a>(&'a AtomicI64);

impl<'a> OpenConnection<'a> {
    pub(crate) fn new(open: &'a AtomicI64) -> OpenConnection<'a> {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(open)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_per_label_set() {
        let metrics = ProxyMetrics::default();
        metrics.request("web", 200, "http", Duration::from_millis(3));
        metrics.request("web", 204, "http", Duration::from_millis(30));
        metrics.request("web", 503, "https", Duration::from_secs(20));
        metrics.queued("web", "m1", Duration::from_millis(1));
        metrics.tcp_connection("db");
        let text = metrics.render("");
        for expected in [
            "aloft_proxy_requests_total{app=\"web\",status=\"2xx\",handler=\"http\"} 2",
            "aloft_proxy_requests_total{app=\"web\",status=\"5xx\",handler=\"https\"} 1",
            "aloft_proxy_request_duration_seconds_bucket{app=\"web\",le=\"0.005\"} 1",
            "aloft_proxy_request_duration_seconds_bucket{app=\"web\",le=\"0.05\"} 2",
            "aloft_proxy_request_duration_seconds_bucket{app=\"web\",le=\"10\"} 2",
            "aloft_proxy_request_duration_seconds_bucket{app=\"web\",le=\"+Inf\"} 3",
            "aloft_proxy_request_duration_seconds_count{app=\"web\"} 3",
            "aloft_proxy_queue_duration_seconds_count{app=\"web\",machine=\"m1\"} 1",
            "aloft_proxy_tcp_connections_total{app=\"db\"} 1",
            "aloft_proxy_open_connections 0",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
        assert_eq!(status_class(101), "1xx");
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
