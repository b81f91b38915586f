//! Machine logs end to end: a machine's output in the host's log store, through the API.

use std::time::{Duration, Instant};

use aloft_client::{Client, LogsRequest};
use aloft_types::MachineState;

use crate::{Host, Server};

const APP: &str = "chatty";
const LINES: u64 = 1_000_000;

/// Reads one page after `cursor`: the numbers the machine printed, the next cursor, how
/// many lines the page had, and the summed delay (ns) between each line being written and
/// this read.
async fn page(client: &Client, cursor: &str) -> Option<(Vec<u64>, String, usize, i64)> {
    let page = client
        .logs(
            APP,
            &LogsRequest {
                cursor: Some(cursor.to_owned()),
                newest: Some(false),
                limit: Some(10_000),
                ..LogsRequest::default()
            },
        )
        .await
        .ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let output: Vec<_> = page
        .entries
        .iter()
        .filter(|e| e.stream == "stdout")
        .collect();
    let delay = output.iter().map(|e| now - e.timestamp_ns).sum();
    let numbers = output
        .iter()
        .map(|e| e.message.parse().unwrap_or(u64::MAX))
        .collect();
    Some((numbers, page.next_cursor, page.entries.len(), delay))
}

/// A machine prints a million numbered lines as fast as it can; `aloftd` is killed with
/// -9 in the middle and started again. Every line is stored exactly once and in order
/// (the test reads them all back through the API with a cursor), lines written while the
/// daemon was down included; platform lines tell of the machine's start and exit; text
/// and machine filters find single lines.
#[tokio::test]
async fn a_million_lines_are_all_stored_once_and_survive_kill_9() {
    let host = Host::new();
    let mut server = Server::start(&host).await;
    server.client.create_app(APP, None).await.unwrap();
    let request: aloft_types::api::MachineRequest = serde_json::from_value(serde_json::json!({
        "name": "printer",
        "config": {
            "image": aloft_testkit::busybox_image(),
            "init": { "cmd": ["sh", "-c", format!("seq 1 {LINES}; sleep 3600")] },
            "restart": { "policy": "no" }
        }
    }))
    .unwrap();
    let machine = server.client.create_machine(APP, &request).await.unwrap();
    server
        .client
        .wait(APP, &machine.id, MachineState::Started, 60)
        .await
        .unwrap();

    let started = Instant::now();
    let mut cursor = "0".to_owned();
    let mut seen: Vec<u64> = Vec::with_capacity(LINES as usize);
    let mut killed = false;
    let mut delay_ns: i64 = 0;
    let mut delayed: i64 = 0;
    while (seen.len() as u64) < LINES {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {} of {LINES} lines after 5 minutes",
            seen.len()
        );
        if !killed && seen.len() > 100_000 {
            // Everything read so far was acknowledged (only synced lines are visible).
            server.restart_after_kill(&host).await;
            killed = true;
            continue;
        }
        match page(&server.client, &cursor).await {
            Some((numbers, next, count, delay)) => {
                if !killed {
                    delay_ns += delay;
                    delayed += numbers.len() as i64;
                }
                seen.extend(numbers);
                cursor = next;
                if count == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(killed, "the daemon was killed mid-stream");
    assert_eq!(seen.len() as u64, LINES, "no line twice");
    for (index, number) in seen.iter().enumerate() {
        assert_eq!(
            *number,
            index as u64 + 1,
            "line {} is out of place",
            index + 1
        );
    }
    eprintln!(
        "{LINES} lines stored and read back in {:?}, aloftd killed -9 once; before the kill, \
         a line was visible through the API {:.0} ms on average after it was written \
         ({delayed} lines)",
        started.elapsed(),
        delay_ns as f64 / delayed.max(1) as f64 / 1e6
    );

    let client = &server.client;
    let found = client
        .logs(
            APP,
            &LogsRequest {
                since: Some("10m".to_owned()),
                text: Some("999999".to_owned()),
                newest: Some(false),
                ..LogsRequest::default()
            },
        )
        .await
        .unwrap();
    let texts: Vec<&str> = found.entries.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(texts, ["999999"]);
    assert_eq!(found.entries[0].machine, machine.id);
    assert!(
        found.entries[0].id.starts_with(&server.host_id()),
        "a line's id names its host: {}",
        found.entries[0].id
    );
    let other = client
        .logs(
            APP,
            &LogsRequest {
                machine: Some("nosuchmachine0".to_owned()),
                ..LogsRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(other.entries.is_empty());
    let platform = client
        .logs(
            APP,
            &LogsRequest {
                text: Some("machine".to_owned()),
                newest: Some(false),
                ..LogsRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(
        platform
            .entries
            .iter()
            .any(|e| e.stream == "platform" && e.message.contains("start")),
        "the platform's events are lines too: {:?}",
        platform.entries
    );
    let bad = client
        .logs(
            APP,
            &LogsRequest {
                since: Some("yesterday".to_owned()),
                ..LogsRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(400), "{bad}");
    client
        .destroy_machine(APP, &machine.id, true)
        .await
        .unwrap();
}

/// What a test sink received: the numbers of the `n <number>` lines.
type Received = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>;

fn numbers_in(text: &str) -> Vec<u64> {
    text.split("n ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// A TLS acceptor for 127.0.0.1 with a self-signed certificate, and that certificate
/// (PEM) to trust.
fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        cert.pem(),
    )
}

/// One request of a minimal HTTP sink: records the numbers in its body, answers 200.
async fn http_exchange<S>(mut stream: S, received: Received)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut data = Vec::new();
    let mut buffer = [0; 65536];
    let (head_end, length) = loop {
        let Ok(read) = stream.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        data.extend_from_slice(&buffer[..read]);
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..at]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (at + 4, length);
        }
    };
    while data.len() < head_end + length {
        let Ok(read) = stream.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        data.extend_from_slice(&buffer[..read]);
    }
    let body = String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned();
    received.lock().unwrap().extend(numbers_in(&body));
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await;
    let _ = stream.shutdown().await;
}

/// A minimal HTTP(S) sink: one request per connection. Runs until the task is aborted.
async fn http_sink(
    listener: tokio::net::TcpListener,
    received: Received,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (received, tls) = (received.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        http_exchange(stream, received).await;
                    }
                }
                None => http_exchange(stream, received).await,
            }
        });
    }
}

