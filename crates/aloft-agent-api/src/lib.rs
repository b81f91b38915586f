//! The contract between Aloft's control plane and its host agents.
//!
//! Two directions, each a trait that an in-process link (`aloftd server`: plain calls) and
//! a network link (many hosts) both implement:
//! - [`ControlPlane`]: what an agent asks of the control plane: its host's desired
//!   machines (with [`MachineChange`]s as they are made), what a machine needs to run
//!   (its 6PN address, app name, secrets, SSH trust), and the agent's reports: heartbeat
//!   and capacity ([`Host`]), observed machine states, events, check results and resource
//!   samples ([`MachineSample`]). The agent never writes the control plane's store itself.
//! - [`HostLink`]: what the control plane asks of one host's agent: run a command in a
//!   machine, read its last log lines, serve an SSH connection.
//!
//! Errors are typed ([`ControlError`], [`LinkError`]) so either side can tell a machine
//! that is gone from a peer that cannot be reached. Nothing here does I/O; the crate links
//! neither the store, the API server nor a container runtime.

pub mod clock;
mod records;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use aloft_net::{HostNumber, SixPn};
use aloft_types::api::ExecResponse;
use aloft_types::{AppName, EventKind, HostId, MachineId, MachineState, OrgId, Signal};
use tokio::sync::broadcast;

pub use records::{
    CheckRecord, Desired, Host, Lease, MachineRecord, MachineSample, UnknownDesired,
};

/// The SSH certificate extension that names the API token a certificate was issued for: a
/// host's SSH server refuses a certificate whose token is revoked or expired.
pub const TOKEN_EXTENSION: &str = "aloft-token@aloft.dev";

/// An error with its whole chain of causes, `: `-separated: how errors cross the
/// contract as text ([`ControlError::Internal`], [`LinkError::Failed`]).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// A boxed future, for object-safe async traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an agent should do about a machine beyond converging to its desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Compare the machine with its desired state and act.
    Converge,
    /// Stop with this signal and timeout (instead of the config's `stop_config`).
    Stop {
        signal: Option<Signal>,
        timeout: Option<Duration>,
    },
    /// Stop (as above), then start again.
    Restart {
        signal: Option<Signal>,
        timeout: Option<Duration>,
    },
    /// Deliver a signal to the main process.
    Signal(Signal),
}

/// A change the agents hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineChange {
    pub machine_id: MachineId,
    pub host_id: Option<HostId>,
    pub command: Command,
}

/// What a machine's SSH server trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTrust {
    pub org_id: OrgId,
    pub app: String,
    /// The organization's CA public keys (`ssh-ed25519 …`).
    pub authorities: Vec<String>,
    /// Any one of these in a certificate opens the machine.
    pub principals: Vec<String>,
}

/// Why the control plane did not do what an agent asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The machine, app, host or organization is not (or no longer) there.
    #[error("{0} not found")]
    NotFound(String),
    /// The request does not fit the current state (a transition that is not allowed, say).
    #[error("refused: {0}")]
    Refused(String),
    /// The control plane cannot be reached or cannot answer now; asking again later may
    /// work.
    #[error("the control plane is unavailable: {0}")]
    Unavailable(String),
    /// Something failed inside the control plane.
    #[error("the control plane failed: {0}")]
    Internal(String),
}

/// What agents use to learn desired state and report observed state.
pub trait ControlPlane: Send + Sync + std::fmt::Debug {
    /// Registers the host, or records its heartbeat and current capacity.
    fn heartbeat<'a>(&'a self, host: &'a Host) -> BoxFuture<'a, Result<(), ControlError>>;

