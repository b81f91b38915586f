//! Undoing a failed release: restoring every machine the deployment changed and
//! destroying the machines it created.

use std::sync::Arc;
use std::time::Duration;

use aloft_store::{App, DeploymentRecord, ReleaseRecord};
use aloft_types::deploy::{DeploymentStatus, ReleaseStatus, StepKind};

use super::health::{Smoke, healthy, release_start};
use super::steps::{runs, step};
use crate::{ApiError, Inner};

/// Puts back the config every changed machine had, destroys the machines the deployment
/// created, and ends it `rolled_back` (or `failed` when a restored machine does not come
/// back healthy).
pub(super) async fn roll_back(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    why: &str,
) -> Result<(), ApiError> {
    let steps = inner.store.steps_of(&deployment.id).await?;
    let wait = Duration::from_millis(u64::try_from(deployment.wait_timeout_ms).unwrap_or(0));
    let mut restored = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for update in steps.iter().filter(|s| s.kind == StepKind::Update) {
        let (Some(id), Some(previous)) = (&update.machine_id, &update.previous_config) else {
            continue;
        };
        // The first update of a machine holds the config it had before the deployment.
        if !seen.insert(id.clone()) {
            continue;
        }
        let Ok(current) = inner.store.machine(&app.id, id).await else {
            continue;
        };
        if current.state.is_terminal() {
            continue;
        }
        if !runs(&current.config, previous) {
            step(
                inner,
                deployment,
                Some(id),
                StepKind::Rollback,
                &format!("restoring machine {id} to its previous config"),
                None,
            )
            .await?;
            crate::machines::update_machine(inner, app, &current, previous.clone(), false, None)
                .await?;
        }
        restored.push(id.clone());
    }
    for id in steps
        .iter()
        .filter(|s| StepKind::CREATING.contains(&s.kind))
        .filter_map(|s| s.machine_id.as_ref())
    {
        if let Ok(machine) = inner.store.machine(&app.id, id).await
            && !machine.state.is_terminal()
            && machine.desired != aloft_store::Desired::Destroyed
        {
            step(
                inner,
                deployment,
                Some(id),
                StepKind::Rollback,
                &format!("destroying machine {id}, created by this deployment"),
                None,
            )
            .await?;
            crate::machines::destroy_forcibly(inner, &machine, true).await?;
        }
    }
    let since = release_start(&steps);
    // A restored machine runs a config that worked: it gets at least a minute.
    let wait = wait.max(Duration::from_secs(60));
    let mut intact = true;
    for id in &restored {
        // The release it runs again worked before: it must start and pass its checks, and
        // not stop for good; the crash loop of the failed release it leaves behind may
        // still show an exit or two, which are not its own.
        if healthy(inner, app, deployment, id, since, wait, Smoke::Off)
            .await?
            .is_err()
        {
            intact = false;
        }
    }
    inner
        .store
        .set_release_status(&release.id, ReleaseStatus::Failed)
        .await?;
    let status = if intact {
        DeploymentStatus::RolledBack
    } else {
        DeploymentStatus::Failed
    };
    inner
        .store
        .set_deployment_status(&deployment.id, status, Some(why))
        .await?;
    tracing::warn!(app = %app.name, deployment = %deployment.id, %status, why, "deployment did not succeed");
    Ok(())
}
