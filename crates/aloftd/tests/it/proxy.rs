//! The edge proxy end to end: HTTP by host to real machines over the private network.

use std::collections::BTreeSet;
use std::time::Duration;

use aloft_client::Client;
use aloft_testkit::{BUSYBOX_IMAGE, eventually};
use aloft_types::MachineState;
use aloft_types::api::{MachineRequest, MachineResponse};
use aloft_types::machine::{
    Handler, MachineConfig, MachineInit, MachinePort, MachineService, Protocol,
};

use crate::{Host, Server};

/// Answers every HTTP request with the machine's id and the request's headers.
pub(crate) const ECHO: &str = r#"#!/bin/sh
headers=""
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  headers="$headers$line
"
done
body="machine=$FLY_MACHINE_ID
$headers"
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "${#body}" "$body"
"#;

/// Switches to a protocol that echoes every byte back (a stand-in for WebSocket).
const UPGRADE: &str = r#"#!/bin/sh
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
done
printf 'HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n'
exec cat
"#;

pub(crate) fn service(force_https: bool) -> MachineService {
    MachineService {
        protocol: Protocol::Tcp,
        internal_port: 8080,
        autostop: None,
        autostart: None,
        min_machines_running: None,
        // What `[http_service]` lowers to.
        ports: vec![
            MachinePort {
                port: Some(80),
                handlers: vec![Handler::Http],
                force_https,
                ..MachinePort::default()
            },
            MachinePort {
                port: Some(443),
                handlers: vec![Handler::Tls, Handler::Http],
                ..MachinePort::default()
            },
        ],
        checks: Vec::new(),
        concurrency: None,
        force_instance_key: None,
        force_instance_description: None,
    }
}

async fn echo(client: &Client, app: &str, force_https: bool) -> MachineResponse {
    serve(client, app, ECHO, service(force_https)).await
}

/// Runs `script` for every connection on port 8080 of a new machine behind `service`.
pub(crate) async fn serve(
    client: &Client,
    app: &str,
    script: &str,
    service: MachineService,
) -> MachineResponse {
    start(client, app, script_config(script, service)).await
}

/// A machine that runs `script` for every connection on port 8080, behind `service`.
pub(crate) fn script_config(script: &str, service: MachineService) -> MachineConfig {
    let mut config = MachineConfig {
        image: BUSYBOX_IMAGE.to_owned(),
        init: MachineInit {
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "mkdir -p /srv && printf '%s' \"$ECHO_SCRIPT\" > /srv/echo && chmod +x /srv/echo && exec nc -ll -p 8080 -e /srv/echo".into(),
            ],
            ..MachineInit::default()
        },
        services: vec![service],
        ..MachineConfig::default()
    };
    config.env.insert("ECHO_SCRIPT".into(), script.into());
    config
}

/// Creates a machine and waits for it to start.
pub(crate) async fn start(client: &Client, app: &str, config: MachineConfig) -> MachineResponse {
    let machine = client
        .create_machine(app, &MachineRequest::new(config))
        .await
        .unwrap();
    client
        .wait(app, &machine.id, MachineState::Started, 60)
        .await
        .unwrap();
    machine
}

