//! The host agent: makes the machines placed on this host match their desired state.
//!
//! Invariants:
//! - The agent only touches containers labelled with its own host id; after a restart it
//!   adopts the ones that belong to a current machine version and removes the rest.
//! - Restarts follow the machine's policy (`no`, `always`, `on-failure` with
//!   `max_retries`) and are the agent's decision: the engine's own policy is off, and every
//!   exit is recorded as an event with its exit code, signal and OOM flag.
//! - The agent learns and reports through the control plane's [`ControlPlane`] (the contract in `aloft-agent-api`); it never
//!   writes the store itself.
//! - Stopping the agent leaves machines running; they are adopted when it comes back.
//!
//! Main types: [`Agent`], [`AgentConfig`], [`RuntimeLink`].
//!
//! Modules by job: `reconcile` (one machine to its desired state), `supervise` (each run
//! until it exits; restart policy), `sweep` (the periodic pass over every container),
//! `link` (the control plane's direct requests), `ssh`, `checks`, `logs`, `spec`.

pub mod checks;
pub mod env;
mod link;
mod logs;
mod ps;
mod reconcile;
mod sample;
mod sealed;
mod snapshots;
mod spec;
mod ssh;
mod statics;

use ssh::SshError;
mod supervise;
mod sweep;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use aloft_agent_api::{Command, ControlError, ControlPlane, Host, HostLink};
use aloft_net::HostNetwork;
use aloft_runtime::{ContainerInfo, Runtime, RuntimeError};
use aloft_types::{HostId, MachineId};
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use spec::{LABEL_HOST, LABEL_INSTANCE, LABEL_MACHINE, LABEL_MANAGED, container_spec};
use supervise::Ended;

pub use link::RuntimeLink;
pub use ssh::SshLimits;
pub use volumes::VolumeBacking;

/// How often the agent tells the control plane it is alive (at most its reconcile
/// interval): well inside the control plane's `host_down_after` (10 s by default).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Settings of one host's agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub host_id: HostId,
    pub region: String,
    /// Where machines' files and volumes live on this host.
    pub data_dir: PathBuf,
    pub cpus: i64,
    pub memory_mb: i64,
    /// How often everything is compared again, whatever notifications said.
    pub reconcile_interval: Duration,
    /// The private network this host plumbs; none: a simulated host (the sim suites),
    /// whose machines get no private network.
    pub network: Option<NetworkSettings>,
    /// Where every line the machines write is kept (none: not captured).
    pub logs: Option<aloft_logs::LogStore>,
    /// Counters the agent keeps for metrics.
    pub counters: Arc<AgentCounters>,
    /// The `aloftd` binary, run as `aloftd sftp-server` for SFTP sessions (none: no SFTP).
    pub helper: Option<PathBuf>,
    /// Where the SSH server listens on the host's private-network side (inside the
    /// network's namespace), e.g. `[fdaa::3]:22`; none: only through the API's tunnel.
    pub ssh_listen: Option<std::net::SocketAddr>,
    /// Caps on connections logging in to the SSH server, and how long they may take.
    pub ssh_limits: SshLimits,
    /// How volumes are kept: filesystems of their size (`aloftd`), or plain directories.
    pub volumes: VolumeBacking,
}

/// What the agent counts, for metrics.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Images pulled from a registry (not already in the engine).
    pub image_pulls: std::sync::atomic::AtomicU64,
    /// Images that could not be found locally or pulled.
    pub image_pull_failures: std::sync::atomic::AtomicU64,
}

impl AgentConfig {
    /// The namespace holding the host's side of the private network (none: the agent's
    /// own, or no network at all).
    pub fn namespace(&self) -> Option<&std::path::Path> {
        self.network.as_ref()?.namespace.as_deref()
    }
}

/// Where and how the agent plumbs the private network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// The network namespace holding the host's side (bridges, veths, `fdaa::3`, rules);
    /// `None`: the agent's own.
    pub namespace: Option<PathBuf>,
    /// MTU of bridges and machines' interfaces.
    pub mtu: u32,
    /// What machines may reach of the host on `fdaa::3` (DNS, SSH).
    pub served: aloft_net::firewall::Served,
    /// Machines' way to the internet; `None`: 6PN only.
    pub egress: Option<aloft_net::Egress>,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            namespace: None,
            mtu: aloft_net::DEFAULT_MTU,
            served: aloft_net::firewall::Served::default(),
            egress: None,
        }
    }
}

/// Restarts allowed by `on-failure` when the machine's config names no `max_retries`.
pub const DEFAULT_MAX_RETRIES: u32 = 10;

