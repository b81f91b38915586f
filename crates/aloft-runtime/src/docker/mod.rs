//! The Docker Engine runtime, over bollard and `/var/run/docker.sock`.
//!
//! Containers run with `network_mode: none` and IPv6 enabled inside (the agent adds the
//! 6PN address itself), the engine's restart policy off, and resource limits from the
//! machine's guest. Stopping never relies on the engine's stop timeout: the runtime sends
//! the machine's signal, waits its own timeout, then SIGKILLs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aloft_types::Signal;
use bollard::Docker;
use bollard::container::{
    Config, CreateContainerOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, LogOutput, LogsOptions, RemoveContainerOptions, StatsOptions,
    WaitContainerOptions,
};
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::image::CreateImageOptions;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use futures_util::stream::{self, BoxStream, StreamExt};

mod build_limits;
mod exec;

pub use build_limits::{BuildHost, BuildLimits, BuildLimitsError, apply_build_limits};

use crate::{
    AttachOptions, AttachedExec, BuildOptions, BuildProgress, ContainerInfo, ContainerSpec,
    ContainerState, ExecChunk, ExecOptions, ExecOutput, ExecState, ExitStatus, LogLine, LogStream,
    ResourceUsage, Runtime, RuntimeError,
};

/// The Docker Engine socket Aloft talks to.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Sysctls that turn IPv6 back on inside a `network_mode: none` container.
const IPV6_SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv6.conf.all.disable_ipv6", "0"),
    ("net.ipv6.conf.default.disable_ipv6", "0"),
];

/// A [`Runtime`] backed by Docker Engine.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
}

fn boxed(error: DockerError) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(error)
}