/// The proxy's HTTPS listener.
pub(crate) fn https_address(host: &Host) -> std::net::SocketAddr {
    std::fs::read_to_string(host.data().join(aloftd::HTTPS_ADDR_FILE))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

pub(crate) fn proxy_address(host: &Host) -> std::net::SocketAddr {
    std::fs::read_to_string(host.data().join(aloftd::HTTP_ADDR_FILE))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

pub(crate) async fn get(
    http: &reqwest::Client,
    proxy: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> reqwest::Response {
    http.get(format!("http://{proxy}{path}"))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn requests_reach_the_apps_machines_by_host_with_flys_headers() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("edge", None).await.unwrap();
    let first = echo(client, "edge", false).await;
    let second = echo(client, "edge", false).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // The catalog reaches the proxy, and the machines' port answers.
    let response = eventually(
        "the proxy to route to the app",
        Duration::from_secs(30),
        || async {
            let response = get(&http, proxy, "edge.aloft.localhost", "/hello?x=1").await;
            (response.status() == 200).then_some(response)
        },
    )
    .await;
    let id = response.headers()["fly-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.ends_with("-local") && id.len() == 26 + 6, "{id}");
    assert_eq!(response.headers()["server"], "Aloft/1");
    assert_eq!(response.headers()["via"], "1.1 aloft");
    let body = response.text().await.unwrap().to_ascii_lowercase();
    for expected in [
        "get /hello?x=1 http/1.1",
        "host: edge.aloft.localhost",
        "fly-client-ip: 127.0.0.1",
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-proto: http",
        &format!("x-forwarded-port: {}", proxy.port()),
        &format!("fly-forwarded-port: {}", proxy.port()),
        "fly-region: local",
        "via: 1.1 aloft",
    ] {
        assert!(body.contains(expected), "{expected:?} in {body}");
    }

    // Both machines take requests. The service counts connections (Fly's default): the
    // kept-alive connection of `http` holds its machine (one unit of load), so a new
    // connection goes to the other one.
    let machine_of = |body: String| {
        body.lines()
            .next()
            .and_then(|l| l.strip_prefix("machine="))
            .map(str::to_owned)
            .unwrap_or(body)
    };
    let fresh = aloft_testkit::http_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut seen = BTreeSet::new();
    for client in [&http, &fresh] {
        let body = get(client, proxy, "EDGE.aloft.localhost", "/")
            .await
            .text()
            .await
            .unwrap();
        seen.insert(machine_of(body));
    }
    assert_eq!(seen, BTreeSet::from([first.id.clone(), second.id.clone()]));

    // The instance headers pick a machine.
    for _ in 0..5 {
        let forced = http
            .get(format!("http://{proxy}/"))
            .header("host", "edge.aloft.localhost")
            .header("fly-force-instance-id", &second.id)
            .send()
            .await
            .unwrap();
        let body = forced.text().await.unwrap();
        assert!(
            body.starts_with(&format!("machine={}", second.id)),
            "{body}"
        );
        let preferred = http
            .get(format!("http://{proxy}/"))
            .header("host", "edge.aloft.localhost")
            .header("fly-prefer-instance-id", &first.id)
            .send()
            .await
            .unwrap();
        let body = preferred.text().await.unwrap();
        assert!(body.starts_with(&format!("machine={}", first.id)), "{body}");
    }
    let missing = http
        .get(format!("http://{proxy}/"))
        .header("host", "edge.aloft.localhost")
        .header("fly-force-instance-id", "nosuchmachine")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 503);
    // Region headers: forcing a region without machines fails; preferring one does not.
    let elsewhere = http
        .get(format!("http://{proxy}/"))
        .header("host", "edge.aloft.localhost")
        .header("fly-force-region", "fra")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 503);
    let body = elsewhere.text().await.unwrap();
    assert!(body.contains("no machine in region fra"), "{body}");
    for (name, value) in [
        ("fly-prefer-region", "fra"),
        ("fly-force-region", "fra,local"),
    ] {
        let response = http
            .get(format!("http://{proxy}/"))
            .header("host", "edge.aloft.localhost")
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}: {value}");
    }

    // A machine that refuses connections: GETs go to another one.
    let deaf = MachineConfig {
        services: vec![service(false)],
        ..crate::sleeper()
    };
    let deaf = client
        .create_machine("edge", &MachineRequest::new(deaf))
        .await
        .unwrap();
    client
        .wait("edge", &deaf.id, MachineState::Started, 60)
        .await
        .unwrap();
    eventually(
        "the deaf machine to be routed to",
        Duration::from_secs(10),
        || async {
            let routed = http
                .get(format!("http://{proxy}/"))
                .header("host", "edge.aloft.localhost")
                .header("fly-force-instance-id", &deaf.id)
                .send()
                .await
                .ok()?;
            (routed.status() == 502).then_some(())
        },
    )
    .await;
    for _ in 0..12 {
        let response = get(&http, proxy, "edge.aloft.localhost", "/").await;
        assert_eq!(response.status(), 200, "retried on another machine");
    }

    // Hosts that name no app. (An app with nothing started: see autoscale.rs.)
    let response = get(&http, proxy, "nope.aloft.localhost", "/").await;
    assert_eq!(response.status(), 404);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("there is no app nope")
    );
    assert_eq!(get(&http, proxy, "example.com", "/").await.status(), 404);
}

