//! The sweep: every reconcile interval (and after a missed change), compare every
//! container the agent owns with the machines of this host; adopt the current ones,
//! remove orphans, and re-plumb the private network.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aloft_agent_api::{Command, Desired, MachineRecord};
use aloft_net::SixPn;
use aloft_runtime::{ContainerInfo, ContainerState, Runtime};

use super::{AgentError, Shared};
use crate::{LABEL_HOST, LABEL_INSTANCE, LABEL_MACHINE, error_chain};

impl<R: Runtime + 'static> Shared<R> {
    /// Compares every machine of this host, and every container the agent owns.
    pub(super) fn reconcile_all(self: &Arc<Self>) {
        let shared = self.clone();
        self.tasks.spawn(async move {
            if let Err(error) = shared.sweep().await {
                tracing::warn!(error = %error_chain(&error), "reconciling the host failed; will retry");
            }
        });
    }

    pub(super) async fn sweep(self: &Arc<Self>) -> Result<(), AgentError> {
        let as_of = std::time::Instant::now();
        let machines = self.gateway.machines(&self.config.host_id).await?;
        let known: HashMap<String, &MachineRecord> =
            machines.iter().map(|m| (m.id.to_string(), m)).collect();
        let ours = BTreeMap::from([(LABEL_HOST.to_owned(), self.config.host_id.to_string())]);
        for container in self.runtime.list(&ours).await? {
            let machine = container.labels.get(LABEL_MACHINE);
            let current = machine
                .and_then(|m| known.get(m))
                .is_some_and(|m| container.labels.get(LABEL_INSTANCE) == Some(&m.instance_id));
            let alive = machine.and_then(|m| known.get(m)).is_some();
            if !alive {
                tracing::info!(container = %container.name, "removing an orphan container");
                self.runtime.remove(&container.id).await?;
            } else if current && container.state == ContainerState::Running {
                if let Some(machine) = machine.and_then(|m| known.get(m)) {
                    self.watch(machine, None, &container);
                    if let Err(error) = self.plumb(machine, &container).await {
                        tracing::warn!(machine = %machine.id, error = %error_chain(&error), "re-plumbing the private network failed; will retry");
                    }
                }
            } else if !current {
                // An old version whose replacement the machine's own reconcile creates.
                if let Some(machine) = machine.and_then(|m| known.get(m)) {
                    self.spawn(machine.id.clone(), Command::Converge);
                }
            }
        }
        for machine in &machines {
            self.spawn(machine.id.clone(), Command::Converge);
        }
        self.prune_network(&machines, as_of).await?;
        Ok(())
    }

    /// Removes the private network's links and rules that no machine of this host needs.
    pub(super) async fn prune_network(
        &self,
        machines: &[MachineRecord],
        as_of: std::time::Instant,
    ) -> Result<(), AgentError> {
        let Some(network) = self.network.get() else {
            return Ok(());
        };
        let addresses: Vec<SixPn> = machines
            .iter()
            .filter(|m| m.desired != Desired::Destroyed)
            .filter_map(|m| m.private_ip.as_deref()?.parse().ok())
            .filter_map(SixPn::parse)
            .collect();
        network
            .prune(
                &addresses.iter().map(|a| a.network).collect(),
                &addresses.iter().map(|a| a.machine).collect(),
                as_of,
            )
            .await?;
        Ok(())
    }

    /// The machine's 6PN address: the one its record holds (every sweep asks, so no store
    /// read), else assigned now.
    pub(super) async fn address_of(&self, machine: &MachineRecord) -> Result<SixPn, AgentError> {
        if let Some(address) = machine
            .private_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .and_then(SixPn::parse)
        {
            return Ok(address);
        }
        Ok(self.gateway.private_address(&machine.id).await?)
    }

    /// Connects a running container to the private network (nothing when it is).
    pub(super) async fn plumb(
        &self,
        machine: &MachineRecord,
        container: &ContainerInfo,
    ) -> Result<(), AgentError> {
        let (Some(network), Some(pid)) = (self.network.get(), container.pid) else {
            return Ok(());
        };
        let address = self.address_of(machine).await?;
        network
            .attach(address, &aloft_net::netns::of_process(pid))
            .await?;
        Ok(())
    }
}
