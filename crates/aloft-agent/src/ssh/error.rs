//! Why an SSH login was refused or a session failed: shown to the client, recorded in the
//! machine's events and logged.

use std::path::PathBuf;

use aloft_agent_api::TOKEN_EXTENSION;
use aloft_types::MachineId;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SshError {
    #[error("the host key {}: {reason}", path.display())]
    HostKey { path: PathBuf, reason: String },
    #[error("the host key {}: {source}", path.display())]
    HostKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no login within {0:?}")]
    LoginGrace(std::time::Duration),
    #[error("login {0:?} names no machine: log in as MACHINE or USER+MACHINE")]
    Login(String),
    #[error("no machine {0}")]
    NoMachine(MachineId),
    #[error("machine {0} is not on this host")]
    NotOnThisHost(MachineId),
    #[error("reading the organization's CA: {0}")]
    Trust(String),
    #[error("the organization has no SSH CA yet (no certificate was ever issued)")]
    NoAuthority,
    #[error("{0}")]
    Certificate(String),
    /// A certificate not from the machine's organization (another CA, a forged
    /// signature): its holder is a stranger to the machine.
    #[error("{0}")]
    Stranger(String),
    #[error("the certificate names no token ({TOKEN_EXTENSION})")]
    NoToken,
    #[error("checking the certificate's token: {0}")]
    TokenCheck(String),
    #[error("token {0} is revoked or expired")]
    TokenInactive(String),
    #[error("listing the machine's containers: {0}")]
    Containers(String),
    #[error("machine {0} has no running container")]
    NotRunning(MachineId),
    #[error("machine {0} has no process")]
    NoProcess(MachineId),
    #[error("running the command: {0}")]
    Exec(String),
    #[error("this agent has no helper binary for SFTP")]
    NoHelper,
    #[error("starting {} sftp-server: {source}", path.display())]
    Helper {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the SFTP helper has no stdio")]
    HelperStdio,
    #[error("binding {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the SSH connection: {0}")]
    Protocol(String),
    #[error("relaying: {0}")]
    Relay(#[source] aloft_ssh::relay::RelayError),
}