#[tokio::test]
async fn force_https_redirects_plain_http() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("secure", None).await.unwrap();
    echo(client, "secure", true).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = eventually("the redirect", Duration::from_secs(30), || async {
        let response = get(&http, proxy, "secure.aloft.localhost:8080", "/a/b?c=d").await;
        (response.status() == 301).then_some(response)
    })
    .await;
    // The HTTPS listener's port is kept (it is not 443 here), the HTTP one dropped.
    let https = https_address(&host);
    assert_eq!(
        response.headers()["location"],
        format!("https://secure.aloft.localhost:{}/a/b?c=d", https.port()).as_str()
    );
}

#[tokio::test]
async fn upgraded_connections_become_tunnels_to_the_machine() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("ws", None).await.unwrap();
    serve(client, "ws", UPGRADE, service(false)).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();
    eventually(
        "the proxy to route to the app",
        Duration::from_secs(30),
        || async {
            let response = http
                .get(format!("http://{proxy}/"))
                .header("host", "ws.aloft.localhost")
                .send()
                .await
                .ok()?;
            // Routed to a started machine (which switches protocols even unasked).
            let status = response.status();
            (status != 404 && status != 503).then_some(())
        },
    )
    .await;

    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(
            b"GET /socket HTTP/1.1\r\nHost: ws.aloft.localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut byte))
            .await
            .expect("the 101 arrives")
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for message in ["ping\n", "a second message\n"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
            .await
            .expect("the echo arrives")
            .unwrap();
        assert_eq!(echoed, message.as_bytes());
    }
}

/// A real WebSocket client and server (the test app's echo) talk through the proxy:
/// the handshake's key and accept pass unchanged, and text, binary and close frames go
/// both ways.
#[tokio::test]
async fn websockets_echo_through_the_proxy() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let host = Host::new();
    let image = aloft_testkit::testapp_image();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("wsecho", None).await.unwrap();
    let config = MachineConfig {
        image,
        services: vec![service(false)],
        ..MachineConfig::default()
    };
    start(client, "wsecho", config).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();
    eventually(
        "the proxy to route to the app",
        Duration::from_secs(30),
        || async {
            let response = http
                .get(format!("http://{proxy}/health"))
                .header("host", "wsecho.aloft.localhost")
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        },
    )
    .await;

    let mut request = format!("ws://{proxy}/ws").into_client_request().unwrap();
    request.headers_mut().insert(
        "host",
        http::HeaderValue::from_static("wsecho.aloft.localhost"),
    );
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut socket, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .expect("the handshake finishes")
    .expect("the handshake succeeds (tungstenite checks Sec-WebSocket-Accept)");
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("fly-request-id"));

    let messages = [
        Message::text("ping"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("x".repeat(100_000)),
    ];
    for message in messages {
        socket.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the echo arrives")
            .expect("the socket is open")
            .unwrap();
        assert_eq!(echoed, message);
    }
    socket.close(None).await.unwrap();
    let closing = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("the server answers the close");
    assert!(
        matches!(closing, Some(Ok(Message::Close(_))) | None),
        "{closing:?}"
    );
}

/// `curl` through the HTTPS listener: (exit code, status line and headers + body).
pub(crate) fn curl_https(host: &Host, app: &str, extra: &[&str]) -> (i32, String) {
    curl_url(
        host,
        &format!("{app}.aloft.localhost"),
        "/secure?q=1",
        extra,
    )
}

/// `curl -i` to `https://{name}:{port}{path}` on the proxy's HTTPS listener: its exit
/// code and its output, lowercase.
fn curl_url(host: &Host, name: &str, path: &str, extra: &[&str]) -> (i32, String) {
    let address: std::net::SocketAddr =
        std::fs::read_to_string(host.data().join(aloftd::HTTPS_ADDR_FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let output = std::process::Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "--resolve"])
        .arg(format!("{name}:{}:127.0.0.1", address.port()))
        .args(extra)
        .arg(format!("https://{name}:{}{path}", address.port()))
        .output()
        .expect("curl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_ascii_lowercase(),
    )
}

