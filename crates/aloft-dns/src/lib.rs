//! The private network's DNS server: Fly's `.internal` names answered from the control
//! plane's catalog, and everything else forwarded to the host's resolvers.
//!
//! Invariants:
//! - A query on `[fdaa::3]:53` sees only the names of the network its source address
//!   belongs to; another network's names do not exist for it (NXDOMAIN), so nothing
//!   leaks between organizations or named networks.
//! - AAAA answers hold started machines only; a name that exists with no data of the
//!   asked type is NODATA (NOERROR, no answers, the zone's SOA), never NXDOMAIN.
//! - Every answer has a 5 s TTL; names are case-insensitive.
//! - No input crashes or stalls the server: unreadable packets get FORMERR or nothing,
//!   and each TCP client has an idle timeout.
//!
//! Main types: [`Resolver`], [`Sockets`], [`Zone`].

pub mod answer;
mod limits;
mod server;
pub mod zone;

pub use answer::{Listener, Reply, TTL, Transport, respond};
pub use server::{
    DigAnswer, DigError, DigRecord, DnsError, MAX_FORWARDS, MAX_FORWARDS_PER_SOURCE,
    MAX_TCP_CLIENTS, MAX_TCP_CLIENTS_PER_SOURCE, Resolver, Sockets, TCP_IDLE_TIMEOUT,
    UPSTREAM_TIMEOUT, upstream_from_resolv_conf,
};
pub use zone::{Records, Scope, Zone};