fn is_status(error: &DockerError, status: u16) -> bool {
    matches!(error, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

fn operation(operation: &'static str, container: &str) -> impl FnOnce(DockerError) -> RuntimeError {
    let container = container.to_owned();
    move |error| {
        if is_status(&error, 404) {
            RuntimeError::NotFound { container }
        } else {
            RuntimeError::Operation {
                operation,
                container,
                source: boxed(error),
            }
        }
    }
}

fn state_of(status: Option<ContainerStateStatusEnum>) -> ContainerState {
    match status {
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        _ => ContainerState::Created,
    }
}

fn info_of(response: ContainerInspectResponse) -> ContainerInfo {
    let state = response.state.unwrap_or_default();
    let started_at = state
        .started_at
        .clone()
        .filter(|t| !t.starts_with("0001-"))
        .unwrap_or_default();
    let status = state_of(state.status);
    let exit = matches!(status, ContainerState::Exited | ContainerState::Dead).then(|| {
        ExitStatus::from_code(
            state.exit_code.unwrap_or(0),
            state.oom_killed.unwrap_or(false),
        )
    });
    let config = response.config.unwrap_or_default();
    ContainerInfo {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: status,
        exit,
        started_at,
        pid: state
            .pid
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| *pid > 0 && status == ContainerState::Running),
    }
}

/// An attached exec's output.
type ExecOutputStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, DockerError>> + Send>>;
/// An attached exec's stdin.
type ExecInput = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

impl DockerRuntime {
    /// Creates and starts an exec in container `id` with its streams attached; returns the
    /// exec's id, its output and its stdin.
    async fn start_exec(
        &self,
        id: &str,
        config: CreateExecOptions<String>,
        tty: bool,
    ) -> Result<(String, ExecOutputStream, ExecInput), RuntimeError> {
        let exec = self
            .docker
            .create_exec(id, config)
            .await
            .map_err(operation("exec", id))?;
        let start = StartExecOptions {
            detach: false,
            tty,
            output_capacity: None,
        };
        let started = self
            .docker
            .start_exec(&exec.id, Some(start))
            .await
            .map_err(operation("exec", id))?;
        match started {
            StartExecResults::Attached { output, input } => Ok((exec.id, output, input)),
            StartExecResults::Detached => Err(RuntimeError::Operation {
                operation: "exec",
                container: id.to_owned(),
                source: "the engine detached the exec".into(),
            }),
        }
    }

    /// Connects to the local engine and agrees on an API version (Debian's engine speaks 1.41).
    pub async fn connect() -> Result<DockerRuntime, RuntimeError> {
        let unavailable = |error: DockerError| RuntimeError::Unavailable {
            endpoint: DOCKER_SOCKET.to_owned(),
            source: boxed(error),
        };
        let docker = Docker::connect_with_socket_defaults().map_err(unavailable)?;
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        docker.ping().await.map_err(unavailable)?;
        Ok(DockerRuntime { docker })
    }

    async fn exit_status(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        let info = self
            .inspect(id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound {
                container: id.to_owned(),
            })?;
        Ok(info.exit.unwrap_or(ExitStatus {
            exit_code: 0,
            signal: None,
            oom_killed: false,
        }))
    }
}

impl DockerRuntime {
    /// Builds an image from `context` (a file holding a tar archive, streamed to the
    /// engine) with the engine's BuildKit, or its classic builder where it has none,
    /// streaming the output; the last item is the built image's id. The stream holds at
    /// most 64 items (`buildkit::OUTPUT_BACKLOG`) its reader has not taken.
    pub fn build_image(
        &self,
        context: std::path::PathBuf,
        options: &BuildOptions,
    ) -> BoxStream<'static, Result<BuildProgress, RuntimeError>> {
        use crate::buildkit::{Builder, Outcome};
        let version = self.docker.client_version();
        let version = format!("{}.{}", version.major_version, version.minor_version);
        let options = options.clone();
        let stream = async_stream(move |sender| async move {
            // The engine's own endpoint over its socket: BuildKit first (cache mounts,
            // heredocs, parallel stages, secrets), the classic builder without it.
            let Some(socket) = local_socket() else {
                let _ = sender
                    .send(Err(RuntimeError::Build {
                        tag: options.tag.clone(),
                        message: "builds need the engine's Unix socket; DOCKER_HOST names another transport".to_owned(),
                    }))
                    .await;
                return;
            };
            let buildkit = crate::buildkit::build(
                &socket,
                &version,
                Builder::BuildKit,
                &context,
                &options,
                &sender,
            )
            .await;
            let Outcome::Unsupported(why) = buildkit else {
                return;
            };
            if !options.secrets.is_empty() {
                let _ = sender
                    .send(Err(RuntimeError::Build {
                        tag: options.tag.clone(),
                        message: format!(
                            "build secrets need BuildKit, which the engine does not offer: {why}"
                        ),
                    }))
                    .await;
                return;
            }
            tracing::info!(%why, "no BuildKit: building with the classic builder");
            let _ = sender
                .send(Ok(BuildProgress::Output(format!(
                    "(the engine has no BuildKit: {why}; using the classic builder)\n"
                ))))
                .await;
            crate::buildkit::build(
                &socket,
                &version,
                Builder::Classic,
                &context,
                &options,
                &sender,
            )
            .await;
        });
        stream.boxed()
    }

    /// The id (`sha256:...`) of a local image, or `None` when the engine does not have it.
    /// Removes every tag of `repository` (`name` without a tag), each image going with
    /// its last tag; returns how many tags were removed.
    pub async fn remove_repository(&self, repository: &str) -> Result<usize, RuntimeError> {
        let filters = HashMap::from([("reference", vec![repository])]);
        let images = self
            .docker
            .list_images(Some(bollard::image::ListImagesOptions {
                filters,
                ..Default::default()
            }))
            .await
            .map_err(operation("list images", repository))?;
        let prefix = format!("{repository}:");
        let mut removed = 0;
        for tag in images
            .iter()
            .flat_map(|image| &image.repo_tags)
            .filter(|tag| tag.starts_with(&prefix))
        {
            self.docker
                .remove_image(tag, None::<bollard::image::RemoveImageOptions>, None)
                .await
                .map_err(operation("remove image", tag))?;
            removed += 1;
        }
        Ok(removed)
    }

    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, RuntimeError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(image.id),
            Err(error) if is_status(&error, 404) => Ok(None),
            Err(error) => Err(RuntimeError::Operation {
                operation: "inspect image",
                container: reference.to_owned(),
                source: boxed(error),
            }),
        }
    }
}

/// The engine's Unix socket, when the engine is local: `DOCKER_HOST=unix://...`, else
/// [`DOCKER_SOCKET`]; `None` for an engine over TCP.
fn local_socket() -> Option<std::path::PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host.strip_prefix("unix://").map(Into::into),
        _ => Some(DOCKER_SOCKET.into()),
    }
}

/// A stream fed by a task through a bounded channel (ends when the task does; the task
/// waits while [`crate::buildkit::OUTPUT_BACKLOG`] items are unread).
fn async_stream<T, F, Fut>(task: F) -> impl futures_util::Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, mut receiver) = tokio::sync::mpsc::channel(crate::buildkit::OUTPUT_BACKLOG);
    tokio::spawn(task(sender));
    stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

