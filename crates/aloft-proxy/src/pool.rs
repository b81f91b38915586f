//! HTTP/1.1 connections to machines, kept per worker thread and reused.
//!
//! Each thread keeps its idle connections by machine address: a request takes one (or
//! makes one), and its response body gives it back once read to the end. Nothing is shared
//! between threads, so a worker's requests never wait on a lock or on another thread; this
//! replaced `hyper_util`'s pooled client, whose shared pool and checkout cost about a
//! tenth of the proxy's time per request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::body::ProxyBody;

/// How long an unused connection is kept: under the idle timeouts of common servers, so
/// a kept connection is rarely one the machine is closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// At most this many idle connections per machine and thread.
const MAX_IDLE_PER_MACHINE: usize = 256;
/// Every this many returns, connections that closed or idled out are swept from every
/// machine's list (machines that are gone leave nothing behind).
const SWEEP_EVERY: u32 = 4096;

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

#[derive(Default)]
struct Idles {
    /// By pool (one per proxy) and machine address.
    lists: HashMap<(usize, SocketAddr), Vec<Idle>>,
    returns: u32,
}

thread_local! {
    static IDLE: RefCell<Idles> = RefCell::new(Idles::default());
}

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made: the request was not sent and can go elsewhere.
    Connect(std::io::Error),
    /// The connection failed while the request was sent or answered.
    Request(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(error) => write!(f, "connecting: {error}"),
            SendError::Request(error) => write!(f, "{error}"),
        }
    }
}

/// A connection lent to one request; [`Checkin::release`] gives it back for the next.
#[derive(Debug)]
pub(crate) struct Checkin {
    key: (usize, SocketAddr),
    sender: SendRequest<ProxyBody>,
}

impl Checkin {
    /// Returns the connection to this thread's idle list (its response was read whole).
    pub(crate) fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            idle.returns = idle.returns.wrapping_add(1);
            if idle.returns % SWEEP_EVERY == 0 {
                idle.lists.retain(|_, list| {
                    list.retain(|c| !c.sender.is_closed() && c.since.elapsed() < IDLE_TIMEOUT);
                    !list.is_empty()
                });
            }
            let list = idle.lists.entry(self.key).or_default();
            if list.len() < MAX_IDLE_PER_MACHINE {
                list.push(Idle {
                    sender: self.sender,
                    since: Instant::now(),
                });
            }
        });
    }
}

/// An idle connection to `key`'s machine, the most recently used first.
fn take_idle(key: (usize, SocketAddr)) -> Option<SendRequest<ProxyBody>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.lists.get_mut(&key)?;
        while let Some(candidate) = list.pop() {
            if !candidate.sender.is_closed() && candidate.since.elapsed() < IDLE_TIMEOUT {
                return Some(candidate.sender);
            }
        }
        None
    })
}

/// Makes a new connection to `address` (inside `namespace`) and starts driving it on this
/// thread's runtime.
async fn connect(
    namespace: Option<&Path>,
    address: SocketAddr,
) -> Result<SendRequest<ProxyBody>, SendError> {
    let stream = crate::connect::machine_stream(namespace, address)
        .await
        .map_err(SendError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Request)?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%address, %error, "connection to a machine ended");
        }
    });
    Ok(sender)
}

/// Sends `request` (origin-form URI, `Host` set) to the machine at `address` over an idle
/// connection of this thread, or a new one. A request an idle connection could not take
/// (the machine closed it meanwhile) goes over a new connection.
pub(crate) async fn send(
    pool: usize,
    namespace: Option<&Path>,
    address: SocketAddr,
    mut request: Request<ProxyBody>,
) -> Result<(Response<Incoming>, Checkin), SendError> {
    let key = (pool, address);
    while let Some(mut sender) = take_idle(key) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, Checkin { key, sender })),
            Err(mut failed) => match failed.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(SendError::Request(failed.into_error())),
            },
        }
    }
    let mut sender = connect(namespace, address).await?;
    let response = sender
        .send_request(request)
        .await
        .map_err(SendError::Request)?;
    Ok((response, Checkin { key, sender }))
}
