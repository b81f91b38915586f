//! The host side of the private network against the real kernel: a namespace plays the
//! host, other namespaces play machines.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::time::Instant;

use aloft_net::{
    HostNetwork, HostNumber, MachineNumber, NetworkNumber, SixPn, bridge_name, veth_name,
};
use aloft_testkit::TestNetns;

fn machine(network: u64, number: u64) -> SixPn {
    SixPn {
        network: NetworkNumber::new(network).unwrap(),
        host: HostNumber::new(7).unwrap(),
        machine: MachineNumber::new(number).unwrap(),
    }
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
    let network = HostNetwork::open(Some(host.path()), HostNumber::new(7).unwrap(), 1420)
        .await
        .unwrap();
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
        let first = HostNetwork::open(Some(host.path()), HostNumber::new(7).unwrap(), 1420)
            .await
            .unwrap();
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

    let second = HostNetwork::open(Some(host.path()), HostNumber::new(7).unwrap(), 1420)
        .await
        .unwrap();
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
    let network = HostNetwork::open(Some(host.path()), HostNumber::new(7).unwrap(), 1420)
        .await
        .unwrap();
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
