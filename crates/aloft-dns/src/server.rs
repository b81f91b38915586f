//! The resolver and its listeners: UDP and TCP, on `[fdaa::3]:53` inside the host's
//! network namespace and on an operators' address; other names go to the upstream
//! resolvers.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aloft_types::catalog::Catalog;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::answer::{Listener, Reply, Transport, respond, servfail};
use crate::zone::Zone;

/// How long an upstream resolver gets to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may stay idle between queries.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Forwarded queries in flight at most.
pub const MAX_FORWARDS: usize = 512;
/// TCP clients served at once; more wait in the kernel's accept queue.
pub const MAX_TCP_CLIENTS: usize = 1024;
/// TCP clients of one source address at once; its next connection is closed at once.
pub const MAX_TCP_CLIENTS_PER_SOURCE: usize = 16;
/// Forwarded queries in flight of one source address; beyond it, SERVFAIL at once.
pub const MAX_FORWARDS_PER_SOURCE: usize = 32;
/// The largest UDP datagram read.
const UDP_BUFFER: usize = 4096;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Namespace(#[from] aloft_net::netns::NetnsError),
}

/// Answers `.internal` names from the latest catalog and forwards the rest.
#[derive(Debug)]
pub struct Resolver {
    zone: RwLock<Arc<Zone>>,
    region: String,
    upstream: Vec<SocketAddr>,
    /// Forwarded queries in flight; beyond the limit new ones get SERVFAIL at once, so a
    /// slow upstream cannot pile up tasks and sockets.
    forwarding: Arc<tokio::sync::Semaphore>,
    /// Forwarded queries in flight by source: one machine cannot take the whole pool.
    forwarding_by_source: Arc<crate::limits::PerSource>,
    /// Queries by (type, how they were handled), and responses by rcode, for metrics.
    queries: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
    responses: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

/// The question type of a query (`AAAA`, `TXT`, ... or its number), if it has one.
fn question_type(query: &[u8]) -> Option<String> {
    let mut at = 12;
    loop {
        let length = usize::from(*query.get(at)?);
        if length == 0 {
            break;
        }
        if length & 0xC0 != 0 {
            return None;
        }
        at += 1 + length;
    }
    let code = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    Some(
        match code {
            1 => "A",
            2 => "NS",
            5 => "CNAME",
            6 => "SOA",
            12 => "PTR",
            15 => "MX",
            16 => "TXT",
            28 => "AAAA",
            33 => "SRV",
            255 => "ANY",
            other => return Some(other.to_string()),
        }
        .to_owned(),
    )
}

/// The response code of a response, by name.
fn response_code(response: &[u8]) -> &'static str {
    match response.get(3).map(|b| b & 0x0F) {
        Some(0) => "NOERROR",
        Some(1) => "FORMERR",
        Some(2) => "SERVFAIL",
        Some(3) => "NXDOMAIN",
        Some(4) => "NOTIMP",
        Some(5) => "REFUSED",
        _ => "OTHER",
    }
}

