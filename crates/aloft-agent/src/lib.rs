// Over 800 lines: the reconcile loop, exit handling and host link share one Shared state; split planned (issue 16 item 6: reconcile, supervise, sweep, link).
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

pub mod checks;
pub mod env;
mod logs;
mod spec;
mod ssh;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use aloft_agent_api::{
    BoxFuture, Command, ControlError, ControlPlane, Desired, Host, HostLink, LinkError,
    MachineRecord, SshStream,
};
use aloft_net::{HostNetwork, SixPn};
use aloft_runtime::{
    ContainerInfo, ContainerState, ExecOptions, ExitStatus, Runtime, RuntimeError,
};
use aloft_types::api::ExecResponse;
use aloft_types::machine::RestartPolicy;
use aloft_types::{EventKind, HostId, MachineId, MachineState, Signal};
use serde_json::json;
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use spec::{LABEL_HOST, LABEL_INSTANCE, LABEL_MACHINE, LABEL_MANAGED, container_spec};

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
    pub network: NetworkSettings,
    /// Where every line the machines write is kept (none: not captured).
    pub logs: Option<aloft_logs::LogStore>,
    /// Counters the agent keeps for metrics.
    pub counters: Arc<AgentCounters>,
    /// The `aloftd` binary, run as `aloftd sftp-server` for SFTP sessions (none: no SFTP).
    pub helper: Option<PathBuf>,
    /// Where the SSH server listens on the host's private-network side (inside the
    /// network's namespace), e.g. `[fdaa::3]:22`; none: only through the API's tunnel.
    pub ssh_listen: Option<std::net::SocketAddr>,
}

/// What the agent counts, for metrics.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Images pulled from a registry (not already in the engine).
    pub image_pulls: std::sync::atomic::AtomicU64,
    /// Images that could not be found locally or pulled.
    pub image_pull_failures: std::sync::atomic::AtomicU64,
}

/// Where and how the agent plumbs the private network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// The network namespace holding the host's side (bridges, veths, `fdaa::3`, rules);
    /// `None`: the agent's own.
    pub namespace: Option<PathBuf>,
    /// MTU of bridges and machines' interfaces.
    pub mtu: u32,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            namespace: None,
            mtu: aloft_net::DEFAULT_MTU,
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
    exits: mpsc::UnboundedSender<(MachineId, String, ExitStatus)>,
    tasks: TaskTracker,
    /// Cancelled when the agent stops: waits on containers end (the containers do not).
    stopping: CancellationToken,
    /// The host's private network, opened when the agent starts running.
    network: OnceLock<HostNetwork>,
    /// The SSH server's settings and host key, loaded on first use.
    ssh: tokio::sync::OnceCell<Arc<aloft_ssh::russh::server::Config>>,
}

/// One host's agent.
pub struct Agent<R: Runtime + 'static> {
    shared: Arc<Shared<R>>,
    exits: mpsc::UnboundedReceiver<(MachineId, String, ExitStatus)>,
}

impl<R: Runtime + 'static> std::fmt::Debug for Agent<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("host", &self.shared.config.host_id)
            .finish_non_exhaustive()
    }
}

/// How the run of container `id` that started at `started_at` ended, or `None` when the
/// container is in a later run (the run was seen in a stale listing, or started again
/// while the wait began): a wait on a later run would report that run's exit as this
/// one's, and an inspection of a running container has no exit code at all.
async fn wait_run<R: Runtime>(
    runtime: &R,
    id: &str,
    started_at: &str,
) -> Result<Option<ExitStatus>, RuntimeError> {
    let same_run =
        |info: &Option<ContainerInfo>| info.as_ref().is_some_and(|i| i.started_at == started_at);
    if !same_run(&runtime.inspect(id).await?) {
        return Ok(None);
    }
    let exit = runtime.wait(id).await?;
    Ok(same_run(&runtime.inspect(id).await?).then_some(exit))
}