    /// The machines placed on `host` that are not destroyed yet.
    fn machines<'a>(
        &'a self,
        host: &'a HostId,
    ) -> BoxFuture<'a, Result<Vec<MachineRecord>, ControlError>>;

    /// One machine, as it is now.
    fn machine<'a>(
        &'a self,
        id: &'a MachineId,
    ) -> BoxFuture<'a, Result<MachineRecord, ControlError>>;

    /// The machine's 6PN address (network, host and machine numbers), assigned on first
    /// use.
    fn private_address<'a>(
        &'a self,
        id: &'a MachineId,
    ) -> BoxFuture<'a, Result<SixPn, ControlError>>;

    /// The host's number in every private network.
    fn host_number<'a>(
        &'a self,
        host: &'a HostId,
    ) -> BoxFuture<'a, Result<HostNumber, ControlError>>;

    /// What the SSH server trusts for `machine`: its organization's CA (none until the
    /// first certificate was issued) and the principals that open it.
    fn ssh_trust<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<SshTrust, ControlError>>;

    /// Whether the token `id` of `org` exists and is neither revoked nor expired (a
    /// certificate stops working with its token).
    fn token_active<'a>(
        &'a self,
        org: &'a OrgId,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, ControlError>>;

    /// The name of the app a machine belongs to (for `FLY_APP_NAME`).
    fn app_name<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<AppName, ControlError>>;

    /// The app's secrets, decrypted, for the machine's environment and files.
    fn secrets<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, ControlError>>;

    /// The machine's volumes as they are now, by volume id: their size and key. A volume
    /// left out (gone) keeps its mount's size and is not encrypted.
    fn volumes<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<BTreeMap<String, VolumeFacts>, ControlError>>;

    /// Records the state the agent observed; the same state again is a no-op.
    fn report_state<'a>(
        &'a self,
        id: &'a MachineId,
        state: MachineState,
    ) -> BoxFuture<'a, Result<(), ControlError>>;

    /// A machine whose process ended and that policy does not restart rests: its desired
    /// state becomes stopped until someone starts it. Only when it is still wanted
    /// started and still has `instance` (the config of the run that ended): a machine
    /// updated meanwhile stays wanted started. Whether it rests now.
    fn rest<'a>(
        &'a self,
        id: &'a MachineId,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<bool, ControlError>>;

    /// Records an event the platform caused (`source: flyd`, Fly's spelling).
    fn record_event<'a>(
        &'a self,
        id: &'a MachineId,
        kind: EventKind,
        status: &'a str,
        request: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), ControlError>>;

    /// Replaces the machine's check results with a new run's (routing follows at once).
    fn reset_checks<'a>(
        &'a self,
        id: &'a MachineId,
        records: &'a [CheckRecord],
    ) -> BoxFuture<'a, Result<(), ControlError>>;

    /// Records one check's result; `status_changed` tells routing to follow.
    fn report_check<'a>(
        &'a self,
        record: &'a CheckRecord,
        status_changed: bool,
    ) -> BoxFuture<'a, Result<(), ControlError>>;

    /// Replaces the host's resource samples with this round's (every started machine's).
    fn report_samples<'a>(
        &'a self,
        host: &'a HostId,
        samples: Vec<MachineSample>,
    ) -> BoxFuture<'a, Result<(), ControlError>>;

    /// Changes as they are made (a lagging receiver should reconcile everything).
    fn subscribe(&self) -> broadcast::Receiver<MachineChange>;
}

/// Why a host did not do what the control plane asked of it.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The machine has no container that could do it (not running, not created yet).
    #[error("machine {machine} {why}")]
    NotRunning { machine: MachineId, why: String },
    /// The host could not be reached, or went away while answering.
    #[error("the host cannot be reached: {0}")]
    Unreachable(String),
    /// The host tried and failed (the runtime refused, the SSH session broke, ...).
    #[error("{operation} failed: {message}")]
    Failed {
        operation: &'static str,
        message: String,
    },
}

/// The key a volume's files are encrypted with on its host: 64 random bytes (an ext4
/// encryption master key), made by the control plane when the volume is, kept there
/// sealed, and handed to the volume's host whenever it mounts the volume. Never shown,
/// never logged (its `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct VolumeKey(Box<[u8; VolumeKey::LEN]>);

impl VolumeKey {
    /// Its length in bytes.
    pub const LEN: usize = 64;

    pub fn from_bytes(bytes: [u8; Self::LEN]) -> VolumeKey {
        VolumeKey(Box::new(bytes))
    }

    /// A key from its hex spelling (what the control plane seals).
    pub fn from_hex(hex: &str) -> Option<VolumeKey> {
        if hex.len() != 2 * Self::LEN || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; Self::LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(VolumeKey::from_bytes(bytes))
    }

    /// Its hex spelling.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl std::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeKey(<hidden>)")
    }
}

/// What a host needs to know of a volume to make it ready: its size now (a volume
/// extended since its machine was configured is bigger than its mount says) and its
/// key when it is encrypted at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFacts {
    pub size_gb: u64,
    pub key: Option<VolumeKey>,
}

/// A volume snapshot a host wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTaken {
    /// Bytes of its archive.
    pub size: u64,
    /// `sha256:<hex>` of its archive.
    pub digest: String,
}

