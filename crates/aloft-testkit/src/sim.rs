//! A simulated [`Runtime`]: containers that exist only in memory, for fast tests of the
//! agent and the deployer (no Docker). Machines start, run, exit, fail to launch and hang
//! on stop as their spec or the test says:
//!
//! - `SIM_EXIT_CODE=N` in a container's environment: it exits with code N once started,
//!   after `SIM_EXIT_AFTER_MS` milliseconds (default 0), each time it is started;
//! - `SIM_HANG_ON_STOP=1`: a stop waits out its whole timeout, then kills (exit 137);
//! - every port of a running container answers HTTP requests ([`Runtime::direct_ports`],
//!   so the agent's health checks run without a network) with status 200, or with
//!   `SIM_CHECK_STATUS` (a failing release: `500`);
//! - an image whose name starts with [`MISSING_IMAGE_PREFIX`] cannot be pulled;
//! - [`SimRuntime::exit`] and [`SimRuntime::crash_machine`] end a run on command, and
//!   [`SimRuntime::lose_all`] makes every container vanish (an engine wiped under the
//!   agent).
//!
//! Every operation is counted, and [`SimRuntime::running_per_machine`] tells how many runs
//! each machine has at once (never more than one is the agent's promise).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_runtime::{
    AttachOptions, AttachedExec, ContainerInfo, ContainerSpec, ContainerState, DirectPorts,
    ExecOptions, ExecOutput, ExecState, ExitStatus, LogLine, LogStream, ResourceUsage, Runtime,
    RuntimeError,
};
use aloft_types::Signal;
use tokio::sync::watch;

/// Images whose name starts with this cannot be pulled.
pub const MISSING_IMAGE_PREFIX: &str = "sim/missing";
/// The label the agent puts on a machine's containers (`aloft_agent::LABEL_MACHINE`).
const LABEL_MACHINE: &str = "dev.aloft.machine";

struct Container {
    info: ContainerInfo,
    spec: ContainerSpec,
    /// The current run's exit, once it ended (`None` while it runs or before a start).
    exit: watch::Sender<Option<ExitStatus>>,
    logs: Vec<LogLine>,
    /// Bumped on every start, so a timer of an earlier run cannot end a later one.
    run: u64,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, Container>,
    next: u64,
    /// Operations made, by name.
    calls: BTreeMap<&'static str, u64>,
    /// The last timestamp given, in nanoseconds.
    last_ns: i64,
    /// Runs started, by machine (label).
    runs: BTreeMap<String, usize>,
}

/// The simulated runtime (cheap to clone; clones share their containers).
#[derive(Clone, Default)]
pub struct SimRuntime {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRuntime").finish_non_exhaustive()
    }
}

/// A timestamp unique and increasing within one runtime (a run's `started_at`, a line's
/// time), in RFC 3339, from the contract's clock (so that a test on tokio's paused clock
/// sees runs start in it).
fn timestamp(last: &mut i64) -> String {
    let now = aloft_agent_api::clock::now_ms().saturating_mul(1_000_000);
    *last = now.max(*last + 1);
    aloft_types::time::rfc3339_nanos(*last)
}

fn not_found(id: &str) -> RuntimeError {
    RuntimeError::NotFound {
        container: id.to_owned(),
    }
}

fn unsupported(operation: &'static str, id: &str) -> RuntimeError {
    RuntimeError::Operation {
        operation,
        container: id.to_owned(),
        source: "not simulated".into(),
    }
}

