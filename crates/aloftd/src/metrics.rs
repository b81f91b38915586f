//! `GET /metrics` of `aloftd server` (Prometheus' text format, no token): every role's
//! metrics on the API listener.
//!
//! - API: `aloft_api_requests_total{route,method,status}` (status class),
//!   `aloft_api_request_duration_seconds{route}`;
//! - agent: `aloft_machines{state}` (this host's), `aloft_machine_events_total{kind,status}`
//!   (exits, restarts, launches, ...), `aloft_image_pulls_total`,
//!   `aloft_image_pull_failures_total`;
//! - per machine, sampled every 15 s: `aloft_machine_cpu_seconds_total`,
//!   `aloft_machine_memory_bytes`, `aloft_machine_memory_limit_bytes`,
//!   `aloft_machine_network_receive_bytes_total`, `aloft_machine_network_transmit_bytes_total`,
//!   `aloft_machine_disk_read_bytes_total`, `aloft_machine_disk_write_bytes_total`, each
//!   `{app,machine,region}`;
//! - logs: `aloft_logs_lines_total`, `aloft_logs_stored_bytes`, `aloft_logs_segments`,
//!   `aloft_log_sink_sent_total{sink,kind}`, `aloft_log_sink_dropped_total`,
//!   `aloft_log_sink_failures_total`, `aloft_log_sink_lag_lines`;
//! - DNS: `aloft_dns_queries_total{type,handled}`, `aloft_dns_responses_total{rcode}`;
//! - the proxy's own (see `aloft_proxy::metrics`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_agent_api::ControlPlane as _;
use aloft_control::{AgentGateway, Control};
use aloft_proxy::metrics::{Histogram, escape};
use aloft_runtime::{ContainerState, DockerRuntime, Runtime as _};
use aloft_types::{HostId, MachineState};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio_util::sync::CancellationToken;

/// How often machines' resource use is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(15);

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

/// One machine's resource use at its last sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Usage {
    app: String,
    region: String,
    cpu_nanos: u64,
    memory_bytes: u64,
    memory_limit_bytes: u64,
    disk_read_bytes: u64,
    disk_write_bytes: u64,
    receive_bytes: u64,
    transmit_bytes: u64,
}

/// The machines' last samples, by machine id.
#[derive(Debug, Default)]
pub(crate) struct MachineMetrics {
    usage: Mutex<BTreeMap<String, Usage>>,
}

/// `eth0`'s received and sent bytes in the network namespace of process `pid`.
fn interface_bytes(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with("eth0:"))?;
    let fields: Vec<u64> = line
        .split_once(':')?
        .1
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    Some((*fields.first()?, *fields.get(8)?))
}

/// Adds `labels` (`app="..",machine="..",region=".."`) to every sample of an app's
/// metrics page; comments (`# HELP`, `# TYPE`) are left out, since several machines'
/// pages are served as one.
fn relabel(text: &str, labels: &str, out: &mut String) {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        let (name, rest) = line.split_at(name_end);
        if name.is_empty() {
            continue;
        }
        match rest.strip_prefix('{') {
            Some(inner) => {
                let separator = if inner.trim_start().starts_with('}') {
                    ""
                } else {
                    ","
                };
                let _ = writeln!(out, "{name}{{{labels}{separator}{inner}");
            }
            None => {
                let _ = writeln!(out, "{name}{{{labels}}}{rest}");
            }
        }
    }
}

