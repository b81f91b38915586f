//! UDP services end to end: packets to an app's own address reach a machine that binds
//! `fly-global-services`, each client's flow stays on one machine, answers come back
//! from the app's address, and a UDP port is never served as TCP.

use std::net::SocketAddr;
use std::time::Duration;

use aloft_testkit::eventually;
use aloft_types::machine::{MachineConfig, MachinePort, MachineService, Protocol};
use tokio::net::{TcpStream, UdpSocket};

use crate::proxy::start;
use crate::{Host, Server};

fn service(protocol: Protocol, public: u16, internal: u16) -> MachineService {
    MachineService {
        protocol,
        internal_port: internal,
        autostop: None,
        autostart: None,
        min_machines_running: None,
        ports: vec![MachinePort {
            port: Some(public),
            ..MachinePort::default()
        }],
        checks: vec![],
        concurrency: None,
        force_instance_key: None,
        force_instance_description: None,
    }
}

/// Sends `payload` from `socket` to `to`; the answer and who sent it, or `None` when
/// none comes within a second.
async fn ask(socket: &UdpSocket, to: SocketAddr, payload: &str) -> Option<(String, SocketAddr)> {
    socket.send_to(payload.as_bytes(), to).await.ok()?;
    let mut buffer = [0u8; 2048];
    let (length, from) =
        tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buffer))
            .await
            .ok()?
            .ok()?;
    Some((
        String::from_utf8_lossy(&buffer[..length]).into_owned(),
        from,
    ))
}

#[tokio::test]
async fn a_udp_service_answers_each_client_from_the_apps_address() {
    let host = Host::with_proxy(&format!("ipv4_pool = \"{}\"", crate::tcp::pool()));
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("udp-echo", None).await.unwrap();
    let ip = client.allocate_ipv4("udp-echo", None).await.unwrap();
    let mut config = MachineConfig {
        image: aloft_testkit::testapp_image(),
        // UDP on 5300, and TCP on 5301: the positive control of the TCP probe below.
        services: vec![
            service(Protocol::Udp, 5300, 5353),
            service(Protocol::Tcp, 5301, 7000),
        ],
        ..MachineConfig::default()
    };
    config.env.insert("TESTAPP_UDP_ECHO".into(), "5353".into());
    config.env.insert("TESTAPP_TCP_ECHO".into(), "7000".into());
    let machines = [
        start(client, "udp-echo", config.clone()).await.id,
        start(client, "udp-echo", config).await.id,
    ];
    let address = SocketAddr::new(ip.address.parse().unwrap(), 5300);

    let clients = [
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        UdpSocket::bind("127.0.0.1:0").await.unwrap(),
    ];
    // UDP may lose a packet (a machine still binding its socket): each client's first
    // answer is waited for.
    for socket in &clients {
        eventually(
            "the UDP service to answer",
            Duration::from_secs(30),
            || async { ask(socket, address, "hello").await },
        )
        .await;
    }
    // Both clients at once, round after round: each gets its own answers, from the app's
    // address, always from one machine.
    let mut answered_by: [Option<String>; 2] = [None, None];
    for round in 0..5 {
        let asks = clients.iter().enumerate().map(|(i, socket)| {
            let payload = format!("client{i}-round{round}");
            async move { (payload.clone(), ask(socket, address, &payload).await) }
        });
        for (i, (payload, answer)) in futures_util::future::join_all(asks)
            .await
            .into_iter()
            .enumerate()
        {
            let (text, from) = answer.unwrap_or_else(|| panic!("{payload}: no answer"));
            assert_eq!(from, address, "{payload}: answered from {from}");
            let (machine, echoed) = text
                .strip_prefix("machine=")
                .and_then(|rest| rest.split_once(' '))
                .unwrap_or_else(|| panic!("{payload}: {text:?}"));
            assert_eq!(echoed, payload);
            assert!(machines.contains(&machine.to_owned()), "{machine}");
            match &answered_by[i] {
                Some(first) => assert_eq!(first, machine, "client {i} moved machines"),
                None => answered_by[i] = Some(machine.to_owned()),
            }
        }
    }

    // The UDP port is not a TCP port: the TCP service's port connects (the probe works),
    // the UDP one does not.
    let tcp = |port| SocketAddr::new(address.ip(), port);
    eventually(
        "the TCP service to listen",
        Duration::from_secs(30),
        || async { TcpStream::connect(tcp(5301)).await.ok().map(drop) },
    )
    .await;
    assert!(TcpStream::connect(tcp(5300)).await.is_err());

    // Released: the address stops answering UDP.
    client.release_ip("udp-echo", &ip.address).await.unwrap();
    eventually(
        "the released address to stop answering",
        Duration::from_secs(10),
        || async {
            let fresh = UdpSocket::bind("127.0.0.1:0").await.ok()?;
            ask(&fresh, address, "gone").await.is_none().then_some(())
        },
    )
    .await;
}
