//! `cargo xtask bench proxy`: wrk and h2load through Aloft's proxy, straight to the
//! backend, and through nginx and HAProxy configured as reverse proxies to the same
//! backend, one after the other in one run, on loopback.
//!
//! - The backend is nginx answering `200 ok` from memory on `[::1]` (Aloft reaches
//!   machines over IPv6), with keep-alive.
//! - Every proxy gets the machine's two cores: nginx `worker_processes 2`, HAProxy
//!   `nbthread 2`, Aloft a two-worker tokio runtime. Each keeps connections to the
//!   backend alive. TLS: nginx and HAProxy with one self-signed certificate (openssl),
//!   Aloft with its local CA's.
//! - Scenarios: HTTP/1.1 keep-alive (wrk, 64 connections), HTTPS keep-alive (wrk),
//!   a new connection per request (wrk, `Connection: close`), HTTP/2 over TLS (h2load, 64
//!   connections x 10 streams), and latency at light load (wrk, 4 connections: roughly
//!   half of a proxy's throughput on this machine), whose p99 minus the direct p99 is the
//!   proxy's added latency.
//! - The load generator shares the two cores with the proxy under test: absolute numbers
//!   are lower than on separate machines, the comparison is what counts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark program reports on the terminal and fails loudly"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aloft_proxy::{Proxy, ProxyConfig};
use aloft_types::MachineState;
use aloft_types::catalog::{Catalog, CatalogApp, CatalogMachine};
use aloft_types::machine::{
    Concurrency, ConcurrencyKind, Handler, MachinePort, MachineService, Protocol,
};
use tokio_util::sync::CancellationToken;

/// The allocator aloftd runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECONDS: &str = "8";
const HOST: &str = "bench.aloft.localhost";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    /// SIGTERM first: nginx's and HAProxy's masters then stop their workers (a SIGKILL
    /// leaves the workers running, holding their ports and our stderr).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(command: &mut Command, what: &str) -> Daemon {
    Daemon(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} runs (`cargo xtask bench proxy` installs it): {e}")),
    )
}

fn wait_for(address: SocketAddr, what: &str) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(address).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn catalog(backend_port: u16) -> Catalog {
    let port = |number, handlers| MachinePort {
        port: Some(number),
        handlers,
        ..MachinePort::default()
    };
    Catalog {
        acme_challenges: Vec::new(),
        apps: vec![CatalogApp {
            name: "bench".into(),
            org_id: "o".into(),
            network: 1,
            ipv4: Vec::new(),
            hostnames: Vec::new(),
        }],
        machines: vec![CatalogMachine {
            id: "0123456789abcd".into(),
            app: "bench".into(),
            region: "local".into(),
            state: MachineState::Started,
            private_ip: Some(std::net::Ipv6Addr::LOCALHOST),
            process_group: "app".into(),
            metadata: BTreeMap::new(),
            skip_registration: false,
            cordoned: false,
            services: vec![MachineService {
                protocol: Protocol::Tcp,
                internal_port: backend_port,
                autostop: None,
                autostart: None,
                min_machines_running: None,
                ports: vec![
                    port(80, vec![Handler::Http]),
                    port(443, vec![Handler::Tls, Handler::Http]),
                ],
                checks: vec![],
                concurrency: Some(Concurrency {
                    kind: Some(ConcurrencyKind::Requests),
                    soft_limit: Some(100_000),
                    hard_limit: Some(100_000),
                }),
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

fn nginx_backend(dir: &Path, port: u16) -> String {
    format!(
        "worker_processes 1;\npid {dir}/backend.pid;\nerror_log stderr error;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  server {{\n    listen [::1]:{port} reuseport;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
        dir = dir.display()
    )
}

fn nginx_proxy(dir: &Path, backend: u16, http: u16, https: u16) -> String {
    format!(
        "worker_processes 2;\npid {dir}/proxy.pid;\nerror_log stderr error;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  upstream backend {{ server [::1]:{backend}; keepalive 128; }}\n  server {{\n    listen 127.0.0.1:{http};\n    listen 127.0.0.1:{https} ssl http2;\n    ssl_certificate {dir}/cert.pem;\n    ssl_certificate_key {dir}/key.pem;\n    location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $remote_addr;\n    }}\n  }}\n}}\n",
        dir = dir.display()
    )
}

fn haproxy(dir: &Path, backend: u16, http: u16, https: u16) -> String {
    format!(
        "global\n  nbthread 2\n  maxconn 8000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  option forwardfor\n  http-reuse always\nfrontend plain\n  bind 127.0.0.1:{http}\n  default_backend app\nfrontend secure\n  bind 127.0.0.1:{https} ssl crt {dir}/combined.pem alpn h2,http/1.1\n  default_backend app\nbackend app\n  server s1 [::1]:{backend}\n",
        dir = dir.display()
    )
}

/// What one load run measured.
#[derive(Debug, Default, Clone)]
struct Measured {
    requests_per_second: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    errors: String,
}

fn millis(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let value: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => return None,
    })
}

fn wrk(url: &str, connections: u32, extra: &[&str]) -> Measured {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{SECONDS}s"),
            "--latency",
        ])
        .args(["-H", &format!("Host: {HOST}")])
        .args(extra)
        .arg(url)
        .output()
        .expect("wrk runs (Debian package wrk)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut measured = Measured::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            measured.requests_per_second = rate.trim().parse().unwrap_or(0.0);
        } else if let Some(value) = line.strip_prefix("50%") {
            measured.p50_ms = millis(value);
        } else if let Some(value) = line.strip_prefix("99%") {
            measured.p99_ms = millis(value);
        } else if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            measured.errors = line.to_owned();
        }
    }
    measured
}

