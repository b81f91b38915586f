//! The two directions between the control plane and host agents.
//!
//! - Agents learn their desired machines and report what they observe through the
//!   contract's [`ControlPlane`], which [`AgentGateway`] implements over the store: the
//!   agent never writes the store itself.
//! - The control plane reaches an agent (to run a command in a machine) through the
//!   [`HostLink`] the agent registered.
//!
//! Both traits live in `aloft-agent-api`. In `aloftd server` both run in one process and
//! these are plain calls; across hosts the same traits are carried over the network.

use std::sync::Arc;

use aloft_agent_api::{
    BoxFuture, CheckRecord, ControlError, ControlPlane, Host, HostLink, MachineChange,
    MachineRecord, MachineSample, SshTrust,
};
use aloft_store::Store;
use aloft_types::{AppName, EventKind, HostId, MachineId, MachineState, OrgId};
use tokio::sync::broadcast;

use crate::ApiError;

/// What agents use to learn desired state and report observed state.
#[derive(Clone)]
pub struct AgentGateway {
    pub(crate) store: Store,
    pub(crate) secrets_key: crate::SecretsKey,
    pub(crate) changes: broadcast::Sender<MachineChange>,
    pub(crate) observed: broadcast::Sender<MachineId>,
    pub(crate) logs: Option<aloft_logs::LogStore>,
    pub(crate) samples: Arc<crate::samples::Samples>,
    pub(crate) history: Arc<crate::history::History>,
}

impl std::fmt::Debug for AgentGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentGateway").finish_non_exhaustive()
    }
}

/// An [`ApiError`] as the contract's error.
fn contract(error: ApiError) -> ControlError {
    match error {
        ApiError::NotFound { what } => ControlError::NotFound(what),
        ApiError::BadRequest(why)
        | ApiError::Conflict(why)
        | ApiError::PreconditionFailed(why)
        | ApiError::Unprocessable(why)
        | ApiError::TooLarge(why)
        | ApiError::Forbidden(why)
        | ApiError::Unauthorized(why) => ControlError::Refused(why),
        ApiError::Timeout(why) | ApiError::Unavailable(why) => ControlError::Unavailable(why),
        ApiError::Internal(source) => {
            ControlError::Internal(aloft_agent_api::error_chain(source.as_ref()))
        }
    }
}

/// Runs one of the gateway's store calls as the contract's future.
fn call<'a, T: 'a>(
    work: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'a,
) -> BoxFuture<'a, Result<T, ControlError>> {
    Box::pin(async move { work.await.map_err(contract) })
}

impl AgentGateway {
    async fn ssh_trust_of(&self, machine: &MachineRecord) -> Result<SshTrust, ApiError> {
        let app = self.store.app(&machine.app_id).await?;
        let org = self.store.org(&app.org_id).await?;
        let authorities = self
            .store
            .ssh_authority(&org.id)
            .await?
            .map(|a| a.public_key)
            .into_iter()
            .collect();
        Ok(SshTrust {
            principals: vec![
                aloft_ssh::ca::org_principal(&org.slug),
                aloft_ssh::ca::app_principal(&org.slug, app.name.as_str()),
            ],
            authorities,
            org_id: org.id,
            app: app.name.to_string(),
        })
    }

    async fn secrets_of(
        &self,
        machine: &MachineRecord,
    ) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
        let mut values = std::collections::BTreeMap::new();
        for (name, sealed) in self.store.secret_ciphertexts(&machine.app_id).await? {
            values.insert(name, self.secrets_key.decrypt(&sealed)?);
        }
        Ok(values)
    }

    async fn report_state_of(&self, id: &MachineId, state: MachineState) -> Result<(), ApiError> {
        let current = self.store.machine_by_id(id).await?;
        let current = if current.state == state {
            current
        } else {
            self.store.move_machine(current, state).await?
        };
        if state == MachineState::Destroyed {
            // Its volume is free for another machine once the machine is gone.
            for mount in &current.config.mounts {
                if let Ok(volume) = mount.volume.parse() {
                    self.store.detach_volume(&current.app_id, &volume).await?;
                }
            }
        }
        let _ = self.observed.send(id.clone());
        Ok(())
    }

    async fn record_event_of(
        &self,
        id: &MachineId,
        kind: EventKind,
        status: &str,
        request: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.store
            .append_event(id, kind, status, "flyd", &request)
            .await?;
        let text = crate::logs::event_text(kind.as_str(), status, "flyd", &request);
        crate::logs::platform_line(self.logs.as_ref(), &self.store, id, text).await;
        Ok(())
    }

    /// Labels each sample with its machine's app, organization and region; a machine
    /// that is gone meanwhile is left out.
    async fn report_samples_of(
        &self,
        host: &HostId,
        samples: Vec<MachineSample>,
    ) -> Result<(), ApiError> {
        let mut apps: std::collections::HashMap<_, (String, OrgId)> =
            std::collections::HashMap::new();
        let mut labelled = Vec::with_capacity(samples.len());
        for sample in samples {
            let Ok(machine) = self.store.machine_by_id(&sample.machine_id).await else {
                continue;
            };
            let (app, org) = match apps.get(&machine.app_id) {
                Some(known) => known.clone(),
                None => {
                    let Ok(record) = self.store.app(&machine.app_id).await else {
                        continue;
                    };
                    let known = (record.name.to_string(), record.org_id.clone());
                    apps.insert(machine.app_id.clone(), known.clone());
                    known
                }
            };
            labelled.push(crate::samples::Labelled {
                app,
                org,
                region: machine.region,
                sample,
            });
        }
        let pairs: Vec<(String, MachineSample)> = labelled
            .iter()
            .map(|l| (l.app.clone(), l.sample.clone()))
            .collect();
        self.history.sampled(aloft_store::now_ms(), &pairs);
        self.samples.replace(host, labelled);
        Ok(())
    }

    async fn report_check_of(
        &self,
        record: &CheckRecord,
        status_changed: bool,
    ) -> Result<(), ApiError> {
        self.store.record_check(record).await?;
        if status_changed {
            let _ = self.observed.send(record.machine_id.clone());
            let text = format!(
                "health check {} is now {}: {}",
                record.name,
                record.status,
                record.output.trim()
            );
            crate::logs::platform_line(self.logs.as_ref(), &self.store, &record.machine_id, text)
                .await;
        }
        Ok(())
    }
}

