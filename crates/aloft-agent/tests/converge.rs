//! The agent against the simulated runtime and an in-memory control plane, in virtual time
//! (Tokio's paused clock: a case's minutes of reconciling take milliseconds): random
//! sequences of desired-state changes (start, stop, update, destroy), machine crashes and
//! agent restarts must converge. Every machine wanted started runs exactly one container,
//! of its current version; one wanted stopped runs none; a destroyed one has no container
//! left; and no machine ever runs two containers at once.
//!
//! 1,000 cases from a fixed seed run in `cargo xtask test` (`ALOFT_AGENT_CASES` and
//! `ALOFT_SIM_RANDOM=1` for more, from a random seed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_agent::{Agent, AgentConfig, AgentCounters, LABEL_INSTANCE, LABEL_MACHINE};
use aloft_agent_api::{
    BoxFuture, CheckRecord, Command, ControlError, ControlPlane, Desired, Host, MachineChange,
    MachineRecord, MachineSample, SshTrust,
};
use aloft_net::{HostNumber, MachineNumber, NetworkNumber, SixPn};
use aloft_runtime::{ContainerState, Runtime};
use aloft_testkit::sim::SimRuntime;
use aloft_types::machine::MachineConfig;
use aloft_types::{AppId, AppName, EventKind, HostId, MachineId, MachineState, OrgId};
use proptest::prelude::*;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const MACHINES: usize = 3;
/// How long (virtual) a case may take to converge after its last step.
const CONVERGE_WITHIN: Duration = Duration::from_secs(120);

/// The control plane's side, in memory: the machines of one host and what the agent
/// reported.
#[derive(Debug)]
struct Plane {
    host: HostId,
    machines: Mutex<BTreeMap<MachineId, MachineRecord>>,
    changes: broadcast::Sender<MachineChange>,
    /// What the agent recorded and reported, per machine, for a failure's message.
    history: Mutex<BTreeMap<MachineId, Vec<String>>>,
}

