//! The two directions between the control plane and host agents.
//!
//! - Agents learn their desired machines and report what they observe through an
//!   [`AgentGateway`]: the agent never writes the store itself.
//! - The control plane reaches an agent (to run a command in a machine) through the
//!   [`HostLink`] the agent registered.
//!
//! In `aloftd server` both run in one process and these are plain calls; across hosts the
//! same interfaces are carried over HTTP.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aloft_store::{Host, MachineRecord, Store};
use aloft_types::{AppName, HostId, MachineId, MachineState, Signal};
use tokio::sync::broadcast;

use crate::ApiError;
use crate::wire::ExecResponse;

/// What an agent should do about a machine beyond converging to its desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Compare the machine with its desired state and act.
    Converge,
    /// Stop with this signal and timeout (instead of the config's `stop_config`).
    Stop {
        signal: Option<Signal>,
        timeout: Option<Duration>,
    },
    /// Stop (as above), then start again.
    Restart {
        signal: Option<Signal>,
        timeout: Option<Duration>,
    },
    /// Deliver a signal to the main process.
    Signal(Signal),
}

/// A change the agents hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineChange {
    pub machine_id: MachineId,
    pub host_id: Option<HostId>,
    pub command: Command,
}

/// A boxed future, for object-safe async traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the control plane reaches one host's agent.
pub trait HostLink: Send + Sync {
    /// Runs `command` in `machine`'s main container.
    fn exec<'a>(
        &'a self,
        machine: &'a MachineRecord,
        command: Vec<String>,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResponse, String>>;

    /// The last `lines` lines `machine`'s newest container wrote (stdout and stderr, in
    /// order), also after it exited.
    fn last_lines<'a>(
        &'a self,
        machine: &'a MachineRecord,
        lines: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;

    /// Serves one SSH connection that arrived through the API's tunnel for `machine`,
    /// until it ends. The host's SSH server authenticates it.
    fn ssh<'a>(
        &'a self,
        machine: &'a MachineRecord,
        stream: Box<dyn SshStream>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// A byte stream carrying SSH (the upgraded API connection).
pub trait SshStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> SshStream for T {}

/// What a machine's SSH server trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTrust {
    pub org_id: aloft_types::OrgId,
    pub app: String,
    /// The organization's CA public keys (`ssh-ed25519 …`).
    pub authorities: Vec<String>,
    /// Any one of these in a certificate opens the machine.
    pub principals: Vec<String>,
}

/// What agents use to learn desired state and report observed state.
#[derive(Clone)]
pub struct AgentGateway {
    pub(crate) store: Store,
    pub(crate) secrets_key: crate::SecretsKey,
    pub(crate) changes: broadcast::Sender<MachineChange>,
    pub(crate) observed: broadcast::Sender<MachineId>,
    pub(crate) logs: Arc<std::sync::OnceLock<aloft_logs::LogStore>>,
}

impl std::fmt::Debug for AgentGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentGateway").finish_non_exhaustive()
    }
}

impl AgentGateway {
    /// Registers the host, or records its heartbeat.
    pub async fn heartbeat(&self, host: &Host) -> Result<(), ApiError> {
        Ok(self.store.upsert_host(host).await?)
    }

    /// The machines placed on `host` that are not destroyed yet.
    pub async fn machines(&self, host: &HostId) -> Result<Vec<MachineRecord>, ApiError> {
        Ok(self.store.machines_on_host(host).await?)
    }

    /// The machine's 6PN address (network, host and machine numbers), assigned on first use.
    pub async fn private_address(&self, id: &MachineId) -> Result<aloft_net::SixPn, ApiError> {
        crate::catalog::private_address(&self.store, id).await
    }

    /// The host's number in every private network.
    pub async fn host_number(&self, host: &HostId) -> Result<aloft_net::HostNumber, ApiError> {
        crate::catalog::host_number(&self.store, host).await
    }

    /// One machine, as it is now.
    pub async fn machine(&self, id: &MachineId) -> Result<MachineRecord, ApiError> {
        Ok(self.store.machine_by_id(id).await?)
    }

    /// What the SSH server trusts for `machine`: its organization's CA (none until the
    /// first certificate was issued) and the principals that open it.
    pub async fn ssh_trust(&self, machine: &MachineRecord) -> Result<SshTrust, ApiError> {
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

    /// Whether the token `id` of `org` exists and is neither revoked nor expired (a
    /// certificate stops working with its token).
    pub async fn token_active(&self, org: &aloft_types::OrgId, id: &str) -> Result<bool, ApiError> {
        let now = aloft_store::now_ms();
        Ok(self
            .store
            .list_tokens(org)
            .await?
            .iter()
            .any(|t| t.id.as_str() == id && t.is_active(now)))
    }

    /// The name of the app a machine belongs to (for `FLY_APP_NAME`).
    pub async fn app_name(&self, machine: &MachineRecord) -> Result<AppName, ApiError> {
        Ok(self.store.app(&machine.app_id).await?.name)
    }

    /// The app's secrets, decrypted, for the machine's environment and files.
    pub async fn secrets(
        &self,
        machine: &MachineRecord,
    ) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
        let mut values = std::collections::BTreeMap::new();
        for (name, sealed) in self.store.secret_ciphertexts(&machine.app_id).await? {
            values.insert(name, self.secrets_key.decrypt(&sealed)?);
        }
        Ok(values)
    }

    /// Records the state the agent observed. A transition the state machine does not allow
    /// is refused (and logged by the caller); the same state again is a no-op.
    pub async fn report_state(&self, id: &MachineId, state: MachineState) -> Result<(), ApiError> {
        let current = self.store.machine_by_id(id).await?;
        if current.state != state {
            self.store.set_machine_state(id, state).await?;
        }
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

    /// A machine whose process ended and that policy does not restart rests: its desired
    /// state becomes stopped until someone starts it.
    pub async fn rest(&self, id: &MachineId) -> Result<(), ApiError> {
        Ok(self
            .store
            .set_desired(id, aloft_store::Desired::Stopped)
            .await?)
    }

    /// Records an event the platform caused (`source: flyd`, Fly's spelling).
    pub async fn record_event(
        &self,
        id: &MachineId,
        kind: &str,
        status: &str,
        request: serde_json::Value,
    ) -> Result<(), ApiError> {
        self.store
            .append_event(id, kind, status, "flyd", &request)
            .await?;
        let text = crate::logs::event_text(kind, status, "flyd", &request);
        crate::logs::platform_line(&self.logs, &self.store, id, text).await;
        Ok(())
    }

    /// Replaces the machine's check results with a new run's (routing follows at once).
    pub async fn reset_checks(
        &self,
        id: &MachineId,
        records: &[aloft_store::CheckRecord],
    ) -> Result<(), ApiError> {
        self.store.replace_checks(id, records).await?;
        let _ = self.observed.send(id.clone());
        Ok(())
    }

    /// Records one check's result; `status_changed` republishes the catalog, which routing
    /// follows.
    pub async fn report_check(
        &self,
        record: &aloft_store::CheckRecord,
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
            crate::logs::platform_line(&self.logs, &self.store, &record.machine_id, text).await;
        }
        Ok(())
    }

    /// Changes as they are made (a lagging receiver should reconcile everything).
    pub fn subscribe(&self) -> broadcast::Receiver<MachineChange> {
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
