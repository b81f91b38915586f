//! Rolling out a release: the first machines of a group, then `rolling`/`immediate`
//! batches, the `canary` and `bluegreen` strategies, and retiring replaced machines.

use std::sync::Arc;
use std::time::Duration;

use aloft_store::{App, DeploymentRecord, DeploymentStep, MachineRecord, ReleaseRecord};
use aloft_types::api::MachineRequest;
use aloft_types::deploy::{StepKind, Strategy};
use aloft_types::{MachineId, MachineState};

use super::health::{Smoke, healthy, release_start};
use super::release_command::release_command;
use super::steps::{batch_size, created_by, group_of, logged, machines_in, runs, step, target_of};
use crate::{ApiError, Inner};

/// The app's machines of `group` that are not being destroyed, oldest first.
pub(super) async fn machines_of(
    inner: &Inner,
    app: &App,
    group: &str,
) -> Result<Vec<MachineRecord>, ApiError> {
    let mut machines: Vec<MachineRecord> = inner
        .store
        .list_machines(&app.id, &aloft_store::MachineFilter::default())
        .await?
        .into_iter()
        .filter(|m| {
            !m.state.is_terminal()
                && m.state != MachineState::Destroying
                && m.desired != aloft_store::Desired::Destroyed
                && group_of(&m.config) == group
        })
        .collect();
    machines.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(machines)
}

/// How a roll-out ended.
pub(super) enum Outcome {
    /// Every machine runs the release and passes its checks.
    Done,
    /// Nothing was changed (the release command failed): the deployment fails as is.
    Abort(String),
    /// Machines were changed and the release failed: put them back.
    RollBack(String),
}

/// Creates one machine of the release (in `region`, else the default one).
pub(super) async fn create_for(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    region: Option<&str>,
    kind: StepKind,
) -> Result<MachineRecord, ApiError> {
    let mut request = MachineRequest::new(created_by(target_of(release), deployment, kind));
    request.region = region.map(str::to_owned);
    // Green machines take no traffic until the switch.
    let cordoned = kind == StepKind::Green;
    crate::machines::create_machine_as(inner, app, request, &release.created_by, cordoned).await
}