/// Reads octet-counted syslog frames and records their numbers.
async fn syslog_frames<S>(mut stream: S, received: Received)
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt as _;
    let mut data = Vec::new();
    let mut buffer = [0; 65536];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            return;
        }
        data.extend_from_slice(&buffer[..read]);
        // Whole frames: `<length> <message>`.
        while let Some(space) = data.iter().position(|b| *b == b' ') {
            let Some(length) = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            else {
                return;
            };
            if data.len() < space + 1 + length {
                break;
            }
            let frame: Vec<u8> = data.drain(..space + 1 + length).collect();
            let message = String::from_utf8_lossy(&frame[space + 1..]).into_owned();
            assert!(message.starts_with("<14>1 "), "RFC 5424: {message}");
            received.lock().unwrap().extend(numbers_in(&message));
        }
    }
}

/// A syslog sink over TCP (or TLS).
async fn syslog_sink(
    listener: tokio::net::TcpListener,
    received: Received,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let (received, tls) = (received.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        syslog_frames(stream, received).await;
                    }
                }
                None => syslog_frames(stream, received).await,
            }
        });
    }
}

/// Waits until a sink holds every number from `from` to `to`.
async fn holds(what: &str, received: &Received, from: u64, to: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let missing: Vec<u64> = {
            let got = received.lock().unwrap();
            (from..=to).filter(|n| !got.contains(n)).take(10).collect()
        };
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} lacks lines {missing:?}… of {from}..={to} after 120 s (it has {})",
            received.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The newest number the machine printed that the store has.
async fn newest_number(client: &Client) -> Option<u64> {
    let page = client
        .logs(
            "shipped",
            &LogsRequest {
                limit: Some(50),
                ..LogsRequest::default()
            },
        )
        .await
        .ok()?;
    page.entries
        .iter()
        .rev()
        .filter(|e| e.stream == "stdout")
        .find_map(|e| numbers_in(&e.message).first().copied())
}

