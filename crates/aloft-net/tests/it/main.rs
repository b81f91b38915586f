//! The host side of the private network against the real kernel: a namespace plays the
//! host, other namespaces play machines.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use aloft_net::firewall::Served;
use aloft_net::{
    HostNetwork, HostNumber, MachineNumber, NetworkNumber, SixPn, bridge_name, veth_name,
};
use aloft_testkit::TestNetns;

mod egress;

pub(crate) fn machine(network: u64, number: u64) -> SixPn {
    SixPn {
        network: NetworkNumber::new(network).unwrap(),
        host: HostNumber::new(7).unwrap(),
        machine: MachineNumber::new(number).unwrap(),
    }
}

/// The host side of the private network in `host`, as host number 7.
async fn open(host: &TestNetns, served: Served) -> HostNetwork {
    HostNetwork::open(
        Some(host.path()),
        HostNumber::new(7).unwrap(),
        1420,
        served,
        None,
    )
    .await
    .unwrap()
}

fn reaches(from: &TestNetns, to: std::net::Ipv6Addr) -> bool {
    from.exec(&[
        "busybox",
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "1",
        &to.to_string(),
    ])
    .status
    .success()
}

#[tokio::test]
async fn machines_of_one_network_reach_each_other_and_nothing_else() {
    let host = TestNetns::create("net-host");
    let (a, b, c) = (
        TestNetns::create("net-a"),
        TestNetns::create("net-b"),
        TestNetns::create("net-c"),
    );
    let network = open(&host, Served::default()).await;
    let (ma, mb, mc) = (machine(1, 1), machine(1, 2), machine(2, 3));
    network.attach(ma, &a.path()).await.unwrap();
    network.attach(mb, &b.path()).await.unwrap();
    network.attach(mc, &c.path()).await.unwrap();
    // Attaching again changes nothing.
    network.attach(ma, &a.path()).await.unwrap();

    assert!(a.addresses().contains(&format!("{}/112", ma.address())));
    assert!(reaches(&a, mb.address()), "same network, both ways");
    assert!(reaches(&b, ma.address()));
    assert!(
        reaches(&a, aloft_net::DNS_ADDRESS),
        "fdaa::3 from a machine"
    );
    assert!(reaches(&c, aloft_net::DNS_ADDRESS));
    assert!(
        reaches(&host, mc.address()),
        "the host reaches every machine"
    );
    assert!(!reaches(&a, mc.address()), "across networks: dropped");
    assert!(!reaches(&c, ma.address()), "across networks, the other way");
    assert!(
        !reaches(&c, aloft_net::gateway(ma.network, ma.host)),
        "another network's gateway"
    );

    // Network 2 goes away: its bridge, veth and rules are pruned; network 1 stays.
    drop(c);
    network
        .prune(
            &BTreeSet::from([ma.network]),
            &BTreeSet::from([ma.machine, mb.machine]),
            Instant::now(),
        )
        .await
        .unwrap();
    let links = host.links();
    assert!(links.contains(&bridge_name(ma.network)));
    assert!(!links.contains(&bridge_name(mc.network)), "{links:?}");
    assert!(!links.contains(&veth_name(mc.machine)), "{links:?}");
    let rules = host.nft_ruleset();
    assert!(rules.contains(&bridge_name(ma.network)));
    assert!(!rules.contains(&bridge_name(mc.network)), "{rules}");
    assert!(reaches(&a, mb.address()));

    // Nothing left at all: no bridges, veths or rules, only fdaa::3.
    network
        .prune(&BTreeSet::new(), &BTreeSet::new(), Instant::now())
        .await
        .unwrap();
    assert_eq!(
        network.links().await.unwrap(),
        Vec::new(),
        "{:?}",
        host.links()
    );
    assert!(!host.nft_ruleset().contains("aloft"));
    assert_eq!(host.addresses(), vec!["fdaa::3/128".to_owned()]);
    network.close().await.unwrap();
    assert_eq!(host.addresses(), Vec::<String>::new());
}

