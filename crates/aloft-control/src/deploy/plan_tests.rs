//! The deployer's plan against a model of the platform: an app of 0 to 6 machines, every
//! strategy and `max_unavailable` (counts and fractions), a release whose machines pass or
//! fail, a release command that passes or fails, machines that crash while watched, and a
//! control plane restart between any two writes of any move (the rest of the move is
//! lost, and the plan is asked again from what was written). Every deployment must end,
//! on one release with as many machines as the app had, without ever taking more than
//! a batch out of the rotation, and a bluegreen one without touching blue before the switch.
//!
//! Thousands of cases a second: `ALOFT_PLAN_CASES` (10,000 by default) sets how many.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code fails loudly"
)]

use std::collections::BTreeSet;

use aloft_store::DeploymentStep;
use aloft_types::MachineId;
use aloft_types::deploy::{StepKind, Strategy};
use aloft_types::machine::MachineConfig;
use proptest::prelude::*;
use proptest::strategy::Strategy as _;

use super::{Facts, Machine, Next, next};
use crate::deploy::steps::batch_size;

/// The release the deployment rolls out; the app's machines run 1.
const TARGET: u32 = 2;

#[derive(Debug, Clone)]
struct Model {
    id: MachineId,
    version: u32,
    in_group: bool,
    cordoned: bool,
    live: bool,
    created_as: Option<StepKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Running,
    RollingBack,
    Succeeded,
    RolledBack,
    Failed,
}

#[derive(Debug, Clone)]
struct Case {
    strategy: Strategy,
    max_unavailable: f64,
    machines: usize,
    initial_count: usize,
    /// `Some(passes)` when the deployment has a release command.
    release_command: Option<bool>,
    /// The release's machines pass their checks.
    good: bool,
    /// Drawn in turn: a restart at a write, a crash while watched.
    faults: Vec<u8>,
}

struct World {
    case: Case,
    status: Status,
    steps: Vec<DeploymentStep>,
    machines: Vec<Model>,
    clock: i64,
    draws: usize,
    /// The app's machines before the deployment, with their release.
    original: Vec<(MachineId, u32)>,
    /// Original machines out of the rotation: updated, not yet found healthy.
    out: BTreeSet<MachineId>,
    /// At most this many may be out at once.
    size: usize,
    log: Vec<String>,
}

/// A move cut short by a control plane restart.
struct Restart;

fn id(n: usize) -> MachineId {
    format!("{n:014x}").parse().unwrap()
}

fn config(version: u32) -> MachineConfig {
    MachineConfig {
        image: format!("v{version}"),
        ..MachineConfig::default()
    }
}

impl World {
    fn new(case: Case) -> World {
        let machines: Vec<Model> = (0..case.machines)
            .map(|n| Model {
                id: id(n),
                version: 1,
                in_group: true,
                cordoned: false,
                live: true,
                created_as: None,
            })
            .collect();
        let original = machines.iter().map(|m| (m.id.clone(), m.version)).collect();
        let size = batch_size(case.strategy, case.max_unavailable, case.machines);
        World {
            case,
            status: Status::Running,
            steps: Vec::new(),
            machines,
            clock: 1_000,
            draws: 0,
            original,
            out: BTreeSet::new(),
            size,
            log: Vec::new(),
        }
    }

    /// The next fault draw; a case without faults draws 1 (no fault) every time.
    fn draw(&mut self) -> u8 {
        let faults = &self.case.faults;
        if faults.is_empty() {
            return 1;
        }
        let value =
            faults[self.draws % faults.len()].wrapping_add((self.draws / faults.len()) as u8);
        self.draws += 1;
        value
    }

    /// Whether the control plane restarts here (about one write in eight).
    fn restart(&mut self) -> Result<(), Restart> {
        if self.draw().is_multiple_of(8) {
            self.log.push("  restart".to_owned());
            Err(Restart)
        } else {
            Ok(())
        }
    }

    fn step(&mut self, kind: StepKind, machine: Option<&MachineId>, message: &str) {
        let previous = match (kind, machine) {
            (StepKind::Update, Some(id)) => Some(config(self.machine(id).version)),
            _ => None,
        };
        self.clock += 1_000;
        self.steps.push(DeploymentStep {
            number: self.steps.len() as i64 + 1,
            machine_id: machine.cloned(),
            kind,
            message: message.to_owned(),
            previous_config: previous,
            at: self.clock,
        });
    }

    fn machine(&self, id: &MachineId) -> &Model {
        self.machines.iter().find(|m| &m.id == id).unwrap()
    }

    fn machine_mut(&mut self, id: &MachineId) -> &mut Model {
        self.machines.iter_mut().find(|m| &m.id == id).unwrap()
    }

