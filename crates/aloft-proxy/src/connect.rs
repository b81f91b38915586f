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
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// Opens a TCP connection to `address` from inside `namespace`.
pub async fn connect(
    namespace: Option<PathBuf>,
    address: SocketAddr,
) -> std::io::Result<TcpStream> {
    let stream = match namespace {
        None => tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await,
        Some(path) => {
            let socket = aloft_net::netns::run_in(Some(&path), move || {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(address),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                socket.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(std::net::TcpStream::from(socket))
            })
            .map_err(std::io::Error::other)??;
            let socket = tokio::net::TcpSocket::from_std_stream(socket);
            tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(address)).await
        }
    }
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    Ok(stream)
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
            Ok(TokioIo::new(connect(namespace, address).await?))
        })
    }
}
