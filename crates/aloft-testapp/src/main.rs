//! `aloft-testapp`: the small app that tests (and the demo) run in machines.
//!
//! HTTP/1.1 on `[::]:$PORT` (default 8080):
//! - `GET /health`: `200 ok`, or `500` with a line and an HTML page when
//!   `TESTAPP_HEALTH=fail` (a release that fails its checks);
//! - `GET /`: a greeting naming the machine (`FLY_MACHINE_ID`) and `TESTAPP_VERSION`;
//! - `GET /slow?ms=N`: answers after N milliseconds (at most 60 s), naming the machine;
//! - `GET /stats`: `{"in_flight":N,"max_in_flight":M}` over every request but this one;
//! - `GET /metrics`: `testapp_requests_total`, in Prometheus' text format;
//! - `GET /ws`: a WebSocket that echoes every text and binary message.
//!
//! With `TESTAPP_TCP_ECHO=PORT` it also echoes raw TCP on `[::]:PORT`, printing
//! `tcp echo: open` and `tcp echo: closed` as connections come and go.
//!
//! With `TESTAPP_UDP_ECHO=PORT` it answers every UDP packet to `fly-global-services:PORT`
//! (the address its `/etc/hosts` gives that name, as Fly's UDP apps bind) with
//! `machine=<FLY_MACHINE_ID> ` and the packet.
//!
//! On SIGINT or SIGTERM it stops accepting connections, lets requests in flight finish
//! (up to 10 s) and exits 0.
//!
//! With `TESTAPP_CRASH=CODE` it crashes as it starts: a line on stderr, then exit `CODE`.
//!
//! `aloft-testapp release CODE` is a release command instead: it prints a line (and, when
//! `CODE` is not 0, a failure on stderr) and exits with `CODE`.

use std::convert::Infallible;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

#[derive(Debug, Default)]
struct Stats {
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Requests answered (all paths but `/metrics` and `/stats`).
    requests: AtomicU64,
}

/// Counts a request in flight while it lives.
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn new(stats: &'a Stats) -> InFlight<'a> {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers a WebSocket handshake with 101 and echoes messages on the upgraded connection.
fn websocket(mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake needs Sec-WebSocket-Key\n".to_owned(),
        );
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            // Pings and closes are answered by tungstenite itself: reading on until the
            // stream ends sends the close reply.
            if let Message::Text(_) | Message::Binary(_) = message
                && socket.send(message).await.is_err()
            {
                break;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

async fn answer(request: Request<Incoming>, stats: Arc<Stats>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if path == "/stats" {
        return text(
            StatusCode::OK,
            format!(
                "{{\"in_flight\":{},\"max_in_flight\":{}}}\n",
                stats.in_flight.load(Ordering::SeqCst),
                stats.max_in_flight.load(Ordering::SeqCst)
            ),
        );
    }
    if path == "/metrics" {
        return text(
            StatusCode::OK,
            format!(
                "# HELP testapp_requests_total Requests the test app answered.\n# TYPE testapp_requests_total counter\ntestapp_requests_total{{path_kind=\"any\"}} {}\n",
                stats.requests.load(Ordering::SeqCst)
            ),
        );
    }
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let _counted = InFlight::new(&stats);
    match path.as_str() {
        "/health" => match std::env::var("TESTAPP_HEALTH").as_deref() {
            Ok("fail") => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                // A first line, then the rest of a page, as a framework's error page has.
                "failing on purpose (TESTAPP_HEALTH=fail)\n<html>\n<body>the rest of a long error page</body>\n</html>\n".to_owned(),
            ),
            _ => text(StatusCode::OK, "ok\n".to_owned()),
        },
        "/ws" => websocket(request),
        "/slow" => {
            let millis = request
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|pair| pair.strip_prefix("ms="))
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(1000)
                .min(60_000);
            tokio::time::sleep(Duration::from_millis(millis)).await;
            text(
                StatusCode::OK,
                format!(
                    "slept {millis} ms on machine {}\n",
                    std::env::var("FLY_MACHINE_ID").unwrap_or_else(|_| "unknown".to_owned())
                ),
            )
        }
        "/" => text(
            StatusCode::OK,
            format!(
                "hello from machine {} (version {})\n",
                std::env::var("FLY_MACHINE_ID").unwrap_or_else(|_| "unknown".to_owned()),
                std::env::var("TESTAPP_VERSION").unwrap_or_else(|_| "1".to_owned()),
            ),
        ),
        other => text(StatusCode::NOT_FOUND, format!("no page {other}\n")),
    }
}

/// A release that crashes as it starts (`TESTAPP_CRASH=CODE`): a line on stderr, then
/// exit `CODE` before listening.
#[allow(clippy::print_stderr, reason = "the crash's output, which tests read")]
fn crash(code: &str) -> std::io::Result<()> {
    let code: i32 = code.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("TESTAPP_CRASH={code:?}: expected an exit code"),
        )
    })?;
    let version = std::env::var("TESTAPP_VERSION").unwrap_or_else(|_| "1".to_owned());
    eprintln!("version {version}: cannot open the database, exiting {code}");
    std::process::exit(code)
}

