//! The deployer's decisions, without IO: from a deployment's step log and the app's live
//! machines, the one next move. The runner (`act.rs`) loads these facts, asks for
//! the next move, makes it (logging its step before acting) and asks again, until the
//! deployment ends; a control plane that restarts anywhere asks again from the same
//! facts. Everything the deployer learns that matters later is in the step log: which
//! machines it created, updated, found healthy or failed, and whether it switched or
//! retired. A model of the platform drives this through every strategy with failures and
//! restarts between any two writes (`plan_tests.rs`).

use aloft_store::DeploymentStep;
use aloft_types::MachineId;
use aloft_types::deploy::{StepKind, Strategy};

use super::steps::batch_size;

/// One live machine of the app (not destroyed, being destroyed or asked to be), as the
/// deployment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Machine {
    pub id: MachineId,
    /// Of the release's process group.
    pub in_group: bool,
    /// Runs the release's config.
    pub on_target: bool,
    /// Runs the config its first `update` step kept (false when no step names it).
    pub on_previous: bool,
    pub cordoned: bool,
    /// Created by this deployment, for a step of this kind (its metadata says so).
    pub created_as: Option<StepKind>,
}

/// What the deployer knows when it decides.
#[derive(Debug, Clone)]
pub(super) struct Facts<'a> {
    pub strategy: Strategy,
    pub max_unavailable: f64,
    /// Machines to create when the app has none of the group.
    pub initial_count: usize,
    pub rolling_back: bool,
    pub release_command: bool,
    /// The deployment changes only some of the group's machines (`--only-machines`,
    /// `--regions`): those are the ones `in_group`, and it creates none.
    pub scoped: bool,
    pub steps: &'a [DeploymentStep],
    /// The app's live machines, oldest first.
    pub machines: &'a [Machine],
}

/// Wait for one machine to be healthy; check results count from `since` (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Wait {
    pub machine: MachineId,
    pub since: i64,
}

/// What the deployment notes before it changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Note {
    /// The app has none of the group: this many machines are created.
    Create { wanted: usize },
    /// `pending` of `of` machines are replaced, `size` at a time.
    Batches {
        pending: usize,
        of: usize,
        size: usize,
    },
    /// As many green machines as there are blue ones.
    Bluegreen { blue: usize },
    /// Every machine runs the release already.
    AlreadyThere,
}

/// The deployer's next move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// Log the step of a machine the deployment created before a restart kept the step
    /// from being logged (its metadata names the deployment and the kind).
    Adopt(MachineId, StepKind),
    /// Run the release command, or go on waiting for it (its step says which machine).
    ReleaseCommand,
    /// The release command failed (the reason): end `failed`, no machine changed.
    Abort(String),
    Note(Note),
    /// Create a machine of the release for a step of `kind`, in the region of `like`
    /// (else the default region); log the step once it exists.
    Create {
        kind: StepKind,
        like: Option<MachineId>,
    },
    /// For each machine: log an `update` step keeping its config, then update it.
    Update(Vec<MachineId>),
    /// Wait until each machine is healthy, which logs `healthy`, or `failed` and why.
    Await(Vec<Wait>),
    /// Put the green machines into the rotation (logging the switch first, unless it is).
    Switch(Vec<MachineId>),
    /// Destroy a machine the release replaced (logging `retire` first, unless it is).
    Retire(MachineId),
    /// Every machine runs the release: end `succeeded`.
    Done,
    /// A machine failed (the reason): mark the deployment rolling back.
    RollBack(String),
    /// Rolling back: put a machine on the config its first `update` step kept.
    Restore(MachineId),
    /// Rolling back: destroy a machine the deployment created.
    Discard(MachineId),
    /// Nothing left to undo: wait for the restored machines, then end.
    Settle(Vec<Wait>),
}

