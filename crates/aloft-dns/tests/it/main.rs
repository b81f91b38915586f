//! The DNS server over real sockets, asked with `dig`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use aloft_dns::{Listener, Resolver, Sockets};
use aloft_types::MachineState;
use aloft_types::catalog::{Catalog, CatalogApp, CatalogMachine};
use tokio_util::sync::CancellationToken;

fn machine(id: &str, app: &str, state: MachineState, ip: String) -> CatalogMachine {
    CatalogMachine {
        id: id.to_owned(),
        app: app.to_owned(),
        region: "ams".to_owned(),
        state,
        private_ip: Some(ip.parse().unwrap()),
        process_group: "app".to_owned(),
        metadata: BTreeMap::new(),
        skip_registration: false,
        cordoned: false,
        services: Vec::new(),
        checks: Vec::new(),
        autostart_disabled: false,
        primary_region: None,
        statics: Vec::new(),
    }
}

fn catalog(many: usize) -> Arc<Catalog> {
    let mut machines = vec![
        machine(
            "m1",
            "web",
            MachineState::Started,
            "fdaa:0:1:0:1:0:1:2".into(),
        ),
        machine(
            "m2",
            "web",
            MachineState::Stopped,
            "fdaa:0:1:0:1:0:2:2".into(),
        ),
    ];
    for n in 0..many {
        machines.push(machine(
            &format!("big{n:04}"),
            "big",
            MachineState::Started,
            format!("fdaa:0:1:0:2:0:{n:x}:2"),
        ));
    }
    Arc::new(Catalog {
        acme_challenges: Vec::new(),
        apps: vec![
            CatalogApp {
                name: "web".into(),
                org_id: "o".into(),
                network: 1,
                ipv4: Vec::new(),
                hostnames: Vec::new(),
            },
            CatalogApp {
                name: "big".into(),
                org_id: "o".into(),
                network: 1,
                ipv4: Vec::new(),
                hostnames: Vec::new(),
            },
        ],
        machines,
    })
}

struct Server {
    address: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn start(resolver: Arc<Resolver>, listener: Listener) -> Server {
    let sockets = Sockets::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let address = sockets.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(sockets.serve(resolver, listener, stop.clone()));
    Server { address, stop }
}

/// `dig` output: (status, answer lines).
async fn dig(server: SocketAddr, args: &[&str]) -> (String, Vec<String>) {
    let mut command = vec![
        format!("@{}", server.ip()),
        "-p".to_owned(),
        server.port().to_string(),
        "+tries=1".to_owned(),
        "+time=3".to_owned(),
    ];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    let output = tokio::task::spawn_blocking(move || Command::new("dig").args(&command).output())
        .await
        .unwrap()
        .expect("dig (bind9-dnsutils) runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("no answer")
        .to_owned();
    let answers = text
        .split(";; ANSWER SECTION:\n")
        .nth(1)
        .map(|section| {
            section
                .lines()
                .take_while(|line| !line.is_empty())
                .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        })
        .unwrap_or_default();
    (status, answers)
}

#[tokio::test]
async fn answers_names_types_and_absences_as_dns_requires() {
    let resolver = Resolver::new("ams", Vec::new());
    resolver.set_catalog(&catalog(0));
    let server = start(resolver, Listener::Operator);
    let at = server.address;

    let (status, answers) = dig(at, &["web.internal", "AAAA"]).await;
    assert_eq!(status, "NOERROR");
    assert_eq!(
        answers,
        vec!["web.internal. 5 IN AAAA fdaa:0:1:0:1:0:1:2"],
        "stopped machines are left out"
    );
    let (_, answers) = dig(at, &["WeB.InTeRnAl", "AAAA"]).await;
    assert_eq!(answers.len(), 1, "names are case-insensitive");
    let (status, answers) = dig(at, &["web.internal", "TXT"]).await;
    assert_eq!((status.as_str(), answers.len()), ("NOERROR", 0), "NODATA");
    let (status, _) = dig(at, &["nope.internal", "AAAA"]).await;
    assert_eq!(status, "NXDOMAIN");
    let (_, answers) = dig(at, &["vms.web.internal", "TXT"]).await;
    assert_eq!(answers, vec!["vms.web.internal. 5 IN TXT \"m1 ams\""]);
    let (_, answers) = dig(at, &["+tcp", "all.vms.web.internal", "TXT"]).await;
    assert_eq!(
        answers,
        vec!["all.vms.web.internal. 5 IN TXT \"m1 ams,m2 ams\""],
        "over TCP too"
    );
    let (_, answers) = dig(at, &["_apps.internal", "TXT"]).await;
    assert_eq!(answers, vec!["_apps.internal. 5 IN TXT \"big,web\""]);
}

#[tokio::test]
async fn the_private_listener_shows_nothing_to_strangers() {
    let resolver = Resolver::new("ams", Vec::new());
    resolver.set_catalog(&catalog(0));
    let server = start(resolver, Listener::Private);
    // 127.0.0.1 is in no private network.
    let (status, _) = dig(server.address, &["web.internal", "AAAA"]).await;
    assert_eq!(status, "NXDOMAIN");
    let (status, answers) = dig(server.address, &["_apps.internal", "TXT"]).await;
    assert_eq!(
        (status.as_str(), answers),
        ("NOERROR", vec!["_apps.internal. 5 IN TXT \"\"".to_owned()])
    );
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let resolver = Resolver::new("ams", Vec::new());
    resolver.set_catalog(&catalog(200));
    let server = start(resolver, Listener::Operator);
    let (_, answers) = dig(
        server.address,
        &["+ignore", "+noedns", "big.internal", "AAAA"],
    )
    .await;
    assert!(answers.is_empty(), "truncated: {answers:?}");
    let (_, answers) = dig(server.address, &["+tcp", "big.internal", "AAAA"]).await;
    assert_eq!(answers.len(), 200);
    // dig retries over TCP by itself when it sees TC.
    let (_, answers) = dig(server.address, &["big.internal", "AAAA"]).await;
    assert_eq!(answers.len(), 200);
}

/// An upstream that answers every query with the query itself, marked as a response.
async fn echo_upstream() -> (SocketAddr, CancellationToken) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        loop {
            let (length, peer) = tokio::select! {
                () = stopped.cancelled() => return,
                got = socket.recv_from(&mut buffer) => got.unwrap(),
            };
            let mut reply = buffer[..length].to_vec();
            reply[2] |= 0x80;
            socket.send_to(&reply, peer).await.unwrap();
        }
    });
    (address, stop)
}