/// A file that a machine serves through `[[statics]]`, opened.
pub struct StaticFile {
    /// Its size in bytes when it was opened.
    pub length: u64,
    pub body: Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>,
}

impl std::fmt::Debug for StaticFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticFile")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// A byte stream carrying SSH (the upgraded API connection).
pub trait SshStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> SshStream for T {}

/// How the control plane reaches one host's agent.
pub trait HostLink: Send + Sync {
    /// Runs `command` in `machine`'s main container.
    fn exec<'a>(
        &'a self,
        machine: &'a MachineRecord,
        command: Vec<String>,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResponse, LinkError>>;

    /// The last `lines` lines `machine`'s newest container wrote (stdout and stderr, in
    /// order), also after it exited.
    fn last_lines<'a>(
        &'a self,
        machine: &'a MachineRecord,
        lines: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, LinkError>>;

    /// The processes running in `machine` (Fly's `ps`).
    fn processes<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<Vec<aloft_types::api::ProcessStat>, LinkError>>;

    /// Opens `path` under `guest_path` in `machine`'s running filesystem, for
    /// `[[statics]]`. `path` is relative, its segments already checked (none empty, `.`
    /// or `..`). Only a regular file reached without a symbolic link on the way (in
    /// `guest_path` too) is served; anything else is `None`, as is a runtime whose
    /// machines have no filesystem on this host.
    fn open_static<'a>(
        &'a self,
        machine: &'a MachineRecord,
        guest_path: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<StaticFile>, LinkError>>;

    /// The memory limit, in MB, of `machine`'s running container.
    fn memory_limit<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<u64, LinkError>>;

    /// Changes the memory limit of `machine`'s running container in place (until it next
    /// starts, when its config's size applies again).
    fn set_memory_limit<'a>(
        &'a self,
        machine: &'a MachineRecord,
        memory_mb: u64,
    ) -> BoxFuture<'a, Result<(), LinkError>>;

    /// Writes a snapshot of `volume`'s files on this host as `snapshot` (an archive kept
    /// on the host, encrypted with a key derived from `key` when the volume is
    /// encrypted). Taking the same snapshot again rewrites it: retries are safe.
    fn snapshot_volume<'a>(
        &'a self,
        volume: &'a aloft_types::VolumeId,
        key: Option<&'a VolumeKey>,
        snapshot: &'a aloft_types::SnapshotId,
    ) -> BoxFuture<'a, Result<SnapshotTaken, LinkError>>;

    /// Fills `volume` (new, mounted by nothing; `into` says its size and key) with
    /// `snapshot`'s files (`from`: the key of the volume it was taken of). Its files
    /// appear all at once when the whole snapshot is in place: retries are safe.
    fn restore_volume<'a>(
        &'a self,
        snapshot: &'a aloft_types::SnapshotId,
        from: Option<&'a VolumeKey>,
        volume: &'a aloft_types::VolumeId,
        into: &'a VolumeFacts,
    ) -> BoxFuture<'a, Result<(), LinkError>>;

    /// Deletes `volume`'s files (it is being destroyed; nothing mounts it). A volume
    /// with no files here is no error.
    fn delete_volume<'a>(
        &'a self,
        volume: &'a aloft_types::VolumeId,
    ) -> BoxFuture<'a, Result<(), LinkError>>;

    /// Deletes `snapshot`'s archive; one already gone is no error.
    fn delete_snapshot<'a>(
        &'a self,
        snapshot: &'a aloft_types::SnapshotId,
    ) -> BoxFuture<'a, Result<(), LinkError>>;

    /// Serves one SSH connection that arrived through the API's tunnel for `machine`,
    /// until it ends. The host's SSH server authenticates it.
    fn ssh<'a>(
        &'a self,
        machine: &'a MachineRecord,
        stream: Box<dyn SshStream>,
    ) -> BoxFuture<'a, Result<(), LinkError>>;
}

/// The private network's DNS server of a host, asked as a machine of a network would ask
/// it (`GET /v1/apps/{app}/dns`, `aloft dig`).
pub trait Dig: Send + Sync {
    /// Asks for `name` (`record_type`: `AAAA`, `TXT`, ...) as a machine of `network`
    /// would, through the whole query path (forwarding included).
    fn dig<'a>(
        &'a self,
        name: &'a str,
        record_type: &'a str,
        network: u32,
    ) -> BoxFuture<'a, Result<aloft_types::dig::DigAnswer, aloft_types::dig::DigError>>;
}
