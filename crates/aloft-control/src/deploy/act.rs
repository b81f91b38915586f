//! Making the plan's moves: loading the facts it decides from, and each move's writes,
//! its step first (what it is about to do, so a restart finds it), then the change.

use std::sync::Arc;
use std::time::Duration;

use aloft_store::{App, DeploymentRecord, DeploymentStep, Desired, MachineRecord, ReleaseRecord};
use aloft_types::api::MachineRequest;
use aloft_types::deploy::{DeploymentStatus, ReleaseStatus, StepKind};
use aloft_types::machine::MachineConfig;
use aloft_types::{EventKind, MachineId, MachineState};
use serde_json::json;

use super::health::{Smoke, healthy};
use super::plan::{Facts, Machine, Next, Note, Wait};
use super::release_command::release_command;
use super::steps::{
    METADATA_DEPLOYMENT, METADATA_DEPLOYMENT_STEP, created_by, group_of, machines_in, runs, step,
    target_of,
};
use crate::{ApiError, Inner};

/// Whether a machine in `state` has no process left to stop.
fn at_rest(state: MachineState) -> bool {
    use MachineState::*;
    matches!(
        state,
        Created | Stopped | Suspended | Failed | LaunchFailed | Destroying
    ) || state.is_terminal()
}

/// The kill timeout of a machine whose config names none (Fly's default, and the agent's).
const RETIRE_KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long past its kill timeout a retired machine may take to be seen stopped (the
/// runtime's own stop, the agent's report) before it is destroyed anyway.
const RETIRE_MARGIN: Duration = Duration::from_secs(10);

/// The app's live machines, oldest first: as the plan sees them, and as stored.
pub(super) async fn machines(
    inner: &Inner,
    app: &App,
    deployment: &DeploymentRecord,
    target: &MachineConfig,
    steps: &[DeploymentStep],
) -> Result<(Vec<Machine>, Vec<MachineRecord>), ApiError> {
    let group = group_of(target);
    let mut records: Vec<MachineRecord> = inner
        .store
        .list_machines(&app.id, &aloft_store::MachineFilter::default())
        .await?
        .into_iter()
        .filter(|m| {
            !m.state.is_terminal()
                && m.state != MachineState::Destroying
                && m.desired != aloft_store::Desired::Destroyed
        })
        .collect();
    records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let seen = records
        .iter()
        .map(|m| Machine {
            id: m.id.clone(),
            in_group: group_of(&m.config) == group
                && deployment
                    .scope
                    .as_ref()
                    .is_none_or(|s| s.admits(m.id.as_str(), &m.region)),
            on_target: runs(&m.config, target),
            on_previous: previous_config(steps, &m.id).is_some_and(|p| runs(&m.config, p)),
            cordoned: m.cordoned,
            // The metadata can be written through the API: only a creating kind counts.
            created_as: (m.config.metadata.get(METADATA_DEPLOYMENT) == Some(&deployment.id))
                .then(|| {
                    m.config
                        .metadata
                        .get(METADATA_DEPLOYMENT_STEP)?
                        .parse()
                        .ok()
                })
                .flatten()
                .filter(|kind: &StepKind| {
                    StepKind::CREATING.contains(kind) || *kind == StepKind::ReleaseCommand
                }),
        })
        .collect();
    Ok((seen, records))
}

/// The config a machine had before the deployment: its first `update` step keeps it.
fn previous_config<'a>(steps: &'a [DeploymentStep], id: &MachineId) -> Option<&'a MachineConfig> {
    steps
        .iter()
        .find(|s| s.kind == StepKind::Update && s.machine_id.as_ref() == Some(id))?
        .previous_config
        .as_ref()
}