#[tokio::test]
async fn other_names_are_forwarded_upstream_and_fail_cleanly_without_one() {
    let (upstream, stop_upstream) = echo_upstream().await;
    let resolver = Resolver::new("ams", vec![upstream]);
    let server = start(resolver, Listener::Private);
    let (status, _) = dig(server.address, &["example.com", "A"]).await;
    assert_eq!(status, "NOERROR", "the upstream's answer comes back");

    stop_upstream.cancel();
    let resolver = Resolver::new("ams", vec![upstream]);
    let server = start(resolver, Listener::Private);
    let (status, _) = dig(server.address, &["example.com", "A"]).await;
    assert_eq!(status, "SERVFAIL");
}

#[tokio::test]
async fn malformed_packets_never_stop_the_server() {
    let resolver = Resolver::new("ams", Vec::new());
    resolver.set_catalog(&catalog(0));
    let server = start(resolver, Listener::Operator);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x12],
        vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01],
        vec![0xff; 12],
        vec![
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c,
        ],
        (0..=255).collect(),
    ];
    for packet in &garbage {
        socket.send_to(packet, server.address).await.unwrap();
    }
    // A query whose question is unreadable gets FORMERR with its id.
    socket
        .send_to(
            &[0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 63],
            server.address,
        )
        .await
        .unwrap();
    let mut buffer = [0u8; 512];
    let (length, _) = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let got = socket.recv_from(&mut buffer).await.unwrap();
            if buffer[..2] == [0xab, 0xcd] {
                return got;
            }
        }
    })
    .await
    .expect("a FORMERR answer");
    assert_eq!((length, buffer[3] & 0x0f), (12, 1), "FORMERR");
    // A TCP client that sends half a frame and stalls holds no one up.
    let mut stalled = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, &[0x00, 0x40, 0x01])
        .await
        .unwrap();
    let (status, answers) = dig(server.address, &["web.internal", "AAAA"]).await;
    assert_eq!((status.as_str(), answers.len()), ("NOERROR", 1));
}

