//! Connections to machines: TCP sockets made inside the private network's namespace, so
//! the proxy reaches `fdaa:` addresses wherever that namespace is.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

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
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
            let stream =
                aloft_net::netns::connect_tcp(namespace.as_deref(), address, CONNECT_TIMEOUT)
                    .await?;
            Ok(TokioIo::new(stream))
        })
    }
}