/// Runs the deployment's moves until it ends.
pub(super) async fn run(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
) -> Result<(), ApiError> {
    let release = inner.store.release(&deployment.release_id).await?;
    let target = target_of(&release);
    let mut deployment = deployment.clone();
    let mut last: Option<(DeploymentStatus, usize, Vec<Machine>)> = None;
    loop {
        let steps = inner.store.steps_of(&deployment.id).await?;
        let (seen, records) = machines(inner, app, &deployment, &target, &steps).await?;
        let facts = Facts {
            strategy: deployment.strategy,
            max_unavailable: deployment.max_unavailable,
            initial_count: usize::try_from(deployment.initial_count).unwrap_or(1),
            rolling_back: deployment.status == DeploymentStatus::RollingBack,
            release_command: deployment.release_command.is_some(),
            scoped: deployment.scope.is_some(),
            steps: &steps,
            machines: &seen,
        };
        let next = super::plan::next(&facts);
        tracing::debug!(deployment = %deployment.id, ?next, "the deployment's next move");
        // Every move changes what the plan sees (a step, a machine): the same facts twice
        // mean a write did not take, and repeating the move would spin.
        let now = (deployment.status, steps.len(), seen.clone());
        if last.as_ref() == Some(&now) {
            return Err(ApiError::Conflict(format!(
                "the deployment made no progress: {next:?} did not change the app"
            )));
        }
        let region_of = |id: &Option<MachineId>| {
            id.as_ref()
                .and_then(|id| records.iter().find(|m| &m.id == id))
                .map(|m| m.region.clone())
        };
        let moves = Moves {
            inner,
            app,
            deployment: &deployment,
            release: &release,
            target: &target,
        };
        match &next {
            Next::Adopt(id, kind) => {
                let region = region_of(&Some(id.clone())).unwrap_or_default();
                let message = format!("adopted machine {id} in {region}, created before a restart");
                step(inner, &deployment, Some(id), *kind, &message, None).await?;
            }
            Next::ReleaseCommand => {
                if let Some(command) = &deployment.release_command {
                    // It logs `released`, or `failed` and why, which the plan reads.
                    let _ = release_command(inner, app, &deployment, &release, command).await?;
                }
            }
            Next::Abort(why) => {
                for id in machines_in(&steps, StepKind::ReleaseCommand) {
                    moves.destroy(&id, true).await?;
                }
                moves
                    .end(ReleaseStatus::Failed, DeploymentStatus::Failed, Some(why))
                    .await?;
                tracing::warn!(app = %app.name, deployment = %deployment.id, why, "deployment failed before changing any machine");
                return Ok(());
            }
            Next::Note(note) => {
                let message = moves.note(*note, &facts);
                step(inner, &deployment, None, StepKind::Note, &message, None).await?;
            }
            Next::Create { kind, like } => moves.create(*kind, region_of(like)).await?,
            Next::Update(ids) => {
                for id in ids {
                    let current = inner.store.machine(&app.id, id).await?;
                    let message = format!("updating machine {id} to release v{}", release.version);
                    step(
                        inner,
                        &deployment,
                        Some(id),
                        StepKind::Update,
                        &message,
                        Some(&current.config),
                    )
                    .await?;
                    crate::machines::update_machine(
                        inner,
                        app,
                        &current,
                        target.clone(),
                        false,
                        None,
                    )
                    .await?;
                }
            }
            Next::Await(waits) => {
                // A failure is logged, and the plan rolls back.
                let _ = moves.wait(waits, Smoke::Deployment).await?;
            }
            Next::Switch(green) => {
                if !steps.iter().any(|s| s.kind == StepKind::Switch) {
                    // Logged first: its time bounds when green may first answer.
                    let message = format!(
                        "all {} green machine(s) pass their checks; switching traffic to them, then destroying the blue ones",
                        green.len()
                    );
                    step(inner, &deployment, None, StepKind::Switch, &message, None).await?;
                }
                // Every green machine enters the rotation in one write.
                inner.store.set_cordoned_all(&app.id, green, false).await?;
                inner.catalog_dirty.notify_one();
            }
            Next::Retire(id) => {
                if !steps
                    .iter()
                    .any(|s| s.kind == StepKind::Retire && s.machine_id.as_ref() == Some(id))
                {
                    let why = if machines_in(&steps, StepKind::Canary).contains(id) {
                        "the canary passed; destroying it"
                    } else {
                        "blue machine replaced"
                    };
                    let message = format!("destroying machine {id}: {why}");
                    step(
                        inner,
                        &deployment,
                        Some(id),
                        StepKind::Retire,
                        &message,
                        None,
                    )
                    .await?;
                }
                moves.retire(id).await?;
            }
            Next::Done => {
                moves
                    .end(ReleaseStatus::Complete, DeploymentStatus::Succeeded, None)
                    .await?;
                tracing::info!(app = %app.name, deployment = %deployment.id, version = release.version, "deployment succeeded");
                return Ok(());
            }
            Next::RollBack(why) => {
                inner
                    .store
                    .set_deployment_status(&deployment.id, DeploymentStatus::RollingBack, Some(why))
                    .await?;
                deployment.status = DeploymentStatus::RollingBack;
                deployment.error = Some(why.clone());
            }
            Next::Restore(id) => {
                let current = inner.store.machine(&app.id, id).await?;
                let Some(previous) = previous_config(&steps, id) else {
                    return Err(ApiError::Conflict(format!(
                        "machine {id} has no previous config to restore"
                    )));
                };
                let message = format!("restoring machine {id} to its previous config");
                step(
                    inner,
                    &deployment,
                    Some(id),
                    StepKind::Rollback,
                    &message,
                    None,
                )
                .await?;
                crate::machines::update_machine(
                    inner,
                    app,
                    &current,
                    previous.clone(),
                    false,
                    None,
                )
                .await?;
            }
            Next::Discard(id) => {
                let message = format!("destroying machine {id}, created by this deployment");
                step(
                    inner,
                    &deployment,
                    Some(id),
                    StepKind::Rollback,
                    &message,
                    None,
                )
                .await?;
                moves.destroy(id, true).await?;
            }
            Next::Settle(waits) => {
                // A restored machine runs a config that worked: it must start and pass its
                // checks, and not stop for good, within at least a minute; the crash loop
                // of the failed release it leaves may still show an exit or two.
                let intact = moves.wait(waits, Smoke::Off).await?.is_ok();
                let status = if intact {
                    DeploymentStatus::RolledBack
                } else {
                    DeploymentStatus::Failed
                };
                let why = deployment
                    .error
                    .clone()
                    .unwrap_or_else(|| "the deployment failed".to_owned());
                moves.end(ReleaseStatus::Failed, status, Some(&why)).await?;
                tracing::warn!(app = %app.name, deployment = %deployment.id, %status, why, "deployment did not succeed");
                return Ok(());
            }
        }
        aloft_crash::reach(aloft_crash::Point::DeployMove);
        last = Some(now);
    }
}

