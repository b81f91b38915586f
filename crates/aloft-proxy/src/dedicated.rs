//! Apps' own addresses: for every dedicated IPv4 address of an app, a listener on each of
//! its public service ports other than the shared 80 and 443. What a connection gets
//! follows the port's handlers:
//!
//! - `http` (with `tls` before it, or not): HTTP as on the shared listeners, for this app;
//! - none: raw TCP to a machine's internal port;
//! - `tls`: TLS ends here, then raw TCP;
//! - `pg_tls`: Postgres' `SSLRequest` is answered `S` and TLS ends here (a client that
//!   sends no `SSLRequest` goes through in the clear);
//! - `proxy_proto`: a PROXY header (v1, or v2 per `proxy_proto_options`) goes first.
//!
//! A TCP connection holds its machine's load (one unit) until it closes. Listeners follow
//! the catalog: new ones open, removed ones close (their open connections finish).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aloft_types::catalog::Catalog;
use aloft_types::machine::{Handler, ProxyProtoVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proxy::{Choice, Proxy};
use crate::tcp::{PG_SSL_REQUEST, proxy_v1, proxy_v2};

/// The ports the shared listeners serve by `Host` and SNI.
const SHARED_PORTS: [u16; 2] = [80, 443];
/// How long a client gets to finish the TLS handshake (or send Postgres' first message).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The sockets an app's own addresses want: every dedicated IPv4 address of every app,
/// on each of the ports `ports` gives for the app, with the app and port.
pub(crate) fn wanted_sockets(
    catalog: &Catalog,
    ports: impl Fn(&str) -> Vec<u16>,
) -> HashMap<SocketAddr, (String, u16)> {
    let mut wanted = HashMap::new();
    for app in &catalog.apps {
        for address in &app.ipv4 {
            for port in ports(&app.name) {
                wanted.insert(
                    SocketAddr::new(IpAddr::V4(*address), port),
                    (app.name.clone(), port),
                );
            }
        }
    }
    wanted
}

/// Makes the sockets in `open` match `wanted`: those no longer wanted are stopped (their
/// tokens cancelled), and each new one is opened by `open_one` (given a child token of
/// `stop`); one that cannot be opened is tried again on the next catalog change.
pub(crate) fn follow_sockets(
    open: &std::sync::Mutex<HashMap<SocketAddr, CancellationToken>>,
    wanted: HashMap<SocketAddr, (String, u16)>,
    stop: &CancellationToken,
    what: &str,
    mut open_one: impl FnMut(SocketAddr, String, u16, CancellationToken) -> std::io::Result<()>,
) {
    let Ok(mut open) = open.lock() else {
        return;
    };
    open.retain(|address, token| {
        let keep = wanted.contains_key(address);
        if !keep {
            tracing::info!(%address, what, "closing a socket on an app's address");
            token.cancel();
        }
        keep
    });
    for (address, (app, port)) in wanted {
        if open.contains_key(&address) {
            continue;
        }
        let token = stop.child_token();
        match open_one(address, app.clone(), port, token.clone()) {
            Ok(()) => {
                tracing::info!(%address, %app, what, "listening on an app's address");
                open.insert(address, token);
            }
            Err(error) => {
                tracing::warn!(%address, %app, what, error = %error, "cannot listen on the app's address");
            }
        }
    }
}

impl Proxy {
    /// Opens and closes listeners on apps' own addresses to match `catalog`.
    pub(crate) fn listen_on_app_addresses(
        self: &Arc<Self>,
        catalog: &Catalog,
        stop: &CancellationToken,
    ) {
        let routes = self.routes();
        let mut wanted = wanted_sockets(catalog, |app| routes.ports(app));
        wanted.retain(|address, _| !SHARED_PORTS.contains(&address.port()));
        follow_sockets(
            &self.dedicated,
            wanted,
            stop,
            "tcp",
            |address, app, port, token| {
                let listener = std::net::TcpListener::bind(address)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(TcpListener::from_std)?;
                tokio::spawn(
                    self.clone()
                        .accept_on_app_address(listener, app, port, token),
                );
                Ok(())
            },
        );
    }

    async fn accept_on_app_address(
        self: Arc<Self>,
        listener: TcpListener,
        app: String,
        port: u16,
        stop: CancellationToken,
    ) {
        let handlers = self
            .routes()
            .route(&app, port)
            .map(|r| r.handlers.clone())
            .unwrap_or_default();
        if handlers.contains(&Handler::Http) {
            let tls = if handlers.contains(&Handler::Tls) {
                match self.tls.get() {
                    Some(config) => Some(config.clone()),
                    None => {
                        tracing::warn!(%app, port, "no certificates yet for a tls handler");
                        return;
                    }
                }
            } else {
                None
            };
            self.serve(listener, stop, tls, Some((app, port))).await;
            return;
        }
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, client)) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let _open = crate::metrics::OpenConnection::new(&proxy.metrics.open_connections);
                if let Err(why) = proxy.pass_through(stream, client, &app, port).await {
                    tracing::debug!(%app, port, %client, %why, "a TCP connection ended early");
                }
            });
        }
    }

    /// One TCP connection on an app's address, handled by its port's handlers.
    async fn pass_through(
        &self,
        stream: TcpStream,
        client: SocketAddr,
        app: &str,
        port: u16,
    ) -> Result<(), PassError> {
        let local = stream.local_addr().map_err(PassError::Io)?;
        let route = self
            .routes()
            .route(app, port)
            .cloned()
            .ok_or(PassError::NoPort)?;
        let handlers = &route.handlers;
        let mut early = Vec::new();
        let mut downstream: Box<dyn Stream> = Box::new(stream);
        if handlers.contains(&Handler::PgTls) {
            let mut first = [0u8; 8];
            tokio::time::timeout(HANDSHAKE_TIMEOUT, downstream.read_exact(&mut first))
                .await
                .map_err(|_| PassError::NoPostgresMessage)?
                .map_err(PassError::Io)?;
            if first == PG_SSL_REQUEST {
                downstream.write_all(b"S").await.map_err(PassError::Io)?;
                downstream = self.accept_tls_for(downstream, app, port).await?;
            } else {
                early.extend_from_slice(&first);
            }
        } else if handlers.contains(&Handler::Tls) {
            downstream = self.accept_tls_for(downstream, app, port).await?;
        }
        let backends = self
            .started_backends(app, port, &route)
            .await
            .map_err(|_| PassError::NoMachine)?;
        let choice = Choice {
            backends,
            h2_backend: false,
            preferred_instance: None,
            regions: vec![self.config.region.clone()],
        };
        let waited = std::time::Instant::now();
        let (backend, _lease) = self
            .pick(&choice, &[], self.config.queue_timeout)
            .await
            .ok_or(PassError::AllAtHardLimit)?;
        self.metrics.queued(app, &backend.machine, waited.elapsed());
        self.metrics.tcp_connection(app);
        let target = SocketAddr::new(IpAddr::V6(backend.address), backend.port);
        let mut upstream = crate::connect::machine_stream(self.config.namespace.as_deref(), target)
            .await
            .map_err(|source| PassError::Connect {
                machine: backend.machine.to_string(),
                source,
            })?;
        if handlers.contains(&Handler::ProxyProto) {
            let header = match route.proxy_proto {
                Some(ProxyProtoVersion::V2) => proxy_v2(client, local),
                _ => proxy_v1(client, local),
            };
            upstream.write_all(&header).await.map_err(PassError::Io)?;
        }
        if !early.is_empty() {
            upstream.write_all(&early).await.map_err(PassError::Io)?;
        }
        tokio::io::copy_bidirectional(&mut downstream, &mut upstream)
            .await
            .map_err(PassError::Io)?;
        Ok(())
    }

    async fn accept_tls_for(
        &self,
        stream: Box<dyn Stream>,
        app: &str,
        port: u16,
    ) -> Result<Box<dyn Stream>, PassError> {
        let config = self.tls.get().cloned().ok_or(PassError::NoCertificates)?;
        let route = (app.to_owned(), port);
        let accepted = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            self.accept_tls(stream, config, Some(&route)),
        )
        .await
        .map_err(|_| PassError::HandshakeTimeout)?
        .ok_or(PassError::Handshake)?;
        Ok(Box::new(accepted.0))
    }
}

/// Why a connection on an app's own address was not passed to a machine (logged with
/// the app and port).
#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error("the app no longer serves this port")]
    NoPort,
    #[error("no Postgres message in time")]
    NoPostgresMessage,
    #[error("no certificates yet")]
    NoCertificates,
    #[error("the TLS handshake took too long")]
    HandshakeTimeout,
    #[error("the TLS handshake failed")]
    Handshake,
    #[error("the app has no machine to take the connection")]
    NoMachine,
    #[error("every machine of the app is at its hard limit")]
    AllAtHardLimit,
    #[error("connecting to machine {machine}: {source}")]
    Connect {
        machine: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(std::io::Error),
}