/// How long an app's metrics endpoint gets to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Samples the resource use of this host's started machines every 15 s until `stop`, and
/// scrapes the apps' own `[metrics]` endpoints (served per organization by the API).
pub(crate) async fn sample(
    runtime: DockerRuntime,
    control: Control,
    host: HostId,
    namespace: Option<std::path::PathBuf>,
    metrics: Arc<MachineMetrics>,
    stop: CancellationToken,
) {
    let gateway: AgentGateway = control.gateway();
    let mut apps: HashMap<aloft_types::AppId, (String, aloft_types::OrgId)> = HashMap::new();
    loop {
        let mut scraped: HashMap<aloft_types::OrgId, String> = HashMap::new();
        let mut seen = BTreeMap::new();
        if let Ok(machines) = gateway.machines(&host).await {
            for machine in machines.iter().filter(|m| m.state == MachineState::Started) {
                let labels = BTreeMap::from([(
                    aloft_agent::LABEL_MACHINE.to_owned(),
                    machine.id.to_string(),
                )]);
                let Ok(containers) = runtime.list(&labels).await else {
                    continue;
                };
                let Some(container) = containers
                    .into_iter()
                    .find(|c| c.state == ContainerState::Running)
                else {
                    continue;
                };
                let Ok(usage) = runtime.usage(&container.id).await else {
                    continue;
                };
                let (app, org) = match apps.get(&machine.app_id) {
                    Some(known) => known.clone(),
                    None => match control.store().app(&machine.app_id).await {
                        Ok(record) => {
                            let known = (record.name.to_string(), record.org_id.clone());
                            apps.insert(machine.app_id.clone(), known.clone());
                            known
                        }
                        Err(_) => continue,
                    },
                };
                if let (Some(endpoint), Some(address)) = (
                    machine.config.metrics.as_ref(),
                    machine
                        .private_ip
                        .as_deref()
                        .and_then(|ip| ip.parse::<std::net::Ipv6Addr>().ok()),
                ) {
                    match aloft_agent::checks::fetch_metrics(
                        address,
                        endpoint.port,
                        &endpoint.path,
                        namespace.as_deref(),
                        SCRAPE_TIMEOUT,
                    )
                    .await
                    {
                        Ok(text) => {
                            let labels = format!(
                                "app=\"{}\",machine=\"{}\",region=\"{}\"",
                                escape(&app),
                                escape(machine.id.as_str()),
                                escape(&machine.region)
                            );
                            relabel(&text, &labels, scraped.entry(org.clone()).or_default());
                        }
                        Err(error) => {
                            tracing::debug!(machine = %machine.id, %error, "scraping an app's metrics failed");
                        }
                    }
                }
                let (receive_bytes, transmit_bytes) =
                    container.pid.and_then(interface_bytes).unwrap_or((0, 0));
                seen.insert(
                    machine.id.to_string(),
                    Usage {
                        app,
                        region: machine.region.clone(),
                        cpu_nanos: usage.cpu_nanos,
                        memory_bytes: usage.memory_bytes,
                        memory_limit_bytes: usage.memory_limit_bytes,
                        disk_read_bytes: usage.disk_read_bytes,
                        disk_write_bytes: usage.disk_write_bytes,
                        receive_bytes,
                        transmit_bytes,
                    },
                );
            }
        }
        if let Ok(mut usage) = metrics.usage.lock() {
            *usage = seen;
        }
        control.set_app_metrics(scraped);
        tokio::select! {
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

impl MachineMetrics {
    fn render(&self, out: &mut String) {
        let Ok(usage) = self.usage.lock() else { return };
        type Field = fn(&Usage) -> f64;
        let series: [(&str, &str, &str, Field); 7] = [
            (
                "aloft_machine_cpu_seconds_total",
                "counter",
                "CPU time the machine used.",
                |u| u.cpu_nanos as f64 / 1e9,
            ),
            (
                "aloft_machine_memory_bytes",
                "gauge",
                "Memory the machine uses.",
                |u| u.memory_bytes as f64,
            ),
            (
                "aloft_machine_memory_limit_bytes",
                "gauge",
                "The machine's memory limit.",
                |u| u.memory_limit_bytes as f64,
            ),
            (
                "aloft_machine_network_receive_bytes_total",
                "counter",
                "Bytes the machine received on its private network interface.",
                |u| u.receive_bytes as f64,
            ),
            (
                "aloft_machine_network_transmit_bytes_total",
                "counter",
                "Bytes the machine sent on its private network interface.",
                |u| u.transmit_bytes as f64,
            ),
            (
                "aloft_machine_disk_read_bytes_total",
                "counter",
                "Bytes the machine read from block devices.",
                |u| u.disk_read_bytes as f64,
            ),
            (
                "aloft_machine_disk_write_bytes_total",
                "counter",
                "Bytes the machine wrote to block devices.",
                |u| u.disk_write_bytes as f64,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (machine, sample) in usage.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{app=\"{}\",machine=\"{}\",region=\"{}\"}} {}",
                    escape(&sample.app),
                    escape(machine),
                    escape(&sample.region),
                    value(sample)
                );
            }
        }
    }
}

/// Everything `/metrics` shows, rendered now.
pub(crate) struct Metrics {
    pub(crate) api: Arc<ApiMetrics>,
    pub(crate) machines: Arc<MachineMetrics>,
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
        self.machines.render(&mut out);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_samples_get_the_machines_labels() {
        let mut out = String::new();
        relabel(
            "# HELP x_total X.\n# TYPE x_total counter\nx_total 3\ny{kind=\"a\"} 1.5 1700000000\nz{} 2\n",
            "app=\"web\",machine=\"m1\",region=\"ams\"",
            &mut out,
        );
        assert_eq!(
            out,
            "x_total{app=\"web\",machine=\"m1\",region=\"ams\"} 3\n\
             y{app=\"web\",machine=\"m1\",region=\"ams\",kind=\"a\"} 1.5 1700000000\n\
             z{app=\"web\",machine=\"m1\",region=\"ams\"} 2\n"
        );
    }
}
