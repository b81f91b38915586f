//! Supervising runs: watching each container run until it exits (and its checks and log
//! capture while it runs), telling the agent's own stops from the app's exits, and the
//! restart policy (`no`, `always`, `on-failure` with `max_retries`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aloft_agent_api::{Desired, MachineRecord};
use aloft_runtime::{ContainerInfo, ContainerState, ExitStatus, Runtime, RuntimeError};
use aloft_types::machine::RestartPolicy;
use aloft_types::{EventKind, MachineId, MachineState, Signal};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{AgentError, DEFAULT_MAX_RETRIES, DEFAULT_STOP_TIMEOUT, Shared, now_ms};
use crate::{LABEL_INSTANCE, checks, error_chain, logs};

/// The file in a machine's directory naming the run its container was in before the
/// agent's last start of it ([`Shared::intend_start`]).
const START_INTENT_FILE: &str = "start.intent";

/// How the run of container `id` that started at `started_at` ended, or `None` when the
/// container is in a later run (the run was seen in a stale listing, or started again
/// while the wait began): a wait on a later run would report that run's exit as this
/// one's, and an inspection of a running container has no exit code at all.
pub(super) async fn wait_run<R: Runtime>(
    runtime: &R,
    id: &str,
    started_at: &str,
) -> Result<Option<ExitStatus>, RuntimeError> {
    let same_run =
        |info: &Option<ContainerInfo>| info.as_ref().is_some_and(|i| i.started_at == started_at);
    if !same_run(&runtime.inspect(id).await?) {
        return Ok(None);
    }
    let exit = runtime.wait(id).await?;
    Ok(same_run(&runtime.inspect(id).await?).then_some(exit))
}

/// Runs whose exit was seen, the latest [`Ended::KEPT`] of them.
#[derive(Debug, Default)]
pub(super) struct Ended {
    pub(super) runs: HashSet<String>,
    pub(super) order: std::collections::VecDeque<String>,
}

impl Ended {
    pub(super) const KEPT: usize = 4096;

    pub(super) fn insert(&mut self, run: &str) {
        if self.runs.insert(run.to_owned()) {
            self.order.push_back(run.to_owned());
            while self.order.len() > Self::KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.runs.remove(&old);
                }
            }
        }
    }
}

pub(super) fn exit_json(
    exit: &ExitStatus,
    requested_stop: bool,
    restarting: bool,
) -> serde_json::Value {
    json!({
        "exit_event": {
            "exit_code": exit.exit_code,
            "signal": exit.signal.unwrap_or(-1),
            "oom_killed": exit.oom_killed,
            "requested_stop": requested_stop,
            "restarting": restarting,
            "exited_at": aloft_types::time::rfc3339(now_ms()),
        }
    })
}

/// A run of a machine's container that ended: the run, the config (instance) it ran,
/// and how it ended.
#[derive(Debug)]
pub(crate) struct Exited {
    pub(crate) machine: MachineId,
    pub(crate) run: String,
    pub(crate) instance: String,
    pub(crate) exit: ExitStatus,
}