#[tokio::test]
async fn dig_asks_as_a_member_of_a_network() {
    let resolver = Resolver::new("ams", Vec::new());
    resolver.set_catalog(&catalog(0));
    let answer = resolver.dig("WEB.internal", "aaaa", 1).await.unwrap();
    assert_eq!(answer.status, "NOERROR");
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(
        (
            answer.answers[0].record_type.as_str(),
            answer.answers[0].data.as_str(),
            answer.answers[0].ttl
        ),
        ("AAAA", "fdaa:0:1:0:1:0:1:2", 5)
    );
    let elsewhere = resolver.dig("web.internal", "AAAA", 2).await.unwrap();
    assert_eq!(elsewhere.status, "NXDOMAIN");
    assert_eq!(elsewhere.authority[0].record_type, "SOA");
    let txt = resolver.dig("vms.web.internal.", "TXT", 1).await.unwrap();
    assert_eq!(txt.answers[0].data, "m1 ams");
    assert!(matches!(
        resolver.dig("web.internal", "BOGUS", 1).await,
        Err(aloft_dns::DigError::Type(_))
    ));
    assert_eq!(
        resolver.dig("example.com", "A", 1).await.unwrap().status,
        "SERVFAIL",
        "no upstream to forward to"
    );
}

/// A query for `name` (type A) with `id`, as a machine would send it.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        packet.push(u8::try_from(label.len()).unwrap());
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

/// Whether a TCP connection to `server` from `source` gets an answer to a query.
async fn tcp_answers(stream: &mut tokio::net::TcpStream, id: u16) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let packet = query(id, "web.internal");
    let mut framed = u16::try_from(packet.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&packet);
    if stream.write_all(&framed).await.is_err() {
        return false;
    }
    let mut length = [0u8; 2];
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_secs(3),
            stream.read_exact(&mut length)
        )
        .await,
        Ok(Ok(_))
    )
}

async fn connect_from(source: &str, server: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(server).await.unwrap()
}

#[tokio::test]
async fn one_source_gets_only_its_share_of_tcp_clients_and_forwarded_queries() {
    let resolver = Resolver::new("ams", Vec::new());
    resolver.set_catalog(&catalog(1));
    let server = start(resolver, Listener::Operator);
    // One source holds its share of TCP clients; each of them is served.
    let mut held = Vec::new();
    for n in 0..aloft_dns::MAX_TCP_CLIENTS_PER_SOURCE {
        let mut stream = connect_from("127.0.0.1", server.address).await;
        assert!(
            tcp_answers(&mut stream, u16::try_from(n).unwrap()).await,
            "client {n}"
        );
        held.push(stream);
    }
    // Its next connection is closed unanswered; another source is served meanwhile.
    let mut refused = connect_from("127.0.0.1", server.address).await;
    assert!(!tcp_answers(&mut refused, 900).await, "one past the share");
    let mut other = connect_from("127.0.0.2", server.address).await;
    assert!(tcp_answers(&mut other, 901).await, "another source");
    // Its slots come back when its clients leave.
    held.clear();
    let mut again = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let mut stream = connect_from("127.0.0.1", server.address).await;
            if tcp_answers(&mut stream, 902).await {
                return stream;
            }
        }
    })
    .await
    .expect("the source is served again once its clients left");
    assert!(tcp_answers(&mut again, 903).await);

    // Forwarding: an upstream that receives queries and never answers them.
    let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let resolver = Resolver::new("ams", vec![upstream.local_addr().unwrap()]);
    let server = start(resolver, Listener::Operator);
    let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let many = aloft_dns::MAX_FORWARDS_PER_SOURCE + 8;
    for n in 0..many {
        let id = u16::try_from(n).unwrap();
        sender
            .send_to(&query(id, &format!("q{n}.example.com")), server.address)
            .await
            .unwrap();
    }
    // The ones past the share are answered SERVFAIL at once, before the upstream times out.
    let mut buffer = vec![0u8; 512];
    for _ in 0..8 {
        let (length, _) = tokio::time::timeout(
            std::time::Duration::from_millis(1500),
            sender.recv_from(&mut buffer),
        )
        .await
        .expect("SERVFAIL at once")
        .unwrap();
        assert_eq!(buffer[3] & 0x0f, 2, "SERVFAIL: {:?}", &buffer[..length]);
    }
    // The upstream got exactly the share, and then another source's query.
    let mut received = std::collections::BTreeSet::new();
    let mut inbound = vec![0u8; 512];
    while let Ok(Ok((length, _))) = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        upstream.recv_from(&mut inbound),
    )
    .await
    {
        received.insert(inbound[..length].to_vec());
    }
    assert_eq!(received.len(), aloft_dns::MAX_FORWARDS_PER_SOURCE);
    let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    stranger
        .send_to(&query(7777, "other.example.com"), server.address)
        .await
        .unwrap();
    let (length, _) = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        upstream.recv_from(&mut inbound),
    )
    .await
    .expect("another source's query is forwarded")
    .unwrap();
    assert_eq!(
        &inbound[..2],
        &7777u16.to_be_bytes(),
        "{:?}",
        &inbound[..length]
    );
}