impl Plane {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<MachineId, MachineRecord>) -> T) -> T {
        f(&mut self.machines.lock().unwrap())
    }

    fn note(&self, id: &MachineId, what: String) {
        self.history
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_default()
            .push(what);
    }

    fn tell(&self, id: &MachineId, command: Command) {
        let _ = self.changes.send(MachineChange {
            machine_id: id.clone(),
            host_id: Some(self.host.clone()),
            command,
        });
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

fn not_found(id: &MachineId) -> ControlError {
    ControlError::NotFound(format!("machine {id}"))
}

impl ControlPlane for Plane {
    fn heartbeat<'a>(&'a self, _host: &'a Host) -> BoxFuture<'a, Result<(), ControlError>> {
        ready(Ok(()))
    }

    fn machines<'a>(
        &'a self,
        host: &'a HostId,
    ) -> BoxFuture<'a, Result<Vec<MachineRecord>, ControlError>> {
        ready(Ok(self.with(|m| {
            m.values()
                .filter(|r| r.host_id.as_ref() == Some(host) && r.state != MachineState::Destroyed)
                .cloned()
                .collect()
        })))
    }

    fn machine<'a>(
        &'a self,
        id: &'a MachineId,
    ) -> BoxFuture<'a, Result<MachineRecord, ControlError>> {
        ready(self.with(|m| m.get(id).cloned().ok_or_else(|| not_found(id))))
    }

    fn private_address<'a>(
        &'a self,
        id: &'a MachineId,
    ) -> BoxFuture<'a, Result<SixPn, ControlError>> {
        let index = self.with(|m| m.keys().position(|k| k == id)).unwrap_or(0);
        ready(Ok(SixPn {
            network: NetworkNumber::new(1).unwrap(),
            host: HostNumber::new(1).unwrap(),
            machine: MachineNumber::new(index as u64 + 2).unwrap(),
        }))
    }

    fn host_number<'a>(
        &'a self,
        _host: &'a HostId,
    ) -> BoxFuture<'a, Result<HostNumber, ControlError>> {
        ready(Ok(HostNumber::new(1).unwrap()))
    }

    fn ssh_trust<'a>(
        &'a self,
        _machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<SshTrust, ControlError>> {
        ready(Err(ControlError::Refused("no SSH here".to_owned())))
    }

    fn token_active<'a>(
        &'a self,
        _org: &'a OrgId,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<bool, ControlError>> {
        ready(Ok(false))
    }

    fn app_name<'a>(
        &'a self,
        _machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<AppName, ControlError>> {
        ready(Ok("sim".parse().unwrap()))
    }

    fn secrets<'a>(
        &'a self,
        _machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, ControlError>> {
        ready(Ok(BTreeMap::new()))
    }

    fn volumes<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<BTreeMap<String, aloft_agent_api::VolumeFacts>, ControlError>> {
        ready(Ok(machine
            .config
            .mounts
            .iter()
            .map(|m| {
                let facts = aloft_agent_api::VolumeFacts {
                    size_gb: u64::from(m.size_gb),
                    key: None,
                };
                (m.volume.clone(), facts)
            })
            .collect()))
    }

    fn report_state<'a>(
        &'a self,
        id: &'a MachineId,
        state: MachineState,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        self.note(id, format!("state {state}"));
        ready(self.with(|m| match m.get_mut(id) {
            // As the store's `set_machine_state`: the same state is a no-op, others
            // follow the allowed transitions.
            Some(record) if record.state == state || record.state.can_become(state) => {
                record.state = state;
                Ok(())
            }
            Some(record) => Err(ControlError::Refused(format!(
                "machine {id} is {}; it cannot become {state}",
                record.state
            ))),
            None => Err(not_found(id)),
        }))
    }

    /// As the store's `rest_machine`: only a machine wanted started, on `instance`,
    /// comes to rest.
    fn rest<'a>(
        &'a self,
        id: &'a MachineId,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<bool, ControlError>> {
        self.note(id, "rest".to_owned());
        ready(self.with(|m| match m.get_mut(id) {
            Some(record) => {
                let rests = record.desired == Desired::Started && record.instance_id == instance;
                if rests {
                    record.desired = Desired::Stopped;
                }
                Ok(rests)
            }
            None => Err(not_found(id)),
        }))
    }

    fn record_event<'a>(
        &'a self,
        id: &'a MachineId,
        kind: EventKind,
        status: &'a str,
        request: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        self.note(id, format!("event {kind} {status} {request}"));
        ready(Ok(()))
    }

    fn reset_checks<'a>(
        &'a self,
        _id: &'a MachineId,
        _records: &'a [CheckRecord],
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        ready(Ok(()))
    }

    fn report_check<'a>(
        &'a self,
        _record: &'a CheckRecord,
        _status_changed: bool,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        ready(Ok(()))
    }

    fn report_samples<'a>(
        &'a self,
        _host: &'a HostId,
        _samples: Vec<MachineSample>,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        ready(Ok(()))
    }

    fn subscribe(&self) -> broadcast::Receiver<MachineChange> {
        self.changes.subscribe()
    }
}

