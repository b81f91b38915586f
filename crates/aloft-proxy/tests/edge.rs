//! The proxy alone against real HTTP servers standing in for machines (on `[::1]`, no
//! namespace): `http_options.h2_backend` (HTTP/2 prior knowledge to the machine, whatever
//! the client speaks) and `http_options.idle_timeout`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aloft_proxy::{Proxy, ProxyConfig};
use aloft_types::MachineState;
use aloft_types::catalog::{Catalog, CatalogApp, CatalogMachine};
use aloft_types::machine::{
    Concurrency, ConcurrencyKind, Handler, HttpOptions, MachinePort, MachineService, Protocol,
    ReplayCache, ReplayCacheKind,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Answers every request with the HTTP version it arrived in and its `X-Forwarded-Host`
/// (`/slow` after 1.5 s).
async fn h2_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        if request.uri().path() == "/slow" {
                            tokio::time::sleep(Duration::from_millis(1500)).await;
                        }
                        let body = format!(
                            "{:?} {}",
                            request.version(),
                            request
                                .headers()
                                .get("x-forwarded-host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or_default()
                        );
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

fn catalog(port: u16, options: HttpOptions) -> Catalog {
    Catalog {
        acme_challenges: Vec::new(),
        apps: vec![CatalogApp {
            name: "grpc".into(),
            org_id: "o".into(),
            network: 1,
            ipv4: Vec::new(),
            hostnames: Vec::new(),
        }],
        machines: vec![CatalogMachine {
            id: "0123456789abcd".into(),
            app: "grpc".into(),
            region: "local".into(),
            state: MachineState::Started,
            private_ip: Some(std::net::Ipv6Addr::LOCALHOST),
            process_group: "app".into(),
            metadata: BTreeMap::new(),
            skip_registration: false,
            cordoned: false,
            services: vec![MachineService {
                protocol: Protocol::Tcp,
                internal_port: port,
                autostop: None,
                autostart: None,
                min_machines_running: None,
                ports: vec![MachinePort {
                    port: Some(80),
                    handlers: vec![Handler::Http],
                    http_options: Some(options),
                    ..MachinePort::default()
                }],
                checks: vec![],
                concurrency: None,
                force_instance_key: None,
                force_instance_description: None,
            }],
            checks: vec![],
            autostart_disabled: false,
            primary_region: None,
            statics: Vec::new(),
        }],
    }
}

/// A proxy serving plain HTTP on a port of its own, routing to `catalog`.
async fn proxy(catalog: Catalog) -> (std::net::SocketAddr, CancellationToken) {
    let (_, address, stop) = serving(catalog).await;
    (address, stop)
}

/// Like [`proxy`], with the proxy itself (to read machines' loads).
async fn serving(catalog: Catalog) -> (Arc<Proxy>, std::net::SocketAddr, CancellationToken) {
    let proxy = Proxy::new(ProxyConfig {
        apps_domain: "aloft.localhost".into(),
        public_https_port: 443,
        region: "local".into(),
        namespace: None,
        queue_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(1),
        start_timeout: Duration::from_secs(5),
        autostop_interval: Duration::from_secs(3600),
        workers: 2,
        region_distances: Vec::new(),
    });
    proxy.set_catalog(&Arc::new(catalog));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(proxy.clone().serve_http(listener, stop.clone()));
    (proxy, address, stop)
}

#[tokio::test]
async fn h2_backend_speaks_http2_to_the_machine() {
    let backend = h2_server().await;
    let options = HttpOptions {
        h2_backend: Some(true),
        ..HttpOptions::default()
    };
    let (address, stop) = proxy(catalog(backend, options)).await;

    // An HTTP/1.1 client; the machine sees HTTP/2, and the client's host.
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: grpc.aloft.localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("HTTP/2.0 grpc.aloft.localhost"),
        "{answer}"
    );
    stop.cancel();
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout_and_busy_ones_do_not() {
    let backend = h2_server().await;
    let options = HttpOptions {
        h2_backend: Some(true),
        idle_timeout: Some(1),
        ..HttpOptions::default()
    };
    let (address, stop) = proxy(catalog(backend, options)).await;
    // Idle after its first request: closed once the route's 1 s has passed.
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: grpc.aloft.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 4096];
    let read = stream.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));
    let idle = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("the proxy closes the idle connection");
    assert_eq!(closed.unwrap(), 0, "closed, not answered");
    let took = idle.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    // A request in flight longer than the timeout (the machine answers /slow after
    // 1.5 s, sending nothing before) is not cut.
    let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
    slow.write_all(
        b"GET /slow HTTP/1.1\r\nHost: grpc.aloft.localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stop.cancel();
}

/// A machine that takes connections and closes each without answering (one stopped
/// by a deploy while a request was on its way); counts them.
async fn silent_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = taken.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                drop(stream);
            });
        }
    });
    (port, taken)
}