/// Runs the release command (once), then creates or replaces the machines; `Abort` and
/// `RollBack` say why the release failed.
pub(super) async fn roll_out(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
) -> Result<Outcome, ApiError> {
    if let Some(command) = &deployment.release_command
        && let Err(why) = release_command(inner, app, deployment, release, command).await?
    {
        return Ok(Outcome::Abort(why));
    }
    let target = &target_of(release);
    let group = group_of(target).to_owned();
    let wait = Duration::from_millis(u64::try_from(deployment.wait_timeout_ms).unwrap_or(0));
    let steps = inner.store.steps_of(&deployment.id).await?;
    let created = machines_in(&steps, StepKind::Create);
    let machines = machines_of(inner, app, &group).await?;
    // Check results older than the deployment are not its (a passing check is recorded
    // when it changes, not at every probe).
    let since = release_start(&steps);
    let replacing = steps.iter().any(|s| {
        matches!(
            s.kind,
            StepKind::Update | StepKind::Canary | StepKind::Green | StepKind::Retire
        )
    });
    let noted = steps.iter().any(|s| s.kind == StepKind::Note);
    if !created.is_empty() || (machines.is_empty() && !replacing) {
        // The app's first machines of this group (or the rest of them, after a restart).
        let wanted = usize::try_from(deployment.initial_count).unwrap_or(1);
        let mut made = created;
        if !noted {
            let message = format!(
                "creating {wanted} machine(s) of process group {group} with release v{}",
                release.version
            );
            step(inner, deployment, None, StepKind::Note, &message, None).await?;
        }
        while made.len() < wanted {
            let machine =
                create_for(inner, app, deployment, release, None, StepKind::Create).await?;
            let message = format!("created machine {} in {}", machine.id, machine.region);
            step(
                inner,
                deployment,
                Some(&machine.id),
                StepKind::Create,
                &message,
                None,
            )
            .await?;
            made.push(machine.id);
        }
        for id in &made {
            if let Err(why) =
                healthy(inner, app, deployment, id, since, wait, Smoke::Deployment).await?
            {
                return Ok(Outcome::RollBack(why));
            }
        }
        return Ok(Outcome::Done);
    }
    let strategy = deployment.strategy;
    if strategy == Strategy::Bluegreen {
        return bluegreen(inner, app, deployment, release, &steps, machines, wait).await;
    }
    let pending: Vec<&MachineRecord> = machines
        .iter()
        .filter(|m| !runs(&m.config, target))
        .collect();
    let size = batch_size(strategy, deployment.max_unavailable, machines.len());
    if !noted {
        let message = format!(
            "{strategy} strategy: {} of {} machine(s) to update, {size} at a time, to release v{}",
            pending.len(),
            machines.len(),
            release.version
        );
        step(inner, deployment, None, StepKind::Note, &message, None).await?;
    }
    if strategy == Strategy::Canary
        && (!pending.is_empty() || !machines_in(&steps, StepKind::Canary).is_empty())
        && let Err(why) = canary(inner, app, deployment, release, &steps, &machines, wait).await?
    {
        return Ok(Outcome::RollBack(why));
    }
    // Machines a resumed deployment already updated are checked like the others.
    for id in machines_in(&steps, StepKind::Update) {
        if machines
            .iter()
            .any(|m| m.id == id && runs(&m.config, target))
            && let Err(why) =
                healthy(inner, app, deployment, &id, since, wait, Smoke::Deployment).await?
        {
            return Ok(Outcome::RollBack(why));
        }
    }
    for batch in pending.chunks(size) {
        let since = aloft_store::now_ms();
        for machine in batch {
            step(
                inner,
                deployment,
                Some(&machine.id),
                StepKind::Update,
                &format!(
                    "updating machine {} to release v{}",
                    machine.id, release.version
                ),
                Some(&machine.config),
            )
            .await?;
            let current = inner.store.machine(&app.id, &machine.id).await?;
            crate::machines::update_machine(inner, app, &current, target.clone(), false, None)
                .await?;
        }
        for machine in batch {
            if let Err(why) = healthy(
                inner,
                app,
                deployment,
                &machine.id,
                since,
                wait,
                Smoke::Deployment,
            )
            .await?
            {
                return Ok(Outcome::RollBack(why));
            }
        }
    }
    Ok(Outcome::Done)
}

/// `canary`: one new machine of the release, next to the others, must start and pass its
/// checks; it is then destroyed and the rolling update follows.
pub(super) async fn canary(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    steps: &[DeploymentStep],
    machines: &[MachineRecord],
    wait: Duration,
) -> Result<Result<(), String>, ApiError> {
    let id = match machines_in(steps, StepKind::Canary).into_iter().next() {
        Some(id) => id,
        None => {
            let region = machines.first().map(|m| m.region.as_str());
            let machine =
                create_for(inner, app, deployment, release, region, StepKind::Canary).await?;
            let message = format!(
                "created canary machine {} in {} with release v{}",
                machine.id, machine.region, release.version
            );
            step(
                inner,
                deployment,
                Some(&machine.id),
                StepKind::Canary,
                &message,
                None,
            )
            .await?;
            machine.id
        }
    };
    if logged(steps, StepKind::Retire, &id) {
        // Its destroy was asked for; a restart may have come between the step and the
        // destroy itself, so it is asked for again (a no-op once done).
        destroy_retired(inner, app, &id).await?;
        return Ok(Ok(()));
    }
    let since = release_start(steps);
    if let Err(why) = healthy(inner, app, deployment, &id, since, wait, Smoke::Deployment).await? {
        return Ok(Err(why));
    }
    retire(
        inner,
        app,
        deployment,
        &id,
        "the canary passed; destroying it",
    )
    .await?;
    Ok(Ok(()))
}

