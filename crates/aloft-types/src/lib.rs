//! Shared vocabulary of Aloft: typed names and IDs, durations and signals in the forms
//! Fly.io's tools write them, and the Machines API wire types (`MachineConfig` and its parts)
//! with exactly the JSON field names of Fly's public API.
//!
//! Invariants:
//! - Every value here is plain data: no I/O, no clocks, no randomness.
//! - Wire types serialize to the same JSON as `fly-go`'s `machine_types.go`, so clients
//!   written for Fly read what Aloft writes (field names, omitted empties, enum spellings).
//! - Names (`AppName`, `RegionCode`) can only be built through validation, so code that
//!   holds one never re-checks it.
//!
//! Main types: [`Duration`], [`Signal`], [`AppName`], [`RegionCode`], typed ids
//! ([`MachineId`], [`VolumeId`], ...), [`MachineState`], [`machine::MachineConfig`].

#[macro_use]
mod named;

pub mod api;
pub mod build;
pub mod catalog;
mod check;
pub mod deploy;
pub mod dig;
mod duration;
mod event;
pub mod history;
mod ids;
mod kinds;
pub mod machine;
mod names;
pub mod prometheus;
pub mod regions;
mod signal;
mod state;
pub mod time;

pub use check::{CheckStatus, UnknownCheckStatus, service_check_name};
pub use duration::{Duration, DurationParseError};
pub use event::EventKind;
pub use ids::{AppId, HostId, IdError, MachineId, OrgId, SnapshotId, TokenId, VolumeId};
pub use kinds::{HostState, IpKind, SinkKind};
pub use named::UnknownName;
pub use names::{AppName, NameError, RegionCode, https_authority, https_url, percent_encode};
pub use signal::{Signal, UnknownSignal};
pub use state::{MachineState, UnknownState};
