//! SSH into machines: per-organization certificate authorities ([`ca`]), the client the
//! CLI uses over the API's tunnel ([`client`]) and the SFTP server that serves a machine's
//! filesystem ([`sftp`]), and what both ends share: carrying a byte stream over a
//! channel ([`relay`]) and the size of a channel's queue ([`CHANNEL_QUEUE`]).
//!
//! Flow control: russh as published gives the peer its window back as soon as data
//! arrives and stalls the whole session when a channel's reader falls behind, window
//! adjustments included, so two directions that wait on each other (an echo, `cat`)
//! deadlock. We build it with a patch (`vendor/russh`, see `vendor/README.md`) that gives
//! the window back as the channel's reader takes the data, as OpenSSH does: a reader
//! that stops stops its peer, and nothing else.
//!
//! The server side (authenticating certificates, exec into containers, port forwarding)
//! lives in the agent, which knows the machines.

pub mod ca;
pub mod client;
pub mod relay;
pub mod sftp;

pub use russh;
pub use russh_sftp;

/// Messages a channel's queue holds (russh's `channel_buffer_size`). The window (2 MiB)
/// must run out before the queue fills, or a reader that falls behind stalls the session
/// again: this holds for packets of 256 bytes on average and up, which bulk traffic
/// (32 KiB packets) and interactive typing (a few packets) both are.
pub const CHANNEL_QUEUE: usize = 8192;
