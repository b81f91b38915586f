//! Running machines: the [`Runtime`] trait and its Docker Engine implementation
//! ([`DockerRuntime`]).
//!
//! The host agent is the only user. It decides *what* runs (restart policy, adoption of
//! containers after a restart, events); a runtime only does what it is told, and reports
//! what it sees. Invariants of every implementation:
//!
//! - A container is created with the labels it is given and never touched unless asked;
//!   [`Runtime::list`] filters by label so an agent sees only its own containers.
//! - [`Runtime::stop`] sends the given signal, waits at most the given timeout, then kills
//!   with SIGKILL: the machine's `kill_signal`/`kill_timeout` are honoured exactly.
//! - Nothing here restarts a container: the runtime's own restart policy is always off, so
//!   every restart is the agent's decision and recorded as an event.
//! - Machines get no network from the runtime (`network_mode: none`); the agent plumbs
//!   the private network into the container's namespace itself.

mod buildkit;
mod docker;
mod protobuf;
mod session;
mod spec;

use std::collections::BTreeMap;
use std::time::Duration;

use aloft_types::Signal;

pub use docker::{
    BuildHost, BuildLimits, BuildLimitsError, DOCKER_SOCKET, DockerRuntime, apply_build_limits,
};
pub use spec::{
    BindMount, BuildOptions, BuildProgress, ContainerInfo, ContainerSpec, ContainerState,
    ExecOutput, ExitStatus, LogLine, LogStream, ResourceUsage,
};

/// What a runtime operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container engine is unavailable at {endpoint}")]
    Unavailable {
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("image {image} is not available locally and could not be pulled")]
    ImageUnavailable {
        image: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("container {container} does not exist")]
    NotFound { container: String },
    #[error("{operation} of container {container} failed")]
    Operation {
        operation: &'static str,
        container: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("building image {tag} failed: {message}")]
    Build { tag: String, message: String },
    #[error("exec in container {container} did not finish within {timeout:?}; it was killed")]
    ExecTimeout {
        container: String,
        timeout: Duration,
    },
    #[error(
        "exec in container {container} wrote more than {limit} bytes to one stream; it was \
         killed (stream long output with `aloft ssh console`)"
    )]
    ExecOutputLimit { container: String, limit: usize },
}

/// The most an exec's stdout, or its stderr, may hold: past it the command is killed, so
/// that a command's output never fills the agent's memory.
pub const EXEC_OUTPUT_LIMIT: usize = 1 << 20;

/// Options of [`Runtime::exec`].
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Allocate a TTY (stdout and stderr then arrive merged, as stdout).
    pub tty: bool,
    /// Bytes written to the command's stdin, which is then closed.
    pub stdin: Option<Vec<u8>>,
    /// Kill the wait for the command after this long.
    pub timeout: Option<Duration>,
}

/// Options of [`Runtime::exec_attached`].
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// Allocate a TTY (output then arrives as stdout only).
    pub tty: bool,
    /// The user (name or `uid[:gid]`) to run as; `None`: the container's.
    pub user: Option<String>,
    /// `NAME=value` entries added to the container's environment.
    pub env: Vec<String>,
}

/// A piece of an attached command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
}

/// A command started with [`Runtime::exec_attached`].
pub struct AttachedExec {
    /// The engine's id of the exec (for [`Runtime::exec_resize`] and
    /// [`Runtime::exec_state`]).
    pub id: String,
    /// Its output until it exits (or the engine closes the stream).
    pub output: futures_util::stream::BoxStream<'static, Result<ExecChunk, RuntimeError>>,
    /// Its stdin; shutting it down closes the command's stdin.
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

impl std::fmt::Debug for AttachedExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachedExec")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where an attached command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecState {
    pub running: bool,
    /// Set once it exited.
    pub exit_code: Option<i64>,
    /// Its process on the host, while it runs.
    pub pid: Option<u32>,
}

/// Runs machines as containers (or, later, microVMs) on one host.
#[allow(
    async_fn_in_trait,
    reason = "used through generics by the agent, not as a trait object"
)]
pub trait Runtime: Send + Sync {
    /// Makes `image` available locally (pulling it if the engine lacks it); says whether
    /// it was pulled.
    fn ensure_image(
        &self,
        image: &str,
    ) -> impl std::future::Future<Output = Result<bool, RuntimeError>> + Send;

    /// Creates a container (not started) and returns its id.
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl std::future::Future<Output = Result<String, RuntimeError>> + Send;

    fn start(&self, id: &str)
    -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;

    /// Sends `signal`, waits up to `timeout` for the process to exit, then SIGKILLs it.
    /// Returns how the process exited.
    fn stop(
        &self,
        id: &str,
        signal: Signal,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<ExitStatus, RuntimeError>> + Send;

    /// Delivers `signal` to the main process.
    fn signal(
        &self,
        id: &str,
        signal: Signal,
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes the container (killing it if it runs) and its anonymous volumes. Removing
    /// a container that does not exist succeeds.
    fn remove(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;

    /// The container's state, or `None` if it does not exist.
    fn inspect(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<ContainerInfo>, RuntimeError>> + Send;

    /// Every container (running or not) carrying all of `labels`.
    fn list(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> impl std::future::Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send;

    /// Waits until the container's main process exits and says how.
    fn wait(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<ExitStatus, RuntimeError>> + Send;

    /// Runs `command` inside the running container and collects its output.
    fn exec(
        &self,
        id: &str,
        command: &[String],
        options: &ExecOptions,
    ) -> impl std::future::Future<Output = Result<ExecOutput, RuntimeError>> + Send;

    /// Starts `command` in the running container with stdin, stdout and stderr attached
    /// (SSH sessions).
    fn exec_attached(
        &self,
        id: &str,
        command: &[String],
        options: &AttachOptions,
    ) -> impl std::future::Future<Output = Result<AttachedExec, RuntimeError>> + Send;

    /// Sets the TTY size of an attached command.
    fn exec_resize(
        &self,
        exec: &str,
        cols: u16,
        rows: u16,
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;

    /// Whether an attached command still runs, and its exit code once not.
    fn exec_state(
        &self,
        exec: &str,
    ) -> impl std::future::Future<Output = Result<ExecState, RuntimeError>> + Send;

    /// The container's log lines so far (`follow = false`) or as they come; with `tail`,
    /// starting that many lines from the end; with `since_seconds`, from that Unix second.
    fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<usize>,
        since_seconds: Option<i64>,
    ) -> futures_util::stream::BoxStream<'static, Result<LogLine, RuntimeError>>;

    /// Changes a running container's memory limit in place (no restart), for as long as
    /// the container lives.
    fn set_memory_limit(
        &self,
        id: &str,
        memory_mb: u64,
    ) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send;

    /// CPU and memory use right now.
    fn usage(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<ResourceUsage, RuntimeError>> + Send;

    /// For a runtime that serves its containers' ports itself (the simulated one), how to
    /// connect to a port of container `id`; `None` (Docker, and the default) means the
    /// container is reached over the network.
    fn direct_ports(&self, id: &str) -> Option<DirectPorts> {
        let _ = id;
        None
    }
}

/// Connects to a port of one container, without a network ([`Runtime::direct_ports`]).
pub type DirectPorts =
    std::sync::Arc<dyn Fn(u16) -> std::io::Result<tokio::io::DuplexStream> + Send + Sync>;