impl Facts<'_> {
    fn live(&self, id: &MachineId) -> Option<&Machine> {
        self.machines.iter().find(|m| &m.id == id)
    }

    /// The machines steps of `kind` name, each once, in order.
    fn named(&self, kind: StepKind) -> Vec<MachineId> {
        let mut ids: Vec<MachineId> = Vec::new();
        for step in self.steps.iter().filter(|s| s.kind == kind) {
            if let Some(id) = &step.machine_id
                && !ids.contains(id)
            {
                ids.push(id.clone());
            }
        }
        ids
    }

    fn logged(&self, kind: StepKind, machine: &MachineId) -> bool {
        self.steps
            .iter()
            .any(|s| s.kind == kind && s.machine_id.as_ref() == Some(machine))
    }

    fn noted(&self) -> bool {
        self.steps.iter().any(|s| s.kind == StepKind::Note)
    }

    /// When the deployment's first step was logged: check results older than that are
    /// not its.
    fn release_start(&self) -> i64 {
        self.steps.first().map_or(0, |s| s.at)
    }

    /// The machine's last step that started it on a new config.
    fn last_start(&self, machine: &MachineId) -> Option<&DeploymentStep> {
        self.steps
            .iter()
            .filter(|s| {
                s.machine_id.as_ref() == Some(machine) && StepKind::STARTING.contains(&s.kind)
            })
            .max_by_key(|s| s.number)
    }

    /// Found healthy since it last started on a new config.
    fn healthy(&self, machine: &MachineId) -> bool {
        let after = self.last_start(machine).map_or(0, |s| s.number);
        self.steps.iter().any(|s| {
            s.kind == StepKind::Healthy
                && s.machine_id.as_ref() == Some(machine)
                && s.number > after
        })
    }

    fn wait_since_release(&self, machine: &MachineId) -> Wait {
        Wait {
            machine: machine.clone(),
            since: self.release_start(),
        }
    }

    /// The live machines of the group, but those named in `except`.
    fn group_but(&self, except: &[MachineId]) -> Vec<&Machine> {
        self.machines
            .iter()
            .filter(|m| m.in_group && !except.contains(&m.id))
            .collect()
    }
}

/// The next move of the deployment these facts describe.
pub(super) fn next(facts: &Facts<'_>) -> Next {
    // A machine created just before a restart: its step first, so that the rest of the
    // plan (and a rollback) counts it.
    for machine in facts.machines {
        if let Some(kind) = machine.created_as
            && !facts
                .steps
                .iter()
                .any(|s| s.machine_id.as_ref() == Some(&machine.id))
        {
            return Next::Adopt(machine.id.clone(), kind);
        }
    }
    if facts.rolling_back {
        return roll_back(facts);
    }
    let command = facts.named(StepKind::ReleaseCommand);
    if facts.release_command && !facts.steps.iter().any(|s| s.kind == StepKind::Released) {
        let failed = facts.steps.iter().rev().find(|s| {
            s.kind == StepKind::Failed && s.machine_id.as_ref().is_some_and(|m| command.contains(m))
        });
        return match failed {
            Some(step) => Next::Abort(step.message.clone()),
            None => Next::ReleaseCommand,
        };
    }
    // A machine failed: everything it changed is undone.
    if let Some(step) = facts.steps.iter().rev().find(|s| {
        s.kind == StepKind::Failed && s.machine_id.as_ref().is_some_and(|m| !command.contains(m))
    }) {
        return Next::RollBack(step.message.clone());
    }
    let created = facts.named(StepKind::Create);
    let replacing = facts.steps.iter().any(|s| {
        matches!(
            s.kind,
            StepKind::Update | StepKind::Canary | StepKind::Green | StepKind::Retire
        )
    });
    if !created.is_empty() || (facts.group_but(&[]).is_empty() && !replacing) {
        if facts.scoped {
            // Its machines are gone (destroyed meanwhile): nothing is left to change, and
            // a scoped deployment makes no machines.
            return Next::Done;
        }
        return first_machines(facts, &created);
    }
    if facts.strategy == Strategy::Bluegreen {
        return bluegreen(facts);
    }
    replace(facts)
}

/// The app's first machines of the group (or the rest of them, after a restart).
fn first_machines(facts: &Facts<'_>, created: &[MachineId]) -> Next {
    let wanted = facts.initial_count.max(1);
    if !facts.noted() {
        return Next::Note(Note::Create { wanted });
    }
    if created.len() < wanted {
        return Next::Create {
            kind: StepKind::Create,
            like: None,
        };
    }
    await_or(facts, created, Next::Done)
}

/// Waits for those of `machines` not yet found healthy, else `then`.
fn await_or(facts: &Facts<'_>, machines: &[MachineId], then: Next) -> Next {
    let waits: Vec<Wait> = machines
        .iter()
        .filter(|id| !facts.healthy(id))
        .map(|id| facts.wait_since_release(id))
        .collect();
    if waits.is_empty() {
        then
    } else {
        Next::Await(waits)
    }
}

