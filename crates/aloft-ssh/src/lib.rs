//! SSH into machines: per-organization certificate authorities ([`ca`]), the client the
//! CLI uses over the API's tunnel ([`client`]) and the SFTP server that serves a machine's
//! filesystem ([`sftp`]), and the pieces both ends share: carrying a byte stream over a
//! channel ([`relay`]) and reading a channel without stalling its session ([`inbox`]).
//!
//! The server side (authenticating certificates, exec into containers, port forwarding)
//! lives in the agent, which knows the machines.

pub mod ca;
pub mod client;
pub mod inbox;
pub mod relay;
pub mod sftp;

pub use russh;
pub use russh_sftp;