impl<R: Runtime + 'static> Shared<R> {
    /// Forgets a run whose exit was seen (or can no longer be waited for): its checks end.
    pub(super) fn unwatch(&self, run: &str) {
        if let Ok(mut ended) = self.ended.lock() {
            ended.insert(run);
        }
        let ended = self.watched.lock().ok().and_then(|mut w| w.remove(run));
        if let Some(ended) = ended {
            ended.cancel();
        }
    }

    /// Waits for a running container's exit in the background, and runs the machine's
    /// checks against `address` until then (once per run).
    pub(super) fn watch(
        self: &Arc<Self>,
        machine: &MachineRecord,
        address: Option<std::net::Ipv6Addr>,
        container: &ContainerInfo,
    ) {
        let run = container.run_key();
        let ended = CancellationToken::new();
        if self.ended.lock().is_ok_and(|e| e.runs.contains(&run)) {
            return;
        }
        let fresh = self
            .watched
            .lock()
            .map(|mut w| match w.entry(run.clone()) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(ended.clone());
                    true
                }
            })
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let address = address.or_else(|| machine.private_ip.as_deref()?.parse().ok());
        let plans = checks::plans(&machine.config);
        if let (Some(address), false) = (address, plans.is_empty()) {
            self.tasks.spawn(checks::run(
                self.gateway.clone(),
                machine.id.clone(),
                plans,
                address,
                self.runtime.direct_ports(&container.id).map_or_else(
                    || checks::Route::Network(self.config.namespace().map(Path::to_owned)),
                    checks::Route::Direct,
                ),
                ended,
                self.stopping.clone(),
            ));
        }
        if let Some(store) = self.config.logs.clone() {
            self.tasks.spawn(logs::capture(
                self.clone(),
                store,
                machine.clone(),
                container.clone(),
            ));
        }
        let machine = machine.id.clone();
        let instance = container
            .labels
            .get(LABEL_INSTANCE)
            .cloned()
            .unwrap_or_default();
        let shared = self.clone();
        let id = container.id.clone();
        let started_at = container.started_at.clone();
        self.tasks.spawn(async move {
            let waited = tokio::select! {
                waited = wait_run(&shared.runtime, &id, &started_at) => waited,
                () = shared.stopping.cancelled() => return,
            };
            match waited {
                Ok(Some(exit)) => {
                    let _ = shared.exits.send(Exited {
                        machine,
                        run,
                        instance,
                        exit,
                    });
                }
                Ok(None) => {
                    // A stale listing's run: the container has started again since, and
                    // that run has a watch of its own.
                    shared.unwatch(&run);
                    if let Ok(mut requested) = shared.requested_stops.lock() {
                        requested.remove(&run);
                    }
                }
                Err(error) => {
                    shared.unwatch(&run);
                    tracing::debug!(container = %id, error = %error, "stopped waiting for a container");
                }
            }
        });
    }

    /// Stops one run of a container, recording that its exit is the agent's doing.
    pub(super) async fn stop_run(
        &self,
        container: &ContainerInfo,
        signal: Signal,
        timeout: Duration,
    ) -> Result<ExitStatus, AgentError> {
        if let Ok(mut requested) = self.requested_stops.lock() {
            requested.insert(container.run_key());
        }
        Ok(self.runtime.stop(&container.id, signal, timeout).await?)
    }

    /// A container exited on its own: record it, then let policy decide.
    pub(super) fn on_exit(self: Arc<Self>, exited: Exited) {
        let Exited {
            machine: machine_id,
            run,
            instance,
            exit,
        } = exited;
        if let Ok(mut handling) = self.handling.lock() {
            handling.insert(run.clone());
        }
        let shared = self.clone();
        self.tasks.spawn(async move {
            let lock = shared.lock(&machine_id);
            let _guard = lock.lock().await;
            let outcome: Result<(), AgentError> = async {
                                let machine = shared.gateway.machine(&machine_id).await?;
                // An exit of an earlier run: the container has been started again since.
                let current = shared.containers_of(&machine_id).await?;
                if current.iter().any(|c| c.state == ContainerState::Running && c.run_key() != run) {
                    return Ok(());
                }
                // A run of a config the machine no longer has (updated while it was
                // starting: a rollback restoring it while the failed release crashed):
                // its replacement is the machine's own reconcile's to start.
                if instance != machine.instance_id {
                    return Ok(());
                }
                if machine.desired != Desired::Started || matches!(machine.state, MachineState::Stopping | MachineState::Restarting | MachineState::Destroying) {
                    // A stop the agent made itself records its own exit.
                    return Ok(());
                }
                let restart = shared.should_restart(&machine, &exit);
                shared
                    .gateway
                    .record_event(&machine.id, EventKind::Exit, if restart { "restarting" } else { "stopped" }, exit_json(&exit, false, restart))
                    .await?;
                if restart {
                    shared.bump_restarts(&machine.instance_id);
                    shared.gateway.report_state(&machine.id, MachineState::Restarting).await?;
                    shared.start_current(&machine).await?;
                } else if shared.gateway.rest(&machine.id, &instance).await? {
                    // It rests until someone starts it again, as on Fly; its exit code is
                    // in the event, and the machine itself is stopped, as on Fly. (Given a
                    // new config meanwhile, it does not rest: that config starts.)
                    shared.gateway.report_state(&machine.id, MachineState::Stopped).await?;
                }
                Ok(())
            }
            .await;
            if let Err(error) = outcome {
                tracing::warn!(machine = %machine_id, error = %error_chain(&error), "handling an exit failed");
            }
            // Done, or failed: a later reconcile that finds the exit unhandled hands it
            // over again.
            if let Ok(mut handling) = shared.handling.lock() {
                handling.remove(&run);
            }
        });
    }

    /// Records, before a container is started, which run it was in (its run key, or
    /// none yet): a run key that differs later proves the start happened, even when the
    /// agent died before it could report it.
    pub(super) async fn intend_start(
        &self,
        machine: &MachineId,
        container: &str,
    ) -> Result<(), AgentError> {
        let before = match self.runtime.inspect(container).await? {
            Some(info) => info.run_key(),
            None => format!("{container}@"),
        };
        let dir = crate::spec::machine_dir(&self.config.data_dir, machine);
        let path = dir.join(START_INTENT_FILE);
        let written = path.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            aloft_crash::write_file(&written, before.as_bytes(), 0o600)
        })
        .await
        .unwrap_or_else(|joined| Err(std::io::Error::other(joined)));
        outcome.map_err(|source| AgentError::StartIntent { path, source })
    }

    /// Removes the record [`Self::intend_start`] wrote, before a start reports the
    /// machine starting.
    pub(super) async fn forget_start(&self, machine: &MachineId) -> Result<(), AgentError> {
        let path = crate::spec::machine_dir(&self.config.data_dir, machine).join(START_INTENT_FILE);
        match tokio::fs::remove_file(&path).await {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                Err(AgentError::StartIntent { path, source })
            }
            _ => Ok(()),
        }
    }

    /// What to do with the machine's current container when it is not running and the
    /// machine is wanted started: whether it ran and exited with its exit not handled
    /// (`Some(false)`: hand it to [`Self::on_exit`]), is being handled (`Some(true)`:
    /// leave it), or has not run since the agent's last start of it (`None`: start it).
    /// It ran when the store says the machine is started (an exit is handled under the
    /// machine's lock and changes that), or says starting and the container has run
    /// since [`Self::intend_start`] recorded its run.
    pub(super) fn exit_of(
        &self,
        machine: &MachineRecord,
        container: &ContainerInfo,
    ) -> Option<bool> {
        if container.state == ContainerState::Running || container.exit.is_none() {
            return None;
        }
        let run = container.run_key();
        let ran = match machine.state {
            MachineState::Started => true,
            MachineState::Starting => {
                let path = crate::spec::machine_dir(&self.config.data_dir, &machine.id)
                    .join(START_INTENT_FILE);
                std::fs::read_to_string(path).is_ok_and(|before| {
                    before
                        .split_once('@')
                        .is_some_and(|(id, _)| id == container.id)
                        && before != run
                })
            }
            _ => false,
        };
        ran.then(|| self.handling.lock().is_ok_and(|h| h.contains(&run)))
    }

    pub(super) fn restarts_of(&self, instance: &str) -> u32 {
        self.restarts
            .lock()
            .map(|r| r.get(instance).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub(super) fn bump_restarts(&self, instance: &str) {
        if let Ok(mut restarts) = self.restarts.lock() {
            *restarts.entry(instance.to_owned()).or_default() += 1;
        }
    }

    pub(super) fn should_restart(&self, machine: &MachineRecord, exit: &ExitStatus) -> bool {
        let restart = machine.config.restart.clone().unwrap_or_default();
        let max = if restart.max_retries == 0 {
            DEFAULT_MAX_RETRIES
        } else {
            restart.max_retries
        };
        match restart.policy.unwrap_or(RestartPolicy::OnFailure) {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => {
                !exit.success() && self.restarts_of(&machine.instance_id) < max
            }
        }
    }

    pub(super) fn stop_options(
        machine: &MachineRecord,
        signal: Option<Signal>,
        timeout: Option<Duration>,
    ) -> (Signal, Duration) {
        let stop = machine.config.stop_config.clone().unwrap_or_default();
        (
            signal.or(stop.signal).unwrap_or(Signal::DEFAULT),
            timeout
                .or(stop.timeout.map(|t| t.as_std()))
                .unwrap_or(DEFAULT_STOP_TIMEOUT),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use aloft_runtime::ContainerSpec;
    use aloft_testkit::sim::SimRuntime;

    async fn started(runtime: &SimRuntime, id: &str) -> ContainerInfo {
        runtime.start(id).await.unwrap();
        runtime.inspect(id).await.unwrap().unwrap()
    }

    /// The exit of a run is its own: a wait begun from a stale listing, after the
    /// container started again, is no exit of the listed run (it used to report the later
    /// run's state, running, as "exited with code 0").
    #[tokio::test]
    async fn a_run_seen_in_a_stale_listing_reports_no_exit() {
        let runtime = SimRuntime::new();
        let spec = ContainerSpec {
            name: "m1".to_owned(),
            image: "app".to_owned(),
            entrypoint: None,
            cmd: None,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            hostname: None,
            cpus: None,
            memory_mb: None,
            pids: None,
            mounts: Vec::new(),
            stop_signal: Signal::Term,
            tty: false,
        };
        let id = runtime.create(&spec).await.unwrap();
        let first = started(&runtime, &id).await;
        // Positive control: the listed run is current, so its exit is reported.
        assert!(runtime.exit(&id, 1));
        let exit = wait_run(&runtime, &id, &first.started_at).await.unwrap();
        assert_eq!(exit.map(|e| e.exit_code), Some(1));

        let second = started(&runtime, &id).await;
        assert_ne!(first.started_at, second.started_at);
        let stale = wait_run(&runtime, &id, &first.started_at).await.unwrap();
        assert_eq!(stale, None, "the first run's exit was reported again");
        assert!(runtime.exit(&id, 3));
        let exit = wait_run(&runtime, &id, &second.started_at).await.unwrap();
        assert_eq!(exit.map(|e| e.exit_code), Some(3));
    }

    #[test]
    fn ended_runs_are_kept_up_to_a_bound() {
        let mut ended = Ended::default();
        for run in 0..Ended::KEPT + 10 {
            ended.insert(&run.to_string());
        }
        ended.insert("5000");
        assert_eq!(ended.runs.len(), Ended::KEPT);
        assert!(!ended.runs.contains("0"), "the oldest run is forgotten");
        assert!(ended.runs.contains(&(Ended::KEPT + 9).to_string()));
    }
}