/// `rolling`, `immediate` and `canary` (after its canary): the machines not on the
/// release, a batch at a time; a batch's machines must all be healthy before the next
/// batch starts, so at most a batch's worth is ever out of the rotation.
fn replace(facts: &Facts<'_>) -> Next {
    let canaries = facts.named(StepKind::Canary);
    let machines = facts.group_but(&canaries);
    let pending: Vec<&Machine> = machines.iter().copied().filter(|m| !m.on_target).collect();
    let size = batch_size(facts.strategy, facts.max_unavailable, machines.len());
    if !facts.noted() {
        return Next::Note(Note::Batches {
            pending: pending.len(),
            of: machines.len(),
            size,
        });
    }
    if facts.strategy == Strategy::Canary && (!pending.is_empty() || !canaries.is_empty()) {
        match canaries.first() {
            None => {
                return Next::Create {
                    kind: StepKind::Canary,
                    like: machines.first().map(|m| m.id.clone()),
                };
            }
            Some(canary) => {
                let live = facts.live(canary).is_some();
                if facts.logged(StepKind::Retire, canary) || facts.healthy(canary) {
                    // Passed: it goes before the others are touched (again, after a
                    // restart between its step and its destroy).
                    if live {
                        return Next::Retire(canary.clone());
                    }
                } else {
                    return Next::Await(vec![facts.wait_since_release(canary)]);
                }
            }
        }
    }
    // The batch in flight: updated, not yet found healthy.
    let in_flight: Vec<Wait> = machines
        .iter()
        .filter(|m| m.on_target && !facts.healthy(&m.id))
        .filter_map(|m| {
            let step = facts.last_start(&m.id)?;
            (step.kind == StepKind::Update).then(|| Wait {
                machine: m.id.clone(),
                since: step.at,
            })
        })
        .collect();
    if !in_flight.is_empty() {
        return Next::Await(in_flight);
    }
    if pending.is_empty() {
        return Next::Done;
    }
    Next::Update(pending.iter().take(size).map(|m| m.id.clone()).collect())
}

/// `bluegreen`: as many green machines as blue ones, cordoned, all healthy; then traffic
/// switches to green in one write and blue goes. Past the switch nothing is checked again.
fn bluegreen(facts: &Facts<'_>) -> Next {
    let green = facts.named(StepKind::Green);
    let blue = facts.group_but(&green);
    if !facts.steps.iter().any(|s| s.kind == StepKind::Switch) {
        if green.is_empty() && blue.iter().all(|m| m.on_target) {
            if facts.noted() {
                return Next::Done;
            }
            return Next::Note(Note::AlreadyThere);
        }
        if !facts.noted() {
            return Next::Note(Note::Bluegreen { blue: blue.len() });
        }
        if let Some(like) = blue.get(green.len()) {
            return Next::Create {
                kind: StepKind::Green,
                like: Some(like.id.clone()),
            };
        }
        return await_or(facts, &green, Next::Switch(green.clone()));
    }
    if green
        .iter()
        .any(|id| facts.live(id).is_some_and(|m| m.cordoned))
    {
        return Next::Switch(green);
    }
    match blue.first() {
        Some(old) => Next::Retire(old.id.clone()),
        None => Next::Done,
    }
}

/// Undoing a failed release: every machine it updated goes back to the config its first
/// `update` step kept, every machine it created is destroyed, then the restored machines
/// must come back healthy.
fn roll_back(facts: &Facts<'_>) -> Next {
    let updated = facts.named(StepKind::Update);
    if let Some(machine) = updated
        .iter()
        .filter_map(|id| facts.live(id))
        .find(|m| !m.on_previous)
    {
        return Next::Restore(machine.id.clone());
    }
    for kind in StepKind::CREATING {
        if let Some(id) = facts
            .named(kind)
            .into_iter()
            .find(|id| facts.live(id).is_some())
        {
            return Next::Discard(id);
        }
    }
    Next::Settle(
        updated
            .iter()
            .filter(|id| facts.live(id).is_some())
            .map(|id| facts.wait_since_release(id))
            .collect(),
    )
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