#[tokio::test]
async fn a_new_agent_repairs_what_a_crashed_one_left() {
    let host = TestNetns::create("net-crash");
    let a = TestNetns::create("net-crash-a");
    let ma = machine(3, 9);
    {
        let first = open(&host, Served::default()).await;
        first.attach(ma, &a.path()).await.unwrap();
    }
    // A half-made pair, as a crash between creating and moving it would leave.
    let made = host.exec(&[
        "ip",
        "link",
        "add",
        "alp00000063",
        "type",
        "veth",
        "peer",
        "name",
        "alv00000063",
    ]);
    assert!(made.status.success());
    // The machine's interface went down (as after a container restart, it is re-made).
    assert!(
        a.exec(&["ip", "link", "set", "eth0", "down"])
            .status
            .success()
    );

    let second = open(&host, Served::default()).await;
    assert!(
        host.nft_ruleset().contains(&bridge_name(ma.network)),
        "rules survive"
    );
    second.attach(ma, &a.path()).await.unwrap();
    second
        .prune(
            &BTreeSet::from([ma.network]),
            &BTreeSet::from([ma.machine]),
            Instant::now(),
        )
        .await
        .unwrap();
    let links = host.links();
    assert!(!links.iter().any(|l| l.ends_with("00000063")), "{links:?}");
    assert!(reaches(&host, ma.address()));
}

#[tokio::test]
async fn pruning_spares_what_was_attached_after_the_list_was_read() {
    let host = TestNetns::create("net-race");
    let a = TestNetns::create("net-race-a");
    let network = open(&host, Served::default()).await;
    // The agent read its (empty) list of machines, then a machine started.
    let read_at = Instant::now();
    let ma = machine(4, 5);
    network.attach(ma, &a.path()).await.unwrap();
    network
        .prune(&BTreeSet::new(), &BTreeSet::new(), read_at)
        .await
        .unwrap();
    assert!(reaches(&host, ma.address()), "{:?}", host.links());
    assert!(host.nft_ruleset().contains(&bridge_name(ma.network)));
    // The next sweep, whose list has it, keeps it; one without it removes it.
    network
        .prune(&BTreeSet::new(), &BTreeSet::new(), Instant::now())
        .await
        .unwrap();
    assert!(!host.links().contains(&bridge_name(ma.network)));
}

/// Whether a TCP connection from inside `from` to `to` is accepted within a second.
fn connects(from: &TestNetns, to: SocketAddr) -> bool {
    aloft_net::netns::run_in(Some(&from.path()), move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()
    })
    .unwrap()
}