#[tokio::test]
async fn https_works_out_of_the_box_with_the_local_ca() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("tls", None).await.unwrap();
    let machine = echo(client, "tls", true).await;
    let ca = host.data().join(aloftd::TLS_DIR).join("ca.crt");
    let ca = ca.to_str().unwrap();

    let (_, answer) = eventually(
        "HTTPS to route to the app",
        Duration::from_secs(30),
        || async {
            let (code, answer) = curl_https(&host, "tls", &["--cacert", ca]);
            (code == 0 && answer.starts_with("http/2 200")).then_some((code, answer))
        },
    )
    .await;
    for expected in [
        &format!("machine={}", machine.id),
        "x-forwarded-proto: https",
        "x-forwarded-ssl: on",
        "fly-request-id: ",
        "get /secure?q=1 http/1.1",
    ] {
        assert!(answer.contains(expected), "{expected:?} in {answer}");
    }
    let (code, answer) = curl_https(&host, "tls", &["--cacert", ca, "--http1.1"]);
    assert_eq!(code, 0);
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    let (code, _) = curl_https(&host, "tls", &[]);
    assert_eq!(code, 60, "without the CA, the certificate is not trusted");
}

#[tokio::test]
async fn response_rules_and_pristine_apply() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("shaped", None).await.unwrap();
    let mut service = service(false);
    service.ports[0].http_options = Some(aloft_types::machine::HttpOptions {
        response: Some(aloft_types::machine::HttpResponseOptions {
            headers: [
                (
                    "x-frame-options".to_owned(),
                    aloft_types::machine::ResponseHeader::One("DENY".into()),
                ),
                (
                    "content-type".to_owned(),
                    aloft_types::machine::ResponseHeader::Keep(false),
                ),
            ]
            .into_iter()
            .collect(),
            pristine: Some(true),
        }),
        ..aloft_types::machine::HttpOptions::default()
    });
    serve(client, "shaped", ECHO, service).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();
    let response = eventually("the app to answer", Duration::from_secs(30), || async {
        let response = get(&http, proxy, "shaped.aloft.localhost", "/").await;
        (response.status() == 200).then_some(response)
    })
    .await;
    let headers = response.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(headers.get("content-type").is_none(), "removed by the rule");
    assert!(
        headers.get("fly-request-id").is_none() && headers.get("via").is_none(),
        "pristine"
    );
}

/// Answers after two seconds, having marked that a request is in flight.
const SLOW: &str = r#"#!/bin/sh
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
done
touch /srv/inflight
sleep 2
printf 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nslow\n'
"#;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_requests_in_flight_finish() {
    let host = Host::new();
    let mut server = Server::start(&host).await;
    let client = server.client.clone();
    client.create_app("drain", None).await.unwrap();
    let machine = serve(&client, "drain", SLOW, service(false)).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();
    eventually("the app to answer", Duration::from_secs(30), || async {
        let response = get(&http, proxy, "drain.aloft.localhost", "/").await;
        (response.status() == 200).then_some(())
    })
    .await;
    let exec = |script: &str| {
        let (client, id, script) = (client.clone(), machine.id.clone(), script.to_owned());
        async move {
            client
                .exec("drain", &id, vec!["sh".into(), "-c".into(), script], None)
                .await
                .map(|o| o.exit_code)
                .unwrap_or(-1)
        }
    };
    assert_eq!(exec("rm -f /srv/inflight").await, 0);

    let in_flight = {
        let http = http.clone();
        tokio::spawn(async move {
            let response = get(&http, proxy, "drain.aloft.localhost", "/").await;
            (response.status(), response.text().await.unwrap_or_default())
        })
    };
    eventually(
        "the request to reach the machine",
        Duration::from_secs(10),
        || async { (exec("test -f /srv/inflight").await == 0).then_some(()) },
    )
    .await;
    let code = tokio::task::spawn_blocking(move || {
        let code = crate::signal_and_wait(&mut server, "TERM", Duration::from_secs(30));
        (code, server)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "SIGTERM drains and exits 0");
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "slow\n"),
        "the request in flight was answered"
    );
}

