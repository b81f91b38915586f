//! Connections: the shared HTTP and HTTPS listeners (on worker threads, each with its
//! own runtime), TLS handshakes, and serving one connection until it ends, idles out or
//! drains at a stop.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aloft_types::machine::TlsOptions;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{BoxError, ClientStream, Proxy, ProxyBody};
use crate::metrics::OpenConnection;

/// How long a client gets to send a request's headers.
pub(super) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one connection; when `stop` fires, lets requests in flight finish (up to
/// `drain`), answers no new ones, and closes. A connection with no request in flight and
/// no byte moved for `idle` is closed the same way.
pub(super) async fn drive<I, S>(
    connection: hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, TokioExecutor>,
    stop: &CancellationToken,
    drain: Duration,
    activity: &Activity,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<ProxyBody>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Reads the clock a few times per idle timeout, never per byte moved.
    let watchdog = async {
        let mut seen = activity.moves();
        let mut quiet_since = Instant::now();
        loop {
            let limit = activity.limit();
            let now = Instant::now();
            let moves = activity.moves();
            if moves != seen || activity.in_flight() > 0 {
                seen = moves;
                quiet_since = now;
            }
            let quiet = now.duration_since(quiet_since);
            if quiet >= limit {
                return;
            }
            let wait = (limit - quiet)
                .min(limit / 8)
                .max(Duration::from_millis(100));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = activity.limit_changed.notified() => {}
            }
        }
    };
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(drain, connection).await;
        }
        () = watchdog => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(drain, connection).await;
        }
    }
}

/// Whether a connection moves bytes, and how many of its requests are in flight.
#[derive(Debug)]
pub(crate) struct Activity {
    /// Reads and writes that moved a byte, counted (cheaper than reading the clock).
    pub(super) moves: std::sync::atomic::AtomicU64,
    pub(super) in_flight: std::sync::atomic::AtomicUsize,
    /// The idle timeout in milliseconds: the default, then the route's once known.
    pub(super) limit_millis: std::sync::atomic::AtomicU64,
    /// Wakes the watchdog when the limit changes.
    pub(super) limit_changed: tokio::sync::Notify,
    /// The machine this connection is pinned to, when its service counts connections.
    pub(super) pinned: super::lease::Pinned,
}

impl Activity {
    pub(super) fn new(limit: Duration) -> Arc<Activity> {
        Arc::new(Activity {
            moves: std::sync::atomic::AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            limit_millis: std::sync::atomic::AtomicU64::new(
                u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            ),
            limit_changed: tokio::sync::Notify::new(),
            pinned: super::lease::Pinned::default(),
        })
    }

    pub(super) fn limit(&self) -> Duration {
        Duration::from_millis(self.limit_millis.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The route's `idle_timeout` (seconds), learnt from a request.
    pub(super) fn set_limit_seconds(&self, seconds: u32) {
        let millis = u64::from(seconds.max(1)) * 1000;
        let before = self
            .limit_millis
            .swap(millis, std::sync::atomic::Ordering::Relaxed);
        if before != millis {
            self.limit_changed.notify_one();
        }
    }

    pub(super) fn touch(&self) {
        self.moves
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn moves(&self) -> u64 {
        self.moves.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A client stream that counts the reads and writes that moved bytes.
pub(super) struct Watched<S> {
    pub(super) inner: S,
    pub(super) activity: Arc<Activity>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Fly's default `http_options.idle_timeout`.
pub(super) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client gets to finish the TLS handshake.
pub(super) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Proxy {
    /// Serves plain HTTP (public port 80 of every app) on `listener` until `stop`.
    pub async fn serve_http(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        self.serve_on_workers(listener, stop, None).await;
    }

    /// Serves a shared listener from `workers` threads, each accepting on it with a
    /// single-threaded runtime of its own, as nginx's worker processes do: a request and
    /// its machine connection stay on one thread. Returns when every worker has drained.
    pub(super) async fn serve_on_workers(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) {
        let workers = match self.config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(80);
        let mut queues = Vec::new();
        let mut finished = Vec::new();
        for number in 0..workers {
            let (queue, mut incoming) =
                tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
            let (done, wait) = tokio::sync::oneshot::channel::<()>();
            let (proxy, stop, tls) = (self.clone(), stop.clone(), tls.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("aloft-edge-{number}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            tracing::error!(error = %error, "a proxy worker cannot start");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let connections = tokio_util::task::TaskTracker::new();
                        while let Some((stream, client)) = incoming.recv().await {
                            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                                continue;
                            };
                            connections.spawn(proxy.clone().connection(
                                stream,
                                client,
                                local_port,
                                tls.clone(),
                                None,
                                stop.clone(),
                            ));
                        }
                        connections.close();
                        connections.wait().await;
                    });
                    let _ = done.send(());
                });
            match spawned {
                Ok(_) => {
                    queues.push(queue);
                    finished.push(wait);
                }
                Err(error) => tracing::error!(error = %error, "a proxy worker cannot start"),
            }
        }
        if queues.is_empty() {
            return self.serve(listener, stop, tls, None).await;
        }
        // One acceptor hands connections to the workers in turn, so load spreads evenly.
        let mut turn = 0usize;
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, client)) = accepted else {
                continue;
            };
            let Ok(stream) = stream.into_std() else {
                continue;
            };
            let _ = queues[turn % queues.len()].send((stream, client));
            turn = turn.wrapping_add(1);
        }
        // No new connections; each worker drains its own and ends.
        drop(queues);
        for worker in finished {
            let _ = worker.await;
        }
    }