impl Resolver {
    /// The DNS server's metrics in Prometheus' text format: `aloft_dns_queries_total{type,
    /// handled}` (`answered`, `forwarded`, `dropped`) and `aloft_dns_responses_total{rcode}`.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from(
            "# HELP aloft_dns_queries_total DNS queries by type and how they were handled.\n# TYPE aloft_dns_queries_total counter\n",
        );
        if let Ok(queries) = self.queries.lock() {
            for ((kind, handled), count) in queries.iter() {
                let _ = writeln!(
                    out,
                    "aloft_dns_queries_total{{type=\"{kind}\",handled=\"{handled}\"}} {count}"
                );
            }
        }
        out.push_str("# HELP aloft_dns_responses_total DNS responses by response code.\n# TYPE aloft_dns_responses_total counter\n");
        if let Ok(responses) = self.responses.lock() {
            for (rcode, count) in responses.iter() {
                let _ = writeln!(
                    out,
                    "aloft_dns_responses_total{{rcode=\"{rcode}\"}} {count}"
                );
            }
        }
        out
    }

    fn count(&self, query: &[u8], handled: &'static str, response: Option<&[u8]>) {
        let kind = question_type(query).unwrap_or_else(|| "none".to_owned());
        if let Ok(mut queries) = self.queries.lock() {
            *queries.entry((kind, handled)).or_default() += 1;
        }
        if let Some(response) = response
            && let Ok(mut responses) = self.responses.lock()
        {
            *responses
                .entry(response_code(response).to_owned())
                .or_default() += 1;
        }
    }

    /// A resolver for a host in `region` that forwards other names to `upstream`.
    pub fn new(region: impl Into<String>, upstream: Vec<SocketAddr>) -> Arc<Resolver> {
        Arc::new(Resolver {
            zone: RwLock::new(Arc::new(Zone::default())),
            region: region.into(),
            upstream,
            forwarding: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS)),
            forwarding_by_source: crate::limits::PerSource::new(MAX_FORWARDS_PER_SOURCE),
            queries: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            responses: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// Replaces the names with those of `catalog`.
    pub fn set_catalog(&self, catalog: &Arc<Catalog>) {
        let zone = Arc::new(Zone::new(catalog));
        if let Ok(mut current) = self.zone.write() {
            *current = zone;
        }
    }

    /// Keeps the names current with `catalog` until it closes or `stop` is cancelled.
    pub fn follow(
        self: &Arc<Self>,
        mut catalog: watch::Receiver<Arc<Catalog>>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let resolver = self.clone();
        tokio::spawn(async move {
            loop {
                let latest = catalog.borrow_and_update().clone();
                resolver.set_catalog(&latest);
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = catalog.changed() => if changed.is_err() { return },
                }
            }
        })
    }

    fn zone(&self) -> Arc<Zone> {
        self.zone
            .read()
            .map(|zone| zone.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// The response to one query (forwarded when it is not ours), or `None` to stay silent.
    pub async fn handle(
        &self,
        query: &[u8],
        source: IpAddr,
        listener: Listener,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let reply = respond(
            &self.zone(),
            query,
            source,
            listener,
            transport,
            &self.region,
        );
        let (handled, answer) = match reply {
            Reply::Send(bytes) => ("answered", Some(bytes)),
            Reply::Drop => ("dropped", None),
            Reply::Forward => (
                "forwarded",
                match self.forward(query, source, transport).await {
                    Some(bytes) => Some(bytes),
                    None => match servfail(query) {
                        Reply::Send(bytes) => Some(bytes),
                        _ => None,
                    },
                },
            ),
        };
        self.count(query, handled, answer.as_deref());
        answer
    }

    /// Asks each upstream resolver in turn; the first answer with the query's id wins.
    async fn forward(&self, query: &[u8], source: IpAddr, transport: Transport) -> Option<Vec<u8>> {
        let id = query.get(..2)?;
        let Some(_slot) = self.forwarding_by_source.take(source) else {
            tracing::debug!(%source, "this source has too many forwarded queries in flight; answering SERVFAIL");
            return None;
        };
        let Ok(_permit) = self.forwarding.clone().try_acquire_owned() else {
            tracing::debug!("too many forwarded queries in flight; answering SERVFAIL");
            return None;
        };
        for upstream in &self.upstream {
            let answer = match transport {
                Transport::Udp => forward_udp(query, *upstream).await,
                Transport::Tcp => forward_tcp(query, *upstream).await,
            };
            match answer {
                Ok(bytes) if bytes.get(..2) == Some(id) => return Some(bytes),
                Ok(_) => tracing::debug!(%upstream, "upstream answered another query id"),
                Err(error) => tracing::debug!(%upstream, error = %error, "upstream did not answer"),
            }
        }
        None
    }
}

async fn forward_udp(query: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; UDP_BUFFER];
    let read = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buffer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    buffer.truncate(read);
    Ok(buffer)
}