#[tokio::test]
async fn tls_options_choose_alpn_and_versions_per_app() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("strict", None).await.unwrap();
    client.create_app("loose", None).await.unwrap();
    let mut strict = service(false);
    strict.ports[1].tls_options = Some(aloft_types::machine::TlsOptions {
        alpn: vec!["http/1.1".to_owned()],
        versions: vec![aloft_types::machine::TlsVersion::Tls13],
        default_self_signed: None,
    });
    serve(client, "strict", ECHO, strict).await;
    echo(client, "loose", false).await;
    let ca = host.data().join(aloftd::TLS_DIR).join("ca.crt");
    let ca = ca.to_str().unwrap();

    // The strict app: HTTP/1.1 only (ALPN), TLS 1.3 only.
    let (_, answer) = eventually(
        "HTTPS to route to the app",
        Duration::from_secs(30),
        || async {
            let (code, answer) = curl_https(&host, "strict", &["--cacert", ca, "--http2"]);
            (code == 0).then_some((code, answer))
        },
    )
    .await;
    assert!(
        answer.starts_with("http/1.1 200"),
        "ALPN offers only http/1.1: {answer}"
    );
    let (code, _) = curl_https(&host, "strict", &["--cacert", ca, "--tls-max", "1.2"]);
    assert_ne!(code, 0, "TLS 1.2 is refused");
    // The other app on the same listener keeps the defaults.
    let (_, answer) = eventually(
        "HTTPS to route to the app",
        Duration::from_secs(30),
        || async {
            let (code, answer) = curl_https(
                &host,
                "loose",
                &["--cacert", ca, "--http2", "--tls-max", "1.2"],
            );
            (code == 0).then_some((code, answer))
        },
    )
    .await;
    assert!(answer.starts_with("http/2 200"), "{answer}");
}

/// `curl` to `https://{name}:{port}/` on the proxy's HTTPS listener.
fn curl_name(host: &Host, name: &str, extra: &[&str]) -> (i32, String) {
    curl_url(host, name, "/", extra)
}

#[tokio::test]
async fn apps_answer_at_their_own_hostnames_with_issued_or_imported_certificates() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("branded", None).await.unwrap();
    client.create_app("other", None).await.unwrap();
    let machine = echo(client, "branded", false).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();
    let ca = host.data().join(aloftd::TLS_DIR).join("ca.crt");
    let ca = ca.to_str().unwrap();

    // A hostname with a certificate from the local CA: HTTPS by SNI, HTTP by Host.
    let added = client
        .add_certificate("branded", "WWW.Branded.test")
        .await
        .unwrap();
    assert_eq!(
        (added.hostname.as_str(), added.source.as_str()),
        ("www.branded.test", "local")
    );
    let (_, answer) = eventually("HTTPS at the hostname", Duration::from_secs(30), || async {
        let (code, answer) = curl_name(&host, "www.branded.test", &["--cacert", ca]);
        (code == 0 && answer.contains(" 200")).then_some((code, answer))
    })
    .await;
    assert!(
        answer.contains(&format!("machine={}", machine.id)),
        "{answer}"
    );
    let plain = get(&http, proxy, "www.branded.test", "/").await;
    assert_eq!(plain.status(), 200);

    // Another app cannot take it; bad input says what is wrong.
    let taken = client
        .add_certificate("other", "www.branded.test")
        .await
        .unwrap_err();
    assert!(
        taken.to_string().contains("another app answers at it"),
        "{taken}"
    );
    let bad = client
        .add_certificate("branded", "not a host")
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("is not a hostname"), "{bad}");
    let bad_pem = client
        .import_certificate(
            "branded",
            &aloft_types::api::ImportCertificateRequest {
                hostname: "api.branded.test".into(),
                fullchain: "nope".into(),
                private_key: "nope".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(bad_pem.to_string().contains("fullchain"), "{bad_pem}");

    // An imported certificate (self-signed by openssl) is served as given.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=api.branded.test"])
        .args(["-addext", "subjectAltName=DNS:api.branded.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let imported = client
        .import_certificate(
            "branded",
            &aloft_types::api::ImportCertificateRequest {
                hostname: "api.branded.test".into(),
                fullchain: std::fs::read_to_string(&cert).unwrap(),
                private_key: std::fs::read_to_string(&key).unwrap(),
            },
        )
        .await
        .unwrap();
    assert_eq!(imported.source, "custom");
    let cert = cert.to_str().unwrap();
    eventually(
        "HTTPS with the imported certificate",
        Duration::from_secs(30),
        || async {
            let (code, answer) = curl_name(&host, "api.branded.test", &["--cacert", cert]);
            (code == 0 && answer.contains(&format!("machine={}", machine.id))).then_some(())
        },
    )
    .await;
    let listed = client.list_certificates("branded").await.unwrap();
    assert_eq!(listed.len(), 2);

    // Removed: the hostname no longer routes.
    client
        .remove_certificate("branded", "www.branded.test")
        .await
        .unwrap();
    eventually(
        "the hostname to stop routing",
        Duration::from_secs(10),
        || async {
            (get(&http, proxy, "www.branded.test", "/").await.status() == 404).then_some(())
        },
    )
    .await;
}
