//! `GET /metrics` of `aloftd server` (Prometheus' text format, for the operator's token):
//! every role's metrics on the API listener.
//!
//! - API: `aloft_api_requests_total{route,method,status}` (status class),
//!   `aloft_api_request_duration_seconds{route}`;
//! - agent: `aloft_machines{state}` (this host's), `aloft_machine_events_total{kind,status}`
//!   (exits, restarts, launches, ...), `aloft_image_pulls_total`,
//!   `aloft_image_pull_failures_total`;
//! - per machine, sampled every 15 s by each host's agent: `aloft_machine_cpu_seconds_total`,
//!   `aloft_machine_memory_bytes`, `aloft_machine_memory_limit_bytes`,
//!   `aloft_machine_network_receive_bytes_total`, `aloft_machine_network_transmit_bytes_total`,
//!   `aloft_machine_disk_read_bytes_total`, `aloft_machine_disk_write_bytes_total`, each
//!   `{app,machine,region}`;
//! - logs: `aloft_logs_lines_total`, `aloft_logs_stored_bytes`, `aloft_logs_segments`,
//!   `aloft_log_sink_sent_total{sink,kind}`, `aloft_log_sink_dropped_total`,
//!   `aloft_log_sink_failures_total`, `aloft_log_sink_lag_lines`;
//! - DNS: `aloft_dns_queries_total{type,handled}`, `aloft_dns_responses_total{rcode}`;
//! - the proxy's own (see `aloft_proxy::metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aloft_agent_api::ControlPlane as _;
use aloft_control::Control;
use aloft_proxy::metrics::{Histogram, escape};
use aloft_types::HostId;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// The API's request counts and latencies.
#[derive(Debug, Default)]
pub(crate) struct ApiMetrics {
    requests: Mutex<BTreeMap<(String, String, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

/// Axum middleware (a route layer, so the matched route is known): counts and times
/// every API request by its route template.
pub(crate) async fn track(
    State(metrics): State<Arc<ApiMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = format!("{}xx", response.status().as_u16() / 100);
    if let Ok(mut requests) = metrics.requests.lock() {
        *requests.entry((route.clone(), method, status)).or_default() += 1;
    }
    if let Ok(mut latency) = metrics.latency.lock() {
        latency.entry(route).or_default().observe(started.elapsed());
    }
    response
}

impl ApiMetrics {
    fn render(&self, out: &mut String) {
        out.push_str("# HELP aloft_api_requests_total API requests by route, method and status class.\n# TYPE aloft_api_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((route, method, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "aloft_api_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {count}",
                    escape(route)
                );
            }
        }
        out.push_str("# HELP aloft_api_request_duration_seconds API request latency by route.\n# TYPE aloft_api_request_duration_seconds histogram\n");
        if let Ok(latency) = self.latency.lock() {
            for (route, histogram) in latency.iter() {
                histogram.render(
                    out,
                    "aloft_api_request_duration_seconds",
                    &format!("route=\"{}\"", escape(route)),
                );
            }
        }
    }
}

/// Everything `/metrics` shows, rendered now.
pub(crate) struct Metrics {
    pub(crate) api: Arc<ApiMetrics>,
    pub(crate) control: Control,
    pub(crate) host: HostId,
    pub(crate) logs: aloft_logs::LogStore,
    pub(crate) edge: Arc<aloft_proxy::Proxy>,
    pub(crate) dns: Arc<aloft_dns::Resolver>,
    pub(crate) agent: Arc<aloft_agent::AgentCounters>,
}

impl Metrics {
    pub(crate) async fn render(&self) -> String {
        let mut out = self.edge.render_metrics();
        out.push_str(&self.dns.render_metrics());
        self.api.render(&mut out);
        out.push_str(
            "# HELP aloft_machines This host's machines by state.\n# TYPE aloft_machines gauge\n",
        );
        let gateway = self.control.gateway();
        if let Ok(machines) = gateway.machines(&self.host).await {
            let mut states: BTreeMap<String, u64> = BTreeMap::new();
            for machine in machines {
                *states.entry(machine.state.to_string()).or_default() += 1;
            }
            for (state, count) in states {
                let _ = writeln!(out, "aloft_machines{{state=\"{state}\"}} {count}");
            }
        }
        out.push_str("# HELP aloft_machine_events_total Machine events by kind and status (exits, restarts, launches).\n# TYPE aloft_machine_events_total counter\n");
        if let Ok(counts) = self.control.store().event_counts().await {
            for (kind, status, count) in counts {
                let _ = writeln!(
                    out,
                    "aloft_machine_events_total{{kind=\"{}\",status=\"{}\"}} {count}",
                    escape(&kind),
                    escape(&status)
                );
            }
        }
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP aloft_image_pulls_total Images pulled for machines (not already in the engine).\n# TYPE aloft_image_pulls_total counter\naloft_image_pulls_total {}\n\
             # HELP aloft_image_pull_failures_total Images that were neither in the engine nor pullable.\n# TYPE aloft_image_pull_failures_total counter\naloft_image_pull_failures_total {}",
            load(&self.agent.image_pulls),
            load(&self.agent.image_pull_failures)
        );
        self.control.render_machine_samples(&mut out);
        let stats = self.logs.stats();
        let _ = writeln!(
            out,
            "# HELP aloft_logs_lines_total Log lines stored since aloftd started.\n# TYPE aloft_logs_lines_total counter\naloft_logs_lines_total {}\n\
             # HELP aloft_logs_stored_bytes Bytes in the log store.\n# TYPE aloft_logs_stored_bytes gauge\naloft_logs_stored_bytes {}\n\
             # HELP aloft_logs_segments Segment files in the log store.\n# TYPE aloft_logs_segments gauge\naloft_logs_segments {}\n\
             # HELP aloft_logs_removed_segments_total Segments retention removed since aloftd started.\n# TYPE aloft_logs_removed_segments_total counter\naloft_logs_removed_segments_total {}",
            stats.appended, stats.bytes, stats.segments, stats.removed_segments
        );
        let sinks = self.control.shipping_stats().await;
        let series: [(&str, &str, &str); 4] = [
            (
                "aloft_log_sink_sent_total",
                "counter",
                "Lines a sink accepted.",
            ),
            (
                "aloft_log_sink_dropped_total",
                "counter",
                "Lines skipped because the sink fell too far behind.",
            ),
            (
                "aloft_log_sink_failures_total",
                "counter",
                "Failed deliveries (each retried).",
            ),
            (
                "aloft_log_sink_lag_lines",
                "gauge",
                "Lines stored but not delivered yet.",
            ),
        ];
        for (index, (name, kind, help)) in series.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (id, sink_kind, sent, dropped, failures, lag) in &sinks {
                let value = [sent, dropped, failures, lag][index];
                let _ = writeln!(
                    out,
                    "{name}{{sink=\"{}\",kind=\"{}\"}} {value}",
                    escape(id),
                    escape(sink_kind)
                );
            }
        }
        out
    }
}