/// What the moves share.
struct Moves<'a> {
    inner: &'a Arc<Inner>,
    app: &'a App,
    deployment: &'a DeploymentRecord,
    release: &'a ReleaseRecord,
    target: &'a MachineConfig,
}

impl Moves<'_> {
    fn note(&self, note: Note, facts: &Facts<'_>) -> String {
        let version = self.release.version;
        match note {
            Note::Create { wanted } => format!(
                "creating {wanted} machine(s) of process group {} with release v{version}",
                group_of(self.target)
            ),
            Note::Batches { pending, of, size } => format!(
                "{} strategy: {pending} of {of} machine(s) to update, {size} at a time, to release v{version}",
                facts.strategy
            ),
            Note::Bluegreen { blue } => format!(
                "bluegreen strategy: {blue} green machine(s) of release v{version} next to {blue} blue one(s)"
            ),
            Note::AlreadyThere => {
                format!("bluegreen strategy: every machine already runs release v{version}")
            }
        }
    }

    /// Creates one machine of the release (in `region`, else the default one), then logs
    /// its step; its metadata names both, for a restart in between.
    async fn create(&self, kind: StepKind, region: Option<String>) -> Result<(), ApiError> {
        let mut request =
            MachineRequest::new(created_by(self.target.clone(), self.deployment, kind));
        request.region = region;
        // Green machines take no traffic until the switch.
        let cordoned = kind == StepKind::Green;
        let machine = crate::machines::create_machine_as(
            self.inner,
            self.app,
            request,
            &self.release.created_by,
            cordoned,
        )
        .await?;
        let version = self.release.version;
        let message = match kind {
            StepKind::Canary => format!(
                "created canary machine {} in {} with release v{version}",
                machine.id, machine.region
            ),
            StepKind::Green => format!(
                "created green machine {} in {} with release v{version}",
                machine.id, machine.region
            ),
            _ => format!("created machine {} in {}", machine.id, machine.region),
        };
        step(
            self.inner,
            self.deployment,
            Some(&machine.id),
            kind,
            &message,
            None,
        )
        .await
    }

    /// Waits for each machine in turn; the first failure (logged by [`healthy`]) ends it.
    async fn wait(&self, waits: &[Wait], smoke: Smoke) -> Result<Result<(), String>, ApiError> {
        let mut wait =
            Duration::from_millis(u64::try_from(self.deployment.wait_timeout_ms).unwrap_or(0));
        if smoke == Smoke::Off {
            wait = wait.max(Duration::from_secs(60));
        }
        let mut outcome = Ok(());
        for each in waits {
            let result = healthy(
                self.inner,
                self.app,
                self.deployment,
                &each.machine,
                each.since,
                wait,
                smoke,
            )
            .await?;
            if result.is_err() {
                outcome = result;
                if smoke == Smoke::Deployment {
                    break;
                }
            }
        }
        Ok(outcome)
    }

    /// Destroys a machine, unless that was done already.
    async fn destroy(&self, id: &MachineId, force: bool) -> Result<(), ApiError> {
        let machine = self.inner.store.machine(&self.app.id, id).await?;
        if machine.state.is_terminal() || machine.desired == aloft_store::Desired::Destroyed {
            return Ok(());
        }
        crate::machines::destroy_forcibly(self.inner, &machine, force).await
    }

    /// Retires a machine the deployment replaced (a blue one, a passed canary): stopped
    /// first, as `aloft machine stop` does (out of the proxy's rotation once it stops, its
    /// kill signal, then up to its kill timeout for the requests in flight to finish), then
    /// destroyed. A destroy alone would give a running machine one second. Run again after
    /// a restart, it carries on from whatever state the machine reached.
    async fn retire(&self, id: &MachineId) -> Result<(), ApiError> {
        let inner = self.inner;
        let mut observed = inner.observed.subscribe();
        let machine = inner.store.machine(&self.app.id, id).await?;
        if machine.state.is_terminal() || machine.desired == Desired::Destroyed {
            return Ok(());
        }
        if machine.desired != Desired::Stopped {
            let _stopping = crate::machines::stop_machine(
                inner,
                &machine,
                (
                    EventKind::Stop,
                    json!({ "reason": "retired by a deployment" }),
                ),
                None,
                None,
            )
            .await?;
        }
        let kill_timeout = machine
            .config
            .stop_config
            .as_ref()
            .and_then(|s| s.timeout)
            .map_or(RETIRE_KILL_TIMEOUT, |t| t.as_std());
        let deadline = tokio::time::Instant::now() + kill_timeout + RETIRE_MARGIN;
        loop {
            let current = inner.store.machine(&self.app.id, id).await?;
            if at_rest(current.state) || tokio::time::Instant::now() >= deadline {
                if !at_rest(current.state) {
                    tracing::warn!(machine = %id, "a retired machine did not stop within its kill timeout; destroying it");
                }
                return self.destroy(id, false).await;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            crate::hosts::observed_change(&mut observed, id, left.min(Duration::from_secs(1)))
                .await;
        }
    }

    async fn end(
        &self,
        release: ReleaseStatus,
        deployment: DeploymentStatus,
        why: Option<&str>,
    ) -> Result<(), ApiError> {
        self.inner
            .store
            .set_release_status(&self.release.id, release)
            .await?;
        self.inner
            .store
            .set_deployment_status(&self.deployment.id, deployment, why)
            .await?;
        Ok(())
    }
}
