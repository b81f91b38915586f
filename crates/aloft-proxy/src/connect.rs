//! Connections to machines: TCP sockets made inside the private network's namespace, so
//! the proxy reaches `fdaa:` addresses wherever that namespace is.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A `hyper-util` connector for `http://[address]:port` URIs.
#[derive(Debug, Clone)]
pub struct Connector {
    namespace: Option<PathBuf>,
}

impl Connector {
    pub fn new(namespace: Option<PathBuf>) -> Connector {
        Connector { namespace }
    }
}

/// How long a connection to a machine may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection to a machine that has been quiet this long (a request waiting for its
/// answer, say) is probed by TCP keepalive, every [`KEEPALIVE_INTERVAL`], and fails once
/// [`UNACKNOWLEDGED_TIMEOUT`] passes with no answer. A machine whose host or link is gone
/// sends no reset, and without probes a request would wait for its answer forever; a
/// machine that is alive answers the probes from its kernel, however slow its app.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_PROBES: u32 = 3;
/// Data sent to a machine and not acknowledged for this long fails the connection (a
/// request sent into a link that just went away), as do keepalive probes unanswered
/// this long after the last word from the machine (Linux lets `TCP_USER_TIMEOUT` decide
/// that too): the idle time and three probes. A zero window that the machine keeps
/// acknowledging is not counted.
const UNACKNOWLEDGED_TIMEOUT: Duration = Duration::from_secs(16);

/// A TCP connection to a machine at `address` (inside `namespace`), probed as
/// [`KEEPALIVE_IDLE`] says, so that a machine that vanished fails its requests instead of
/// holding them.
pub(crate) async fn machine_stream(
    namespace: Option<&Path>,
    address: SocketAddr,
) -> std::io::Result<TcpStream> {
    let stream = aloft_net::netns::connect_tcp(namespace, address, CONNECT_TIMEOUT).await?;
    let socket = socket2::SockRef::from(&stream);
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )?;
    socket.set_tcp_user_timeout(Some(UNACKNOWLEDGED_TIMEOUT))?;
    Ok(stream)
}

fn address_of(uri: &Uri) -> std::io::Result<SocketAddr> {
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host"))?;
    let ip = host
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an address"))?;
    Ok(SocketAddr::new(ip, uri.port_u16().unwrap_or(80)))
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let namespace = self.namespace.clone();
        Box::pin(async move {
            let address = address_of(&uri)?;
            let stream = machine_stream(namespace.as_deref(), address).await?;
            Ok(TokioIo::new(stream))
        })
    }
}