impl Runtime for DockerRuntime {
    async fn ensure_image(&self, image: &str) -> Result<bool, RuntimeError> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(false);
        }
        let options = CreateImageOptions {
            from_image: image,
            ..CreateImageOptions::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(progress) = pull.next().await {
            progress.map_err(|error| RuntimeError::ImageUnavailable {
                image: image.to_owned(),
                source: boxed(error),
            })?;
        }
        Ok(true)
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let env: Vec<String> = spec
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let binds: Vec<String> = spec
            .mounts
            .iter()
            .map(|mount| {
                let mode = if mount.read_only { ":ro" } else { "" };
                format!("{}:{}{mode}", mount.source.display(), mount.target)
            })
            .collect();
        let host_config = HostConfig {
            network_mode: Some("none".to_owned()),
            binds: Some(binds),
            nano_cpus: spec.cpus.map(|cpus| (cpus * 1e9) as i64),
            memory: spec.memory_mb.map(|mb| (mb * 1024 * 1024) as i64),
            // The same limit for memory and swap: the machine gets no swap on top.
            memory_swap: spec.memory_mb.map(|mb| (mb * 1024 * 1024) as i64),
            pids_limit: spec.pids,
            // An init as process 1 (the engine's, tini), as a Fly machine has one: it
            // passes signals to the command and reaps orphans, whose zombies would
            // otherwise count against the pids limit until the machine restarts.
            init: Some(true),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            sysctls: Some(
                IPV6_SYSCTLS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<HashMap<_, _>>(),
            ),
            ..HostConfig::default()
        };
        let config = Config {
            image: Some(spec.image.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.cmd.clone(),
            env: Some(env),
            labels: Some(spec.labels.clone().into_iter().collect::<HashMap<_, _>>()),
            hostname: spec.hostname.clone(),
            tty: Some(spec.tty),
            stop_signal: Some(spec.stop_signal.name().to_owned()),
            host_config: Some(host_config),
            ..Config::default()
        };
        let options = CreateContainerOptions {
            name: spec.name.clone(),
            platform: None,
        };
        let created = self
            .docker
            .create_container(Some(options), config)
            .await
            .map_err(operation("create", &spec.name))?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container::<String>(id, None)
            .await
            .map_err(operation("start", id))
    }

    async fn stop(
        &self,
        id: &str,
        signal: Signal,
        timeout: Duration,
    ) -> Result<ExitStatus, RuntimeError> {
        let running = self
            .inspect(id)
            .await?
            .is_some_and(|info| info.state == ContainerState::Running);
        if !running {
            return self.exit_status(id).await;
        }
        match self.signal(id, signal).await {
            Ok(()) => {}
            // It exited between the inspection and the signal.
            Err(RuntimeError::Operation { .. })
                if !self
                    .inspect(id)
                    .await?
                    .is_some_and(|i| i.state == ContainerState::Running) =>
            {
                return self.exit_status(id).await;
            }
            Err(error) => return Err(error),
        }
        match tokio::time::timeout(timeout, self.wait(id)).await {
            Ok(status) => status,
            Err(_) => {
                tracing::info!(
                    container = id,
                    ?timeout,
                    "did not stop in time; sending SIGKILL"
                );
                let _ = self.signal(id, Signal::Kill).await;
                self.wait(id).await
            }
        }
    }

    async fn signal(&self, id: &str, signal: Signal) -> Result<(), RuntimeError> {
        let options = KillContainerOptions {
            signal: signal.name(),
        };
        self.docker
            .kill_container(id, Some(options))
            .await
            .map_err(operation("signal", id))
    }

    async fn set_memory_limit(&self, id: &str, memory_mb: u64) -> Result<(), RuntimeError> {
        let bytes = i64::try_from(memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        // Swap moves with it, as at creation: the machine gets no swap on top.
        let options = bollard::container::UpdateContainerOptions::<String> {
            memory: Some(bytes),
            memory_swap: Some(bytes),
            ..Default::default()
        };
        self.docker
            .update_container(id, options)
            .await
            .map_err(operation("update", id))
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(options)).await {
            Err(error) if is_status(&error, 404) => Ok(()),
            result => result.map_err(operation("remove", id)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(response) => Ok(Some(info_of(response))),
            Err(error) if is_status(&error, 404) => Ok(None),
            Err(error) => Err(operation("inspect", id)(error)),
        }
    }

    async fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>(),
        )]);
        let options = ListContainersOptions {
            all: true,
            filters,
            ..ListContainersOptions::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(operation("list", "*"))?;
        let mut containers = Vec::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            // Removed between the listing and the inspection: not there any more.
            if let Some(info) = self.inspect(&id).await? {
                containers.push(info);
            }
        }
        Ok(containers)
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        let options = WaitContainerOptions {
            condition: "not-running",
        };
        let mut wait = self.docker.wait_container(id, Some(options));
        // The code the wait answers with is the ended run's; an inspection made after it
        // may already see a later run (the container started again), which is running
        // and has no exit code. bollard reports a non-zero exit as an error.
        let code = match wait.next().await {
            Some(Ok(response)) => Some(response.status_code),
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Some(code),
            None => None,
            Some(Err(error)) => return Err(operation("wait", id)(error)),
        };
        let inspected = self.exit_status(id).await?;
        Ok(match code {
            Some(code) if code != inspected.exit_code => ExitStatus::from_code(code, false),
            _ => inspected,
        })
    }

    async fn exec_attached(
        &self,
        id: &str,
        command: &[String],
        options: &AttachOptions,
    ) -> Result<AttachedExec, RuntimeError> {
        let config = CreateExecOptions {
            cmd: Some(command.to_vec()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(options.tty),
            env: Some(options.env.clone()),
            user: options.user.clone(),
            ..CreateExecOptions::default()
        };
        let (exec, output, input) = self.start_exec(id, config, options.tty).await?;
        let container = id.to_owned();
        let output = output
            .filter_map(move |chunk| {
                let container = container.clone();
                async move {
                    match chunk {
                        Ok(LogOutput::StdErr { message }) => Some(Ok(ExecChunk::Stderr(message))),
                        Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                            Some(Ok(ExecChunk::Stdout(message)))
                        }
                        Ok(LogOutput::StdIn { .. }) => None,
                        Err(error) => Some(Err(operation("exec output", &container)(error))),
                    }
                }
            })
            .boxed();
        Ok(AttachedExec {
            id: exec,
            output,
            input,
        })
    }

    async fn exec_resize(&self, exec: &str, cols: u16, rows: u16) -> Result<(), RuntimeError> {
        self.docker
            .resize_exec(
                exec,
                bollard::exec::ResizeExecOptions {
                    height: rows,
                    width: cols,
                },
            )
            .await
            .map_err(operation("exec resize", exec))
    }

    async fn exec_state(&self, exec: &str) -> Result<ExecState, RuntimeError> {
        let inspected = self
            .docker
            .inspect_exec(exec)
            .await
            .map_err(operation("exec inspect", exec))?;
        let running = inspected.running == Some(true);
        Ok(ExecState {
            running,
            exit_code: if running { None } else { inspected.exit_code },
            pid: inspected
                .pid
                .and_then(|pid| u32::try_from(pid).ok())
                .filter(|pid| running && *pid > 0),
        })
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        options: &ExecOptions,
    ) -> Result<ExecOutput, RuntimeError> {
        self.exec_collected(id, command, options).await
    }

    fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
        since_seconds: Option<i64>,
    ) -> BoxStream<'static, Result<LogLine, RuntimeError>> {
        let options = LogsOptions::<String> {
            follow,
            since: since_seconds.unwrap_or(0),
            stdout: true,
            stderr: true,
            timestamps: true,
            tail: tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
            ..LogsOptions::default()
        };
        let container = id.to_owned();
        self.docker
            .logs(id, Some(options))
            .flat_map(move |chunk| {
                let lines: Vec<Result<LogLine, RuntimeError>> = match chunk {
                    Err(error) => vec![Err(operation("logs", &container)(error))],
                    Ok(chunk) => {
                        let stream = match chunk {
                            LogOutput::StdErr { .. } => LogStream::Stderr,
                            _ => LogStream::Stdout,
                        };
                        let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
                        text.lines()
                            .filter(|line| !line.is_empty())
                            .map(|line| {
                                let (timestamp, text) = line.split_once(' ').unwrap_or((line, ""));
                                Ok(LogLine {
                                    stream,
                                    timestamp: timestamp.to_owned(),
                                    text: text.to_owned(),
                                })
                            })
                            .collect()
                    }
                };
                stream::iter(lines)
            })
            .boxed()
    }

    async fn usage(&self, id: &str) -> Result<ResourceUsage, RuntimeError> {
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let stats = self
            .docker
            .stats(id, Some(options))
            .next()
            .await
            .ok_or_else(|| RuntimeError::NotFound {
                container: id.to_owned(),
            })?
            .map_err(operation("stats", id))?;
        let disk = |op: &str| {
            stats
                .blkio_stats
                .io_service_bytes_recursive
                .iter()
                .flatten()
                .filter(|entry| entry.op.eq_ignore_ascii_case(op))
                .map(|entry| entry.value)
                .sum()
        };
        Ok(ResourceUsage {
            cpu_nanos: stats.cpu_stats.cpu_usage.total_usage,
            memory_bytes: stats.memory_stats.usage.unwrap_or(0),
            memory_limit_bytes: stats.memory_stats.limit.unwrap_or(0),
            disk_read_bytes: disk("read"),
            disk_write_bytes: disk("write"),
        })
    }
}
