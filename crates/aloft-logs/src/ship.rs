//! Shipping: each sink gets every stored line of its apps, at least once and in order.
//!
//! A shipper reads the store after its cursor, sends a batch, and only then moves the
//! cursor (kept in `<dir>/<sink>.cursor`, written after each delivered batch). A sink that
//! fails is retried with exponential backoff (100 ms to 10 s) with the same batch, so
//! nothing is skipped; a line can arrive twice when the process dies between a delivery
//! and the cursor write, and carries a unique `id` (`<host>-<seq>`) to drop such repeats.
//! The backlog is bounded: a sink more than [`MAX_BACKLOG`] lines behind skips the oldest
//! ones (counted in `dropped`). Kinds: `http` (NDJSON POST), `loki` (the push API),
//! `syslog` (RFC 5424 over TCP, octet-counted frames). `https://` and syslog's `tls://`
//! check the collector's certificate against Mozilla's roots and the sink's own CA.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aloft_types::api::LogEntryResponse;
use aloft_types::time::rfc3339_nanos;
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

use crate::reach::{ConnectError, ReachError, SinkReach};
use crate::{Entry, LogStore, Query, Stream};

/// Lines a sink may fall behind before the oldest are skipped.
pub const MAX_BACKLOG: u64 = 5_000_000;
/// Lines per delivery, at most.
const BATCH: usize = 1000;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(10);

pub use aloft_types::SinkKind;

/// Apps by name, each with the earliest time (Unix ns) of its own lines.
pub type Apps = BTreeMap<String, i64>;

/// The lines of `entries` a sink of `apps` gets: its apps' own.
fn batch_of(entries: Vec<Entry>, apps: &Apps) -> Vec<Entry> {
    entries
        .into_iter()
        .filter(|e| apps.get(&e.app).is_some_and(|from| e.timestamp_ns >= *from))
        .collect()
}

/// One sink, as the shipper runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSpec {
    pub id: String,
    pub kind: SinkKind,
    /// `http(s)://...` for `http` and `loki` (the push path is added for Loki when the URL
    /// has none), `tcp://host:port` for `syslog`.
    pub url: String,
    pub headers: BTreeMap<String, String>,
    /// The apps whose lines it gets, each with the earliest time (Unix ns) of the lines
    /// that are its own: lines are kept by app name, and a deleted app's name is free
    /// again, so lines from before an app of that name was last deleted belong to
    /// another app (0 when none was).
    pub apps: Apps,
    /// This host's id (line ids are `<host>-<seq>`).
    pub host: String,
    /// When the sink was added (Unix ns): it gets the lines stored from then on.
    pub since_ns: i64,
    /// A certificate authority (PEM) trusted besides the public ones, for a collector
    /// with a private certificate.
    pub ca_pem: Option<String>,
    /// Where it may connect (global addresses and the operator's networks).
    pub reach: SinkReach,
}