fn h2load(url: &str) -> Measured {
    let output = Command::new("h2load")
        .args(["-c64", "-m10", "-t2", "-D", SECONDS])
        .args(["-H", &format!(":authority: {HOST}")])
        .arg(url)
        .output()
        .expect("h2load runs (Debian package nghttp2-client)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut measured = Measured::default();
    for line in text.lines() {
        // "finished in 8.00s, 51234.50 req/s, 1.23MB/s"
        if let Some(rest) = line.strip_prefix("finished in")
            && let Some(rate) = rest.split(',').nth(1)
        {
            measured.requests_per_second = rate
                .trim()
                .trim_end_matches("req/s")
                .trim()
                .parse()
                .unwrap_or(0.0);
        }
        // "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, ..."
        if line.starts_with("requests:") && !line.contains(" 0 failed") {
            measured.errors = line.trim().to_owned();
        }
        // "time for request:  1.23ms  4.56ms  2.34ms  ..." (min max mean sd +/-sd)
        if let Some(rest) = line.strip_prefix("time for request:") {
            measured.p50_ms = rest.split_whitespace().nth(2).and_then(millis);
        }
    }
    measured
}

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
        ])
        .arg(format!("/CN={HOST}"))
        .arg("-keyout")
        .arg(path.join("key.pem"))
        .arg("-out")
        .arg(path.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl made a certificate");
    let combined = [
        std::fs::read_to_string(path.join("cert.pem")).unwrap(),
        std::fs::read_to_string(path.join("key.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(path.join("combined.pem"), combined).unwrap();

    let backend_port = free_port();
    std::fs::write(path.join("backend.conf"), nginx_backend(path, backend_port)).unwrap();
    let _backend = daemon(
        Command::new("nginx")
            .args(["-g", "daemon off;", "-p"])
            .arg(path)
            .arg("-c")
            .arg(path.join("backend.conf")),
        "nginx",
    );
    wait_for(
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, backend_port)),
        "the nginx backend",
    );

    let (nginx_http, nginx_https) = (free_port(), free_port());
    std::fs::write(
        path.join("proxy.conf"),
        nginx_proxy(path, backend_port, nginx_http, nginx_https),
    )
    .unwrap();
    let _nginx = daemon(
        Command::new("nginx")
            .args(["-g", "daemon off;", "-p"])
            .arg(path)
            .arg("-c")
            .arg(path.join("proxy.conf")),
        "nginx",
    );
    let (haproxy_http, haproxy_https) = (free_port(), free_port());
    std::fs::write(
        path.join("haproxy.cfg"),
        haproxy(path, backend_port, haproxy_http, haproxy_https),
    )
    .unwrap();
    let _haproxy = daemon(
        Command::new("haproxy")
            .arg("-f")
            .arg(path.join("haproxy.cfg"))
            .arg("-db"),
        "haproxy",
    );

    // Aloft's proxy, in this process, on a two-worker runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let (aloft_http, aloft_https) = runtime.block_on(async {
        let proxy = Proxy::new(ProxyConfig {
            apps_domain: "aloft.localhost".into(),
            public_https_port: 443,
            region: "local".into(),
            namespace: None,
            queue_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(1),
            start_timeout: Duration::from_secs(10),
            autostop_interval: Duration::from_secs(3600),
            workers: 2,
            region_distances: Vec::new(),
        });
        proxy.set_catalog(&Arc::new(catalog(backend_port)));
        let ca = aloft_proxy::tls::LocalCa::load_or_create(&path.join("aloft-ca")).unwrap();
        let certificates = Arc::new(aloft_proxy::tls::Certificates::default());
        let cert = ca.issue(&["*.aloft.localhost".to_owned()]).unwrap();
        certificates.insert("*.aloft.localhost", cert.clone());
        certificates.set_fallback(cert);
        let tls = Arc::new(aloft_proxy::tls::server_config(certificates).unwrap());
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let secure = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addresses = (
            plain.local_addr().unwrap().port(),
            secure.local_addr().unwrap().port(),
        );
        tokio::spawn(proxy.clone().serve_http(plain, stop.clone()));
        tokio::spawn(proxy.serve_https(secure, tls, stop.clone()));
        addresses
    });
    for port in [
        nginx_http,
        nginx_https,
        haproxy_http,
        haproxy_https,
        aloft_http,
        aloft_https,
    ] {
        wait_for(([127, 0, 0, 1], port).into(), "a proxy");
    }

    let direct = format!("http://[::1]:{backend_port}/");
    let targets: [(&str, String, Option<String>); 4] = [
        ("direct", direct.clone(), None),
        (
            "aloft",
            format!("http://127.0.0.1:{aloft_http}/"),
            Some(format!("https://127.0.0.1:{aloft_https}/")),
        ),
        (
            "nginx",
            format!("http://127.0.0.1:{nginx_http}/"),
            Some(format!("https://127.0.0.1:{nginx_https}/")),
        ),
        (
            "haproxy",
            format!("http://127.0.0.1:{haproxy_http}/"),
            Some(format!("https://127.0.0.1:{haproxy_https}/")),
        ),
    ];

    println!(
        "wrk and h2load, {SECONDS} s per run, loopback, 2 cores shared with the load generator\n"
    );
    println!("| scenario | target | req/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---:|---:|---:|---|");
    let mut light_p99: BTreeMap<&str, f64> = BTreeMap::new();
    let row = |scenario: &str, target: &str, m: &Measured| {
        println!(
            "| {scenario} | {target} | {:.0} | {} | {} | {} |",
            m.requests_per_second,
            show(m.p50_ms),
            show(m.p99_ms),
            m.errors
        );
    };
    // `ALOFT_BENCH_ONLY=HTTP/1.1,aloft` runs the rows whose "scenario target" contains
    // every comma-separated text: handy under a profiler.
    let only = std::env::var("ALOFT_BENCH_ONLY").unwrap_or_default();
    let wanted = |scenario: &str, target: &str| {
        let row = format!("{scenario} {target}");
        only.split(',').all(|part| row.contains(part.trim()))
    };
    const KEEP_ALIVE: &str = "HTTP/1.1 keep-alive, 64 conns";
    const NEW_CONNECTION: &str = "new connection per request, 64 conns";
    const HTTPS: &str = "HTTPS keep-alive, 64 conns";
    const HTTP2: &str = "HTTP/2 over TLS, 64 conns x 10 streams (p50 = mean)";
    const LIGHT: &str = "light load, 4 conns";
    for (name, plain, _) in targets.iter().filter(|t| wanted(KEEP_ALIVE, t.0)) {
        row(KEEP_ALIVE, name, &wrk(plain, 64, &[]));
    }
    for (name, plain, _) in targets.iter().filter(|t| wanted(NEW_CONNECTION, t.0)) {
        row(
            NEW_CONNECTION,
            name,
            &wrk(plain, 64, &["-H", "Connection: close"]),
        );
    }
    for (name, _, secure) in targets.iter().filter(|t| wanted(HTTPS, t.0)) {
        if let Some(secure) = secure {
            row(HTTPS, name, &wrk(secure, 64, &[]));
        }
    }
    for (name, _, secure) in targets.iter().filter(|t| wanted(HTTP2, t.0)) {
        if let Some(secure) = secure {
            row(HTTP2, name, &h2load(secure));
        }
    }
    for (name, plain, _) in targets.iter().filter(|t| wanted(LIGHT, t.0)) {
        let measured = wrk(plain, 4, &[]);
        if let Some(p99) = measured.p99_ms {
            light_p99.insert(name, p99);
        }
        row(LIGHT, name, &measured);
    }
    if let Some(direct) = light_p99.get("direct") {
        println!();
        for name in ["aloft", "nginx", "haproxy"] {
            if let Some(p99) = light_p99.get(name) {
                println!("p99 added at light load, {name}: {:.3} ms", p99 - direct);
            }
        }
    }
    stop.cancel();
    runtime.shutdown_timeout(Duration::from_secs(2));
}
