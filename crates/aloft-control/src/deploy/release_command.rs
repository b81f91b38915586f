//! The release command: once per deployment, in a temporary machine of the release,
//! before any machine changes.

use std::sync::Arc;
use std::time::Duration;

use aloft_store::{App, DeploymentRecord, ReleaseRecord};
use aloft_types::api::MachineRequest;
use aloft_types::deploy::StepKind;
use aloft_types::machine::METADATA_PROCESS_GROUP;
use aloft_types::{EventKind, MachineState};

use super::health::{last_lines, launch_failure, release_start};
use super::steps::{created_by, machines_in, step, target_of};
use crate::{ApiError, Inner};

/// The process group of release command machines (Fly's name).
pub(super) const RELEASE_COMMAND_GROUP: &str = "fly_app_release_command";

/// How long a release command may run unless the deployment says otherwise.
pub(super) const DEFAULT_RELEASE_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the release command once in a temporary machine of the release (its env and
/// secrets; no services, checks or volumes), and destroys the machine; the inner error
/// says why the command failed, with its output.
pub(super) async fn release_command(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    release: &ReleaseRecord,
    command: &[String],
) -> Result<Result<(), String>, ApiError> {
    let steps = inner.store.steps_of(&deployment.id).await?;
    if steps.iter().any(|s| s.kind == StepKind::Released) {
        return Ok(Ok(()));
    }
    let shown = command.join(" ");
    let id = match machines_in(&steps, StepKind::ReleaseCommand)
        .into_iter()
        .next()
    {
        Some(id) => id,
        None => {
            let mut config = target_of(release);
            config.init.cmd = command.to_vec();
            config.init.exec.clear();
            config.services.clear();
            config.checks.clear();
            config.mounts.clear();
            config.statics.clear();
            config.metrics = None;
            config.schedule = None;
            // `[deploy.release_command_vm]`, and the variable Fly sets for the command.
            if let Some(guest) = &deployment.release_command_guest {
                config.guest = Some(guest.clone());
            }
            config
                .env
                .insert("RELEASE_COMMAND".to_owned(), "1".to_owned());
            config.auto_destroy = false;
            config.restart = Some(aloft_types::machine::MachineRestart {
                policy: Some(aloft_types::machine::RestartPolicy::No),
                max_retries: 0,
            });
            config.metadata.insert(
                METADATA_PROCESS_GROUP.to_owned(),
                RELEASE_COMMAND_GROUP.to_owned(),
            );
            let request =
                MachineRequest::new(created_by(config, deployment, StepKind::ReleaseCommand));
            let machine =
                crate::machines::create_machine(inner, app, request, &release.created_by).await?;
            let message = format!(
                "running release command `{shown}` in temporary machine {}",
                machine.id
            );
            step(
                inner,
                deployment,
                Some(&machine.id),
                StepKind::ReleaseCommand,
                &message,
                None,
            )
            .await?;
            machine.id
        }
    };
    let timeout = deployment
        .release_command_timeout_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or(DEFAULT_RELEASE_COMMAND_TIMEOUT, Duration::from_millis);
    let started = release_start(&steps);
    let deadline = tokio::time::Instant::now()
        + timeout.saturating_sub(Duration::from_millis(
            u64::try_from(aloft_store::now_ms() - started).unwrap_or(0),
        ));
    let mut observed = inner.observed.subscribe();
    let exit = loop {
        let machine = inner.store.machine(&app.id, &id).await?;
        if machine.state == MachineState::Failed {
            break Err(launch_failure(inner, &id).await?);
        }
        let exit = inner
            .store
            .events(&id)
            .await?
            .into_iter()
            .filter(|e| e.kind == EventKind::Exit)
            .max_by_key(|e| e.seq)
            .and_then(|e| e.request.pointer("/exit_event/exit_code")?.as_i64());
        if let Some(code) = exit
            && machine.state != MachineState::Started
        {
            break Ok(code);
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(format!(
                "did not finish within {}s (release_command_timeout)",
                timeout.as_secs()
            ));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        crate::hosts::observed_change(&mut observed, &id, left.min(Duration::from_secs(1))).await;
    };
    aloft_crash::reach(aloft_crash::Point::ReleaseCommandExited);
    let machine = inner.store.machine(&app.id, &id).await?;
    let output = last_lines(inner, &machine).await;
    if !machine.state.is_terminal() && machine.desired != aloft_store::Desired::Destroyed {
        crate::machines::destroy_forcibly(inner, &machine, true).await?;
    }
    let outcome = match exit {
        Ok(0) => Ok(()),
        Ok(code) => Err(format!(
            "release command `{shown}` exited with code {code}; no machine was changed{output}"
        )),
        Err(why) => Err(format!(
            "release command `{shown}` {why}; no machine was changed{output}"
        )),
    };
    match &outcome {
        Ok(()) => {
            let message = format!("release command `{shown}` exited 0{output}");
            step(
                inner,
                deployment,
                Some(&id),
                StepKind::Released,
                &message,
                None,
            )
            .await?;
        }
        Err(why) => step(inner, deployment, Some(&id), StepKind::Failed, why, None).await?,
    }
    Ok(outcome)
}
