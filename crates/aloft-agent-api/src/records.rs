//! What the control plane keeps about hosts and machines and hands to agents: a machine's
//! desired state and config, a host's registration, a check's latest result.

use aloft_types::machine::MachineConfig;
use aloft_types::{AppId, CheckStatus, HostId, MachineId, MachineState};

/// What the platform should make of a machine; the host agent converges to it and reports
/// the machine's observed [`MachineState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Desired {
    Started,
    Stopped,
    Destroyed,
}

impl Desired {
    pub const fn as_str(self) -> &'static str {
        match self {
            Desired::Started => "started",
            Desired::Stopped => "stopped",
            Desired::Destroyed => "destroyed",
        }
    }
}

/// A desired state name that is not one of [`Desired`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown desired state {0:?}")]
pub struct UnknownDesired(pub String);

impl std::str::FromStr for Desired {
    type Err = UnknownDesired;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "started" => Ok(Desired::Started),
            "stopped" => Ok(Desired::Stopped),
            "destroyed" => Ok(Desired::Destroyed),
            other => Err(UnknownDesired(other.to_owned())),
        }
    }
}

/// A held lease: mutations need its nonce until it expires or is released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub nonce: String,
    pub owner: String,
    pub description: String,
    pub expires_at: i64,
}

/// A machine: where it is placed, what it should be, what it was last seen to be, and the
/// config of its current version.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineRecord {
    pub id: MachineId,
    pub app_id: AppId,
    pub name: String,
    pub region: String,
    pub host_id: Option<HostId>,
    pub state: MachineState,
    /// What the agent is asked to converge to.
    pub desired: Desired,
    /// Grows by one with every config change.
    pub version: i64,
    /// Changes with every version.
    pub instance_id: String,
    pub private_ip: Option<String>,
    pub config: MachineConfig,
    pub cordoned: bool,
    /// The lease, if one is held and not expired at the time of reading.
    pub lease: Option<Lease>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A host as registered by its agent (its heartbeat carries the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub id: HostId,
    pub region: String,
    pub cpus: i64,
    pub memory_mb: i64,
    /// Where the host's agent can be reached.
    pub address: Option<String>,
    pub last_heartbeat: i64,
    /// Whether its volumes can be encrypted at rest (ext4 filesystems on a kernel with
    /// ext4 encryption): an encrypted volume is only placed on such a host.
    pub encrypts_volumes: bool,
}

/// One check's latest result, as the agent that runs the check reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    pub machine_id: MachineId,
    pub name: String,
    /// The index in the machine's `services` of the check's service; `None` for a
    /// top-level check.
    pub service: Option<usize>,
    pub status: CheckStatus,
    pub output: String,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// One started machine's resource use at a sample (counters since its run started), with
/// its app's own metrics page when it has a `[metrics]` endpoint that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSample {
    pub machine_id: MachineId,
    pub cpu_nanos: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    /// Bytes received and sent on its private network interface.
    pub receive_bytes: u64,
    pub transmit_bytes: u64,
    /// The page its `[metrics]` endpoint served (Prometheus' text format), unlabelled.
    pub app_metrics: Option<String>,
}