    fn create(&mut self, version: u32, in_group: bool, kind: StepKind) -> MachineId {
        let id = id(self.machines.len());
        self.machines.push(Model {
            id: id.clone(),
            version,
            in_group,
            cordoned: kind == StepKind::Green,
            live: true,
            created_as: Some(kind),
        });
        id
    }

    /// The config a machine's first `update` step kept.
    fn previous(&self, id: &MachineId) -> Option<u32> {
        let step = self
            .steps
            .iter()
            .find(|s| s.kind == StepKind::Update && s.machine_id.as_ref() == Some(id))?;
        step.previous_config.as_ref()?.image[1..].parse().ok()
    }

    fn facts(&self) -> Vec<Machine> {
        self.machines
            .iter()
            .filter(|m| m.live)
            .map(|m| Machine {
                id: m.id.clone(),
                in_group: m.in_group,
                on_target: m.version == TARGET,
                on_previous: self.previous(&m.id) == Some(m.version),
                cordoned: m.cordoned,
                created_as: m.created_as,
            })
            .collect()
    }

    fn named(&self, kind: StepKind) -> Vec<MachineId> {
        self.steps
            .iter()
            .filter(|s| s.kind == kind)
            .filter_map(|s| s.machine_id.clone())
            .collect()
    }

    /// Runs the deployment to its end; `Err` says which rule broke.
    fn run(&mut self) -> Result<(), String> {
        let mut previous: Option<(Status, usize, Vec<Machine>)> = None;
        for _ in 0..300 {
            let machines = self.facts();
            let facts = Facts {
                strategy: self.case.strategy,
                max_unavailable: self.case.max_unavailable,
                initial_count: self.case.initial_count,
                rolling_back: self.status == Status::RollingBack,
                release_command: self.case.release_command.is_some(),
                scoped: false,
                steps: &self.steps,
                machines: &machines,
            };
            let next = next(&facts);
            self.log.push(format!("{next:?}"));
            // Every move that ran to its end changes the facts (the runner's own check).
            let now = (self.status, self.steps.len(), machines.clone());
            if previous.as_ref() == Some(&now) {
                return Err(format!("no progress: {next:?} changed nothing"));
            }
            match self.make(&next) {
                Ok(()) => previous = Some(now),
                // The next run of the control plane starts afresh.
                Err(Restart) => previous = None,
            }
            self.check_during()?;
            if matches!(
                self.status,
                Status::Succeeded | Status::RolledBack | Status::Failed
            ) {
                return self.check_end();
            }
        }
        Err("did not end within 300 moves".to_owned())
    }

    fn make(&mut self, next: &Next) -> Result<(), Restart> {
        match next {
            Next::Adopt(id, kind) => self.step(*kind, Some(id), "adopted"),
            Next::ReleaseCommand => {
                let id = match self.named(StepKind::ReleaseCommand).first() {
                    Some(id) => id.clone(),
                    None => {
                        let id = self.create(TARGET, false, StepKind::ReleaseCommand);
                        self.restart()?;
                        self.step(StepKind::ReleaseCommand, Some(&id), "release command");
                        id
                    }
                };
                self.restart()?;
                self.machine_mut(&id).live = false;
                self.restart()?;
                if self.case.release_command == Some(true) {
                    self.step(StepKind::Released, Some(&id), "exited 0");
                } else {
                    self.step(StepKind::Failed, Some(&id), "exited 1");
                }
            }
            Next::Abort(_) => {
                for id in self.named(StepKind::ReleaseCommand) {
                    self.machine_mut(&id).live = false;
                }
                self.restart()?;
                self.status = Status::Failed;
            }
            Next::Note(_) => self.step(StepKind::Note, None, "note"),
            Next::Create { kind, .. } => {
                let id = self.create(TARGET, true, *kind);
                self.restart()?;
                self.step(*kind, Some(&id), "created");
            }
            Next::Update(ids) => {
                if self.status != Status::Running {
                    panic!("an update while {:?}", self.status);
                }
                for id in ids {
                    self.restart()?;
                    self.step(StepKind::Update, Some(id), "updating");
                    self.restart()?;
                    self.machine_mut(id).version = TARGET;
                    if self.original.iter().any(|(o, _)| o == id) {
                        self.out.insert(id.clone());
                    }
                }
            }
            Next::Await(waits) => {
                for wait in waits {
                    self.restart()?;
                    let machine = self.machine(&wait.machine).clone();
                    // A machine of a good release may still crash while it is watched.
                    let crashed = self.draw().is_multiple_of(16);
                    let healthy =
                        machine.live && machine.version == TARGET && self.case.good && !crashed;
                    if healthy {
                        self.step(StepKind::Healthy, Some(&wait.machine), "healthy");
                        self.out.remove(&wait.machine);
                    } else {
                        self.step(StepKind::Failed, Some(&wait.machine), "failed");
                        break;
                    }
                }
            }
            Next::Switch(green) => {
                if !self.steps.iter().any(|s| s.kind == StepKind::Switch) {
                    self.restart()?;
                    self.step(StepKind::Switch, None, "switch");
                }
                self.restart()?;
                for id in green {
                    self.machine_mut(id).cordoned = false;
                }
            }
            Next::Retire(id) => {
                if self.case.strategy == Strategy::Bluegreen
                    && self.original.iter().any(|(o, _)| o == id)
                    && !self.steps.iter().any(|s| s.kind == StepKind::Switch)
                {
                    panic!("blue machine {id} retired before the switch");
                }
                if self.named(StepKind::Canary).contains(id)
                    && !self
                        .steps
                        .iter()
                        .any(|s| s.kind == StepKind::Healthy && s.machine_id.as_ref() == Some(id))
                {
                    panic!("canary {id} retired before it was healthy");
                }
                if !self
                    .steps
                    .iter()
                    .any(|s| s.kind == StepKind::Retire && s.machine_id.as_ref() == Some(id))
                {
                    self.restart()?;
                    self.step(StepKind::Retire, Some(id), "retire");
                }
                self.restart()?;
                self.machine_mut(id).live = false;
            }
            Next::Done => {
                self.restart()?;
                self.status = Status::Succeeded;
            }
            Next::RollBack(_) => {
                self.restart()?;
                self.status = Status::RollingBack;
            }
            Next::Restore(id) => {
                self.restart()?;
                self.step(StepKind::Rollback, Some(id), "restore");
                self.restart()?;
                let previous = self.previous(id).unwrap();
                self.machine_mut(id).version = previous;
            }
            Next::Discard(id) => {
                self.restart()?;
                self.step(StepKind::Rollback, Some(id), "discard");
                self.restart()?;
                self.machine_mut(id).live = false;
            }
            Next::Settle(waits) => {
                self.restart()?;
                let intact = waits.iter().all(|w| {
                    let m = self.machine(&w.machine);
                    m.live && Some(m.version) == self.previous(&w.machine)
                });
                self.status = if intact {
                    Status::RolledBack
                } else {
                    Status::Failed
                };
            }
        }
        Ok(())
    }

