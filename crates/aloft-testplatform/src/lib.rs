//! Aloft started whole in one process, for tests and benchmarks, in three sizes:
//!
//! - [`ControlApi`]: the control plane alone, its API on a loopback port, on SQLite or
//!   PostgreSQL (no agent: machines stay as the API leaves them);
//! - [`SimPlatform`]: the control plane and N agents over the agent contract, machines on
//!   the simulated runtime (no Docker, no network), with agent and control plane restarts;
//! - [`ServerPlatform`]: `aloftd server` itself (Docker, its private network in a
//!   namespace of the test's own), stopped gracefully and its containers removed.
//!
//! Each replaces a copy of the same start-up that the control plane's tests, `aloftd`'s
//! simulated suite and benchmarks and the CLI's tests used to carry.

mod control;
mod server;
mod sim;

pub use control::{Backend, ControlApi, ControlOptions};
pub use server::ServerPlatform;
pub use sim::SimPlatform;