impl SimRuntime {
    pub fn new() -> SimRuntime {
        SimRuntime::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut state)
    }

    fn count(&self, operation: &'static str) {
        self.with(|s| *s.calls.entry(operation).or_default() += 1);
    }

    /// How many times `operation` (`create`, `start`, `stop`, ...) was called.
    pub fn calls(&self, operation: &str) -> u64 {
        self.with(|s| s.calls.get(operation).copied().unwrap_or(0))
    }

    /// Ends the current run of container `id` with `code`, as if its process exited.
    pub fn exit(&self, id: &str, code: i64) -> bool {
        self.with(|s| end_run(s, id, ExitStatus::from_code(code, false)))
    }

    /// Ends the running container of machine `machine` with `code`; whether one ran.
    pub fn crash_machine(&self, machine: &str, code: i64) -> bool {
        self.with(|s| {
            let running: Vec<String> = s
                .containers
                .values()
                .filter(|c| {
                    c.info.state == ContainerState::Running
                        && c.info.labels.get(LABEL_MACHINE).map(String::as_str) == Some(machine)
                })
                .map(|c| c.info.id.clone())
                .collect();
            let mut ended = false;
            for id in running {
                ended |= end_run(s, &id, ExitStatus::from_code(code, false));
            }
            ended
        })
    }

    /// Every container vanishes at once (their runs end killed), as when an engine is
    /// wiped under the agent.
    pub fn lose_all(&self) {
        self.with(|s| {
            let ids: Vec<String> = s.containers.keys().cloned().collect();
            for id in &ids {
                end_run(s, id, ExitStatus::from_code(137, false));
            }
            s.containers.clear();
        });
    }

    /// Power loss: every running container dies (killed) and is left stopped, as after a
    /// host's reboot.
    pub fn power_off(&self) {
        self.with(|s| {
            let ids: Vec<String> = s.containers.keys().cloned().collect();
            for id in &ids {
                end_run(s, id, ExitStatus::from_code(137, false));
            }
        });
    }

    /// How many runs each machine (by label) has started, its containers' together.
    pub fn runs(&self) -> BTreeMap<String, usize> {
        self.with(|s| s.runs.clone())
    }

    /// The containers of each machine that run right now.
    pub fn running_per_machine(&self) -> BTreeMap<String, usize> {
        self.with(|s| {
            let mut counts = BTreeMap::new();
            for container in s.containers.values() {
                if container.info.state == ContainerState::Running
                    && let Some(machine) = container.info.labels.get(LABEL_MACHINE)
                {
                    *counts.entry(machine.clone()).or_default() += 1;
                }
            }
            counts
        })
    }

    /// The machines (by label) with a running container, and the env of the newest.
    pub fn running(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.with(|s| {
            s.containers
                .values()
                .filter(|c| c.info.state == ContainerState::Running)
                .filter_map(|c| {
                    Some((
                        c.info.labels.get(LABEL_MACHINE)?.clone(),
                        c.spec.env.clone(),
                    ))
                })
                .collect()
        })
    }
}

/// Ends container `id`'s current run with `exit` (nothing when it does not run).
fn end_run(state: &mut State, id: &str, exit: ExitStatus) -> bool {
    let timestamp = timestamp(&mut state.last_ns);
    let Some(container) = state.containers.get_mut(id) else {
        return false;
    };
    if container.info.state != ContainerState::Running {
        return false;
    }
    container.info.state = ContainerState::Exited;
    container.info.exit = Some(exit);
    container.logs.push(LogLine {
        stream: LogStream::Stderr,
        timestamp,
        text: format!("sim: exited with code {}", exit.exit_code),
    });
    // `send` keeps the old value when nobody waits yet; a wait begun later must see it.
    container.exit.send_replace(Some(exit));
    true
}