/// Lines are shipped to an HTTP sink, a Loki push endpoint and a syslog TCP server; the
/// HTTP sink goes down for a minute and, once back, still receives every line (retries,
/// no gap), and the sink list shows the failed attempts.
#[tokio::test]
async fn sinks_get_every_line_even_after_a_minute_down() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("shipped", None).await.unwrap();
    let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_address = http_listener.local_addr().unwrap();
    let loki_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let loki_address = loki_listener.local_addr().unwrap();
    let syslog_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let syslog_address = syslog_listener.local_addr().unwrap();
    let https_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https_address = https_listener.local_addr().unwrap();
    let tls_syslog_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_syslog_address = tls_syslog_listener.local_addr().unwrap();
    let (acceptor, ca) = tls_acceptor();
    let (http, loki, syslog) = (
        Received::default(),
        Received::default(),
        Received::default(),
    );
    let (https, tls_syslog) = (Received::default(), Received::default());
    let http_task = tokio::spawn(http_sink(http_listener, http.clone(), None));
    let loki_task = tokio::spawn(http_sink(loki_listener, loki.clone(), None));
    let syslog_task = tokio::spawn(syslog_sink(syslog_listener, syslog.clone(), None));
    let https_task = tokio::spawn(http_sink(
        https_listener,
        https.clone(),
        Some(acceptor.clone()),
    ));
    let tls_syslog_task = tokio::spawn(syslog_sink(
        tls_syslog_listener,
        tls_syslog.clone(),
        Some(acceptor),
    ));
    for (kind, url, ca) in [
        ("http", format!("http://{http_address}/ingest"), None),
        ("loki", format!("http://{loki_address}"), None),
        ("syslog", format!("tcp://{syslog_address}"), None),
        (
            "http",
            format!("https://{https_address}/ingest"),
            Some(ca.clone()),
        ),
        (
            "syslog",
            format!("tls://{tls_syslog_address}"),
            Some(ca.clone()),
        ),
    ] {
        client
            .create_log_sink(&aloft_types::api::CreateLogSinkRequest {
                kind: kind.to_owned(),
                url,
                headers: [("authorization".to_owned(), "Bearer sink-token".to_owned())].into(),
                app: Some("shipped".to_owned()),
                ca_pem: ca,
            })
            .await
            .unwrap();
    }
    let refused = client
        .create_log_sink(&aloft_types::api::CreateLogSinkRequest {
            kind: "http".to_owned(),
            url: "ftp://example".to_owned(),
            headers: Default::default(),
            app: Some("shipped".to_owned()),
            ca_pem: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(400));

    let request: aloft_types::api::MachineRequest = serde_json::from_value(serde_json::json!({
        "config": {
            "image": aloft_testkit::busybox_image(),
            "init": { "cmd": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo \"n $i\"; sleep 0.02; done"] }
        }
    }))
    .unwrap();
    let machine = client.create_machine("shipped", &request).await.unwrap();
    client
        .wait("shipped", &machine.id, MachineState::Started, 60)
        .await
        .unwrap();
    aloft_testkit::eventually("lines to be stored", Duration::from_secs(30), || async {
        newest_number(client).await.filter(|n| *n > 50)
    })
    .await;
    let before = newest_number(client).await.unwrap();
    holds("the http sink", &http, 1, before).await;
    holds("the loki sink", &loki, 1, before).await;
    holds("the syslog sink", &syslog, 1, before).await;
    holds("the https sink", &https, 1, before).await;
    holds("the syslog sink over TLS", &tls_syslog, 1, before).await;

    // The HTTP sink is down for a minute: connections are refused.
    http_task.abort();
    let _ = http_task.await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let listener = tokio::net::TcpListener::bind(http_address).await.unwrap();
    let http_task = tokio::spawn(http_sink(listener, http.clone(), None));
    let after = newest_number(client).await.unwrap();
    assert!(
        after > before + 1000,
        "the machine kept writing: {before} → {after}"
    );
    holds("the http sink, after its minute down", &http, 1, after).await;
    holds("the loki sink", &loki, 1, after).await;
    holds("the syslog sink", &syslog, 1, after).await;
    holds("the https sink", &https, 1, after).await;
    holds("the syslog sink over TLS", &tls_syslog, 1, after).await;
    let sinks = client.log_sinks().await.unwrap();
    let down = sinks
        .iter()
        .find(|s| s.url == format!("http://{http_address}/ingest"))
        .unwrap();
    assert!(down.failures > 0, "{sinks:?}");
    assert!(down.sent >= after, "{sinks:?}");

    client.remove_log_sink(&down.id).await.unwrap();
    assert_eq!(client.log_sinks().await.unwrap().len(), 4);
    http_task.abort();
    https_task.abort();
    tls_syslog_task.abort();
    loki_task.abort();
    syslog_task.abort();
    client
        .destroy_machine("shipped", &machine.id, true)
        .await
        .unwrap();
}