/// `aloft-testapp release CODE`: a release command that says what it does, and what it was
/// given (`RELEASE_COMMAND`, its memory limit), and exits with `CODE` (a failing migration
/// when it is not 0). Its output is what the test reads.
#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command's output"
)]
fn release(code: &str) -> std::io::Result<()> {
    let code: i32 = code.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("release {code:?}: expected an exit code"),
        )
    })?;
    let version = std::env::var("TESTAPP_VERSION").unwrap_or_else(|_| "1".to_owned());
    println!("release command of version {version}: running migrations");
    // What the platform gave the command's machine, for the test to read.
    let marker = std::env::var("RELEASE_COMMAND").unwrap_or_default();
    // cgroup v2's file, else v1's.
    let memory = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .unwrap_or_default();
    println!("RELEASE_COMMAND={marker} memory.max={}", memory.trim());
    if code != 0 {
        eprintln!("release command of version {version}: migration 3 failed, exiting {code}");
    }
    std::process::exit(code)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    run().await
}

/// `aloft-testapp say TEXT` (run with `machine exec`): writes a line to the machine's own
/// output (its PID 1's stdout), which is what its logs collect.
fn say(line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut output = std::fs::OpenOptions::new()
        .append(true)
        .open("/proc/1/fd/1")?;
    writeln!(output, "{line}")
}

/// Echoes every connection's bytes back until the peer closes it.
#[allow(clippy::print_stdout, reason = "the log lines tests read")]
async fn tcp_echo(listener: tokio::net::TcpListener) {
    while let Ok((mut stream, peer)) = listener.accept().await {
        tokio::spawn(async move {
            println!("tcp echo: open {peer}");
            let (mut reader, mut writer) = stream.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
            println!("tcp echo: closed {peer}");
        });
    }
}

/// The address `/etc/hosts` gives `name`.
fn host_address(name: &str) -> std::io::Result<std::net::IpAddr> {
    let hosts = std::fs::read_to_string("/etc/hosts")?;
    hosts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.next()?;
            fields.any(|n| n == name).then(|| address.parse().ok())?
        })
        .next()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("/etc/hosts names no {name}"),
            )
        })
}

/// Answers every packet with the machine's id and the packet.
async fn udp_echo(socket: tokio::net::UdpSocket) {
    let machine = std::env::var("FLY_MACHINE_ID").unwrap_or_else(|_| "unknown".to_owned());
    let mut buffer = vec![0u8; 65_535];
    while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
        let mut answer = format!("machine={machine} ").into_bytes();
        answer.extend_from_slice(&buffer[..length]);
        let _ = socket.send_to(&answer, peer).await;
    }
}

async fn run() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [command, code] = args.as_slice()
        && command == "release"
    {
        return release(code);
    }
    if let [command, words @ ..] = args.as_slice()
        && command == "say"
    {
        return say(&words.join(" "));
    }
    if let Ok(code) = std::env::var("TESTAPP_CRASH") {
        return crash(&code);
    }
    let port = match std::env::var("PORT") {
        Ok(port) => port.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("PORT={port:?} is not a port number"),
            )
        })?,
        Err(_) => 8080,
    };
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await?;
    if let Ok(echo) = std::env::var("TESTAPP_TCP_ECHO") {
        let echo: u16 = echo.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("TESTAPP_TCP_ECHO={echo:?} is not a port number"),
            )
        })?;
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, echo))).await?;
        tokio::spawn(tcp_echo(listener));
    }
    if let Ok(echo) = std::env::var("TESTAPP_UDP_ECHO") {
        let echo: u16 = echo.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("TESTAPP_UDP_ECHO={echo:?} is not a port number"),
            )
        })?;
        let address = SocketAddr::new(host_address("fly-global-services")?, echo);
        // The machine's private address comes a moment after its process starts (the
        // platform plumbs the network into a running container): try for 10 s.
        let mut tries = 0;
        let socket = loop {
            match tokio::net::UdpSocket::bind(address).await {
                Ok(socket) => break socket,
                Err(error)
                    if error.kind() == std::io::ErrorKind::AddrNotAvailable && tries < 200 =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => return Err(error),
            }
        };
        tokio::spawn(udp_echo(socket));
    }
    let stats = Arc::new(Stats::default());
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let stats = stats.clone();
                async move { Ok::<_, Infallible>(answer(request, stats).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
    // Stopped (SIGINT is Fly's default kill signal): no new connections; requests in
    // flight get up to 10 s to finish.
    drop(listener);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
