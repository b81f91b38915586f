//! The log store of one host: every line its machines write, and the platform's events
//! about them, kept durably for as long as the operator wants and searchable.
//!
//! Layout: a directory of segment files, `<first seq>.seg`, each a run of CRC-checked
//! records (module `record`) in arrival order, numbered by a per-host sequence. Records are
//! grouped in blocks of [`BLOCK_RECORDS`]; the store keeps each block's offset, sequence
//! range and time range in memory (and in `<first seq>.idx` once a segment is sealed), so a
//! query reads only blocks whose time range, sequence range and segment's apps and
//! machines can match.
//!
//! Durability: one writer thread appends batches and calls `fdatasync` after each batch
//! (group commit). A line is visible to queries only once it is synced, so whatever a
//! query has returned survives a crash. Opening the store after a crash truncates the last
//! segment at its first torn record.
//!
//! Retention: sealed segments are deleted oldest first while the store is over its size
//! limit, and when everything in them is older than the age limit; queries never return
//! lines older than the age limit.

mod reach;
mod record;
mod ship;
mod store;

pub use reach::{BadNetwork, CONNECT_TIMEOUT, Network, ReachError, SinkReach};
pub use record::{Entry, MAX_TEXT, NewEntry, Stream};
pub use ship::{Apps, MAX_BACKLOG, ShipperStats, SinkKind, SinkSpec, ship};
pub use store::{BLOCK_RECORDS, LogConfig, LogStore, Query, QueryResult, StoreStats};

/// What the log store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the log store is closed")]
    Closed,
}