async fn forward_tcp(query: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let mut stream = TcpStream::connect(upstream).await?;
        let length = u16::try_from(query.len())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        stream.write_all(&length.to_be_bytes()).await?;
        stream.write_all(query).await?;
        read_frame(&mut stream).await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await?;
    let mut frame = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

/// How often the UDP loop looks whether it should stop.
const UDP_STOP_CHECK: Duration = Duration::from_millis(250);

/// A UDP and a TCP socket bound to one address.
#[derive(Debug)]
pub struct Sockets {
    /// Served by a thread of its own with blocking calls: one system call per datagram
    /// each way and no wakeups between threads, which halves the cost of a query.
    pub udp: std::net::UdpSocket,
    pub tcp: TcpListener,
}

impl Sockets {
    /// Binds `address` (UDP and TCP; port 0 picks one port free for both) inside the
    /// network namespace at `namespace` (the caller's own when `None`).
    pub fn bind(address: SocketAddr, namespace: Option<&Path>) -> Result<Sockets, DnsError> {
        let bound = aloft_net::netns::run_in(namespace, move || bind_pair(address))?;
        let (udp, tcp) = bound.map_err(|source| DnsError::Bind { address, source })?;
        udp.set_nonblocking(false)
            .and_then(|()| udp.set_read_timeout(Some(UDP_STOP_CHECK)))
            .map_err(|source| DnsError::Bind { address, source })?;
        let tcp =
            TcpListener::from_std(tcp).map_err(|source| DnsError::Bind { address, source })?;
        Ok(Sockets { udp, tcp })
    }

    /// Where the sockets listen.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Serves queries until `stop` is cancelled.
    pub async fn serve(self, resolver: Arc<Resolver>, listener: Listener, stop: CancellationToken) {
        let runtime = tokio::runtime::Handle::current();
        // The UDP thread also stops when this future is dropped (its task aborted).
        let (udp_resolver, udp_stop) = (resolver.clone(), stop.child_token());
        let _udp_guard = udp_stop.clone().drop_guard();
        let udp = tokio::task::spawn_blocking(move || {
            serve_udp(&self.udp, &udp_resolver, listener, &udp_stop, &runtime);
        });
        serve_tcp(self.tcp, resolver, listener, stop).await;
        let _ = udp.await;
    }
}

fn bind_pair(address: SocketAddr) -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    // With port 0 the two sockets must agree on one port: take the UDP one's.
    for _ in 0..16 {
        let udp = std::net::UdpSocket::bind(address)?;
        let bound = udp.local_addr()?;
        match std::net::TcpListener::bind(bound) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                return Ok((udp, tcp));
            }
            Err(error) if address.port() == 0 && error.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(error) => return Err(error),
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::AddrInUse))
}

fn serve_udp(
    socket: &std::net::UdpSocket,
    resolver: &Arc<Resolver>,
    listener: Listener,
    stop: &CancellationToken,
    runtime: &tokio::runtime::Handle,
) {
    let mut buffer = vec![0u8; UDP_BUFFER];
    while !stop.is_cancelled() {
        let (length, peer) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(error) => {
                tracing::debug!(error = %error, "receiving a DNS datagram failed");
                continue;
            }
        };
        let query = &buffer[..length];
        // Our own names are answered here; forwarding waits on the network, so it gets a
        // task of its own.
        match respond(
            &resolver.zone(),
            query,
            peer.ip(),
            listener,
            Transport::Udp,
            &resolver.region,
        ) {
            Reply::Send(bytes) => {
                let _ = socket.send_to(&bytes, peer);
            }
            Reply::Drop => {}
            Reply::Forward => {
                let Ok(reply_socket) = socket.try_clone() else {
                    continue;
                };
                let (resolver, query) = (resolver.clone(), query.to_vec());
                runtime.spawn(async move {
                    if let Some(bytes) = resolver
                        .handle(&query, peer.ip(), listener, Transport::Udp)
                        .await
                    {
                        let _ = reply_socket.send_to(&bytes, peer);
                    }
                });
            }
        }
    }
}

