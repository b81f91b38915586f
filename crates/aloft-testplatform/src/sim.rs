//! The control plane and N agents in one process over the agent contract, machines on
//! the simulated runtime (no Docker, no network), the API on a loopback port. Restarts of
//! an agent, and of the control plane (with its agents, as a restart of `aloftd` is),
//! keep the store and the runtimes, so what a restart must resume is tested.

use std::sync::Arc;
use std::time::Duration;

use aloft_agent::{Agent, AgentConfig, AgentCounters};
use aloft_client::Client;
use aloft_control::Control;
use aloft_store::Store;
use aloft_testkit::sim::SimRuntime;
use aloft_types::HostId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One simulated host: its runtime (which outlives its agents) and its running agent.
struct SimHost {
    id: HostId,
    region: String,
    runtime: SimRuntime,
    /// Powered off by `kill_host` (a control plane restart leaves it off).
    killed: bool,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// The control plane, its API and the hosts' agents.
pub struct SimPlatform {
    dir: tempfile::TempDir,
    control: Control,
    api_stop: CancellationToken,
    api: Option<JoinHandle<()>>,
    hosts: Vec<SimHost>,
    token: String,
    pub client: Client,
}

const REGION: &str = "sim";

fn host_id(n: usize) -> HostId {
    let mut random = [0u8; 8];
    random[0] = 0xa1;
    random[7] = u8::try_from(n).unwrap_or(u8::MAX);
    HostId::generate(random)
}

/// An empty store with every migration applied (its file and write-ahead log), copied
/// for each new platform: a process's platforms (a property suite starts hundreds)
/// migrate once.
static EMPTY_STORE: std::sync::OnceLock<Vec<(&'static str, Vec<u8>)>> = std::sync::OnceLock::new();

/// The store's files: the database and its write-ahead log.
const STORE_FILES: [&str; 2] = ["state.db", "state.db-wal"];

/// Writes a fresh, migrated store at `dir/state.db`.
async fn new_store(dir: &std::path::Path) {
    if let Some(empty) = EMPTY_STORE.get() {
        for (name, bytes) in empty {
            let path = dir.join(name);
            std::fs::write(&path, bytes)
                .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        }
        return;
    }
    let url = format!("sqlite://{}", dir.join(STORE_FILES[0]).display());
    let store = Store::open(&url)
        .await
        .unwrap_or_else(|error| panic!("the store at {url}: {error}"));
    store.close().await;
    // A log that the last connection's close did not fold in is copied with the file
    // (SQLite replays it on open).
    let files = STORE_FILES
        .iter()
        .filter_map(|name| Some((*name, std::fs::read(dir.join(name)).ok()?)))
        .collect();
    let _ = EMPTY_STORE.set(files);
}

async fn control_of(dir: &std::path::Path, region: &str) -> Control {
    let url = format!("sqlite://{}", dir.join("state.db").display());
    let store = Store::open(&url)
        .await
        .unwrap_or_else(|error| panic!("the store at {url}: {error}"));
    Control::new(
        store,
        crate::control::config(region, dir),
        aloft_control::ControlParts::default(),
    )
}

/// What each simulated host has: 4 CPUs and 4 GB.
const HOST_CPUS: i64 = 4;
const HOST_MEMORY_MB: i64 = 4096;

impl SimPlatform {
    /// Starts the control plane and `hosts` agents, each on its own simulated runtime, all
    /// in region `sim`.
    pub async fn start(hosts: usize) -> SimPlatform {
        SimPlatform::start_in(&vec![REGION; hosts]).await
    }

    /// One host in each of `regions` (a region named twice has two hosts); the first is
    /// the control plane's default region.
    pub async fn start_in(regions: &[&str]) -> SimPlatform {
        // In memory when the machine has a tmpfs: the store's writes need no disk.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap_or_else(|error| panic!("a temp dir: {error}"));
        let default_region = regions.first().copied().unwrap_or(REGION).to_owned();
        new_store(dir.path()).await;
        let control = control_of(dir.path(), &default_region).await;
        let token = control
            .bootstrap(dir.path())
            .await
            .unwrap_or_else(|error| panic!("bootstrap: {error}"))
            .unwrap_or_else(|| panic!("a fresh store gives an admin token"));
        let hosts = regions
            .iter()
            .enumerate()
            .map(|(n, region)| SimHost {
                id: host_id(n),
                region: (*region).to_owned(),
                runtime: SimRuntime::new(),
                killed: false,
                stop: CancellationToken::new(),
                task: None,
            })
            .collect();
        let mut platform = SimPlatform {
            client: Client::new("http://127.0.0.1:1", &token),
            dir,
            control,
            api_stop: CancellationToken::new(),
            api: None,
            hosts,
            token,
        };
        for n in 0..platform.hosts.len() {
            platform.start_agent(n);
        }
        platform.serve().await;
        // As a real platform's hosts join before anyone deploys to them: placement needs
        // each agent's first heartbeat.
        let wanted = platform.hosts.len();
        aloft_testkit::eventually(
            "every agent's first heartbeat",
            Duration::from_secs(30),
            || async {
                let hosts = platform.control.store().list_hosts().await.ok()?;
                (hosts.len() >= wanted).then_some(())
            },
        )
        .await;
        platform
    }

    fn start_agent(&mut self, n: usize) {
        let data = self.dir.path().join(format!("host-{n}"));
        let host = &mut self.hosts[n];
        let agent = Agent::new(
            host.runtime.clone(),
            Arc::new(self.control.gateway()),
            AgentConfig {
                host_id: host.id.clone(),
                region: host.region.clone(),
                data_dir: data,
                cpus: HOST_CPUS,
                memory_mb: HOST_MEMORY_MB,
                reconcile_interval: Duration::from_secs(5),
                // Simulated hosts plumb no private network (nothing of the host's
                // own network is touched).
                network: None,
                logs: None,
                counters: Arc::new(AgentCounters::default()),
                helper: None,
                ssh_listen: None,
                ssh_limits: aloft_agent::SshLimits::default(),
                volumes: aloft_agent::VolumeBacking::Directory,
            },
        );
        self.control.register_host(host.id.clone(), agent.link());
        host.stop = CancellationToken::new();
        let stop = host.stop.clone();
        host.task = Some(tokio::spawn(async move {
            let _ = agent.run(stop).await;
        }));
    }

    async fn stop_agent(&mut self, n: usize) {
        let host = &mut self.hosts[n];
        host.stop.cancel();
        if let Some(task) = host.task.take() {
            let _ = task.await;
        }
    }

    /// Serves the API on a fresh loopback port and resumes deployments.
    async fn serve(&mut self) {
        self.api_stop = CancellationToken::new();
        let (url, api) = crate::control::serve(&self.control, self.api_stop.clone()).await;
        self.api = Some(api);
        self.client = Client::new(&url, &self.token);
        self.control
            .resume_deployments()
            .await
            .unwrap_or_else(|error| panic!("deployments resume: {error}"));
        self.control.watch_hosts();
        self.control.run_schedules();
        self.control.keep_snapshots();
    }

    /// The API's base URL and a token of the default organization.
    pub fn api(&self) -> (String, String) {
        (self.client.base_url().to_owned(), self.token.clone())
    }

    /// The simulated runtime of host `n`.
    pub fn runtime(&self, n: usize) -> &SimRuntime {
        &self.hosts[n].runtime
    }

    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Stops host `n`'s agent and starts a new one (its containers keep running).
    pub async fn restart_agent(&mut self, n: usize) {
        self.stop_agent(n).await;
        self.start_agent(n);
    }

    /// Power loss on host `n`: its agent stops without a word and its containers die
    /// (killed, left stopped); nothing of it reaches the control plane until
    /// [`SimPlatform::revive_host`].
    pub async fn kill_host(&mut self, n: usize) {
        self.stop_agent(n).await;
        self.hosts[n].runtime.power_off();
        self.hosts[n].killed = true;
    }

    /// Host `n` back from a power loss: a new agent on its old containers.
    pub fn revive_host(&mut self, n: usize) {
        self.hosts[n].killed = false;
        self.start_agent(n);
    }

    /// The catalog (routes and DNS names) as the store has it now.
    pub async fn catalog(&self) -> aloft_types::catalog::Catalog {
        self.control
            .catalog_now()
            .await
            .unwrap_or_else(|error| panic!("the catalog: {error}"))
    }

    /// Host `n`'s id.
    pub fn host_id(&self, n: usize) -> HostId {
        self.hosts[n].id.clone()
    }

    /// Stops the API, the control plane's tasks (deployments halt at their next await
    /// point, as in a killed `aloftd`) and every agent, and closes the store; the
    /// runtimes and their containers stay.
    async fn halt(&mut self) {
        self.api_stop.cancel();
        if let Some(api) = self.api.take() {
            let _ = api.await;
        }
        self.control.shutdown().await;
        for n in 0..self.hosts.len() {
            self.stop_agent(n).await;
        }
        self.control.store().close().await;
    }

    /// Halts everything but the runtimes and starts it again on the same store.
    pub async fn restart_control(&mut self) {
        self.halt().await;
        let region = self
            .hosts
            .first()
            .map_or(REGION, |h| h.region.as_str())
            .to_owned();
        self.control = control_of(self.dir.path(), &region).await;
        for n in 0..self.hosts.len() {
            if !self.hosts[n].killed {
                self.start_agent(n);
            }
        }
        self.serve().await;
    }

    /// Stops everything (the runtimes' containers go with the platform).
    pub async fn stop(mut self) {
        self.halt().await;
    }
}

impl std::fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPlatform").finish_non_exhaustive()
    }
}