    /// What must hold after every move.
    fn check_during(&self) -> Result<(), String> {
        if self.out.len() > self.size {
            return Err(format!(
                "{} machines out of the rotation at once, max_unavailable {} allows {}",
                self.out.len(),
                self.case.max_unavailable,
                self.size
            ));
        }
        if self.case.strategy == Strategy::Bluegreen
            && !self.steps.iter().any(|s| s.kind == StepKind::Switch)
            && let Some(green) = self
                .machines
                .iter()
                .find(|m| m.live && m.created_as == Some(StepKind::Green) && !m.cordoned)
        {
            return Err(format!(
                "green {} takes traffic before the switch",
                green.id
            ));
        }
        let canaries = self
            .machines
            .iter()
            .filter(|m| m.live && m.created_as == Some(StepKind::Canary))
            .count();
        if canaries > 1 {
            return Err(format!("{canaries} canaries"));
        }
        Ok(())
    }

    /// What must hold when the deployment has ended.
    fn check_end(&self) -> Result<(), String> {
        let live: Vec<&Model> = self.machines.iter().filter(|m| m.live).collect();
        if let Some(left) = live.iter().find(|m| !m.in_group) {
            return Err(format!("release command machine {} left behind", left.id));
        }
        let changed = |m: &&Model| {
            !self
                .original
                .iter()
                .any(|(id, version)| *id == m.id && *version == m.version)
        };
        match self.status {
            Status::Succeeded => {
                if !self.case.good || self.case.release_command == Some(false) {
                    return Err("succeeded with a release that fails".to_owned());
                }
                let wanted = if self.original.is_empty() {
                    self.case.initial_count.max(1)
                } else {
                    self.original.len()
                };
                if live.len() != wanted {
                    return Err(format!("{} machines, not {wanted}", live.len()));
                }
                if let Some(m) = live.iter().find(|m| m.version != TARGET || m.cordoned) {
                    return Err(format!(
                        "machine {} on v{} (cordoned {})",
                        m.id, m.version, m.cordoned
                    ));
                }
                if let Some(m) = live
                    .iter()
                    .find(|m| matches!(m.created_as, Some(StepKind::Canary)))
                {
                    return Err(format!("canary {} left behind", m.id));
                }
            }
            Status::RolledBack | Status::Failed => {
                if self.status == Status::Failed && self.case.release_command != Some(false) {
                    return Err("failed, though the release command passed".to_owned());
                }
                if live.len() != self.original.len() {
                    return Err(format!(
                        "{} machines after the rollback, not {}",
                        live.len(),
                        self.original.len()
                    ));
                }
                if let Some(m) = live.iter().find(|m| changed(m) || m.cordoned) {
                    return Err(format!(
                        "machine {} on v{} after the rollback",
                        m.id, m.version
                    ));
                }
            }
            Status::Running | Status::RollingBack => unreachable!(),
        }
        Ok(())
    }
}