    /// Serves HTTPS (public port 443 of every app), certificates chosen by SNI.
    pub async fn serve_https(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        stop: CancellationToken,
    ) {
        let _ = self.tls.set(tls.clone());
        self.serve_on_workers(listener, stop, Some(tls)).await;
    }

    /// Ends TLS on a client connection with the settings of the route it is for: the
    /// port's `tls_options` (ALPN protocols, TLS versions) when the app (by SNI, or
    /// `fixed`) has any, else `base`.
    pub(crate) async fn accept_tls<S>(
        &self,
        stream: S,
        base: Arc<rustls::ServerConfig>,
        fixed: Option<&(String, u16)>,
    ) -> Option<(tokio_rustls::server::TlsStream<S>, Option<(String, u16)>)>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await
                .ok()?;
        if fixed.is_none()
            && let Some(answer) = self.acme_tls(&start.client_hello())
        {
            // A validation: the handshake is the whole answer.
            let _ = start.into_stream(answer).await;
            return None;
        }
        let route_key = match fixed {
            Some((app, port)) => Some((app.clone(), *port)),
            None => start
                .client_hello()
                .server_name()
                .and_then(|name| self.routes().app_for_host(name, &self.config.apps_domain))
                .map(|app| (app, 443)),
        };
        let options = route_key.as_ref().and_then(|(app, port)| {
            self.routes()
                .route(app, *port)
                .and_then(|r| r.tls_options.clone())
        });
        let config = match options {
            Some(options) if !options.alpn.is_empty() || !options.versions.is_empty() => {
                self.tls_config_with(&base, &options)
            }
            _ => base,
        };
        let stream = start.into_stream(config).await.ok()?;
        Some((stream, route_key))
    }

    /// `base` with a port's ALPN protocols and TLS versions, made once per set.
    pub(super) fn tls_config_with(
        &self,
        base: &Arc<rustls::ServerConfig>,
        options: &TlsOptions,
    ) -> Arc<rustls::ServerConfig> {
        let key = (options.alpn.clone(), options.versions.clone());
        if let Ok(cache) = self.tls_variants.lock()
            && let Some(config) = cache.get(&key)
        {
            return config.clone();
        }
        match crate::tls::server_config_with(
            base.cert_resolver.clone(),
            &options.alpn,
            &options.versions,
        ) {
            Ok(config) => {
                let config = Arc::new(config);
                if let Ok(mut cache) = self.tls_variants.lock() {
                    cache.insert(key, config.clone());
                }
                config
            }
            Err(error) => {
                tracing::warn!(error = %error, ?options, "tls_options cannot be honoured; using the defaults");
                base.clone()
            }
        }
    }

    /// Serves HTTP on `listener`: by `Host` for every app, or for one app's public port
    /// when `fixed` (an app's own address).
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
        tls: Option<Arc<rustls::ServerConfig>>,
        fixed: Option<(String, u16)>,
    ) {
        let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(80);
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, client)) = accepted else {
                continue;
            };
            connections.spawn(self.clone().connection(
                stream,
                client,
                local_port,
                tls.clone(),
                fixed.clone(),
                stop.clone(),
            ));
        }
        // Stopped: no new connections; those open finish their requests (up to the drain
        // timeout each) and close.
        connections.close();
        connections.wait().await;
    }

    /// Serves one client connection: TLS first when `tls`, then HTTP/1.1 or HTTP/2.
    pub(super) async fn connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        client: SocketAddr,
        local_port: u16,
        tls: Option<Arc<rustls::ServerConfig>>,
        fixed: Option<(String, u16)>,
        stop: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let _open = OpenConnection::new(&self.metrics.open_connections);
        let activity = Activity::new(DEFAULT_IDLE_TIMEOUT);
        let stream = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        let drain = self.config.drain_timeout;
        let secure = tls.is_some();
        // The route's timeouts, when the connection's app is known before its first
        // request: an app's own address, or the TLS server name.
        let (stream, known): (Box<dyn ClientStream>, Option<(String, u16)>) = match tls {
            None => (Box::new(stream), fixed.clone()),
            Some(base) => {
                let handshake = tokio::time::timeout(
                    TLS_HANDSHAKE_TIMEOUT,
                    self.accept_tls(stream, base, fixed.as_ref()),
                )
                .await;
                let Ok(Some((stream, known))) = handshake else {
                    return;
                };
                (Box::new(stream), known)
            }
        };
        let options = known.as_ref().and_then(|(app, port)| {
            self.routes()
                .route(app, *port)
                .and_then(|r| r.http_options.clone())
        });
        if let Some(seconds) = options.as_ref().and_then(|o| o.idle_timeout) {
            activity.set_limit_seconds(seconds);
        }
        let headers_read = options
            .as_ref()
            .and_then(|o| o.headers_read_timeout)
            .map_or(HEADER_READ_TIMEOUT, |s| {
                Duration::from_secs(u64::from(s.max(1)))
            });
        let proxy = self.clone();
        let counting = activity.clone();
        let service = hyper::service::service_fn(move |request| {
            let proxy = proxy.clone();
            let fixed = fixed.clone();
            let counting = counting.clone();
            async move {
                counting
                    .in_flight
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let response = proxy
                    .handle_for(request, client, local_port, secure, fixed, Some(&counting))
                    .await;
                counting
                    .in_flight
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(headers_read);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        drive(connection, &stop, drain, &activity).await;
    }
}
