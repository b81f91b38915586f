//! The bodies that travel with a machine's lease: request bodies kept to be sent again,
//! and response bodies that hold the lease (and the pooled connection) until they end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming};

use crate::balance::Lease;
use crate::body::{ProxyBody, empty};

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

/// A machine's lease for one request, and the connection it went over (given back to the
/// pool when the response was read to its end).
#[derive(Debug)]
pub(super) struct Held {
    pub(super) _lease: Lease,
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