/// Stop timeout when the config names none (fly.toml's default `kill_timeout`).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("talking to the control plane")]
    Control(#[source] ControlError),
    #[error("the container runtime")]
    Runtime(#[source] RuntimeError),
    #[error("the private network")]
    Network(#[source] aloft_net::PlumbError),
    #[error("recording a container's start in {}", path.display())]
    StartIntent {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<aloft_net::PlumbError> for AgentError {
    fn from(error: aloft_net::PlumbError) -> Self {
        AgentError::Network(error)
    }
}

impl From<ControlError> for AgentError {
    fn from(error: ControlError) -> Self {
        AgentError::Control(error)
    }
}

impl From<RuntimeError> for AgentError {
    fn from(error: RuntimeError) -> Self {
        AgentError::Runtime(error)
    }
}

struct Shared<R> {
    runtime: R,
    gateway: Arc<dyn ControlPlane>,
    config: AgentConfig,
    /// One operation at a time per machine.
    locks: StdMutex<HashMap<MachineId, Arc<Mutex<()>>>>,
    /// Restarts made per instance (a new version starts from zero).
    restarts: StdMutex<HashMap<String, u32>>,
    /// Runs (container id and start time) whose exit is being waited for, each with the
    /// token that ends its checks.
    watched: StdMutex<HashMap<String, CancellationToken>>,
    /// Runs the agent is stopping itself: their exits are not crashes.
    requested_stops: StdMutex<HashSet<String>>,
    /// The latest runs whose exit was seen: a run in a stale listing is not watched again.
    ended: StdMutex<Ended>,
    /// Runs whose exit `on_exit` is handling: a reconcile meanwhile leaves them to it.
    handling: StdMutex<HashSet<String>>,
    exits: mpsc::UnboundedSender<supervise::Exited>,
    tasks: TaskTracker,
    /// Cancelled when the agent stops: waits on containers end (the containers do not).
    stopping: CancellationToken,
    /// The host's private network, opened when the agent starts running.
    network: OnceLock<HostNetwork>,
    /// The SSH server's settings and host key, loaded on first use.
    ssh: tokio::sync::OnceCell<Arc<aloft_ssh::russh::server::Config>>,
    /// The main process of each running instance whose static files were served.
    roots: statics::Roots,
}

/// One host's agent.
pub struct Agent<R: Runtime + 'static> {
    shared: Arc<Shared<R>>,
    exits: mpsc::UnboundedReceiver<supervise::Exited>,
}

impl<R: Runtime + 'static> std::fmt::Debug for Agent<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("host", &self.shared.config.host_id)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime + 'static> Agent<R> {
    pub fn new(runtime: R, gateway: Arc<dyn ControlPlane>, config: AgentConfig) -> Agent<R> {
        let (exits, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            runtime,
            gateway,
            config,
            locks: StdMutex::new(HashMap::new()),
            restarts: StdMutex::new(HashMap::new()),
            watched: StdMutex::new(HashMap::new()),
            requested_stops: StdMutex::new(HashSet::new()),
            ended: StdMutex::new(Ended::default()),
            handling: StdMutex::new(HashSet::new()),
            exits,
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            network: OnceLock::new(),
            ssh: tokio::sync::OnceCell::new(),
            roots: statics::Roots::default(),
        });
        Agent {
            shared,
            exits: receiver,
        }
    }

    /// How the control plane reaches this agent.
    pub fn link(&self) -> Arc<dyn HostLink> {
        Arc::new(RuntimeLink {
            shared: self.shared.clone(),
        })
    }

    /// Registers the host and prepares its side of the private network (`fdaa::3`
    /// included), so DNS can bind before machines start. [`Agent::run`] does it when it
    /// has not been done.
    pub async fn open_network(&self) -> Result<(), AgentError> {
        let shared = &self.shared;
        if shared.network.get().is_some() {
            return Ok(());
        }
        shared.heartbeat().await?;
        let Some(settings) = &shared.config.network else {
            // A simulated host: its machines get no private network.
            return Ok(());
        };
        let host = shared.gateway.host_number(&shared.config.host_id).await?;
        let network = HostNetwork::open(
            settings.namespace.clone(),
            host,
            settings.mtu,
            settings.served.clone(),
            settings.egress.clone(),
        )
        .await?;
        let _ = shared.network.set(network);
        Ok(())
    }

    /// Runs until `shutdown` is cancelled, then waits for operations in flight. Machines
    /// keep running afterwards.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let shared = self.shared.clone();
        let mut changes = shared.gateway.subscribe();
        self.open_network().await?;
        if let Some(address) = shared.config.ssh_listen {
            // Without it SSH still works through the API; a port in use is not fatal.
            if let Err(error) = shared.clone().listen_ssh(address).await {
                tracing::warn!(%address, %error, "SSH on the private network is off");
            }
        }
        shared.reconcile_all();
        shared.tasks.spawn(shared.clone().sample_forever());
        let mut interval = tokio::time::interval(shared.config.reconcile_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Heartbeats in a task of their own: nothing the loop below waits for (a slow
        // firewall install, a burst of changes) delays them past `host_down_after`.
        shared.tasks.spawn(shared.clone().heartbeat_forever());
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                change = changes.recv() => match change {
                    Ok(change) if change.host_id.as_ref() == Some(&shared.config.host_id) => {
                        shared.spawn(change.machine_id, change.command);
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "missed machine changes; reconciling everything");
                        shared.reconcile_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                Some(exited) = self.exits.recv() => {
                    shared.unwatch(&exited.run);
                    let requested = shared.requested_stops.lock().map(|mut r| r.remove(&exited.run)).unwrap_or(false);
                    if !requested {
                        shared.clone().on_exit(exited);
                    }
                }
                _ = interval.tick() => {
                    // The isolation rules as they should be, whatever touched them.
                    if let Some(network) = shared.network.get()
                        && let Err(error) = network.enforce().await
                    {
                        tracing::warn!(%error, "installing the private network's rules failed");
                    }
                    shared.reconcile_all();
                }
            }
        }
        shared.stopping.cancel();
        shared.tasks.close();
        shared.tasks.wait().await;
        Ok(())
    }
}

impl<R: Runtime + 'static> Shared<R> {
    /// Tells the control plane this host is alive every [`HEARTBEAT_EVERY`] (at most the
    /// reconcile interval), until the agent stops.
    async fn heartbeat_forever(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.config.reconcile_interval.min(HEARTBEAT_EVERY));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.stopping.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.heartbeat().await {
                tracing::warn!(error = %error, "heartbeat failed");
            }
        }
    }

    async fn heartbeat(&self) -> Result<(), AgentError> {
        let host = Host {
            id: self.config.host_id.clone(),
            region: self.config.region.clone(),
            cpus: self.config.cpus,
            memory_mb: self.config.memory_mb,
            address: None,
            last_heartbeat: now_ms(),
            encrypts_volumes: self.config.volumes == VolumeBacking::Ext4
                && aloft_fscrypt::supported(),
        };
        Ok(self.gateway.heartbeat(&host).await?)
    }

    fn lock(&self, machine: &MachineId) -> Arc<Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(machine.clone()).or_default().clone()
    }

    fn spawn(self: &Arc<Self>, machine: MachineId, command: Command) {
        let shared = self.clone();
        self.tasks.spawn(async move {
            let lock = shared.lock(&machine);
            let _guard = lock.lock().await;
            if let Err(error) = shared.reconcile(&machine, &command).await {
                tracing::warn!(%machine, error = %error_chain(&error), "reconciling failed; will retry");
            }
        });
    }

    /// Starts the SSH server on `address` in the private network's namespace.
    async fn listen_ssh(self: Arc<Self>, address: std::net::SocketAddr) -> Result<(), SshError> {
        let config = self.ssh_config().await?;
        let bind = |source| SshError::Bind { address, source };
        let listener = aloft_net::netns::run_in(self.config.namespace(), move || {
            let listener = std::net::TcpListener::bind(address)?;
            listener.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(listener)
        })
        .map_err(|e| bind(std::io::Error::other(e)))?
        .map_err(bind)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(bind)?;
        tracing::info!(%address, "SSH server listening on the private network");
        self.tasks
            .spawn(ssh::listen(self.clone(), config, listener));
        Ok(())
    }

    /// The SSH server's settings, with the host key from the data directory.
    async fn ssh_config(&self) -> Result<Arc<aloft_ssh::russh::server::Config>, SshError> {
        self.ssh
            .get_or_try_init(|| async { ssh::server_config(&self.config.data_dir) })
            .await
            .cloned()
    }

    async fn containers_of(&self, machine: &MachineId) -> Result<Vec<ContainerInfo>, AgentError> {
        let labels = BTreeMap::from([
            (LABEL_HOST.to_owned(), self.config.host_id.to_string()),
            (LABEL_MACHINE.to_owned(), machine.to_string()),
        ]);
        Ok(self.runtime.list(&labels).await?)
    }
}

/// Now, in Unix milliseconds (the contract's timestamps).
pub(crate) fn now_ms() -> i64 {
    aloft_agent_api::clock::now_ms()
}

/// Random bytes from the operating system (host keys).
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    #[allow(
        clippy::expect_used,
        reason = "the OS random source is always available on Linux"
    )]
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes
}

pub(crate) use aloft_agent_api::error_chain;
