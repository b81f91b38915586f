//! Running deployments: one task per deployment, resumed from the store when the control
//! plane starts, which rolls the release out and rolls it back on failure.

use std::sync::Arc;

use aloft_store::{App, DeploymentRecord};
use aloft_types::deploy::{DeploymentStatus, ReleaseStatus, StepKind};

use super::rollback::roll_back;
use super::steps::{METADATA_DEPLOYMENT, METADATA_DEPLOYMENT_STEP, step};
use super::strategies::{Outcome, roll_out};
use crate::{ApiError, Inner};

/// Resumes every deployment a previous run of the control plane left running.
pub(crate) async fn resume(inner: &Arc<Inner>) -> Result<usize, ApiError> {
    let active = inner.store.active_deployments().await?;
    let count = active.len();
    for deployment in active {
        let app = inner.store.app(&deployment.app_id).await?;
        tracing::info!(app = %app.name, deployment = %deployment.id, status = %deployment.status, "resuming a deployment");
        spawn(inner.clone(), app, deployment);
    }
    Ok(count)
}

pub(super) fn spawn(inner: Arc<Inner>, app: App, deployment: DeploymentRecord) {
    let stopping = inner.stopping.clone();
    let tasks = inner.tasks.clone();
    tasks.spawn(async move {
        tokio::select! {
            outcome = run(&inner, &app, &deployment) => {
                if let Err(error) = outcome {
                    // The store itself failed: the deployment stays active and resumes on
                    // the next start; say so.
                    tracing::error!(app = %app.name, deployment = %deployment.id, %error, "a deployment stopped; it resumes when aloftd restarts");
                }
            }
            () = stopping.cancelled() => {
                tracing::info!(app = %app.name, deployment = %deployment.id, "the control plane stops; the deployment resumes at its next start");
            }
        }
    });
}

pub(super) async fn run(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
) -> Result<(), ApiError> {
    let release = inner.store.release(&deployment.release_id).await?;
    adopt_created(inner, app, deployment).await?;
    if deployment.status == DeploymentStatus::RollingBack {
        let why = deployment
            .error
            .clone()
            .unwrap_or_else(|| "the deployment failed".to_owned());
        return roll_back(inner, app, deployment, &release, &why).await;
    }
    match roll_out(inner, app, deployment, &release).await? {
        Outcome::Done => {
            inner
                .store
                .set_release_status(&release.id, ReleaseStatus::Complete)
                .await?;
            inner
                .store
                .set_deployment_status(&deployment.id, DeploymentStatus::Succeeded, None)
                .await?;
            tracing::info!(app = %app.name, deployment = %deployment.id, version = release.version, "deployment succeeded");
            Ok(())
        }
        Outcome::Abort(why) => {
            inner
                .store
                .set_release_status(&release.id, ReleaseStatus::Failed)
                .await?;
            inner
                .store
                .set_deployment_status(&deployment.id, DeploymentStatus::Failed, Some(&why))
                .await?;
            tracing::warn!(app = %app.name, deployment = %deployment.id, why, "deployment failed before changing any machine");
            Ok(())
        }
        Outcome::RollBack(why) => {
            inner
                .store
                .set_deployment_status(&deployment.id, DeploymentStatus::RollingBack, Some(&why))
                .await?;
            roll_back(inner, app, deployment, &release, &why).await
        }
    }
}

/// Logs a step for every live machine the deployment created whose step a restart kept
/// from being logged (see [`METADATA_DEPLOYMENT`]).
pub(super) async fn adopt_created(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
) -> Result<(), ApiError> {
    let steps = inner.store.steps_of(&deployment.id).await?;
    let machines = inner
        .store
        .list_machines(&app.id, &aloft_store::MachineFilter::default())
        .await?;
    for machine in machines {
        if machine.state.is_terminal()
            || machine.config.metadata.get(METADATA_DEPLOYMENT) != Some(&deployment.id)
            || steps
                .iter()
                .any(|s| s.machine_id.as_ref() == Some(&machine.id))
        {
            continue;
        }
        // The metadata can be written through the API: only a creating kind counts.
        let Some(kind) = machine
            .config
            .metadata
            .get(METADATA_DEPLOYMENT_STEP)
            .and_then(|kind| kind.parse::<StepKind>().ok())
            .filter(|kind| StepKind::CREATING.contains(kind) || *kind == StepKind::ReleaseCommand)
        else {
            continue;
        };
        let message = format!(
            "adopted machine {} in {}, created before a restart",
            machine.id, machine.region
        );
        step(inner, deployment, Some(&machine.id), kind, &message, None).await?;
    }
    Ok(())
}
