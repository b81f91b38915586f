//! The sweep: every reconcile interval (and after a missed change), compare every
//! container the agent owns with the machines of this host; adopt the current ones,
//! remove orphans, and re-plumb the private network.

use std::collections::{BTreeMap, HashMap, HashSet};
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
        let containers = self.runtime.list(&self.ours()).await?;
        let housed = housed(&containers);
        for container in containers {
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
        self.prune_network(&machines, &housed, as_of).await?;
        Ok(())
    }

    /// The labels every container this agent owns carries.
    pub(super) fn ours(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(LABEL_HOST.to_owned(), self.config.host_id.to_string())])
    }

    /// Removes the private network's links and rules that no machine of this host needs:
    /// `housed` names the machines that still have a container here, whose links stay
    /// even when they are being destroyed.
    pub(super) async fn prune_network(
        &self,
        machines: &[MachineRecord],
        housed: &HashSet<String>,
        as_of: std::time::Instant,
    ) -> Result<(), AgentError> {
        let Some(network) = self.network.get() else {
            return Ok(());
        };
        let addresses = networked(machines, housed);
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

/// The machines named by the labels of `containers`.
pub(super) fn housed(containers: &[ContainerInfo]) -> HashSet<String> {
    containers
        .iter()
        .filter_map(|c| c.labels.get(LABEL_MACHINE).cloned())
        .collect()
}

/// The 6PN addresses whose links must stay: every machine not being destroyed, and every
/// one being destroyed whose container is still here. A machine marked destroyed may still
/// run (a deploy retires several blue machines at once, and each stops in turn), and its
/// link carries the requests in flight to it and the connection's last packets; taken
/// away early, a request on its way hangs with no answer and no reset.
fn networked(machines: &[MachineRecord], housed: &HashSet<String>) -> Vec<SixPn> {
    machines
        .iter()
        .filter(|m| m.desired != Desired::Destroyed || housed.contains(m.id.as_str()))
        .filter_map(|m| m.private_ip.as_deref()?.parse().ok())
        .filter_map(SixPn::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(number: u8, desired: Desired) -> MachineRecord {
        MachineRecord {
            id: aloft_types::MachineId::generate([0, 0, 0, 0, 0, 0, number]),
            app_id: aloft_types::AppId::generate([0; 16]),
            name: format!("m{number}"),
            region: "sim".to_owned(),
            host_id: None,
            state: aloft_types::MachineState::Started,
            desired,
            version: 1,
            instance_id: format!("i{number}"),
            private_ip: Some(format!("fdaa:0:1:0:1:0:{number:x}:2")),
            config: aloft_types::machine::MachineConfig::default(),
            cordoned: false,
            lease: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    /// A machine marked destroyed keeps its link while its container is here: a deploy
    /// marks several blue machines at once and they stop one after another.
    #[test]
    fn a_machine_being_destroyed_keeps_its_link_until_its_container_is_gone() {
        let machines = [
            machine(1, Desired::Started),
            machine(2, Desired::Destroyed),
            machine(3, Desired::Destroyed),
        ];
        let housed = HashSet::from([machines[1].id.to_string()]);
        let kept: Vec<u32> = networked(&machines, &housed)
            .iter()
            .map(|a| a.machine.get())
            .collect();
        assert_eq!(kept, [1, 2], "m3's container is gone, m2's is not");
        let none = networked(&machines, &HashSet::new());
        assert_eq!(none.len(), 1, "{none:?}");
    }
}
