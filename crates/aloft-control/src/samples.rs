//! Every host's latest resource samples (`ControlPlane::report_samples`, every 15 s from
//! each agent): the `aloft_machine_*` series of `/metrics`, and the apps' own metrics
//! pages, labelled with app, machine and region, served per organization at
//! `/v1/orgs/{org}/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use aloft_agent_api::MachineSample;
use aloft_types::prometheus::escape;
use aloft_types::{HostId, OrgId};

/// A sample with what it is labelled with.
#[derive(Debug, Clone)]
pub(crate) struct Labelled {
    pub(crate) app: String,
    pub(crate) org: OrgId,
    pub(crate) region: String,
    pub(crate) sample: MachineSample,
}

/// The latest round of samples of each host.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    by_host: Mutex<BTreeMap<HostId, Vec<Labelled>>>,
}

impl Samples {
    /// Replaces `host`'s samples (its machines that stopped or moved drop out).
    pub(crate) fn replace(&self, host: &HostId, samples: Vec<Labelled>) {
        if let Ok(mut by_host) = self.by_host.lock() {
            by_host.insert(host.clone(), samples);
        }
    }

    /// The organization's apps' metrics pages, each sample labelled.
    pub(crate) fn org_metrics(&self, org: &OrgId) -> String {
        let mut out = String::new();
        let Ok(by_host) = self.by_host.lock() else {
            return out;
        };
        for labelled in by_host.values().flatten().filter(|l| &l.org == org) {
            if let Some(page) = &labelled.sample.app_metrics {
                relabel(page, &labels(labelled), &mut out);
            }
        }
        out
    }

    /// The `aloft_machine_*` series (Prometheus' text format).
    pub(crate) fn render(&self, out: &mut String) {
        let Ok(by_host) = self.by_host.lock() else {
            return;
        };
        type Field = fn(&MachineSample) -> f64;
        #[allow(clippy::cast_precision_loss, reason = "metrics are floats")]
        let series: [(&str, &str, &str, Field); 7] = [
            (
                "aloft_machine_cpu_seconds_total",
                "counter",
                "CPU time the machine used.",
                |s| s.cpu_nanos as f64 / 1e9,
            ),
            (
                "aloft_machine_memory_bytes",
                "gauge",
                "Memory the machine uses.",
                |s| s.memory_bytes as f64,
            ),
            (
                "aloft_machine_memory_limit_bytes",
                "gauge",
                "The machine's memory limit.",
                |s| s.memory_limit_bytes as f64,
            ),
            (
                "aloft_machine_network_receive_bytes_total",
                "counter",
                "Bytes the machine received on its private network interface.",
                |s| s.receive_bytes as f64,
            ),
            (
                "aloft_machine_network_transmit_bytes_total",
                "counter",
                "Bytes the machine sent on its private network interface.",
                |s| s.transmit_bytes as f64,
            ),
            (
                "aloft_machine_disk_read_bytes_total",
                "counter",
                "Bytes the machine read from block devices.",
                |s| s.disk_read_bytes as f64,
            ),
            (
                "aloft_machine_disk_write_bytes_total",
                "counter",
                "Bytes the machine wrote to block devices.",
                |s| s.disk_write_bytes as f64,
            ),
        ];
        let mut all: Vec<&Labelled> = by_host.values().flatten().collect();
        all.sort_by(|a, b| a.sample.machine_id.cmp(&b.sample.machine_id));
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for labelled in &all {
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {}",
                    labels(labelled),
                    value(&labelled.sample)
                );
            }
        }
    }
}

fn labels(labelled: &Labelled) -> String {
    format!(
        "app=\"{}\",machine=\"{}\",region=\"{}\"",
        escape(&labelled.app),
        escape(labelled.sample.machine_id.as_str()),
        escape(&labelled.region)
    )
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