/// `bluegreen`: as many new machines as the group has, created next to the old ones,
/// cordoned (no traffic reaches them), and all passing their checks; then traffic
/// switches to all of them at once (one write uncordons them) and the old machines are
/// destroyed. A rollback destroys the green machines, which never served.
pub(super) async fn bluegreen(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    steps: &[DeploymentStep],
    machines: Vec<MachineRecord>,
    wait: Duration,
) -> Result<Outcome, ApiError> {
    let target = &target_of(release);
    let mut green = machines_in(steps, StepKind::Green);
    // Past the switch (logged before it is made), nothing is checked again: the switch
    // is made (again: it is idempotent) and blue goes.
    let retiring = steps.iter().any(|s| s.kind == StepKind::Switch);
    let blue: Vec<MachineRecord> = machines
        .into_iter()
        .filter(|m| !green.contains(&m.id))
        .collect();
    if !retiring {
        if green.is_empty() && blue.iter().all(|m| runs(&m.config, target)) {
            let message = format!(
                "bluegreen strategy: every machine already runs release v{}",
                release.version
            );
            step(inner, deployment, None, StepKind::Note, &message, None).await?;
            return Ok(Outcome::Done);
        }
        if !steps.iter().any(|s| s.kind == StepKind::Note) {
            let message = format!(
                "bluegreen strategy: {} green machine(s) of release v{} next to {} blue one(s)",
                blue.len(),
                release.version,
                blue.len()
            );
            step(inner, deployment, None, StepKind::Note, &message, None).await?;
        }
        for old in blue.iter().skip(green.len()) {
            let machine = create_for(
                inner,
                app,
                deployment,
                release,
                Some(&old.region),
                StepKind::Green,
            )
            .await?;
            let message = format!(
                "created green machine {} in {} with release v{}",
                machine.id, machine.region, release.version
            );
            step(
                inner,
                deployment,
                Some(&machine.id),
                StepKind::Green,
                &message,
                None,
            )
            .await?;
            green.push(machine.id);
        }
        let since = release_start(steps);
        for id in &green {
            if let Err(why) =
                healthy(inner, app, deployment, id, since, wait, Smoke::Deployment).await?
            {
                return Ok(Outcome::RollBack(why));
            }
        }
        // The switch: logged first (its time bounds when green may first answer), then
        // every green machine enters the rotation in one write.
        let message = format!(
            "all {} green machine(s) pass their checks; switching traffic to them, then destroying the blue ones",
            green.len()
        );
        step(inner, deployment, None, StepKind::Switch, &message, None).await?;
    }
    inner.store.set_cordoned_all(&app.id, &green, false).await?;
    inner.catalog_dirty.notify_one();
    for old in &blue {
        retire(inner, app, deployment, &old.id, "blue machine replaced").await?;
    }
    Ok(Outcome::Done)
}

/// Destroys a machine the release no longer needs (logged as `retire`).
pub(super) async fn retire(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    id: &MachineId,
    why: &str,
) -> Result<(), ApiError> {
    let machine = inner.store.machine(&app.id, id).await?;
    if machine.state.is_terminal() || machine.desired == aloft_store::Desired::Destroyed {
        return Ok(());
    }
    let message = format!("destroying machine {id}: {why}");
    step(
        inner,
        deployment,
        Some(id),
        StepKind::Retire,
        &message,
        None,
    )
    .await?;
    destroy_retired(inner, app, id).await
}

/// Destroys a machine a `retire` step names, unless that was done already.
pub(super) async fn destroy_retired(
    inner: &Arc<Inner>,
    app: &App,
    id: &MachineId,
) -> Result<(), ApiError> {
    let machine = inner.store.machine(&app.id, id).await?;
    if machine.state.is_terminal() || machine.desired == aloft_store::Desired::Destroyed {
        return Ok(());
    }
    crate::machines::destroy_forcibly(inner, &machine, false).await
}
