//! Whether a machine the deployment started is healthy: started, its service checks
//! passing in results newer than the deployment, and (smoke checks) running for the
//! window without an exit; and what to say when it is not (the exit, the launch
//! failure, the machine's last log lines).

use std::sync::Arc;
use std::time::Duration;

use aloft_store::{App, DeploymentRecord, DeploymentStep, MachineRecord};
use aloft_types::deploy::StepKind;
use aloft_types::{CheckStatus, EventKind, MachineId, MachineState};

use super::steps::step;
use crate::{ApiError, Inner};

/// How many of a machine's last log lines a failure shows.
pub(super) const LOG_LINES_SHOWN: usize = 20;

/// Why the agent could not launch a machine (its `launch` event).
pub(super) async fn launch_failure(inner: &Inner, machine: &MachineId) -> Result<String, ApiError> {
    let events = inner.store.events(machine).await?;
    let reason = events
        .iter()
        .filter(|e| e.kind == EventKind::Launch && e.status == "failed")
        .max_by_key(|e| e.seq)
        .and_then(|e| e.request.get("error").and_then(|v| v.as_str()))
        .unwrap_or("no reason recorded")
        .to_owned();
    Ok(format!("failed to launch: {reason}"))
}

/// The machine's last log lines as text to append to a message (empty when it has none
/// or its host cannot be asked).
pub(super) async fn last_lines(inner: &Inner, machine: &MachineRecord) -> String {
    let Some(link) = machine.host_id.as_ref().and_then(|h| inner.links.get(h)) else {
        return String::new();
    };
    match link.last_lines(machine, LOG_LINES_SHOWN).await {
        Ok(lines) if !lines.is_empty() => {
            let mut text = format!("\nlast log lines of machine {}:", machine.id);
            for line in lines {
                text.push_str("\n  ");
                text.push_str(&line);
            }
            text
        }
        Ok(_) => String::new(),
        Err(error) => {
            tracing::debug!(machine = %machine.id, %error, "reading a machine's last lines failed");
            String::new()
        }
    }
}

/// When the deployment's first step was logged (results older than that are not its).
pub(super) fn release_start(steps: &[DeploymentStep]) -> i64 {
    steps.first().map_or_else(aloft_store::now_ms, |s| s.at)
}

/// When the deployment last started `machine` (created at `created_at`) on a new config:
/// its last step of a [`StepKind::STARTING`] kind, else `since`. A machine the deployment created
/// counts from its creation: its step is logged after it, and under load the machine may
/// have started (and its smoke-check window begun) before the step was written.
pub(super) fn started_by_deployment(
    steps: &[DeploymentStep],
    machine: &MachineId,
    created_at: i64,
    since: i64,
) -> i64 {
    steps
        .iter()
        .filter(|s| s.machine_id.as_ref() == Some(machine) && StepKind::STARTING.contains(&s.kind))
        .max_by_key(|s| (s.at, s.number))
        .map_or(since, |s| {
            if StepKind::CREATING.contains(&s.kind) {
                created_at.min(s.at)
            } else {
                s.at
            }
        })
}

/// An exit of the machine's own (not a stop the platform asked for) recorded at or after
/// `since`: the newest, as "exited with code N" (and whether the agent restarts it).
pub(super) fn crash_since(events: &[aloft_store::MachineEvent], since: i64) -> Option<String> {
    let exit = events
        .iter()
        .filter(|e| e.kind == EventKind::Exit && e.at >= since)
        .filter(|e| {
            let flag = |name: &str| {
                e.request.pointer(&format!("/exit_event/{name}"))
                    == Some(&serde_json::Value::Bool(true))
            };
            // A stop the platform asked for, or a container that vanished (an agent
            // killed between removing a machine's old container and creating its new
            // one, say), is not the app exiting.
            !flag("requested_stop") && !flag("container_lost")
        })
        .max_by_key(|e| e.seq)?;
    let code = exit
        .request
        .pointer("/exit_event/exit_code")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(-1);
    let signal = exit
        .request
        .pointer("/exit_event/signal")
        .and_then(serde_json::Value::as_i64)
        .filter(|s| *s > 0);
    let oom =
        exit.request.pointer("/exit_event/oom_killed") == Some(&serde_json::Value::Bool(true));
    let mut text = match signal {
        Some(signal) => format!("was killed by signal {signal} (exit code {code})"),
        None => format!("exited with code {code}"),
    };
    if oom {
        text.push_str(", out of memory");
    }
    if exit.status == "restarting" {
        text.push_str("; the app appears to be crashing");
    }
    Some(text)
}

/// Whether [`healthy`] runs smoke checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Smoke {
    /// As the deployment says (on, for its window, unless it turned them off).
    Deployment,
    /// Off: a machine restored by a rollback.
    Off,
}