impl ControlPlane for AgentGateway {
    fn heartbeat<'a>(&'a self, host: &'a Host) -> BoxFuture<'a, Result<(), ControlError>> {
        call(async move { Ok(self.store.upsert_host(host).await?) })
    }

    fn machines<'a>(
        &'a self,
        host: &'a HostId,
    ) -> BoxFuture<'a, Result<Vec<MachineRecord>, ControlError>> {
        call(async move { Ok(self.store.machines_on_host(host).await?) })
    }

    fn machine<'a>(
        &'a self,
        id: &'a MachineId,
    ) -> BoxFuture<'a, Result<MachineRecord, ControlError>> {
        call(async move { Ok(self.store.machine_by_id(id).await?) })
    }

    fn private_address<'a>(
        &'a self,
        id: &'a MachineId,
    ) -> BoxFuture<'a, Result<aloft_net::SixPn, ControlError>> {
        call(crate::catalog::private_address(&self.store, id))
    }

    fn host_number<'a>(
        &'a self,
        host: &'a HostId,
    ) -> BoxFuture<'a, Result<aloft_net::HostNumber, ControlError>> {
        call(crate::catalog::host_number(&self.store, host))
    }

    fn ssh_trust<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<SshTrust, ControlError>> {
        call(self.ssh_trust_of(machine))
    }

    fn token_active<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, ControlError>> {
        call(async move {
            let now = aloft_store::now_ms();
            Ok(self
                .store
                .list_tokens(org)
                .await?
                .iter()
                .any(|t| t.id.as_str() == id && t.is_active(now)))
        })
    }

    fn app_name<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<AppName, ControlError>> {
        call(async move { Ok(self.store.app(&machine.app_id).await?.name) })
    }

    fn secrets<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<std::collections::BTreeMap<String, String>, ControlError>> {
        call(self.secrets_of(machine))
    }

    fn volumes<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<
        'a,
        Result<std::collections::BTreeMap<String, aloft_agent_api::VolumeFacts>, ControlError>,
    > {
        call(async move {
            let mut facts = std::collections::BTreeMap::new();
            for mount in &machine.config.mounts {
                let Ok(id) = mount.volume.parse() else {
                    continue;
                };
                match self.store.volume(&machine.app_id, &id).await {
                    Ok(volume) => {
                        facts.insert(
                            mount.volume.clone(),
                            crate::volume_keys::facts_of(&self.secrets_key, &volume)?,
                        );
                    }
                    Err(aloft_store::StoreError::NotFound { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Ok(facts)
        })
    }

    fn report_state<'a>(
        &'a self,
        id: &'a MachineId,
        state: MachineState,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        call(self.report_state_of(id, state))
    }

    fn rest<'a>(
        &'a self,
        id: &'a MachineId,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<bool, ControlError>> {
        call(async move { Ok(self.store.rest_machine(id, instance).await?) })
    }

    fn record_event<'a>(
        &'a self,
        id: &'a MachineId,
        kind: EventKind,
        status: &'a str,
        request: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        call(self.record_event_of(id, kind, status, request))
    }

    fn reset_checks<'a>(
        &'a self,
        id: &'a MachineId,
        records: &'a [CheckRecord],
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        call(async move {
            self.store.replace_checks(id, records).await?;
            let _ = self.observed.send(id.clone());
            Ok(())
        })
    }

    fn report_check<'a>(
        &'a self,
        record: &'a CheckRecord,
        status_changed: bool,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        call(self.report_check_of(record, status_changed))
    }

    fn report_samples<'a>(
        &'a self,
        host: &'a HostId,
        samples: Vec<MachineSample>,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        call(self.report_samples_of(host, samples))
    }

    fn subscribe(&self) -> broadcast::Receiver<MachineChange> {
        self.changes.subscribe()
    }
}

/// The links to registered hosts.
#[derive(Default)]
pub(crate) struct Links {
    pub(crate) hosts: std::sync::RwLock<std::collections::HashMap<HostId, Arc<dyn HostLink>>>,
}

impl Links {
    pub(crate) fn get(&self, host: &HostId) -> Option<Arc<dyn HostLink>> {
        self.hosts.read().ok()?.get(host).cloned()
    }
}

/// Waits at most `most` for a change of `machine` reported by its agent (a state, a
/// check's status, its checks reset); missed reports (the channel lagged) count as one.
/// Waiters on one machine are not woken by the reports of every other machine.
pub(crate) async fn observed_change(
    observed: &mut broadcast::Receiver<MachineId>,
    machine: &MachineId,
    most: std::time::Duration,
) {
    let _ = tokio::time::timeout(most, async {
        loop {
            match observed.recv().await {
                Ok(id) if &id == machine => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                // Shutting down: nothing more will be reported.
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    })
    .await;
}
