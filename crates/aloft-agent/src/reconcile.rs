//! Reconciling one machine: make its container match the desired state (start, stop,
//! restart, replace on a new version, destroy), reporting states and events.

use std::sync::Arc;
use std::time::Duration;

use aloft_agent_api::{Command, Desired, MachineRecord};
use aloft_runtime::{ContainerInfo, ContainerState, ExitStatus, Runtime, RuntimeError};
use aloft_types::{EventKind, MachineId, MachineState, Signal};
use serde_json::json;

use super::supervise::exit_json;
use super::{AgentError, Shared};
use crate::{LABEL_INSTANCE, container_spec, error_chain, spec};

impl<R: Runtime + 'static> Shared<R> {
    /// Makes one machine match its desired state, applying `command` first.
    pub(super) async fn reconcile(
        self: &Arc<Self>,
        id: &MachineId,
        command: &Command,
    ) -> Result<(), AgentError> {
        let machine = self.gateway.machine(id).await?;
        if machine.host_id.as_ref() != Some(&self.config.host_id) {
            return Ok(());
        }
        let containers = self.containers_of(id).await?;
        let (current, stale): (Vec<ContainerInfo>, Vec<ContainerInfo>) = containers
            .into_iter()
            .partition(|c| c.labels.get(LABEL_INSTANCE) == Some(&machine.instance_id));
        let current = current.into_iter().next();

        if machine.desired == Desired::Destroyed {
            let (signal, timeout) = Self::stop_options(&machine, None, None);
            for container in current.iter().chain(stale.iter()) {
                if container.state == ContainerState::Running {
                    let _ = self
                        .stop_run(container, signal, timeout.min(Duration::from_secs(1)))
                        .await;
                }
                self.runtime.remove(&container.id).await?;
            }
            let _ = std::fs::remove_dir_all(spec::machine_dir(&self.config.data_dir, id));
            let as_of = std::time::Instant::now();
            let remaining = self.gateway.machines(&self.config.host_id).await?;
            let others: Vec<MachineRecord> =
                remaining.into_iter().filter(|m| &m.id != id).collect();
            let housed = crate::sweep::housed(&self.runtime.list(&self.ours()).await?);
            self.prune_network(&others, &housed, as_of).await?;
            if machine.state != MachineState::Destroyed {
                if machine.state != MachineState::Destroying {
                    self.gateway
                        .report_state(id, MachineState::Destroying)
                        .await?;
                }
                self.gateway
                    .report_state(id, MachineState::Destroyed)
                    .await?;
                self.gateway
                    .record_event(id, EventKind::Destroy, "destroyed", json!({}))
                    .await?;
            }
            self.gateway.reset_checks(id, &[]).await?;
            return Ok(());
        }

        // Older versions go first, gracefully: the new one may need the same port or volume.
        for container in &stale {
            if container.state == ContainerState::Running {
                let (signal, timeout) = Self::stop_options(&machine, None, None);
                self.stop_run(container, signal, timeout).await?;
            }
            self.runtime.remove(&container.id).await?;
        }

        if let Command::Signal(signal) = command {
            if let Some(container) = current
                .as_ref()
                .filter(|c| c.state == ContainerState::Running)
            {
                self.runtime.signal(&container.id, *signal).await?;
            }
            return Ok(());
        }

        let running = current
            .as_ref()
            .filter(|c| c.state == ContainerState::Running);
        match machine.desired {
            Desired::Stopped => {
                if let Some(container) = running {
                    let (signal, timeout) = match command {
                        Command::Stop { signal, timeout } => {
                            Self::stop_options(&machine, *signal, *timeout)
                        }
                        _ => Self::stop_options(&machine, None, None),
                    };
                    self.gateway
                        .report_state(id, MachineState::Stopping)
                        .await?;
                    let exit = self.stop_run(container, signal, timeout).await?;
                    self.gateway
                        .record_event(
                            id,
                            EventKind::Exit,
                            "stopped",
                            exit_json(&exit, true, false),
                        )
                        .await?;
                    self.gateway.report_state(id, MachineState::Stopped).await?;
                } else if !matches!(machine.state, MachineState::Stopped | MachineState::Created) {
                    self.gateway.report_state(id, MachineState::Stopped).await?;
                }
            }
            Desired::Started => {
                if let (Command::Restart { signal, timeout }, Some(container)) = (command, running)
                {
                    let (signal, timeout) = Self::stop_options(&machine, *signal, *timeout);
                    self.gateway
                        .report_state(id, MachineState::Restarting)
                        .await?;
                    let exit = self.stop_run(container, signal, timeout).await?;
                    self.gateway
                        .record_event(
                            id,
                            EventKind::Exit,
                            "restarting",
                            exit_json(&exit, true, true),
                        )
                        .await?;
                    self.start_current(&machine).await?;
                } else if let Some(container) = running {
                    self.watch(&machine, None, container);
                    if machine.state != MachineState::Started {
                        // A run started and not reported (the agent died in between): its
                        // start is recorded now, which a deployment waits for.
                        self.gateway
                            .record_event(id, EventKind::Start, "started", json!({}))
                            .await?;
                        self.gateway.report_state(id, MachineState::Started).await?;
                    }
                } else if current.is_none() && machine.state == MachineState::Started {
                    // Its container vanished (removed by hand, say): handled like an exit.
                    let lost = ExitStatus {
                        exit_code: -1,
                        signal: None,
                        oom_killed: false,
                    };
                    let restart = self.should_restart(&machine, &lost);
                    let status = if restart { "restarting" } else { "stopped" };
                    self.gateway.record_event(id, EventKind::Exit, status, json!({ "exit_event": { "exit_code": -1, "container_lost": true, "restarting": restart } })).await?;
                    if restart {
                        self.bump_restarts(&machine.instance_id);
                        self.gateway
                            .report_state(id, MachineState::Restarting)
                            .await?;
                        self.start_current(&machine).await?;
                    } else if self.gateway.rest(id, &machine.instance_id).await? {
                        self.gateway.report_state(id, MachineState::Stopped).await?;
                    }
                } else if let Some((container, handling)) = current
                    .as_ref()
                    .and_then(|c| Some((c, self.exit_of(&machine, c)?)))
                {
                    // It ran and exited: its exit is handled by the restart policy, by
                    // `on_exit` (already at it, or handed it now: the exit came while no
                    // agent watched, between a start and its report or during the run).
                    // Starting it again here would run a release command, or any run-once
                    // machine, twice.
                    if handling {
                        return Ok(());
                    }
                    let run = container.run_key();
                    self.unwatch(&run);
                    self.clone().on_exit(crate::supervise::Exited {
                        machine: id.clone(),
                        run,
                        instance: machine.instance_id.clone(),
                        exit: container.exit.unwrap_or(ExitStatus {
                            exit_code: -1,
                            signal: None,
                            oom_killed: false,
                        }),
                    });
                } else {
                    self.start_current(&machine).await?;
                }
            }
            Desired::Destroyed => {}
        }
        Ok(())
    }

    /// Records that a machine could not be launched (why, in a `launch` event) and marks
    /// it failed; returns the error to report.
    pub(super) async fn launch_failed(&self, id: &MachineId, error: RuntimeError) -> AgentError {
        let request = json!({ "error": error_chain(&error) });
        if let Err(recording) = self
            .gateway
            .record_event(id, EventKind::Launch, "failed", request)
            .await
        {
            return recording.into();
        }
        if let Err(reporting) = self.gateway.report_state(id, MachineState::Failed).await {
            return reporting.into();
        }
        error.into()
    }

    /// Whether the container's process has exited: its network namespace is gone from
    /// `/proc` (the process is gone, or a zombie not reaped yet, whose `/proc` entry stays
    /// but whose namespaces do not; the engine may still call it running for a moment),
    /// or the engine says it is not running.
    pub(super) async fn exited(&self, container: &ContainerInfo) -> bool {
        if let Some(pid) = container.pid
            && !std::path::Path::new(&format!("/proc/{pid}/ns/net")).exists()
        {
            return true;
        }
        matches!(
            self.runtime.inspect(&container.id).await,
            Ok(Some(info)) if info.state != ContainerState::Running
        )
    }

    /// Creates (if needed) and starts the container of the machine's current version.
    pub(super) async fn start_current(
        self: &Arc<Self>,
        machine: &MachineRecord,
    ) -> Result<(), AgentError> {
        let id = &machine.id;
        // No record of an earlier start may outlive the `starting` this reports: a start
        // cut short before its own record is written is then not taken for a run.
        self.forget_start(id).await?;
        if matches!(
            machine.state,
            MachineState::Created
                | MachineState::Stopped
                | MachineState::Failed
                | MachineState::Updating
        ) {
            self.gateway
                .report_state(id, MachineState::Starting)
                .await?;
        }
        let address = self.address_of(machine).await?;
        if let Some(network) = self.network.get() {
            // The network's bridge and isolation rules exist before the machine runs.
            network.ensure_network(address.network).await?;
        }
        // Its volumes' filesystems made, grown and mounted, before any container (new or
        // old: a host that restarted has them unmounted) binds them.
        let (backing, data_dir) = (self.config.volumes, self.config.data_dir.clone());
        let facts = if machine.config.mounts.is_empty() {
            Default::default()
        } else {
            self.gateway.volumes(machine).await?
        };
        let volumes: Vec<(String, u64, Option<aloft_agent_api::VolumeKey>)> = machine
            .config
            .mounts
            .iter()
            .map(|m| {
                let known = facts.get(&m.volume);
                let now = known.map_or(0, |f| f.size_gb);
                let key = known.and_then(|f| f.key.clone());
                (m.volume.clone(), now.max(u64::from(m.size_gb)), key)
            })
            .collect();
        let ready = tokio::task::spawn_blocking(move || {
            volumes.iter().try_for_each(|(volume, size_gb, key)| {
                let data = crate::spec::volume_dir(&data_dir, volume);
                crate::volumes::ensure(backing, &data, volume, *size_gb, key.as_ref()).map(drop)
            })
        })
        .await;
        let failure = match ready {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(error) => Some(error.to_string()),
        };
        if let Some(why) = failure {
            let error = RuntimeError::Operation {
                operation: "prepare the volumes of",
                container: id.to_string(),
                source: why.into(),
            };
            return Err(self.launch_failed(id, error).await);
        }
        let containers = self.containers_of(id).await?;
        let existing = containers
            .into_iter()
            .find(|c| c.labels.get(LABEL_INSTANCE) == Some(&machine.instance_id));
        let container_id = match existing {
            Some(container) => {
                // A limit changed in place (`PUT .../memory`) lasts until the next start:
                // the machine starts again under its size.
                let size =
                    aloft_types::machine::MachineGuest::limits(machine.config.guest.as_ref())
                        .memory_mb;
                self.runtime
                    .set_memory_limit(&container.id, u64::from(size))
                    .await?;
                container.id
            }
            None => {
                match self.runtime.ensure_image(&machine.config.image).await {
                    Ok(pulled) => {
                        if pulled {
                            self.config
                                .counters
                                .image_pulls
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Err(error) => {
                        self.config
                            .counters
                            .image_pull_failures
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Err(self.launch_failed(id, error).await);
                    }
                }
                let app = self.gateway.app_name(machine).await?;
                let secrets = self.gateway.secrets(machine).await?;
                let spec = container_spec(machine, &app, &secrets, address.address(), &self.config)
                    .map_err(|error| {
                        AgentError::Runtime(RuntimeError::Operation {
                            operation: "prepare",
                            container: id.to_string(),
                            source: Box::new(error),
                        })
                    })?;
                match self.runtime.create(&spec).await {
                    Ok(created) => {
                        aloft_crash::reach(aloft_crash::Point::ContainerCreated);
                        created
                    }
                    Err(error) => return Err(self.launch_failed(id, error).await),
                }
            }
        };
        self.intend_start(id, &container_id).await?;
        self.runtime.start(&container_id).await?;
        aloft_crash::reach(aloft_crash::Point::ContainerStarted);
        if let Some(info) = self.runtime.inspect(&container_id).await? {
            if let Err(error) = self.plumb(machine, &info).await
                && !self.exited(&info).await
            {
                // A machine without its network is no use to anyone: stop it and say why.
                // (One whose process already exited, a quick release command say, ran:
                // its exit is what counts, and the watch below reports it.)
                let _ = self.stop_run(&info, Signal::Kill, Duration::ZERO).await;
                return Err(self
                    .launch_failed(
                        id,
                        RuntimeError::Operation {
                            operation: "connect to the private network",
                            container: container_id.clone(),
                            source: Box::new(error),
                        },
                    )
                    .await);
            }
            self.watch(machine, Some(address.address()), &info);
        }
        // The event first: a machine reported started always has its start recorded.
        self.gateway
            .record_event(id, EventKind::Start, "started", json!({}))
            .await?;
        self.gateway.report_state(id, MachineState::Started).await?;
        Ok(())
    }
}