/// Waits until `machine` runs its current version, started, with every service check
/// passing in a result newer than `since`, and (smoke checks, unless the deployment turned
/// them off) has kept running for the deployment's smoke check window without an exit.
/// Fails at once, without waiting for the timeout, when the machine fails to launch,
/// exits (smoke checks on) or stops for good (smoke checks off); the inner error says what
/// failed, with the machine's last log lines.
pub(super) async fn healthy(
    inner: &Arc<Inner>,
    app: &App,
    deployment: &DeploymentRecord,
    machine: &MachineId,
    since: i64,
    wait: Duration,
    smoke: Smoke,
) -> Result<Result<(), String>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let smoke = match smoke {
        Smoke::Deployment => {
            Duration::from_millis(u64::try_from(deployment.smoke_check_ms).unwrap_or(0))
        }
        Smoke::Off => Duration::ZERO,
    };
    let steps = inner.store.steps_of(&deployment.id).await?;
    let created_at = inner.store.machine(&app.id, machine).await?.created_at;
    let touched = started_by_deployment(&steps, machine, created_at, since);
    let mut observed = inner.observed.subscribe();
    let mut reported: Option<String> = None;
    loop {
        let current = inner.store.machine(&app.id, machine).await?;
        let expected: usize = current.config.services.iter().map(|s| s.checks.len()).sum();
        let checks: Vec<_> = inner
            .store
            .checks_of(machine)
            .await?
            .into_iter()
            .filter(|c| c.service.is_some())
            .collect();
        let fresh = |c: &&aloft_store::CheckRecord| c.updated_at >= since;
        let failing = checks
            .iter()
            .filter(fresh)
            .find(|c| c.status != CheckStatus::Passing);
        let passing = checks
            .iter()
            .filter(fresh)
            .filter(|c| c.status == CheckStatus::Passing)
            .count();
        let events = inner.store.events(machine).await?;
        let crash = crash_since(&events, touched);
        // Stopped after an exit, and left to rest by its restart policy.
        let stopped_for_good = current.state == MachineState::Stopped
            && current.desired == aloft_store::Desired::Stopped
            && crash.is_some();
        if let Some(crash) = crash.filter(|_| !smoke.is_zero() || stopped_for_good) {
            let state = if stopped_for_good { " and stopped" } else { "" };
            let why = format!(
                "machine {machine} {crash}{state}{}",
                last_lines(inner, &current).await
            );
            step(
                inner,
                deployment,
                Some(machine),
                StepKind::Failed,
                &why,
                None,
            )
            .await?;
            return Ok(Err(why));
        }
        // The start of the run the smoke checks watch: the newest since the deployment
        // started the machine on this config.
        let run_started = events
            .iter()
            .filter(|e| e.kind == EventKind::Start && e.at >= touched)
            .map(|e| e.at)
            .max();
        let started = current.state == MachineState::Started;
        if started && passing >= expected {
            let settled = run_started.is_some_and(|at| {
                aloft_store::now_ms() - at >= i64::try_from(smoke.as_millis()).unwrap_or(i64::MAX)
            });
            if smoke.is_zero() || settled {
                let checks = if expected == 0 {
                    "no service checks".to_owned()
                } else {
                    format!("passes its {expected} service check(s)")
                };
                let message = if smoke.is_zero() {
                    format!("machine {machine} started ({checks})")
                } else {
                    format!(
                        "machine {machine} started, {checks}, and kept running for {}s (smoke checks)",
                        smoke.as_secs()
                    )
                };
                step(
                    inner,
                    deployment,
                    Some(machine),
                    StepKind::Healthy,
                    &message,
                    None,
                )
                .await?;
                return Ok(Ok(()));
            }
        }
        if current.state == MachineState::Failed {
            let reason = launch_failure(inner, machine).await?;
            let why = format!(
                "machine {machine} {reason}{}",
                last_lines(inner, &current).await
            );
            step(
                inner,
                deployment,
                Some(machine),
                StepKind::Failed,
                &why,
                None,
            )
            .await?;
            return Ok(Err(why));
        }
        // Check results as they change while the machine is waited for.
        let now =
            failing.map(|c| format!("check {} is {}: {}", c.name, c.status, trimmed(&c.output)));
        if now.is_some() && now != reported {
            tracing::info!(deployment = %deployment.id, %machine, check = ?now, "waiting for a machine's checks");
            if let Some(text) = &now {
                step(
                    inner,
                    deployment,
                    Some(machine),
                    StepKind::Waiting,
                    &format!("machine {machine}: {text}"),
                    None,
                )
                .await?;
            }
            reported = now;
        }
        if tokio::time::Instant::now() >= deadline {
            let why = match failing {
                Some(check) => format!(
                    "machine {machine}: check {} is {} after {}s: {}",
                    check.name,
                    check.status,
                    wait.as_secs(),
                    trimmed(&check.output)
                ),
                None => format!(
                    "machine {machine} is {} and passes {passing} of {expected} service check(s) after {}s",
                    current.state,
                    wait.as_secs()
                ),
            } + &last_lines(inner, &current).await;
            step(
                inner,
                deployment,
                Some(machine),
                StepKind::Failed,
                &why,
                None,
            )
            .await?;
            return Ok(Err(why));
        }
        // Woken by a change of the machine; re-checked at least every second regardless.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        crate::hosts::observed_change(&mut observed, machine, left.min(Duration::from_secs(1)))
            .await;
    }
}

/// A check's output for a progress line: its first line, at most 200 characters.
pub(super) fn trimmed(output: &str) -> String {
    let line = output.trim().lines().next().unwrap_or_default();
    match line.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_machine_counts_from_its_creation_an_updated_one_from_its_step() {
        let machine: MachineId = "148e21ea7d2e89".parse().unwrap();
        let step = |number: i64, kind: StepKind, at: i64| DeploymentStep {
            number,
            machine_id: Some(machine.clone()),
            kind,
            message: String::new(),
            previous_config: None,
            at,
        };
        // Created at 100, its step written at 250 (after the agent may have started it):
        // its smoke window counts from 100, so a start at 180 is its run.
        let created = [step(1, StepKind::Create, 250)];
        assert_eq!(started_by_deployment(&created, &machine, 100, 50), 100);
        // An update is logged before it is made: it counts from its step, not from the
        // machine's creation long before (whose old starts are not this release's).
        let updated = [step(1, StepKind::Update, 500)];
        assert_eq!(started_by_deployment(&updated, &machine, 100, 50), 500);
        // Nothing of this deployment's: from when the caller started watching.
        assert_eq!(started_by_deployment(&[], &machine, 100, 50), 50);
    }
}