async fn serve_tcp(
    socket: TcpListener,
    resolver: Arc<Resolver>,
    listener: Listener,
    stop: CancellationToken,
) {
    let clients = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CLIENTS));
    let by_source = crate::limits::PerSource::new(MAX_TCP_CLIENTS_PER_SOURCE);
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = clients.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = socket.accept() => accepted,
        };
        let Ok((mut stream, peer)) = accepted else {
            continue;
        };
        // One source holds at most its share of the slots: the next is closed at once.
        let Some(slot) = by_source.take(peer.ip()) else {
            tracing::debug!(%peer, "too many DNS-over-TCP clients from this source: closed");
            continue;
        };
        let (resolver, stop) = (resolver.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            loop {
                let frame = tokio::select! {
                    () = stop.cancelled() => return,
                    frame = tokio::time::timeout(TCP_IDLE_TIMEOUT, read_frame(&mut stream)) => frame,
                };
                let Ok(Ok(query)) = frame else { return };
                let Some(answer) = resolver
                    .handle(&query, peer.ip(), listener, Transport::Tcp)
                    .await
                else {
                    return;
                };
                let Ok(length) = u16::try_from(answer.len()) else {
                    return;
                };
                if stream.write_all(&length.to_be_bytes()).await.is_err()
                    || stream.write_all(&answer).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

/// The name servers of a `resolv.conf` text, with port 53.
pub fn upstream_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let address: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(address, 53))
        })
        .filter(|address| address.ip() != IpAddr::V6(aloft_net::DNS_ADDRESS))
        .collect()
}

pub use aloft_types::dig::{DigAnswer, DigError, DigRecord};

impl Resolver {
    /// Asks for `name` as a machine of `network` would, through the whole query path
    /// (forwarding included), and returns the answer in presentation form.
    pub async fn dig(
        &self,
        name: &str,
        record_type: &str,
        network: u32,
    ) -> Result<DigAnswer, DigError> {
        use hickory_proto::op::{Message, Query};
        use hickory_proto::rr::{Name, RecordType};
        use std::str::FromStr as _;

        let owner = Name::from_str_relaxed(name).map_err(|_| DigError::Name {
            name: name.to_owned(),
        })?;
        let owner = if owner.is_fqdn() {
            owner
        } else {
            Name::from_ascii(format!("{}.", owner.to_ascii())).map_err(|_| DigError::Name {
                name: name.to_owned(),
            })?
        };
        let kind = RecordType::from_str(&record_type.to_ascii_uppercase())
            .map_err(|_| DigError::Type(record_type.to_owned()))?;
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(owner, kind));
        let bytes = query.to_vec().map_err(|_| DigError::Name {
            name: name.to_owned(),
        })?;
        let source = crate::answer::network_source(network);
        let answer = self
            .handle(&bytes, source, Listener::Private, Transport::Tcp)
            .await
            .ok_or(DigError::NoAnswer)?;
        let response = Message::from_vec(&answer).map_err(|_| DigError::NoAnswer)?;
        let present = |records: &[hickory_proto::rr::Record]| {
            records
                .iter()
                .map(|record| DigRecord {
                    name: record.name.to_ascii(),
                    record_type: record.record_type().to_string(),
                    ttl: record.ttl,
                    data: record.data.to_string(),
                })
                .collect()
        };
        Ok(DigAnswer {
            status: status_name(response.metadata.response_code),
            answers: present(&response.answers),
            authority: present(&response.authorities),
        })
    }
}

/// The mnemonic dig prints for a response code.
fn status_name(code: hickory_proto::op::ResponseCode) -> String {
    use hickory_proto::op::ResponseCode;
    match code {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

impl aloft_agent_api::Dig for Resolver {
    fn dig<'a>(
        &'a self,
        name: &'a str,
        record_type: &'a str,
        network: u32,
    ) -> aloft_agent_api::BoxFuture<'a, Result<DigAnswer, DigError>> {
        Box::pin(Resolver::dig(self, name, record_type, network))
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    #[test]
    fn queries_are_counted_by_type_and_responses_by_code() {
        // A query for `a.internal` AAAA: header, two labels, type 28, class IN.
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(b"\x01a\x08internal\x00\x00\x1c\x00\x01");
        assert_eq!(question_type(&query).as_deref(), Some("AAAA"));
        assert_eq!(question_type(&query[..12]), None);
        let mut response = query.clone();
        response[3] = 0x83;
        assert_eq!(response_code(&response), "NXDOMAIN");
        let resolver = Resolver::new("local", Vec::new());
        resolver.count(&query, "answered", Some(&response));
        let text = resolver.render_metrics();
        assert!(text.contains("aloft_dns_queries_total{type=\"AAAA\",handled=\"answered\"} 1"));
        assert!(text.contains("aloft_dns_responses_total{rcode=\"NXDOMAIN\"} 1"));
    }
}