/// Why a delivery to a sink failed (the shipper logs it and retries with backoff).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ShipError {
    #[error("the sink's CA: {0}")]
    Ca(String),
    #[error("setting up TLS: {0}")]
    TlsSetup(String),
    #[error("{address}: {reason}")]
    Address { address: String, reason: String },
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("TLS with {address}: {source}")]
    Handshake {
        address: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("the sink answered {0}")]
    Status(u16),
    #[error("no connection")]
    NotConnected,
    #[error(transparent)]
    Reach(ReachError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("writing to {address}: {source}")]
    Write {
        address: String,
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// The TLS settings of a sink: Mozilla's roots plus its own CA.
fn tls_config(ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, ShipError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_pem {
        for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let certificate = certificate.map_err(|e| ShipError::Ca(e.to_string()))?;
            roots
                .add(certificate)
                .map_err(|e| ShipError::Ca(e.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ShipError::TlsSetup(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A connection a delivery speaks HTTP over (TCP, or TLS on it).
trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Connection for T {}

/// How long one delivery (connect, send, answer) may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A TCP connection to `host:port` (an address the sink may reach).
async fn connect(
    host: &str,
    port: u16,
    reach: &SinkReach,
) -> Result<tokio::net::TcpStream, ShipError> {
    reach
        .connect(host, port)
        .await
        .map_err(|error| match error {
            ConnectError::Reach(error) => ShipError::Reach(error),
            ConnectError::Io(source) => ShipError::Connect {
                address: format!("{host}:{port}"),
                source: Arc::new(source),
            },
        })
}

/// A TLS connection to `host:port`, the certificate checked against `config`'s roots.
async fn tls_connect(
    host: &str,
    port: u16,
    config: &Arc<rustls::ClientConfig>,
    reach: &SinkReach,
) -> Result<TlsStream, ShipError> {
    let address = format!("{host}:{port}");
    let tcp = connect(host, port, reach).await?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
        ShipError::Address {
            address: address.clone(),
            reason: e.to_string(),
        }
    })?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|source| ShipError::Handshake {
            address,
            source: Arc::new(source),
        })
}

/// `POST` over HTTP, or HTTPS with `tls` (one connection per delivery).
async fn post(
    url: &str,
    body: Vec<u8>,
    content_type: &str,
    headers: &BTreeMap<String, String>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    reach: &SinkReach,
) -> Result<(), ShipError> {
    use http_body_util::BodyExt as _;
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ShipError::Address {
            address: url.to_owned(),
            reason: e.to_string(),
        })?;
    let host = uri.host().ok_or_else(|| ShipError::Address {
        address: url.to_owned(),
        reason: "no host".to_owned(),
    })?;
    let stream: Box<dyn Connection> = match tls {
        Some(config) => {
            let port = uri.port_u16().unwrap_or(443);
            Box::new(tls_connect(host, port, config, reach).await?)
        }
        None => Box::new(connect(host, uri.port_u16().unwrap_or(80), reach).await?),
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| http_error(url, &e))?;
    let driven = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http::Request::post(path)
        .header(
            http::header::HOST,
            uri.authority().map_or(host, |a| a.as_str()),
        )
        .header(http::header::CONTENT_TYPE, content_type);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| http_error(url, &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http_error(url, &e))?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    driven.abort();
    if status.is_success() {
        Ok(())
    } else {
        Err(ShipError::Status(status.as_u16()))
    }
}

fn http_error(url: &str, error: &dyn std::error::Error) -> ShipError {
    ShipError::Http {
        url: url.to_owned(),
        reason: error.to_string(),
    }
}

/// A syslog connection, plain or TLS.
enum SyslogStream {
    Plain(tokio::net::TcpStream),
    Tls(Box<TlsStream>),
}

impl SyslogStream {
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            SyslogStream::Plain(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            SyslogStream::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }
}

/// A shipper's counters (for metrics and `aloft logs ship list`).
#[derive(Debug, Default)]
pub struct ShipperStats {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub failures: AtomicU64,
    /// The last line handed to the sink.
    pub cursor: AtomicU64,
}

fn shipped(host: &str, entry: &Entry) -> LogEntryResponse {
    LogEntryResponse {
        id: format!("{host}-{}", entry.seq),
        timestamp: rfc3339_nanos(entry.timestamp_ns),
        timestamp_ns: entry.timestamp_ns,
        app: entry.app.clone(),
        machine: entry.machine.clone(),
        region: entry.region.clone(),
        instance: entry.instance.clone(),
        stream: entry.stream.as_str().to_owned(),
        message: entry.text.clone(),
    }
}

/// The body of an NDJSON delivery.
fn ndjson(host: &str, entries: &[Entry]) -> Vec<u8> {
    let mut body = Vec::new();
    for entry in entries {
        let _ = serde_json::to_writer(&mut body, &shipped(host, entry));
        body.push(b'\n');
    }
    body
}

/// The body of a Loki push: one stream per app, machine, region and stream.
fn loki(host: &str, entries: &[Entry]) -> Vec<u8> {
    let mut streams: BTreeMap<(&str, &str, &str, &str), Vec<[String; 2]>> = BTreeMap::new();
    for entry in entries {
        streams
            .entry((
                &entry.app,
                &entry.machine,
                &entry.region,
                entry.stream.as_str(),
            ))
            .or_default()
            .push([entry.timestamp_ns.to_string(), entry.text.clone()]);
    }
    let streams: Vec<serde_json::Value> = streams
        .into_iter()
        .map(|((app, machine, region, stream), values)| {
            serde_json::json!({
                "stream": { "app": app, "machine": machine, "region": region, "stream": stream, "host": host },
                "values": values,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "streams": streams })).unwrap_or_default()
}

/// One RFC 5424 message, octet-counted (RFC 6587).
fn syslog_frame(host: &str, entry: &Entry) -> Vec<u8> {
    // Facility user (1); severity error (3) for stderr, else informational (6).
    let priority = 8 + if entry.stream == Stream::Stderr { 3 } else { 6 };
    let sd_escape = |text: &str| {
        text.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace(']', "\\]")
    };
    let name = |text: &str| {
        let clean: String = text
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(48)
            .collect();
        if clean.is_empty() {
            "-".to_owned()
        } else {
            clean
        }
    };
    let message = format!(
        "<{priority}>1 {} {} {} {} {} [aloft@32473 id=\"{host}-{}\" region=\"{}\" instance=\"{}\"] {}",
        rfc3339_nanos(entry.timestamp_ns),
        name(host),
        name(&entry.app),
        name(&entry.machine),
        entry.stream.as_str(),
        entry.seq,
        sd_escape(&entry.region),
        sd_escape(&entry.instance),
        entry.text
    );
    let mut frame = format!("{} ", message.len()).into_bytes();
    frame.extend_from_slice(message.as_bytes());
    frame
}

/// Sends batches to one sink.
struct Sender {
    spec: SinkSpec,
    tls: Result<Arc<rustls::ClientConfig>, ShipError>,
    syslog: Option<SyslogStream>,
}

impl Sender {
    async fn send(&mut self, entries: &[Entry]) -> Result<(), ShipError> {
        match self.spec.kind {
            SinkKind::Http | SinkKind::Loki => {
                let (url, body, content_type) = if self.spec.kind == SinkKind::Loki {
                    let url = if self.spec.url.contains("/loki/api/") {
                        self.spec.url.clone()
                    } else {
                        format!("{}/loki/api/v1/push", self.spec.url.trim_end_matches('/'))
                    };
                    (url, loki(&self.spec.host, entries), "application/json")
                } else {
                    (
                        self.spec.url.clone(),
                        ndjson(&self.spec.host, entries),
                        "application/x-ndjson",
                    )
                };
                let config = if url.starts_with("https://") {
                    Some(self.tls.clone()?)
                } else {
                    None
                };
                post(
                    &url,
                    body,
                    content_type,
                    &self.spec.headers,
                    config.as_ref(),
                    &self.spec.reach,
                )
                .await
            }
            SinkKind::Syslog => {
                let (secure, address) = match self.spec.url.strip_prefix("tls://") {
                    Some(address) => (true, address.to_owned()),
                    None => (
                        false,
                        self.spec
                            .url
                            .strip_prefix("tcp://")
                            .unwrap_or(&self.spec.url)
                            .to_owned(),
                    ),
                };
                if self.syslog.is_none() {
                    let (host, port) = address
                        .rsplit_once(':')
                        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                        .ok_or_else(|| ShipError::Address {
                            address: address.clone(),
                            reason: "expected host:port".to_owned(),
                        })?;
                    let stream = if secure {
                        let config = self.tls.clone()?;
                        SyslogStream::Tls(Box::new(
                            tls_connect(&host, port, &config, &self.spec.reach).await?,
                        ))
                    } else {
                        SyslogStream::Plain(connect(&host, port, &self.spec.reach).await?)
                    };
                    self.syslog = Some(stream);
                }
                let mut frames = Vec::new();
                for entry in entries {
                    frames.extend(syslog_frame(&self.spec.host, entry));
                }
                let written = match self.syslog.as_mut() {
                    Some(stream) => stream.write(&frames).await,
                    None => return Err(ShipError::NotConnected),
                };
                written.map_err(|source| {
                    self.syslog = None;
                    ShipError::Write {
                        address,
                        source: Arc::new(source),
                    }
                })
            }
        }
    }
}

fn read_cursor(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_cursor(path: &std::path::Path, cursor: u64) {
    let temporary = path.with_extension("cursor.tmp");
    let written = std::fs::write(&temporary, cursor.to_string())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "saving a sink's cursor failed (lines may be sent again)");
    }
}

/// Ships to `spec` until `stop`; `apps` may change while it runs (an organization's new
/// apps). Cursors live in `dir`.
pub async fn ship(
    store: LogStore,
    spec: SinkSpec,
    apps: tokio::sync::watch::Receiver<Apps>,
    dir: PathBuf,
    stats: Arc<ShipperStats>,
    stop: CancellationToken,
) {
    if let Err(error) = std::fs::create_dir_all(&dir) {
        tracing::error!(dir = %dir.display(), %error, "cannot keep sink cursors; not shipping");
        return;
    }
    let cursor_path = dir.join(format!("{}.cursor", spec.id));
    // A new sink gets the lines stored since it was added.
    let mut cursor = match read_cursor(&cursor_path) {
        Some(cursor) => cursor,
        None => {
            let first = store
                .query(&Query {
                    since_ns: Some(spec.since_ns),
                    limit: 1,
                    ..Query::default()
                })
                .ok()
                .and_then(|found| found.entries.first().map(|e| e.seq.saturating_sub(1)));
            let start = first.unwrap_or_else(|| store.durable_seq());
            write_cursor(&cursor_path, start);
            start
        }
    };
    stats.cursor.store(cursor, Ordering::Relaxed);
    let mut sender = Sender {
        tls: tls_config(spec.ca_pem.as_deref()),
        spec,
        syslog: None,
    };
    let mut durable = store.subscribe();
    tracing::info!(sink = %sender.spec.id, cursor, "shipping logs");
    loop {
        if stop.is_cancelled() {
            return;
        }
        let behind = store.durable_seq().saturating_sub(cursor);
        if behind > MAX_BACKLOG {
            let skipped = behind - MAX_BACKLOG;
            stats.dropped.fetch_add(skipped, Ordering::Relaxed);
            cursor += skipped;
            tracing::warn!(sink = %sender.spec.id, skipped, "a sink fell too far behind: its oldest lines are skipped");
        }
        let query = Query {
            after_seq: Some(cursor),
            limit: BATCH,
            ..Query::default()
        };
        let reader = store.clone();
        let found = match tokio::task::spawn_blocking(move || reader.query(&query)).await {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading lines to ship failed");
                tokio::time::sleep(LAST_RETRY).await;
                continue;
            }
            Err(_) => return,
        };
        let wanted = apps.borrow().clone();
        let batch = batch_of(found.entries, &wanted);
        if !batch.is_empty() {
            let mut wait = FIRST_RETRY;
            loop {
                let sent = tokio::time::timeout(SEND_TIMEOUT, sender.send(&batch))
                    .await
                    .unwrap_or_else(|_| {
                        // A syslog stream stopped mid-write is not reused.
                        sender.syslog = None;
                        Err(ShipError::Timeout(SEND_TIMEOUT))
                    });
                match sent {
                    Ok(()) => break,
                    Err(error) => {
                        stats.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(sink = %sender.spec.id, %error, retry_in = ?wait, "shipping logs failed");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stop.cancelled() => return,
                        }
                        wait = (wait * 2).min(LAST_RETRY);
                    }
                }
            }
            stats.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        let moved = found.next_after > cursor;
        if moved {
            cursor = found.next_after;
            stats.cursor.store(cursor, Ordering::Relaxed);
            write_cursor(&cursor_path, cursor);
        }
        if !moved || batch.is_empty() && store.durable_seq() <= cursor {
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> Entry {
        Entry {
            seq: 42,
            timestamp_ns: 1_795_308_127_000_000_001,
            stream: Stream::Stderr,
            app: "web".to_owned(),
            machine: "148e21ea7d2e89".to_owned(),
            region: "ams".to_owned(),
            instance: "01".to_owned(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn a_sink_gets_only_its_apps_own_lines() {
        let at = |app: &str, timestamp_ns: i64| Entry {
            app: app.to_owned(),
            timestamp_ns,
            ..entry(app)
        };
        let apps = Apps::from([("web".to_owned(), 0), ("reused".to_owned(), 1_000)]);
        let batch = batch_of(
            vec![
                at("web", 5),
                at("other", 5),
                // A line of the app that had the name before it was freed at 1,000.
                at("reused", 999),
                at("reused", 1_000),
            ],
            &apps,
        );
        let kept: Vec<(&str, i64)> = batch
            .iter()
            .map(|e| (e.app.as_str(), e.timestamp_ns))
            .collect();
        assert_eq!(kept, [("web", 5), ("reused", 1_000)]);
    }

    #[test]
    fn syslog_frames_are_rfc5424_and_octet_counted() {
        let frame = String::from_utf8(syslog_frame("h1", &entry("boom"))).unwrap();
        let (length, message) = frame.split_once(' ').unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), message.len());
        assert_eq!(
            message,
            "<11>1 2026-11-22T00:42:07.000000001Z h1 web 148e21ea7d2e89 stderr [aloft@32473 id=\"h1-42\" region=\"ams\" instance=\"01\"] boom"
        );
    }

    #[test]
    fn loki_pushes_group_lines_by_labels() {
        let body: serde_json::Value =
            serde_json::from_slice(&loki("h1", &[entry("a"), entry("b")])).unwrap();
        assert_eq!(body["streams"].as_array().unwrap().len(), 1);
        assert_eq!(body["streams"][0]["stream"]["app"], "web");
        assert_eq!(
            body["streams"][0]["values"][1],
            serde_json::json!(["1795308127000000001", "b"])
        );
        let lines = String::from_utf8(ndjson("h1", &[entry("a")])).unwrap();
        assert!(lines.ends_with('\n') && lines.contains("\"id\":\"h1-42\""));
    }
}
