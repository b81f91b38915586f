//! Running deployments: one task per deployment, resumed from the store when the control
//! plane starts, which rolls the release out and rolls it back on failure.

use std::sync::Arc;
use std::time::Duration;

use aloft_store::{App, DeploymentRecord};
use aloft_types::deploy::{DeploymentStatus, ReleaseStatus, StepKind};

use super::act::run;
use super::steps::step;
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

/// How long a deployment waits before it resumes after the platform failed it (the store
/// or a host could not answer), doubling up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

pub(super) fn spawn(inner: Arc<Inner>, app: App, deployment: DeploymentRecord) {
    let stopping = inner.stopping.clone();
    let tasks = inner.tasks.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = run_to_the_end(&inner, &app, deployment.clone()) => {}
            () = stopping.cancelled() => {
                tracing::info!(app = %app.name, deployment = %deployment.id, "the control plane stops; the deployment resumes at its next start");
            }
        }
    });
}

/// Runs the deployment until it ends. What the platform failed at (the store, a host) is
/// retried, resuming from the store's record as a restart would; what the request itself
/// cannot get (no host in its region, a conflict, bad input) ends it: `failed` when no
/// machine was changed yet, else rolled back.
async fn run_to_the_end(inner: &Arc<Inner>, app: &App, mut deployment: DeploymentRecord) {
    let mut wait = FIRST_RETRY;
    loop {
        let error = match run(inner, app, &deployment).await {
            Ok(()) => return,
            Err(error) => error,
        };
        let mut pause = true;
        if transient(&error) {
            tracing::error!(app = %app.name, deployment = %deployment.id, %error, retry_in = ?wait, "a deployment stopped; it resumes");
        } else {
            let why = error.to_string();
            tracing::warn!(app = %app.name, deployment = %deployment.id, why, "a deployment step was refused");
            match give_up(inner, &deployment, &why).await {
                Ok(true) => return,
                // Marked rolling back: the next run rolls back at once.
                Ok(false) => pause = false,
                Err(error) => {
                    tracing::error!(app = %app.name, deployment = %deployment.id, %error, "ending a refused deployment failed; will retry");
                }
            }
        }
        if pause {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LAST_RETRY);
        }
        match inner.store.deployment(&app.id, &deployment.id).await {
            Ok(latest) if latest.status.is_active() => deployment = latest,
            Ok(_) => return,
            Err(error) => {
                tracing::error!(deployment = %deployment.id, %error, "reading a deployment to resume it failed; will retry");
            }
        }
    }
}

/// Whether the platform, not the request, failed (asking again later may work).
fn transient(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::Internal(_) | ApiError::Unavailable(_) | ApiError::Timeout(_)
    )
}

/// Ends a deployment a step of which was refused: `failed` when it changed no machine;
/// else marked rolling back, which the next run carries out. Whether it ended.
async fn give_up(
    inner: &Arc<Inner>,
    deployment: &DeploymentRecord,
    why: &str,
) -> Result<bool, ApiError> {
    if deployment.status == DeploymentStatus::RollingBack {
        // The rollback itself was refused: nothing more can be undone.
        inner
            .store
            .set_deployment_status(&deployment.id, DeploymentStatus::Failed, Some(why))
            .await?;
        inner
            .store
            .set_release_status(&deployment.release_id, ReleaseStatus::Failed)
            .await?;
        return Ok(true);
    }
    let steps = inner.store.steps_of(&deployment.id).await?;
    let changed = steps
        .iter()
        .any(|s| s.kind == StepKind::Update || StepKind::CREATING.contains(&s.kind));
    let status = if changed {
        DeploymentStatus::RollingBack
    } else {
        DeploymentStatus::Failed
    };
    step(inner, deployment, None, StepKind::Failed, why, None).await?;
    inner
        .store
        .set_deployment_status(&deployment.id, status, Some(why))
        .await?;
    if changed {
        return Ok(false);
    }
    inner
        .store
        .set_release_status(&deployment.release_id, ReleaseStatus::Failed)
        .await?;
    Ok(true)
}