/// Runs whose exit was seen, the latest [`Ended::KEPT`] of them.
#[derive(Debug, Default)]
struct Ended {
    runs: HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl Ended {
    const KEPT: usize = 4096;

    fn insert(&mut self, run: &str) {
        if self.runs.insert(run.to_owned()) {
            self.order.push_back(run.to_owned());
            while self.order.len() > Self::KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.runs.remove(&old);
                }
            }
        }
    }
}

fn exit_json(exit: &ExitStatus, requested_stop: bool, restarting: bool) -> serde_json::Value {
    json!({
        "exit_event": {
            "exit_code": exit.exit_code,
            "signal": exit.signal.unwrap_or(-1),
            "oom_killed": exit.oom_killed,
            "requested_stop": requested_stop,
            "restarting": restarting,
            "exited_at": aloft_types::time::rfc3339(now_ms()),
        }
    })
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
            exits,
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            network: OnceLock::new(),
            ssh: tokio::sync::OnceCell::new(),
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
        let host = shared.gateway.host_number(&shared.config.host_id).await?;
        let network = HostNetwork::open(
            shared.config.network.namespace.clone(),
            host,
            shared.config.network.mtu,
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
        let mut interval = tokio::time::interval(shared.config.reconcile_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                                Some((machine, run, exit)) = self.exits.recv() => {
                    shared.unwatch(&run);
                    let requested = shared.requested_stops.lock().map(|mut r| r.remove(&run)).unwrap_or(false);
                    if !requested {
                        shared.clone().on_exit(machine, run, exit);
                    }
                }
                _ = interval.tick() => {
                    if let Err(error) = shared.heartbeat().await {
                        tracing::warn!(error = %error, "heartbeat failed");
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
    async fn heartbeat(&self) -> Result<(), AgentError> {
        let host = Host {
            id: self.config.host_id.clone(),
            region: self.config.region.clone(),
            cpus: self.config.cpus,
            memory_mb: self.config.memory_mb,
            address: None,
            last_heartbeat: now_ms(),
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

    /// Compares every machine of this host, and every container the agent owns.
    fn reconcile_all(self: &Arc<Self>) {
        let shared = self.clone();
        self.tasks.spawn(async move {
            if let Err(error) = shared.sweep().await {
                tracing::warn!(error = %error_chain(&error), "reconciling the host failed; will retry");
            }
        });
    }

    async fn sweep(self: &Arc<Self>) -> Result<(), AgentError> {
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
    async fn prune_network(
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
    async fn address_of(&self, machine: &MachineRecord) -> Result<SixPn, AgentError> {
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
    async fn plumb(
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

    /// Forgets a run whose exit was seen (or can no longer be waited for): its checks end.
    fn unwatch(&self, run: &str) {
        if let Ok(mut ended) = self.ended.lock() {
            ended.insert(run);
        }
        let ended = self.watched.lock().ok().and_then(|mut w| w.remove(run));
        if let Some(ended) = ended {
            ended.cancel();
        }
    }

    /// Waits for a running container's exit in the background, and runs the machine's
    /// checks against `address` until then (once per run).
    fn watch(
        self: &Arc<Self>,
        machine: &MachineRecord,
        address: Option<std::net::Ipv6Addr>,
        container: &ContainerInfo,
    ) {
        let run = container.run_key();
        let ended = CancellationToken::new();
        if self.ended.lock().is_ok_and(|e| e.runs.contains(&run)) {
            return;
        }
        let fresh = self
            .watched
            .lock()
            .map(|mut w| match w.entry(run.clone()) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(ended.clone());
                    true
                }
            })
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let address = address.or_else(|| machine.private_ip.as_deref()?.parse().ok());
        let plans = checks::plans(&machine.config);
        if let (Some(address), false) = (address, plans.is_empty()) {
            self.tasks.spawn(checks::run(
                self.gateway.clone(),
                machine.id.clone(),
                plans,
                address,
                self.config.network.namespace.clone(),
                ended,
                self.stopping.clone(),
            ));
        }
        if let Some(store) = self.config.logs.clone() {
            self.tasks.spawn(logs::capture(
                self.clone(),
                store,
                machine.clone(),
                container.clone(),
            ));
        }
        let machine = machine.id.clone();
        let shared = self.clone();
        let id = container.id.clone();
        let started_at = container.started_at.clone();
        self.tasks.spawn(async move {
            let waited = tokio::select! {
                waited = wait_run(&shared.runtime, &id, &started_at) => waited,
                () = shared.stopping.cancelled() => return,
            };
            match waited {
                Ok(Some(exit)) => {
                    let _ = shared.exits.send((machine, run, exit));
                }
                Ok(None) => {
                    // A stale listing's run: the container has started again since, and
                    // that run has a watch of its own.
                    shared.unwatch(&run);
                    if let Ok(mut requested) = shared.requested_stops.lock() {
                        requested.remove(&run);
                    }
                }
                Err(error) => {
                    shared.unwatch(&run);
                    tracing::debug!(container = %id, error = %error, "stopped waiting for a container");
                }
            }
        });
    }

    /// Stops one run of a container, recording that its exit is the agent's doing.
    async fn stop_run(
        &self,
        container: &ContainerInfo,
        signal: Signal,
        timeout: Duration,
    ) -> Result<ExitStatus, AgentError> {
        if let Ok(mut requested) = self.requested_stops.lock() {
            requested.insert(container.run_key());
        }
        Ok(self.runtime.stop(&container.id, signal, timeout).await?)
    }

    /// A container exited on its own: record it, then let policy decide.
    fn on_exit(self: Arc<Self>, machine_id: MachineId, run: String, exit: ExitStatus) {
        let shared = self.clone();
        self.tasks.spawn(async move {
            let lock = shared.lock(&machine_id);
            let _guard = lock.lock().await;
            let outcome: Result<(), AgentError> = async {
                                let machine = shared.gateway.machine(&machine_id).await?;
                // An exit of an earlier run: the container has been started again since.
                let current = shared.containers_of(&machine_id).await?;
                if current.iter().any(|c| c.state == ContainerState::Running && c.run_key() != run) {
                    return Ok(());
                }
                if machine.desired != Desired::Started || matches!(machine.state, MachineState::Stopping | MachineState::Restarting | MachineState::Destroying) {
                    // A stop the agent made itself records its own exit.
                    return Ok(());
                }
                let restart = shared.should_restart(&machine, &exit);
                shared
                    .gateway
                    .record_event(&machine.id, EventKind::Exit, if restart { "restarting" } else { "stopped" }, exit_json(&exit, false, restart))
                    .await?;
                if restart {
                    shared.bump_restarts(&machine.instance_id);
                    shared.gateway.report_state(&machine.id, MachineState::Restarting).await?;
                    shared.start_current(&machine).await?;
                } else {
                    // It rests until someone starts it again, as on Fly.
                    shared.gateway.rest(&machine.id).await?;
                    // Its exit code is in the event; the machine itself is stopped, as on Fly.
                    shared.gateway.report_state(&machine.id, MachineState::Stopped).await?;
                }
                Ok(())
            }
            .await;
            if let Err(error) = outcome {
                tracing::warn!(machine = %machine_id, error = %error_chain(&error), "handling an exit failed");
            }
        });
    }

    fn restarts_of(&self, instance: &str) -> u32 {
        self.restarts
            .lock()
            .map(|r| r.get(instance).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn bump_restarts(&self, instance: &str) {
        if let Ok(mut restarts) = self.restarts.lock() {
            *restarts.entry(instance.to_owned()).or_default() += 1;
        }
    }

    fn should_restart(&self, machine: &MachineRecord, exit: &ExitStatus) -> bool {
        let restart = machine.config.restart.clone().unwrap_or_default();
        let max = if restart.max_retries == 0 {
            DEFAULT_MAX_RETRIES
        } else {
            restart.max_retries
        };
        match restart.policy.unwrap_or(RestartPolicy::OnFailure) {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => {
                !exit.success() && self.restarts_of(&machine.instance_id) < max
            }
        }
    }

    fn stop_options(
        machine: &MachineRecord,
        signal: Option<Signal>,
        timeout: Option<Duration>,
    ) -> (Signal, Duration) {
        let stop = machine.config.stop_config.clone().unwrap_or_default();
        (
            signal.or(stop.signal).unwrap_or(Signal::DEFAULT),
            timeout
                .or(stop.timeout.map(|t| t.as_std()))
                .unwrap_or(DEFAULT_STOP_TIMEOUT),
        )
    }

    /// Starts the SSH server on `address` in the private network's namespace.
    async fn listen_ssh(self: Arc<Self>, address: std::net::SocketAddr) -> Result<(), String> {
        let config = self.ssh_config().await?;
        let listener =
            aloft_net::netns::run_in(self.config.network.namespace.as_deref(), move || {
                let listener = std::net::TcpListener::bind(address)?;
                listener.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(listener)
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("binding {address}: {e}"))?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        tracing::info!(%address, "SSH server listening on the private network");
        self.tasks
            .spawn(ssh::listen(self.clone(), config, listener));
        Ok(())
    }

    /// The SSH server's settings, with the host key from the data directory.
    async fn ssh_config(&self) -> Result<Arc<aloft_ssh::russh::server::Config>, String> {
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

    /// Makes one machine match its desired state, applying `command` first.
    async fn reconcile(
        self: &Arc<Self>,
        id: &MachineId,
        command: &Command,
    ) -> Result<(), AgentError> {
        let machine = self.gateway.machine(id).await?;
        if machine.host_id.as_ref() != Some(&self.config.host_id) {
            return Ok(());
        }
        let containers = self.containers_of(id).await?;
        let (current, stale): (Vec<ContainerInfo>, Vec<ContainerInfo>) = containers
            .into_iter()
            .partition(|c| c.labels.get(LABEL_INSTANCE) == Some(&machine.instance_id));
        let current = current.into_iter().next();

        if machine.desired == Desired::Destroyed {
            let (signal, timeout) = Self::stop_options(&machine, None, None);
            for container in current.iter().chain(stale.iter()) {
                if container.state == ContainerState::Running {
                    let _ = self
                        .stop_run(container, signal, timeout.min(Duration::from_secs(1)))
                        .await;
                }
                self.runtime.remove(&container.id).await?;
            }
            let _ = std::fs::remove_dir_all(spec::machine_dir(&self.config.data_dir, id));
            let as_of = std::time::Instant::now();
            let remaining = self.gateway.machines(&self.config.host_id).await?;
            let others: Vec<MachineRecord> =
                remaining.into_iter().filter(|m| &m.id != id).collect();
            self.prune_network(&others, as_of).await?;
            if machine.state != MachineState::Destroyed {
                if machine.state != MachineState::Destroying {
                    self.gateway
                        .report_state(id, MachineState::Destroying)
                        .await?;
                }
                self.gateway
                    .report_state(id, MachineState::Destroyed)
                    .await?;
                self.gateway
                    .record_event(id, EventKind::Destroy, "destroyed", json!({}))
                    .await?;
            }
            self.gateway.reset_checks(id, &[]).await?;
            return Ok(());
        }

        // Older versions go first, gracefully: the new one may need the same port or volume.
        for container in &stale {
            if container.state == ContainerState::Running {
                let (signal, timeout) = Self::stop_options(&machine, None, None);
                self.stop_run(container, signal, timeout).await?;
            }
            self.runtime.remove(&container.id).await?;
        }

        if let Command::Signal(signal) = command {
            if let Some(container) = current
                .as_ref()
                .filter(|c| c.state == ContainerState::Running)
            {
                self.runtime.signal(&container.id, *signal).await?;
            }
            return Ok(());
        }

        let running = current
            .as_ref()
            .filter(|c| c.state == ContainerState::Running);
        match machine.desired {
            Desired::Stopped => {
                if let Some(container) = running {
                    let (signal, timeout) = match command {
                        Command::Stop { signal, timeout } => {
                            Self::stop_options(&machine, *signal, *timeout)
                        }
                        _ => Self::stop_options(&machine, None, None),
                    };
                    self.gateway
                        .report_state(id, MachineState::Stopping)
                        .await?;
                    let exit = self.stop_run(container, signal, timeout).await?;
                    self.gateway
                        .record_event(
                            id,
                            EventKind::Exit,
                            "stopped",
                            exit_json(&exit, true, false),
                        )
                        .await?;
                    self.gateway.report_state(id, MachineState::Stopped).await?;
                } else if !matches!(machine.state, MachineState::Stopped | MachineState::Created) {
                    self.gateway.report_state(id, MachineState::Stopped).await?;
                }
            }
            Desired::Started => {
                if let (Command::Restart { signal, timeout }, Some(container)) = (command, running)
                {
                    let (signal, timeout) = Self::stop_options(&machine, *signal, *timeout);
                    self.gateway
                        .report_state(id, MachineState::Restarting)
                        .await?;
                    let exit = self.stop_run(container, signal, timeout).await?;
                    self.gateway
                        .record_event(
                            id,
                            EventKind::Exit,
                            "restarting",
                            exit_json(&exit, true, true),
                        )
                        .await?;
                    self.start_current(&machine).await?;
                } else if let Some(container) = running {
                    self.watch(&machine, None, container);
                    if machine.state != MachineState::Started {
                        self.gateway.report_state(id, MachineState::Started).await?;
                    }
                } else if current.is_none() && machine.state == MachineState::Started {
                    // Its container vanished (removed by hand, say): handled like an exit.
                    let lost = ExitStatus {
                        exit_code: -1,
                        signal: None,
                        oom_killed: false,
                    };
                    let restart = self.should_restart(&machine, &lost);
                    let status = if restart { "restarting" } else { "stopped" };
                    self.gateway.record_event(id, EventKind::Exit, status, json!({ "exit_event": { "exit_code": -1, "container_lost": true, "restarting": restart } })).await?;
                    if restart {
                        self.bump_restarts(&machine.instance_id);
                        self.gateway
                            .report_state(id, MachineState::Restarting)
                            .await?;
                        self.start_current(&machine).await?;
                    } else {
                        self.gateway.rest(id).await?;
                        self.gateway.report_state(id, MachineState::Stopped).await?;
                    }
                } else {
                    self.start_current(&machine).await?;
                }
            }
            Desired::Destroyed => {}
        }
        Ok(())
    }

    /// Records that a machine could not be launched (why, in a `launch` event) and marks
    /// it failed; returns the error to report.
    async fn launch_failed(&self, id: &MachineId, error: RuntimeError) -> AgentError {
        let request = json!({ "error": error_chain(&error) });
        if let Err(recording) = self
            .gateway
            .record_event(id, EventKind::Launch, "failed", request)
            .await
        {
            return recording.into();
        }
        if let Err(reporting) = self.gateway.report_state(id, MachineState::Failed).await {
            return reporting.into();
        }
        error.into()
    }

    /// Whether the container's process has exited: its network namespace is gone from
    /// `/proc` (the process is gone, or a zombie not reaped yet, whose `/proc` entry stays
    /// but whose namespaces do not; the engine may still call it running for a moment),
    /// or the engine says it is not running.
    async fn exited(&self, container: &ContainerInfo) -> bool {
        if let Some(pid) = container.pid
            && !std::path::Path::new(&format!("/proc/{pid}/ns/net")).exists()
        {
            return true;
        }
        matches!(
            self.runtime.inspect(&container.id).await,
            Ok(Some(info)) if info.state != ContainerState::Running
        )
    }

    /// Creates (if needed) and starts the container of the machine's current version.
    async fn start_current(self: &Arc<Self>, machine: &MachineRecord) -> Result<(), AgentError> {
        let id = &machine.id;
        if matches!(
            machine.state,
            MachineState::Created
                | MachineState::Stopped
                | MachineState::Failed
                | MachineState::Updating
        ) {
            self.gateway
                .report_state(id, MachineState::Starting)
                .await?;
        }
        let address = self.address_of(machine).await?;
        if let Some(network) = self.network.get() {
            // The network's bridge and isolation rules exist before the machine runs.
            network.ensure_network(address.network).await?;
        }
        let containers = self.containers_of(id).await?;
        let existing = containers
            .into_iter()
            .find(|c| c.labels.get(LABEL_INSTANCE) == Some(&machine.instance_id));
        let container_id = match existing {
            Some(container) => container.id,
            None => {
                match self.runtime.ensure_image(&machine.config.image).await {
                    Ok(pulled) => {
                        if pulled {
                            self.config
                                .counters
                                .image_pulls
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Err(error) => {
                        self.config
                            .counters
                            .image_pull_failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Err(self.launch_failed(id, error).await);
                    }
                }
                let app = self.gateway.app_name(machine).await?;
                let secrets = self.gateway.secrets(machine).await?;
                let spec = container_spec(machine, &app, &secrets, address.address(), &self.config)
                    .map_err(|error| {
                        AgentError::Runtime(RuntimeError::Operation {
                            operation: "prepare",
                            container: id.to_string(),
                            source: Box::new(error),
                        })
                    })?;
                match self.runtime.create(&spec).await {
                    Ok(created) => created,
                    Err(error) => return Err(self.launch_failed(id, error).await),
                }
            }
        };
        self.runtime.start(&container_id).await?;
        if let Some(info) = self.runtime.inspect(&container_id).await? {
            if let Err(error) = self.plumb(machine, &info).await
                && !self.exited(&info).await
            {
                // A machine without its network is no use to anyone: stop it and say why.
                // (One whose process already exited, a quick release command say, ran:
                // its exit is what counts, and the watch below reports it.)
                let _ = self.stop_run(&info, Signal::Kill, Duration::ZERO).await;
                return Err(self
                    .launch_failed(
                        id,
                        RuntimeError::Operation {
                            operation: "connect to the private network",
                            container: container_id.clone(),
                            source: Box::new(error),
                        },
                    )
                    .await);
            }
            self.watch(machine, Some(address.address()), &info);
        }
        self.gateway.report_state(id, MachineState::Started).await?;
        self.gateway
            .record_event(id, EventKind::Start, "started", json!({}))
            .await?;
        Ok(())
    }
}

/// Now, in Unix milliseconds (the contract's timestamps).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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

/// A host-side failure as the contract's error, with its whole chain of causes.
fn failed<E: std::error::Error>(operation: &'static str) -> impl Fn(E) -> LinkError {
    move |error| LinkError::Failed {
        operation,
        message: error_chain(&error),
    }
}

/// The control plane's way into this host: runs commands in machines.
pub struct RuntimeLink<R: Runtime + 'static> {
    shared: Arc<Shared<R>>,
}

impl<R: Runtime + 'static> std::fmt::Debug for RuntimeLink<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeLink")
            .field("host", &self.shared.config.host_id)
            .finish()
    }
}

impl<R: Runtime + 'static> HostLink for RuntimeLink<R> {
    fn exec<'a>(
        &'a self,
        machine: &'a MachineRecord,
        command: Vec<String>,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResponse, LinkError>> {
        Box::pin(async move {
            let containers = self
                .shared
                .containers_of(&machine.id)
                .await
                .map_err(failed("listing the machine's containers"))?;
            let container = containers
                .into_iter()
                .find(|c| {
                    c.labels.get(LABEL_INSTANCE) == Some(&machine.instance_id)
                        && c.state == ContainerState::Running
                })
                .ok_or_else(|| LinkError::NotRunning {
                    machine: machine.id.clone(),
                    why: "has no running container".to_owned(),
                })?;
            let options = ExecOptions {
                tty: false,
                stdin,
                timeout: Some(timeout),
            };
            let output = self
                .shared
                .runtime
                .exec(&container.id, &command, &options)
                .await
                .map_err(failed("running the command"))?;
            Ok(ExecResponse {
                exit_code: output.exit_code,
                exit_signal: None,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        })
    }

    fn ssh<'a>(
        &'a self,
        machine: &'a MachineRecord,
        stream: Box<dyn SshStream>,
    ) -> BoxFuture<'a, Result<(), LinkError>> {
        Box::pin(async move {
            let config = self
                .shared
                .ssh_config()
                .await
                .map_err(|message| LinkError::Failed {
                    operation: "starting the SSH server",
                    message,
                })?;
            ssh::serve(
                self.shared.clone(),
                config,
                stream,
                ssh::Via::Tunnel(Box::new(machine.clone())),
            )
            .await
            .map_err(|message| LinkError::Failed {
                operation: "serving the SSH session",
                message,
            })
        })
    }

    fn last_lines<'a>(
        &'a self,
        machine: &'a MachineRecord,
        lines: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, LinkError>> {
        Box::pin(async move {
            let containers = self
                .shared
                .containers_of(&machine.id)
                .await
                .map_err(failed("listing the machine's containers"))?;
            // The newest run of the machine's current instance (or of any, when it has
            // none yet).
            let Some(container) = containers
                .iter()
                .filter(|c| c.labels.get(LABEL_INSTANCE) == Some(&machine.instance_id))
                .max_by(|a, b| a.started_at.cmp(&b.started_at))
                .or_else(|| {
                    containers
                        .iter()
                        .max_by(|a, b| a.started_at.cmp(&b.started_at))
                })
            else {
                return Ok(Vec::new());
            };
            let mut stream = self
                .shared
                .runtime
                .logs(&container.id, false, Some(lines), None);
            let mut shown = Vec::new();
            while let Some(line) = futures_util::StreamExt::next(&mut stream).await {
                let line = line.map_err(failed("reading the machine's log"))?;
                shown.push(line.text);
            }
            Ok(shown)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_runtime::ContainerSpec;
    use aloft_testkit::sim::SimRuntime;

    async fn started(runtime: &SimRuntime, id: &str) -> ContainerInfo {
        runtime.start(id).await.unwrap();
        runtime.inspect(id).await.unwrap().unwrap()
    }

    /// The exit of a run is its own: a wait begun from a stale listing, after the
    /// container started again, is no exit of the listed run (it used to report the later
    /// run's state, running, as "exited with code 0").
    #[tokio::test]
    async fn a_run_seen_in_a_stale_listing_reports_no_exit() {
        let runtime = SimRuntime::new();
        let spec = ContainerSpec {
            name: "m1".to_owned(),
            image: "app".to_owned(),
            entrypoint: None,
            cmd: None,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            hostname: None,
            cpus: None,
            memory_mb: None,
            mounts: Vec::new(),
            stop_signal: Signal::Term,
            tty: false,
        };
        let id = runtime.create(&spec).await.unwrap();
        let first = started(&runtime, &id).await;
        // Positive control: the listed run is current, so its exit is reported.
        assert!(runtime.exit(&id, 1));
        let exit = wait_run(&runtime, &id, &first.started_at).await.unwrap();
        assert_eq!(exit.map(|e| e.exit_code), Some(1));

        let second = started(&runtime, &id).await;
        assert_ne!(first.started_at, second.started_at);
        let stale = wait_run(&runtime, &id, &first.started_at).await.unwrap();
        assert_eq!(stale, None, "the first run's exit was reported again");
        assert!(runtime.exit(&id, 3));
        let exit = wait_run(&runtime, &id, &second.started_at).await.unwrap();
        assert_eq!(exit.map(|e| e.exit_code), Some(3));
    }

    #[test]
    fn ended_runs_are_kept_up_to_a_bound() {
        let mut ended = Ended::default();
        for run in 0..Ended::KEPT + 10 {
            ended.insert(&run.to_string());
        }
        ended.insert("5000");
        assert_eq!(ended.runs.len(), Ended::KEPT);
        assert!(!ended.runs.contains("0"), "the oldest run is forgotten");
        assert!(ended.runs.contains(&(Ended::KEPT + 9).to_string()));
    }
}