/// Whether a connection from inside `from` reaches `to` within `deadline` (tried again
/// until then).
fn connects_within(from: &TestNetns, to: SocketAddr, deadline: Duration) -> bool {
    let until = std::time::Instant::now() + deadline;
    loop {
        if connects(from, to) {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP listener bound inside `namespace` (it keeps listening there).
fn listen(namespace: &TestNetns, at: SocketAddr) -> TcpListener {
    aloft_net::netns::run_in(Some(&namespace.path()), move || TcpListener::bind(at))
        .unwrap()
        .unwrap_or_else(|error| panic!("listening on {at}: {error}"))
}

/// Whether a datagram sent from inside `from`, from address `source`, reaches `listener`.
fn datagram_arrives(from: &TestNetns, source: Ipv6Addr, listener: &UdpSocket) -> bool {
    let to = listener.local_addr().unwrap();
    aloft_net::netns::run_in(Some(&from.path()), move || {
        let socket = UdpSocket::bind(SocketAddr::from((source, 0))).unwrap();
        socket.send_to(b"probe", to).unwrap();
    })
    .unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buffer = [0u8; 16];
    listener.recv_from(&mut buffer).is_ok()
}

/// The index of `link` inside `namespace` (a link-local address's scope).
fn link_index(namespace: &TestNetns, link: &str) -> u32 {
    let output = namespace.exec(&["ip", "-o", "link", "show", link]);
    let text = String::from_utf8_lossy(&output.stdout);
    text.split(':').next().unwrap().trim().parse().unwrap()
}

/// The link-local address of `link` inside `namespace`.
fn link_local(namespace: &TestNetns, link: &str) -> Ipv6Addr {
    let output = namespace.exec(&[
        "ip", "-6", "-o", "addr", "show", "dev", link, "scope", "link",
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or_else(|| panic!("no link-local address on {link}: {text}"));
    word.split('/').next().unwrap().parse().unwrap()
}

fn ip(namespace: &TestNetns, args: &[&str]) {
    let mut command = vec!["ip"];
    command.extend_from_slice(args);
    let output = namespace.exec(&command);
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Security: a machine reaches nothing of its host but what the platform serves it on
/// `fdaa::3` (not the gateway, not a bridge's link-local address, not `fdaa::3`'s other
/// ports), cannot send from an address that is not its own (not even outside
/// `fdaa::/16`, to use `fdaa::3` as a reflector), and a LAN neighbour that routes
/// `fdaa::/16` to the host does not reach it past the proxy. A flushed table is back at
/// the next `enforce`. Each probe is shown to succeed where it should first.
#[tokio::test]
async fn machines_reach_only_what_the_host_serves_and_nothing_reaches_them_from_outside() {
    let host = TestNetns::create("fw-host");
    let a = TestNetns::create("fw-a");
    let lan = TestNetns::create("fw-lan");
    let network = open(&host, Served::new(5353, Some(2222))).await;
    let ma = machine(5, 1);
    network.attach(ma, &a.path()).await.unwrap();
    let gateway = aloft_net::gateway(ma.network, ma.host);
    let dns = aloft_net::DNS_ADDRESS;

    // Services of the host: one on every address, one served on fdaa::3 (SSH's port).
    let _everywhere = listen(&host, "[::]:8080".parse().unwrap());
    let _ssh = listen(&host, SocketAddr::from((dns, 2222)));
    let resolver = aloft_net::netns::run_in(Some(&host.path()), move || {
        UdpSocket::bind(SocketAddr::from((dns, 5353)))
    })
    .unwrap()
    .unwrap();
    // The positive controls: the host reaches its own service, the machine what is served.
    assert!(connects(&host, SocketAddr::from((gateway, 8080))));
    assert!(
        connects(&a, SocketAddr::from((dns, 2222))),
        "SSH on fdaa::3"
    );
    assert!(
        datagram_arrives(&a, ma.address(), &resolver),
        "DNS on fdaa::3 from the machine's own address"
    );
    assert!(reaches(&a, dns), "ping fdaa::3");

    // Nothing else of the host, on any of its addresses.
    let bridge = bridge_name(ma.network);
    let bridge_local =
        std::net::SocketAddrV6::new(link_local(&host, &bridge), 8080, 0, link_index(&a, "eth0"));
    for (what, to) in [
        ("the gateway", SocketAddr::from((gateway, 8080))),
        ("fdaa::3 on another port", SocketAddr::from((dns, 8080))),
        (
            "the bridge's link-local address",
            SocketAddr::V6(bridge_local),
        ),
    ] {
        assert!(!connects(&a, to), "the machine reached {what} ({to})");
    }

    // A spoofed source, outside fdaa::/16: the reflector is closed.
    let spoofed: Ipv6Addr = "2001:db8::5".parse().unwrap();
    ip(
        &a,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8::5/128",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    assert!(
        !datagram_arrives(&a, spoofed, &resolver),
        "a datagram from a spoofed source reached fdaa::3"
    );

    // A LAN neighbour that routes fdaa::/16 to the host.
    let (outer, inner) = ("fwlan0", "fwlan1");
    ip(
        &host,
        &[
            "link",
            "add",
            outer,
            "type",
            "veth",
            "peer",
            "name",
            inner,
            "netns",
            lan.name(),
        ],
    );
    ip(
        &host,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            outer,
            "nodad",
        ],
    );
    ip(&host, &["link", "set", outer, "up"]);
    ip(
        &lan,
        &[
            "-6",
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            inner,
            "nodad",
        ],
    );
    ip(&lan, &["link", "set", inner, "up"]);
    ip(
        &lan,
        &["-6", "route", "add", "fdaa::/16", "via", "2001:db8:1::1"],
    );
    let _app = listen(&a, "[::]:9000".parse().unwrap());
    let app = SocketAddr::from((ma.address(), 9000));
    assert!(
        connects(&host, app),
        "the host (its proxy) reaches the machine"
    );
    // The link just came up (its neighbour discovery may take a moment on a busy host):
    // the positive control waits for it, with a deadline, before the negative checks.
    assert!(
        connects_within(
            &lan,
            "[2001:db8:1::1]:8080".parse().unwrap(),
            Duration::from_secs(15)
        ),
        "the neighbour reaches the host"
    );
    assert!(
        !connects(&lan, app),
        "the neighbour reached the machine past the proxy"
    );

    // A flushed table: the probe sees the hole (so it can), then enforce closes it.
    assert!(host.exec(&["nft", "flush", "ruleset"]).status.success());
    assert!(
        connects(&lan, app),
        "with no rules the neighbour gets through"
    );
    network.enforce().await.unwrap();
    assert!(!connects(&lan, app), "enforce put the rules back");
    assert!(connects(&a, SocketAddr::from((dns, 2222))));
}
