//! What a container is created from, and what the runtime reports about one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aloft_types::Signal;

/// Everything needed to create a machine's container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// The engine's name for the container (unique on the host).
    pub name: String,
    pub image: String,
    /// Replaces the image's ENTRYPOINT when set.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD when set.
    pub cmd: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub hostname: Option<String>,
    /// CPU limit in CPUs (fractions allowed).
    pub cpus: Option<f64>,
    /// Memory limit in MiB.
    pub memory_mb: Option<u64>,
    /// How many processes and threads the container may have at once.
    pub pids: Option<i64>,
    pub mounts: Vec<BindMount>,
    /// The signal the engine would use on its own stop (the agent always passes one).
    pub stop_signal: Signal,
    pub tty: bool,
}

/// A host directory mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// The engine's view of a container's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Removing,
    Dead,
}

/// How a container's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus {
    pub exit_code: i64,
    /// The signal that ended the process, when it died of one (exit code 128 + N).
    pub signal: Option<i32>,
    pub oom_killed: bool,
}

impl ExitStatus {
    /// Reads an exit code the shell way: 128 + N means "killed by signal N".
    pub fn from_code(exit_code: i64, oom_killed: bool) -> ExitStatus {
        let signal = (129..=159)
            .contains(&exit_code)
            .then(|| (exit_code - 128) as i32);
        ExitStatus {
            exit_code,
            signal,
            oom_killed,
        }
    }

    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// A container as the runtime sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// Set once the container has exited.
    pub exit: Option<ExitStatus>,
    /// When the container last started (the engine's timestamp; empty if never).
    pub started_at: String,
    /// The main process's id on the host while the container runs (its network namespace
    /// is `/proc/PID/ns/net`).
    pub pid: Option<u32>,
}

impl ContainerInfo {
    /// Names one run of the container: the same container started again is a new run.
    pub fn run_key(&self) -> String {
        format!("{}@{}", self.id, self.started_at)
    }
}

/// The output of a command run with `exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line a container wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    /// The engine's RFC 3339 timestamp of the line.
    pub timestamp: String,
    pub text: String,
}

/// A container's resource use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceUsage {
    /// Total CPU time used, in nanoseconds.
    pub cpu_nanos: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Bytes read from and written to block devices.
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
}

// The build types are plain data shared with the control plane, which must not link the
// runtime: they live in `aloft-types`.
pub use aloft_types::build::{BuildOptions, BuildProgress};