fn case() -> impl proptest::strategy::Strategy<Value = Case> {
    (
        prop::sample::select(vec![
            Strategy::Rolling,
            Strategy::Immediate,
            Strategy::Canary,
            Strategy::Bluegreen,
        ]),
        prop::sample::select(vec![0.01, 0.1, 0.33, 0.34, 0.5, 0.999, 1.0, 2.0, 3.0, 10.0]),
        0..7usize,
        1..4usize,
        prop::option::weighted(0.25, prop::bool::weighted(0.7)),
        prop::bool::weighted(0.7),
        prop::collection::vec(any::<u8>(), 1..48),
    )
        .prop_map(
            |(
                strategy,
                max_unavailable,
                machines,
                initial_count,
                release_command,
                good,
                faults,
            )| {
                Case {
                    strategy,
                    max_unavailable,
                    machines,
                    initial_count,
                    release_command,
                    good,
                    faults,
                }
            },
        )
}

fn cases() -> u32 {
    std::env::var("ALOFT_PLAN_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_deployment_ends_on_one_release_within_its_batch(case in case()) {
        let mut world = World::new(case.clone());
        let outcome = world.run();
        prop_assert!(outcome.is_ok(), "{}: {case:?}\n{}", outcome.unwrap_err(), world.log.join("\n"));
    }
}

/// A deployment with no faults: its moves are in the world's log.
fn deploy(strategy: Strategy, max_unavailable: f64, machines: usize) -> World {
    let mut world = World::new(Case {
        strategy,
        max_unavailable,
        machines,
        initial_count: 1,
        release_command: None,
        good: true,
        faults: Vec::new(),
    });
    let outcome = world.run();
    assert_eq!(outcome, Ok(()), "{:#?}", world.log);
    world
}

/// The machines each `update` move names.
fn batches(world: &World) -> Vec<usize> {
    world
        .log
        .iter()
        .filter(|l| l.starts_with("Update"))
        .map(|l| l.matches("MachineId").count())
        .collect()
}

#[test]
fn batches_follow_max_unavailable_as_counts_and_fractions() {
    assert_eq!(
        batches(&deploy(Strategy::Rolling, 1.0, 3)),
        [1, 1, 1],
        "1 is one machine"
    );
    assert_eq!(
        batches(&deploy(Strategy::Rolling, 2.0, 5)),
        [2, 2, 1],
        "2 is two machines"
    );
    assert_eq!(
        batches(&deploy(Strategy::Rolling, 0.34, 3)),
        [2, 1],
        "0.34 of 3 rounds up to 2"
    );
    assert_eq!(batches(&deploy(Strategy::Rolling, 0.33, 3)), [1, 1, 1]);
    assert_eq!(batches(&deploy(Strategy::Canary, 1.0, 3)), [1, 1, 1]);
    assert_eq!(
        batches(&deploy(Strategy::Immediate, 1.0, 3)),
        [3],
        "immediate: all at once"
    );
    assert!(
        batches(&deploy(Strategy::Bluegreen, 1.0, 3)).is_empty(),
        "bluegreen updates nothing"
    );
}

/// Rolling facts of a deployment that has noted its plan.
fn noted<'a>(steps: &'a [DeploymentStep], machines: &'a [Machine], scoped: bool) -> Facts<'a> {
    Facts {
        strategy: Strategy::Rolling,
        max_unavailable: 1.0,
        initial_count: 2,
        rolling_back: false,
        release_command: false,
        scoped,
        steps,
        machines,
    }
}

/// A scoped deployment (`--only-machines`, `--regions`): the machines out of its scope are
/// not in its group as the plan sees them; it updates only the others, and when none is
/// left it ends without creating any (an unscoped one would make the group's first).
#[test]
fn a_scoped_deployment_changes_only_its_machines_and_creates_none() {
    let machine = |n: usize, in_group: bool| Machine {
        id: id(n),
        in_group,
        on_target: false,
        on_previous: false,
        cordoned: false,
        created_as: None,
    };
    let steps = [DeploymentStep {
        number: 1,
        kind: StepKind::Note,
        machine_id: None,
        message: String::new(),
        previous_config: None,
        at: 1,
    }];
    let both = [machine(0, true), machine(1, false)];
    assert_eq!(next(&noted(&steps, &both, true)), Next::Update(vec![id(0)]));
    let outside = [machine(1, false)];
    assert_eq!(next(&noted(&steps, &outside, true)), Next::Done);
    // The control: unscoped, a group with no machine gets its first ones.
    assert!(matches!(
        next(&noted(&steps, &outside, false)),
        Next::Create { .. }
    ));
}
