//! Apps' own addresses end to end: dedicated IPv4 addresses from the pool, raw TCP, port
//! ranges and the PROXY protocol through the proxy, and two apps on one port.

use std::net::SocketAddr;
use std::time::Duration;

use aloft_proxy::tcp::parse_proxy_header;
use aloft_testkit::eventually;
use aloft_types::machine::{
    Handler, MachinePort, MachineService, Protocol, ProxyProtoOptions, ProxyProtoVersion,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::serve;
use crate::{Host, Server};

/// Says which machine answered, then echoes every byte.
const HELLO_ECHO: &str = "#!/bin/sh\necho \"machine=$FLY_MACHINE_ID\"\nexec cat\n";

fn port(number: u16, handlers: Vec<Handler>) -> MachinePort {
    MachinePort {
        port: Some(number),
        handlers,
        ..MachinePort::default()
    }
}

fn tcp_service() -> MachineService {
    MachineService {
        protocol: Protocol::Tcp,
        internal_port: 8080,
        autostop: None,
        autostart: None,
        min_machines_running: None,
        ports: vec![
            port(5000, vec![]),
            MachinePort {
                proxy_proto_options: Some(ProxyProtoOptions {
                    version: Some(ProxyProtoVersion::V2),
                }),
                ..port(5001, vec![Handler::ProxyProto])
            },
            MachinePort {
                start_port: Some(5010),
                end_port: Some(5012),
                ..MachinePort::default()
            },
        ],
        checks: vec![],
        concurrency: None,
        force_instance_key: None,
        force_instance_description: None,
    }
}

/// A pool of this test's own, so tests side by side never share an address.
pub(crate) fn pool() -> String {
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    format!("127.{}.{}.0/28", 100 + seed % 100, (seed / 100) % 250)
}

/// Connects, sends `payload`, and reads until it comes back (echoed) or the peer closes.
async fn exchange(address: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    stream.write_all(payload).await.ok()?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    while !received.ends_with(payload) {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..read]);
    }
    Some(received)
}

fn split_hello(received: &[u8]) -> (String, Vec<u8>) {
    let end = received
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(received.len());
    let hello = String::from_utf8_lossy(&received[..end]).into_owned();
    (hello, received.get(end + 1..).unwrap_or_default().to_vec())
}

#[tokio::test]
async fn apps_get_their_own_addresses_for_tcp_services() {
    let host = Host::with_proxy(&format!("ipv4_pool = \"{}\"", pool()));
    let server = Server::start(&host).await;
    let client = &server.client;
    for app in ["tcp-one", "tcp-two"] {
        client.create_app(app, None).await.unwrap();
    }
    let first_ip = client.allocate_ipv4("tcp-one", None).await.unwrap();
    let second_ip = client.allocate_ipv4("tcp-two", None).await.unwrap();
    assert_eq!(first_ip.kind, "v4");
    assert_ne!(first_ip.address, second_ip.address);
    assert_eq!(
        client.list_ips("tcp-one").await.unwrap(),
        vec![first_ip.clone()]
    );
    let first = serve(client, "tcp-one", HELLO_ECHO, tcp_service()).await;
    let second = serve(client, "tcp-two", HELLO_ECHO, tcp_service()).await;
    let at = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);

    // Raw TCP on port 5000 of each app's own address: the same port, two apps.
    for (ip, machine) in [
        (&first_ip.address, &first.id),
        (&second_ip.address, &second.id),
    ] {
        let received = eventually(
            "the TCP service to answer",
            Duration::from_secs(30),
            || async {
                exchange(at(ip, 5000), b"ping\n")
                    .await
                    .filter(|r| r.ends_with(b"ping\n"))
            },
        )
        .await;
        let (hello, echoed) = split_hello(&received);
        assert_eq!(hello, format!("machine={machine}"));
        assert_eq!(echoed, b"ping\n");
    }

    // Every port of a range.
    for port in 5010..=5012 {
        let received = exchange(at(&first_ip.address, port), b"range\n")
            .await
            .unwrap();
        assert!(received.ends_with(b"range\n"), "port {port}: {received:?}");
    }

    // PROXY protocol v2: the machine receives the header first, with the client's address.
    let mut stream = TcpStream::connect(at(&first_ip.address, 5001))
        .await
        .unwrap();
    let client_address = stream.local_addr().unwrap();
    stream.write_all(b"after-header").await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    while !received.ends_with(b"after-header") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert!(read > 0, "closed early: {received:?}");
        received.extend_from_slice(&buffer[..read]);
    }
    let (_, echoed) = split_hello(&received);
    let header = parse_proxy_header(&echoed).unwrap();
    assert_eq!(header.source, Some(client_address));
    assert_eq!(header.destination, Some(at(&first_ip.address, 5001)));
    assert_eq!(&echoed[header.length..], b"after-header");

    // Released: the address stops answering; the other app's does not.
    client
        .release_ip("tcp-one", &first_ip.address)
        .await
        .unwrap();
    assert!(client.list_ips("tcp-one").await.unwrap().is_empty());
    eventually(
        "the released address to close",
        Duration::from_secs(10),
        || async {
            TcpStream::connect(at(&first_ip.address, 5000))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert!(
        exchange(at(&second_ip.address, 5000), b"still\n")
            .await
            .is_some()
    );
    let error = client
        .release_ip("tcp-one", &first_ip.address)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not found"), "{error}");
}