/// One step of a random sequence, on the `n`-th machine.
#[derive(Debug, Clone)]
enum Op {
    Start(usize),
    Stop(usize),
    /// A new version of its config (a new instance).
    Update(usize),
    Destroy(usize),
    /// Its running container exits with this code.
    Crash(usize, i64),
    RestartAgent,
    /// Virtual milliseconds go by.
    Pause(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let machine = 0..MACHINES;
    prop_oneof![
        2 => machine.clone().prop_map(Op::Start),
        2 => machine.clone().prop_map(Op::Stop),
        3 => machine.clone().prop_map(Op::Update),
        1 => machine.clone().prop_map(Op::Destroy),
        3 => (machine, prop::sample::select(vec![0i64, 1, 137])).prop_map(|(n, code)| Op::Crash(n, code)),
        1 => Just(Op::RestartAgent),
        2 => (1..3000u64).prop_map(Op::Pause),
    ]
}

fn record(host: &HostId, app: &AppId, index: usize) -> MachineRecord {
    let mut random = [0u8; 7];
    random[0] = 0xc0;
    random[6] = u8::try_from(index).unwrap();
    let mut config = MachineConfig {
        image: "sim/app:1".to_owned(),
        ..MachineConfig::default()
    };
    config.env.insert("VERSION".to_owned(), "1".to_owned());
    MachineRecord {
        id: MachineId::generate(random),
        app_id: app.clone(),
        name: format!("m{index}"),
        region: "sim".to_owned(),
        host_id: Some(host.clone()),
        state: MachineState::Created,
        desired: Desired::Started,
        version: 1,
        instance_id: format!("i{index}v1"),
        private_ip: None,
        config,
        cordoned: false,
        lease: None,
        created_at: 0,
        updated_at: 0,
    }
}

struct Case {
    plane: Arc<Plane>,
    runtime: SimRuntime,
    data: tempfile::TempDir,
    stop: CancellationToken,
    agent: Option<tokio::task::JoinHandle<()>>,
}

impl Case {
    fn start_agent(&mut self) {
        let agent = Agent::new(
            self.runtime.clone(),
            self.plane.clone(),
            AgentConfig {
                host_id: self.plane.host.clone(),
                region: "sim".to_owned(),
                data_dir: self.data.path().to_owned(),
                cpus: 4,
                memory_mb: 0,
                reconcile_interval: Duration::from_secs(5),
                // No private network: nothing real to wait for, so virtual time holds.
                network: None,
                logs: None,
                counters: Arc::new(AgentCounters::default()),
                helper: None,
                ssh_listen: None,
                ssh_limits: aloft_agent::SshLimits::default(),
                volumes: aloft_agent::VolumeBacking::Directory,
            },
        );
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        self.agent = Some(tokio::spawn(async move {
            agent.run(stop).await.expect("the agent runs");
        }));
    }

    async fn stop_agent(&mut self) {
        self.stop.cancel();
        if let Some(agent) = self.agent.take() {
            agent.await.expect("the agent stops cleanly");
        }
    }

    fn ids(&self) -> Vec<MachineId> {
        self.plane.with(|m| m.keys().cloned().collect())
    }

    /// Running containers per machine, with their instances.
    async fn running(&self) -> BTreeMap<String, Vec<String>> {
        let mut running: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for container in self.runtime.list(&BTreeMap::new()).await.unwrap() {
            if container.state == ContainerState::Running
                && let Some(machine) = container.labels.get(LABEL_MACHINE)
            {
                running.entry(machine.clone()).or_default().push(
                    container
                        .labels
                        .get(LABEL_INSTANCE)
                        .cloned()
                        .unwrap_or_default(),
                );
            }
        }
        running
    }

    async fn runs_once(&self) -> Result<(), String> {
        match self
            .running()
            .await
            .into_iter()
            .find(|(_, runs)| runs.len() > 1)
        {
            Some((machine, runs)) => Err(format!(
                "machine {machine} runs {} times: {runs:?}",
                runs.len()
            )),
            None => Ok(()),
        }
    }