impl Runtime for SimRuntime {
    async fn ensure_image(&self, image: &str) -> Result<bool, RuntimeError> {
        self.count("ensure_image");
        if image.starts_with(MISSING_IMAGE_PREFIX) {
            return Err(RuntimeError::ImageUnavailable {
                image: image.to_owned(),
                source: format!("pull access denied for {image}: repository does not exist").into(),
            });
        }
        Ok(false)
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.count("create");
        self.with(|s| {
            s.next += 1;
            let id = format!("sim{:08}", s.next);
            let (exit, _) = watch::channel(None);
            s.containers.insert(
                id.clone(),
                Container {
                    info: ContainerInfo {
                        id: id.clone(),
                        name: spec.name.clone(),
                        image: spec.image.clone(),
                        labels: spec.labels.clone(),
                        state: ContainerState::Created,
                        exit: None,
                        started_at: String::new(),
                        pid: None,
                    },
                    spec: spec.clone(),
                    exit,
                    logs: Vec::new(),
                    run: 0,
                },
            );
            Ok(id)
        })
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.count("start");
        let (run, exit_after) = self.with(|s| {
            let started_at = timestamp(&mut s.last_ns);
            let container = s.containers.get_mut(id).ok_or_else(|| not_found(id))?;
            if container.info.state == ContainerState::Running {
                return Ok((None, None));
            }
            container.run += 1;
            if let Some(machine) = container.info.labels.get(LABEL_MACHINE) {
                *s.runs.entry(machine.clone()).or_default() += 1;
            }
            container.info.state = ContainerState::Running;
            container.info.exit = None;
            container.info.started_at = started_at.clone();
            container.logs.push(LogLine {
                stream: LogStream::Stdout,
                timestamp: started_at,
                text: "sim: started".to_owned(),
            });
            container.exit.send_replace(None);
            let code = container
                .spec
                .env
                .get("SIM_EXIT_CODE")
                .and_then(|c| c.parse::<i64>().ok());
            let after = container
                .spec
                .env
                .get("SIM_EXIT_AFTER_MS")
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0);
            Ok((Some(container.run), code.map(|c| (c, after))))
        })?;
        if let (Some(run), Some((code, after))) = (run, exit_after) {
            let sim = self.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                sim.with(|s| {
                    if s.containers.get(&id).is_some_and(|c| c.run == run) {
                        end_run(s, &id, ExitStatus::from_code(code, false));
                    }
                });
            });
        }
        Ok(())
    }

    async fn stop(
        &self,
        id: &str,
        signal: Signal,
        timeout: Duration,
    ) -> Result<ExitStatus, RuntimeError> {
        self.count("stop");
        let (hang, mut exit) = self.with(|s| {
            let container = s.containers.get(id).ok_or_else(|| not_found(id))?;
            let hang = container
                .spec
                .env
                .get("SIM_HANG_ON_STOP")
                .map(String::as_str)
                == Some("1");
            Ok::<_, RuntimeError>((hang, container.exit.subscribe()))
        })?;
        if let Some(done) = *exit.borrow_and_update() {
            return Ok(done);
        }
        let graceful = if hang || signal == Signal::Kill {
            None
        } else {
            Some(ExitStatus::from_code(0, false))
        };
        match graceful {
            Some(status) => {
                self.with(|s| end_run(s, id, status));
            }
            None => {
                if signal != Signal::Kill {
                    // Ignores the signal; the timeout runs out, then SIGKILL.
                    let _ = tokio::time::timeout(timeout, exit.changed()).await;
                }
                self.with(|s| end_run(s, id, ExitStatus::from_code(137, false)));
            }
        }
        let done = *exit.borrow_and_update();
        done.ok_or_else(|| not_found(id))
    }

    async fn signal(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        self.count("signal");
        self.with(|s| {
            if !s.containers.contains_key(id) {
                return Err(not_found(id));
            }
            if signal == Signal::Kill {
                end_run(s, id, ExitStatus::from_code(137, false));
            }
            Ok(())
        })
    }

    async fn set_memory_limit(&self, id: &str, memory_mb: u64) -> Result<(), RuntimeError> {
        self.count("set_memory_limit");
        // As Docker's update: a stopped container takes the limit for its next run.
        self.with(|s| match s.containers.get_mut(id) {
            Some(container) => {
                container.spec.memory_mb = Some(memory_mb);
                Ok(())
            }
            None => Err(not_found(id)),
        })
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.count("remove");
        self.with(|s| {
            end_run(s, id, ExitStatus::from_code(137, false));
            s.containers.remove(id);
        });
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        self.count("inspect");
        Ok(self.with(|s| s.containers.get(id).map(|c| c.info.clone())))
    }

    async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.count("list");
        Ok(self.with(|s| {
            s.containers
                .values()
                .filter(|c| labels.iter().all(|(k, v)| c.info.labels.get(k) == Some(v)))
                .map(|c| c.info.clone())
                .collect()
        }))
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        self.count("wait");
        let mut exit = self.with(|s| {
            s.containers
                .get(id)
                .map(|c| c.exit.subscribe())
                .ok_or_else(|| not_found(id))
        })?;
        loop {
            if let Some(done) = *exit.borrow_and_update() {
                return Ok(done);
            }
            // The sender goes with the container: a removed container's wait ends killed.
            if exit.changed().await.is_err() {
                return Ok(ExitStatus::from_code(137, false));
            }
        }
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        _options: &ExecOptions,
    ) -> Result<ExecOutput, RuntimeError> {
        self.count("exec");
        let running = self.with(|s| {
            s.containers
                .get(id)
                .is_some_and(|c| c.info.state == ContainerState::Running)
        });
        if !running {
            return Err(unsupported("exec (the container is not running)", id));
        }
        Ok(ExecOutput {
            exit_code: 0,
            stdout: format!("{}\n", command.join(" ")).into_bytes(),
            stderr: Vec::new(),
        })
    }

    async fn exec_attached(
        &self,
        id: &str,
        _command: &[String],
        _options: &AttachOptions,
    ) -> Result<AttachedExec, RuntimeError> {
        Err(unsupported("exec_attached", id))
    }

    async fn exec_resize(&self, exec: &str, _cols: u16, _rows: u16) -> Result<(), RuntimeError> {
        Err(unsupported("exec_resize", exec))
    }

    async fn exec_state(&self, exec: &str) -> Result<ExecState, RuntimeError> {
        Err(unsupported("exec_state", exec))
    }

    fn logs(
        &self,
        id: &str,
        _follow: bool,
        tail: Option<usize>,
        _since_seconds: Option<i64>,
    ) -> futures_util::stream::BoxStream<'static, Result<LogLine, RuntimeError>> {
        let lines = self.with(|s| {
            s.containers
                .get(id)
                .map(|c| c.logs.clone())
                .unwrap_or_default()
        });
        let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
        Box::pin(futures_util::stream::iter(
            lines.into_iter().skip(skip).map(Ok),
        ))
    }

    async fn usage(&self, id: &str) -> Result<ResourceUsage, RuntimeError> {
        // No process uses anything here; the limit is the container's.
        self.with(|s| {
            let container = s.containers.get(id).ok_or_else(|| not_found(id))?;
            Ok(ResourceUsage {
                memory_limit_bytes: container.spec.memory_mb.unwrap_or(0) * 1024 * 1024,
                ..ResourceUsage::default()
            })
        })
    }

    fn direct_ports(&self, id: &str) -> Option<DirectPorts> {
        let state = self.state.clone();
        let id = id.to_owned();
        Some(Arc::new(move |_port| {
            let status = {
                let state = state
                    .lock()
                    .map_err(|_| std::io::Error::other("the simulated runtime's lock"))?;
                match state.containers.get(&id) {
                    Some(c) if c.info.state == ContainerState::Running => c
                        .spec
                        .env
                        .get("SIM_CHECK_STATUS")
                        .and_then(|s| s.parse::<u16>().ok())
                        .unwrap_or(200),
                    _ => return Err(std::io::ErrorKind::ConnectionRefused.into()),
                }
            };
            let (client, server) = tokio::io::duplex(4096);
            tokio::spawn(answer(server, status));
            Ok(client)
        }))
    }
}

/// Answers one HTTP request on `stream` with `status` (a TCP check only connects).
async fn answer(mut stream: tokio::io::DuplexStream, status: u16) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let body = if status < 400 { "ok" } else { "failing" };
    let response = format!(
        "HTTP/1.1 {status} sim\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
