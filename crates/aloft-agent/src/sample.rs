//! Resource samples: every 15 s, each started machine's CPU, memory, disk and network
//! use, and its app's own `[metrics]` page, reported to the control plane as one round
//! per host (`ControlPlane::report_samples`).

use std::sync::Arc;
use std::time::Duration;

use aloft_agent_api::{MachineRecord, MachineSample};
use aloft_runtime::{ContainerInfo, ContainerState, Runtime};
use aloft_types::MachineState;

use crate::checks::{self, Route};
use crate::{LABEL_INSTANCE, Shared, error_chain};

/// How often machines are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// How long an app's metrics endpoint gets to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

impl<R: Runtime + 'static> Shared<R> {
    /// Samples and reports every [`SAMPLE_EVERY`] until the agent stops.
    pub(crate) async fn sample_forever(self: Arc<Self>) {
        loop {
            let round = self.sample_round().await;
            if let Err(error) = self
                .gateway
                .report_samples(&self.config.host_id, round)
                .await
            {
                tracing::debug!(error = %error_chain(&error), "reporting resource samples failed");
            }
            tokio::select! {
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
                () = self.stopping.cancelled() => return,
            }
        }
    }

    async fn sample_round(&self) -> Vec<MachineSample> {
        let Ok(machines) = self.gateway.machines(&self.config.host_id).await else {
            return Vec::new();
        };
        let mut round = Vec::new();
        for machine in machines.iter().filter(|m| m.state == MachineState::Started) {
            let Ok(containers) = self.containers_of(&machine.id).await else {
                continue;
            };
            let Some(container) = containers.into_iter().find(|c| {
                c.state == ContainerState::Running
                    && c.labels.get(LABEL_INSTANCE) == Some(&machine.instance_id)
            }) else {
                continue;
            };
            if let Some(sample) = self.sample(machine, &container).await {
                round.push(sample);
            }
        }
        round
    }

    async fn sample(
        &self,
        machine: &MachineRecord,
        container: &ContainerInfo,
    ) -> Option<MachineSample> {
        let usage = self.runtime.usage(&container.id).await.ok()?;
        let (receive_bytes, transmit_bytes) =
            container.pid.and_then(interface_bytes).unwrap_or((0, 0));
        Some(MachineSample {
            machine_id: machine.id.clone(),
            cpu_nanos: usage.cpu_nanos,
            memory_bytes: usage.memory_bytes,
            memory_limit_bytes: usage.memory_limit_bytes,
            disk_read_bytes: usage.disk_read_bytes,
            disk_write_bytes: usage.disk_write_bytes,
            receive_bytes,
            transmit_bytes,
            app_metrics: self.scrape(machine, container).await,
        })
    }

    /// The app's own metrics page, when it has a `[metrics]` endpoint that answers.
    async fn scrape(&self, machine: &MachineRecord, container: &ContainerInfo) -> Option<String> {
        let endpoint = machine.config.metrics.as_ref()?;
        let address = machine.private_ip.as_deref()?.parse().ok()?;
        let route = self.runtime.direct_ports(&container.id).map_or_else(
            || Route::Network(self.config.namespace().map(std::path::Path::to_owned)),
            Route::Direct,
        );
        match checks::fetch_metrics(
            address,
            endpoint.port,
            &endpoint.path,
            &route,
            SCRAPE_TIMEOUT,
        )
        .await
        {
            Ok(text) => Some(text),
            Err(error) => {
                tracing::debug!(machine = %machine.id, %error, "scraping an app's metrics failed");
                None
            }
        }
    }
}

/// `eth0`'s received and sent bytes in the network namespace of process `pid`.
fn interface_bytes(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    parse_interface_bytes(&text)
}

fn parse_interface_bytes(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.trim_start().starts_with("eth0:"))?;
    let fields: Vec<u64> = line
        .split_once(':')?
        .1
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    Some((*fields.first()?, *fields.get(8)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn eth0_counters_are_read_from_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  eth0:    1234      10    0    0    0     0          0         0     5678      20    0    0    0     0       0          0\n";
        assert_eq!(super::parse_interface_bytes(text), Some((1234, 5678)));
        assert_eq!(super::parse_interface_bytes("lo: 1 2 3"), None);
    }
}