    /// What is still different from the desired state, if anything.
    async fn difference(&self) -> Option<String> {
        let running = self.running().await;
        let containers: BTreeSet<String> = self
            .runtime
            .list(&BTreeMap::new())
            .await
            .unwrap()
            .iter()
            .filter_map(|c| c.labels.get(LABEL_MACHINE).cloned())
            .collect();
        for record in self.plane.with(|m| m.values().cloned().collect::<Vec<_>>()) {
            let id = record.id.to_string();
            let runs = running.get(&id).cloned().unwrap_or_default();
            let wrong = match record.desired {
                Desired::Started => {
                    runs != [record.instance_id.clone()] || record.state != MachineState::Started
                }
                // A machine that never started stays `created` (as on Fly).
                Desired::Stopped => {
                    !runs.is_empty()
                        || !matches!(record.state, MachineState::Stopped | MachineState::Created)
                }
                Desired::Destroyed => {
                    containers.contains(&id) || record.state != MachineState::Destroyed
                }
            };
            if wrong {
                let history = self
                    .plane
                    .history
                    .lock()
                    .unwrap()
                    .get(&record.id)
                    .cloned()
                    .unwrap_or_default();
                return Some(format!(
                    "machine {id} wanted {:?} (instance {}) is {} with runs {runs:?}; it went: {history:#?}",
                    record.desired, record.instance_id, record.state
                ));
            }
        }
        None
    }
}

async fn apply(case: &mut Case, op: &Op) {
    let ids = case.ids();
    let id_of = |n: usize| ids[n % ids.len()].clone();
    match op {
        Op::Start(n) => {
            let id = id_of(*n);
            let started = case.plane.with(|m| {
                let record = m.get_mut(&id).unwrap();
                let alive = record.desired != Desired::Destroyed;
                if alive {
                    record.desired = Desired::Started;
                }
                alive
            });
            if started {
                case.plane.tell(&id, Command::Converge);
            }
        }
        Op::Stop(n) => {
            let id = id_of(*n);
            let stopped = case.plane.with(|m| {
                let record = m.get_mut(&id).unwrap();
                let alive = record.desired != Desired::Destroyed;
                if alive {
                    record.desired = Desired::Stopped;
                }
                alive
            });
            if stopped {
                case.plane.tell(
                    &id,
                    Command::Stop {
                        signal: None,
                        timeout: None,
                    },
                );
            }
        }
        Op::Update(n) => {
            let id = id_of(*n);
            let updated = case.plane.with(|m| {
                let record = m.get_mut(&id).unwrap();
                if record.desired == Desired::Destroyed
                    || !record.state.can_become(MachineState::Updating)
                {
                    return false;
                }
                record.version += 1;
                record.instance_id = format!("{}v{}", record.name, record.version);
                record
                    .config
                    .env
                    .insert("VERSION".to_owned(), record.version.to_string());
                record.desired = Desired::Started;
                record.state = MachineState::Updating;
                true
            });
            if updated {
                case.plane.tell(&id, Command::Converge);
            }
        }
        Op::Destroy(n) => {
            let id = id_of(*n);
            let destroyed = case.plane.with(|m| {
                let record = m.get_mut(&id).unwrap();
                if record.desired == Desired::Destroyed {
                    return false;
                }
                record.desired = Desired::Destroyed;
                record.state = MachineState::Destroying;
                true
            });
            if destroyed {
                case.plane.tell(&id, Command::Converge);
            }
        }
        Op::Crash(n, code) => {
            case.runtime.crash_machine(id_of(*n).as_str(), *code);
        }
        Op::RestartAgent => {
            case.stop_agent().await;
            case.start_agent();
        }
        Op::Pause(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
    }
}

async fn run_case(ops: Vec<Op>) -> Result<(), String> {
    let mut case = new_case();
    case.start_agent();
    for op in &ops {
        apply(&mut case, op).await;
        case.runs_once().await?;
    }
    let outcome = converged(&case).await;
    case.stop_agent().await;
    outcome
}

/// Waits (virtual time) until the host matches the desired state, or says what differs.
async fn converged(case: &Case) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
    loop {
        case.runs_once().await?;
        match case.difference().await {
            None => return Ok(()),
            Some(difference) if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "not converged after {CONVERGE_WITHIN:?}: {difference}"
                ));
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn new_case() -> Case {
    let host = HostId::generate([0xa9, 0, 0, 0, 0, 0, 0, 1]);
    let app = AppId::generate([7; 16]);
    let (changes, _) = broadcast::channel(1024);
    let plane = Arc::new(Plane {
        host: host.clone(),
        machines: Mutex::new(
            (0..MACHINES)
                .map(|n| {
                    let record = record(&host, &app, n);
                    (record.id.clone(), record)
                })
                .collect(),
        ),
        changes,
        history: Mutex::default(),
    });
    Case {
        plane,
        runtime: SimRuntime::new(),
        data: tempfile::tempdir().unwrap(),
        stop: CancellationToken::new(),
        agent: None,
    }
}

/// The run of a config the machine no longer has ends on its own (exit 0, which policy
/// does not restart) after the machine was given a new one (a deploy's rollback
/// restoring it while the failed release's run exits): the machine does not come to
/// rest; its new config starts. It used to rest, and the rollback ended `failed` with the
/// machine stopped.
#[test]
fn the_exit_of_a_replaced_config_does_not_rest_the_machine() {
    paused().block_on(async {
        let mut case = new_case();
        case.start_agent();
        converged(&case).await.unwrap();
        let id = case.ids()[0].clone();
        // Positive control: an exit 0 of the machine's own config rests it.
        assert!(case.runtime.crash_machine(id.as_str(), 0));
        converged(&case).await.unwrap();
        assert_eq!(
            case.plane.with(|m| m[&id].desired),
            Desired::Stopped,
            "the control"
        );
        apply(&mut case, &Op::Start(0)).await;
        converged(&case).await.unwrap();

        // A new config is written (the agent is not told yet), then the old run exits.
        case.plane.with(|m| {
            let record = m.get_mut(&id).unwrap();
            record.version += 1;
            record.instance_id = format!("{}v{}", record.name, record.version);
            record.state = MachineState::Updating;
        });
        assert!(case.runtime.crash_machine(id.as_str(), 0));
        tokio::time::sleep(Duration::from_secs(1)).await;
        case.plane.tell(&id, Command::Converge);
        converged(&case).await.unwrap();
        let record = case.plane.with(|m| m[&id].clone());
        assert_eq!(record.desired, Desired::Started, "{record:#?}");
        assert_eq!(case.running().await[id.as_str()], [record.instance_id]);
        case.stop_agent().await;
    });
}

/// A run-once machine (restart policy `no`: a release command) whose process exits while
/// converges for it keep coming (a deployment's, the periodic pass's) is not started
/// again by one of them before its exit is handled: it rests, having run once. It used to
/// start again when a converge took the machine's lock before the exit's handling did,
/// and a release command ran twice.
#[test]
fn a_run_once_machine_that_exits_among_converges_runs_once() {
    paused().block_on(async {
        let mut case = new_case();
        let id = case.ids()[0].clone();
        case.plane.with(|m| {
            m.get_mut(&id).unwrap().config.restart = Some(aloft_types::machine::MachineRestart {
                policy: Some(aloft_types::machine::RestartPolicy::No),
                max_retries: 0,
            });
        });
        case.start_agent();
        converged(&case).await.unwrap();
        let before = case.runtime.runs()[id.as_str()];
        // Positive control: a converge of a machine that is wanted started and has not
        // run starts it (the count moves when a start happens).
        assert_eq!(before, 1, "the machine ran once to begin with");
        for _ in 0..50 {
            case.plane.tell(&id, Command::Converge);
        }
        assert!(case.runtime.crash_machine(id.as_str(), 0));
        for _ in 0..50 {
            case.plane.tell(&id, Command::Converge);
            tokio::task::yield_now().await;
        }
        converged(&case).await.unwrap();
        let record = case.plane.with(|m| m[&id].clone());
        assert_eq!(record.desired, Desired::Stopped, "it rests: {record:#?}");
        assert_eq!(case.runtime.runs()[id.as_str()], 1, "it ran once");
        case.stop_agent().await;
    });
}

/// A runtime in virtual time (Tokio's paused clock).
fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

fn cases() -> u32 {
    std::env::var("ALOFT_AGENT_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

fn seed() -> proptest::test_runner::RngSeed {
    if std::env::var_os("ALOFT_SIM_RANDOM").is_some() {
        proptest::test_runner::RngSeed::Random
    } else {
        proptest::test_runner::RngSeed::Fixed(0x00a1_0f7a_9e47)
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: seed(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn desired_states_crashes_and_agent_restarts_converge(ops in prop::collection::vec(op(), 1..12)) {
        let outcome = paused().block_on(run_case(ops));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}
