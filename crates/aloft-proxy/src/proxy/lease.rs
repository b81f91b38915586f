//! The bodies that travel with a machine's lease: request bodies kept to be sent again,
//! and response bodies that hold the lease (and the pooled connection) until they end.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};

use super::pick::Choice;
use crate::balance::Lease;
use crate::body::{ProxyBody, empty};
use crate::routes::Backend;

/// A request body on its way to a machine: read whole (it can be sent again) or streamed
/// (once).
pub(super) enum OutgoingBody {
    Buffered(Bytes),
    Streaming(Option<ProxyBody>),
}

impl OutgoingBody {
    /// The body for one attempt.
    pub(super) fn take(&mut self) -> ProxyBody {
        match self {
            OutgoingBody::Buffered(bytes) => http_body_util::Full::new(bytes.clone())
                .map_err(|never| match never {})
                .boxed(),
            OutgoingBody::Streaming(body) => body.take().unwrap_or_else(empty),
        }
    }
}

/// A machine's lease for one request (none when the client connection holds it, see
/// [`Pinned`]), and the connection it went over (given back to the pool when the
/// response was read to its end).
#[derive(Debug)]
pub(super) struct Held {
    pub(super) _lease: Option<Lease>,
    pub(super) checkin: Option<crate::pool::Checkin>,
}

/// A response body that holds its machine's lease until the last byte is sent.
pub(super) struct Leased {
    pub(super) inner: Incoming,
    pub(super) held: Held,
    /// The body gave its last frame.
    pub(super) ended: bool,
}

impl Drop for Leased {
    fn drop(&mut self) {
        // Read to the end: the connection can take the next request.
        if (self.ended || self.inner.is_end_stream())
            && let Some(checkin) = self.held.checkin.take()
        {
            checkin.release();
        }
    }
}

impl Body for Leased {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Under `concurrency.type = "connections"` (Fly's default), the machine a client
/// connection's requests go to: picked by its first request, then kept, and counted as
/// one unit of its load, for as long as the connection lasts and the machine takes
/// traffic. A machine that leaves the rotation (a deploy replaced it, its checks fail) or
/// refuses a request is let go, and the next request picks again.
#[derive(Debug, Default)]
pub(crate) struct Pinned {
    held: Mutex<Option<(Arc<str>, Lease)>>,
}

impl Pinned {
    /// The pinned machine, as `choice` has it now, unless it is gone from its backends,
    /// in `failed`, or not the instance the request prefers.
    pub(super) fn backend(&self, choice: &Choice, failed: &[Arc<str>]) -> Option<Backend> {
        let held = self.held.lock().ok()?;
        let (machine, _) = held.as_ref()?;
        let preferred = choice.preferred_instance.as_deref();
        if failed.contains(machine) || preferred.is_some_and(|p| p != &**machine) {
            return None;
        }
        choice
            .backends
            .iter()
            .find(|b| b.machine == *machine)
            .cloned()
    }

    /// Pins `machine`, whose load `lease` counts; a machine pinned before is let go.
    pub(super) fn hold(&self, machine: Arc<str>, lease: Lease) {
        if let Ok(mut held) = self.held.lock() {
            *held = Some((machine, lease));
        }
    }

    /// Lets `machine` go, when it is the one pinned.
    pub(super) fn release(&self, machine: &str) {
        if let Ok(mut held) = self.held.lock()
            && held.as_ref().is_some_and(|(m, _)| &**m == machine)
        {
            *held = None;
        }
    }
}
