//! The edge proxy. Requests to `<app>.<apps_domain>` on the shared HTTP listener go to
//! one of the app's started, uncordoned machines over the private network: least-loaded
//! first, machines under their soft limit before the others, none past its hard limit
//! (requests wait a bounded time, then get a 503 that says why). Fly's request headers
//! are added on the way in and `Fly-Request-Id`, `Via` and `Server` on the way out.
//!
//! Invariants:
//! - The route table is rebuilt from the control plane's catalog and swapped whole; a
//!   request in flight keeps the table it started with.
//! - A machine's load counts a request from the moment it is chosen until the last byte
//!   of its response is sent (or the client goes away).
//! - Connections to machines are made inside the private network's namespace.
//!
//! Main types: [`Proxy`], [`RouteTable`], [`Loads`].

pub mod autoscale;
mod balance;
mod body;
pub mod connect;
mod dedicated;
pub mod metrics;
mod pool;
mod proxy;
pub mod replay;
mod routes;
pub mod statics;
pub mod tcp;
pub mod tls;
pub mod udp;

pub use balance::{Lease, Loads};
pub use proxy::{BoxError, Proxy, ProxyBody, ProxyConfig, request_id};
pub use routes::{Backend, DEFAULT_HARD_LIMIT, DEFAULT_SOFT_LIMIT, Route, RouteTable, app_of_host};