/// A machine that answers every request `200 answered`, over HTTP/1.1.
async fn http1_server() -> u16 {
    named_server("answered").await
}

/// A machine that answers every request `200` and `name`, over HTTP/1.1 with keep-alive.
async fn named_server(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |_: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(name.as_bytes()),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// Two machines of one app, on `[::1]` at these ports.
fn two_machines(first: u16, second: u16) -> Catalog {
    let mut catalog = catalog(first, HttpOptions::default());
    let mut other = catalog.machines[0].clone();
    other.id = "fedcba98765432".into();
    other.services[0].internal_port = second;
    catalog.machines.push(other);
    catalog
}

#[tokio::test]
async fn an_idempotent_request_a_machine_drops_goes_to_another_and_a_post_does_not() {
    let (silent, taken) = silent_server().await;
    let answering = http1_server().await;
    let (address, stop) = proxy(two_machines(silent, answering)).await;
    let http = aloft_testkit::http_builder()
        .http1_only()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("http://{address}/");
    for _ in 0..10 {
        let response = http
            .get(&url)
            .header("host", "grpc.aloft.localhost")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }
    // Positive control: the dropping machine was tried (the retry path ran).
    assert!(
        taken.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the silent machine was never picked"
    );
    // A POST is not sent twice: one the silent machine drops is a 502.
    let mut refused = 0;
    for _ in 0..20 {
        let response = http
            .post(&url)
            .header("host", "grpc.aloft.localhost")
            .body("x")
            .send()
            .await
            .unwrap();
        if response.status() == 502 {
            refused += 1;
        }
    }
    assert!(refused >= 1, "no POST reached the silent machine");
    stop.cancel();
}

/// One keep-alive HTTP/1.1 connection to the proxy.
async fn keep_alive(
    address: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// Sends one GET on `connection` and returns the body: the name of the machine that answered.
async fn get(
    connection: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
) -> String {
    use http_body_util::BodyExt as _;
    connection.ready().await.unwrap();
    let request = http::Request::get("/")
        .header("host", "grpc.aloft.localhost")
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = connection.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Two named machines ("first", "second") whose service counts `kind` with a hard limit
/// of `hard`.
async fn counted(kind: ConcurrencyKind, hard: u32) -> Catalog {
    let mut catalog = two_machines(named_server("first").await, named_server("second").await);
    for machine in &mut catalog.machines {
        machine.services[0].concurrency = Some(Concurrency {
            kind: Some(kind),
            soft_limit: Some(hard),
            hard_limit: Some(hard),
        });
    }
    catalog
}

#[tokio::test]
async fn under_connections_a_client_connection_keeps_one_machine_and_counts_one() {
    let catalog = counted(ConcurrencyKind::Connections, 1).await;
    let (first, second) = (
        catalog.machines[0].id.clone(),
        catalog.machines[1].id.clone(),
    );
    let (proxy, address, stop) = serving(catalog).await;

    // Every request of one connection goes to the machine its first one went to, and the
    // connection counts as one unit of that machine's load between requests too.
    let mut one = keep_alive(address).await;
    let pinned = get(&mut one).await;
    for _ in 0..4 {
        assert_eq!(get(&mut one).await, pinned);
    }
    let (mine, other) = if pinned == "first" {
        (&first, &second)
    } else {
        (&second, &first)
    };
    assert_eq!((proxy.load(mine), proxy.load(other)), (1, 0));

    // At the hard limit of one connection, a second connection goes to the other machine.
    let mut two = keep_alive(address).await;
    assert_ne!(get(&mut two).await, pinned);
    assert_eq!((proxy.load(mine), proxy.load(other)), (1, 1));

    // A third waits for a connection to close, then takes its machine.
    let mut three = keep_alive(address).await;
    let waiting = tokio::spawn(async move { get(&mut three).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "both machines hold a connection");
    drop(one);
    let answered = tokio::time::timeout(Duration::from_secs(4), waiting)
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert_eq!(answered, pinned);
    stop.cancel();
}

#[tokio::test]
async fn under_requests_one_connections_requests_spread_and_an_idle_one_counts_nothing() {
    // The control for the test above: the same client and machines, counting requests.
    let catalog = counted(ConcurrencyKind::Requests, 1).await;
    let ids = [
        catalog.machines[0].id.clone(),
        catalog.machines[1].id.clone(),
    ];
    let (proxy, address, stop) = serving(catalog).await;
    let mut one = keep_alive(address).await;
    let mut answered = BTreeSet::new();
    for _ in 0..4 {
        answered.insert(get(&mut one).await);
        assert_eq!(ids.each_ref().map(|id| proxy.load(id)), [0, 0]);
    }
    assert_eq!(answered.len(), 2, "{answered:?}");
    // A second connection at the same time is served too: nothing is held between requests.
    let mut two = keep_alive(address).await;
    get(&mut two).await;
    get(&mut one).await;
    stop.cancel();
}

/// A machine's answer: headers to add and the body.
type Answer = (Vec<(&'static str, &'static str)>, String);

/// A machine that answers with `answer(path, headers)` (status 200, extra headers, body)
/// and counts its requests.
async fn scripted(
    answer: fn(&str, &http::HeaderMap) -> Answer,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let (headers, body) = answer(request.uri().path(), request.headers());
                        async move {
                            let mut response = http::Response::new(Full::new(Bytes::from(body)));
                            for (name, value) in headers {
                                response.headers_mut().insert(name, value.parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, asked)
}

#[tokio::test]
async fn replays_are_cached_per_session_and_path_skipped_and_invalidated() {
    // The origin replays everything to the target, and asks for /cached to be cached by
    // path; a request it gets back from the target is its own to answer.
    let (origin_port, origin_asked) = scripted(|path, headers| {
        if headers.contains_key("fly-replay-src") {
            return (Vec::new(), "origin".to_owned());
        }
        let mut replay = vec![("fly-replay", "app=target")];
        if path.starts_with("/cached") {
            replay.push(("fly-replay-cache", "/cached/*"));
            replay.push(("fly-replay-cache-ttl-secs", "60"));
        }
        (replay, String::new())
    })
    .await;
    // The target says how the request came; on /invalidate it sends it back, forgetting.
    let (target_port, _) = scripted(|path, headers| {
        if path == "/invalidate" {
            return (
                vec![
                    ("fly-replay", "app=origin"),
                    ("fly-replay-cache", "invalidate"),
                ],
                String::new(),
            );
        }
        let status = headers
            .get("fly-replay-cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        (Vec::new(), format!("target {status}"))
    })
    .await;
    let mut catalog = two_machines(origin_port, target_port);
    catalog.apps.push(CatalogApp {
        name: "target".into(),
        ..catalog.apps[0].clone()
    });
    catalog.apps[0].name = "origin".into();
    catalog.machines[0].app = "origin".into();
    catalog.machines[1].app = "target".into();
    catalog.machines[0].services[0].ports[0].http_options = Some(HttpOptions {
        replay_cache: vec![ReplayCache {
            path_prefix: "/".into(),
            ttl_seconds: 60,
            kind: ReplayCacheKind::Cookie,
            name: "session".into(),
            allow_bypass: true,
        }],
        ..HttpOptions::default()
    });
    let (address, stop) = proxy(catalog).await;
    let http = aloft_testkit::http();
    let asked = || origin_asked.load(std::sync::atomic::Ordering::SeqCst);
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let mut request = http
            .get(format!("http://{address}{path}"))
            .header("host", "origin.aloft.localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().text().await.unwrap() }
    };

    // What only the proxy says about replays, a client cannot say: the origin does not
    // see this fly-replay-src (it answers requests that came back with one itself).
    const SPOOFED: [(&str, &str); 2] = [
        ("fly-replay-src", "instance=x;region=ams;t=1"),
        ("fly-replay-cache-status", "hit"),
    ];
    assert_eq!(get("/", &SPOOFED).await, "target miss");
    assert_eq!(asked(), 1);
    // A session's first request asks the origin; its next ones go straight to the target.
    assert_eq!(get("/", &[("cookie", "session=a")]).await, "target miss");
    assert_eq!(asked(), 2);
    assert_eq!(
        get("/x", &[("cookie", "x=1; session=a")]).await,
        "target hit"
    );
    assert_eq!(asked(), 2);
    // Another session, and no session at all, are not the first one's.
    assert_eq!(get("/", &[("cookie", "session=b")]).await, "target miss");
    assert_eq!(get("/", &[]).await, "target miss");
    assert_eq!(get("/", &[]).await, "target miss");
    assert_eq!(asked(), 5);
    // The rule allows skipping: the origin is asked, and the entry stays.
    const SKIP: [(&str, &str); 2] = [
        ("cookie", "session=a"),
        ("fly-replay-cache-control", "skip"),
    ];
    assert_eq!(get("/", &SKIP).await, "target bypass");
    assert_eq!(asked(), 6);
    assert_eq!(get("/", &[("cookie", "session=a")]).await, "target hit");
    assert_eq!(asked(), 6);

    // Path-based: the origin's fly-replay-cache covers /cached/ for everyone.
    assert_eq!(get("/cached/1", &[]).await, "target miss");
    assert_eq!(get("/cached/2", &[]).await, "target hit");
    assert_eq!(get("/elsewhere", &[]).await, "target miss");
    assert_eq!(asked(), 8);

    // The target sends a cached session back with `invalidate`: the origin answers, and
    // the session's next request asks the origin again.
    assert_eq!(
        get("/invalidate", &[("cookie", "session=a")]).await,
        "origin"
    );
    assert_eq!(asked(), 9);
    assert_eq!(get("/", &[("cookie", "session=a")]).await, "target miss");
    assert_eq!(asked(), 10);
    stop.cancel();
}
