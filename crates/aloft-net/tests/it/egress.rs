//! Machines reaching the internet, against the real kernel: a namespace plays the host,
//! another "the internet" (documentation addresses, a small HTTP server), others play
//! machines.

use std::net::Ipv4Addr;

use aloft_net::egress::IPV4_GATEWAY;
use aloft_net::firewall::Served;
use aloft_net::{Egress, HostNetwork, HostNumber, Ipv4Block};
use aloft_testkit::{HttpServer, TestNetns};

use crate::machine;

/// What `url` answers from inside `netns` (curl, 2 s), or `None`.
fn fetch(netns: &TestNetns, url: &str) -> Option<String> {
    let output = netns.exec(&["curl", "-sfg", "-m", "2", url]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Connects from `source` (bound to it) to `to` inside `netns` and reads the answer to
/// a GET: whether it came.
fn fetch_from(netns: &TestNetns, source: Ipv4Addr, to: &str, port: u16) -> bool {
    let script = format!(
        "import socket\ns=socket.socket()\ns.settimeout(2)\ns.bind(('{source}',0))\n\
         s.connect(('{to}',{port}))\ns.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n\
         assert s.recv(100).startswith(b'HTTP/')"
    );
    netns.exec(&["python3", "-c", &script]).status.success()
}

#[tokio::test]
async fn machines_reach_the_internet_over_both_families_and_nothing_of_the_host() {
    let host = TestNetns::create("egress-host");
    let internet = TestNetns::create("egress-world");
    // The host's uplink, and "the internet" behind it (with a metadata-like address).
    host.link_to(
        &internet,
        &["198.51.100.2/24", "2001:db8::2/64"],
        &["198.51.100.1/24", "2001:db8::1/64", "169.254.169.254/32"],
    );
    for route in [
        vec!["route", "add", "default", "via", "198.51.100.1"],
        vec!["-6", "route", "add", "default", "via", "2001:db8::1"],
        vec!["route", "add", "169.254.169.254/32", "via", "198.51.100.1"],
    ] {
        let mut args = vec!["ip"];
        args.extend(route);
        let done = host.exec(&args);
        assert!(done.status.success(), "{args:?}: {:?}", done);
    }
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("hello.txt"), "from the internet\n").unwrap();
    let _world = HttpServer::serve(Some(&internet), 8000, site.path());
    // A service of the host's own, on every address (as aloftd, sshd or PostgreSQL).
    let _hosted = HttpServer::serve(Some(&host), 8001, site.path());

    let block: Ipv4Block = "172.20.0.0/14".parse().unwrap();
    let network = HostNetwork::open(
        Some(host.path()),
        HostNumber::new(7).unwrap(),
        1420,
        Served::default(),
        Some(Egress::new(block)),
    )
    .await
    .unwrap();
    let (a, c) = (TestNetns::create("egress-a"), TestNetns::create("egress-c"));
    let (ma, mc) = (machine(1, 1), machine(2, 3));
    network.attach(ma, &a.path()).await.unwrap();
    network.attach(mc, &c.path()).await.unwrap();
    // Attaching again changes nothing.
    network.attach(ma, &a.path()).await.unwrap();
    let (a4, c4) = (block.address_of(ma.machine), block.address_of(mc.machine));
    let inside = a.exec(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    let inside = String::from_utf8_lossy(&inside.stdout).into_owned();
    assert!(inside.contains(&format!("inet {a4}/32")), "{inside}");

    // The internet, over IPv4 and IPv6: the answers come back, so the host masqueraded
    // (the internet has no route to 172.20.0.0/14 or fdaa::/16).
    assert_eq!(
        fetch(&a, "http://198.51.100.1:8000/hello.txt").as_deref(),
        Some("from the internet\n")
    );
    assert_eq!(
        fetch(&a, "http://[2001:db8::1]:8000/hello.txt").as_deref(),
        Some("from the internet\n")
    );
    assert!(fetch(&c, "http://198.51.100.1:8000/hello.txt").is_some());

    // Nothing of the host, on any of its addresses, though the service is up there.
    assert!(fetch(&host, "http://198.51.100.2:8001/").is_some());
    let gateway6 = aloft_net::gateway(ma.network, ma.host);
    for url in [
        "http://198.51.100.2:8001/".to_owned(),
        format!("http://{IPV4_GATEWAY}:8001/"),
        "http://[2001:db8::2]:8001/".to_owned(),
        format!("http://[{gateway6}]:8001/"),
        "http://[fdaa::3]:8001/".to_owned(),
    ] {
        assert_eq!(fetch(&a, &url), None, "{url} from a machine");
    }
    // Metadata and link-local addresses are never reached, though the host reaches it.
    assert!(fetch(&host, "http://169.254.169.254:8000/hello.txt").is_some());
    assert_eq!(fetch(&a, "http://169.254.169.254:8000/hello.txt"), None);

    // Another organization's machine, by its IPv4 address: the host reaches it, a does not.
    let _other = HttpServer::serve(Some(&c), 8002, site.path());
    assert!(fetch(&host, &format!("http://{c4}:8002/hello.txt")).is_some());
    assert_eq!(fetch(&a, &format!("http://{c4}:8002/hello.txt")), None);

    // A machine posing as another: its packets carry c's address and are dropped; with
    // its own, the same probe goes through.
    assert!(fetch_from(&a, a4, "198.51.100.1", 8000));
    let spoof = a.exec(&["ip", "addr", "add", &format!("{c4}/32"), "dev", "eth0"]);
    assert!(spoof.status.success());
    assert!(!fetch_from(&a, c4, "198.51.100.1", 8000));

    // Without egress, the same machine reaches nothing outside (the positive control
    // above shows the probe works).
    let closed = HostNetwork::open(
        Some(host.path()),
        HostNumber::new(7).unwrap(),
        1420,
        Served::default(),
        None,
    )
    .await
    .unwrap();
    closed.enforce().await.unwrap();
    assert_eq!(fetch(&a, "http://198.51.100.1:8000/hello.txt"), None);
    network.close().await.unwrap();
}

/// Runs `tool args` (iptables or ip6tables) in `netns`; whether it succeeded.
fn tables(netns: &TestNetns, tool: &str, args: &[&str]) -> bool {
    let mut command = vec![tool, "-w", "5"];
    command.extend(args);
    netns.exec(&command).status.success()
}

/// On a Docker host the private network shares a namespace with Docker Engine, which sets
/// the FORWARD policy to DROP: machines' traffic through the host must still pass
/// (Aloft opens Docker's DOCKER-USER chain to its bridges), and comes back when someone
/// takes the rules out.
#[tokio::test]
async fn machines_get_through_a_docker_hosts_forward_drop_policy() {
    let host = TestNetns::create("dockerish-host");
    let internet = TestNetns::create("dockerish-world");
    host.link_to(
        &internet,
        &["198.51.100.2/24", "2001:db8::2/64"],
        &["198.51.100.1/24", "2001:db8::1/64"],
    );
    for route in [
        vec!["ip", "route", "add", "default", "via", "198.51.100.1"],
        vec!["ip", "-6", "route", "add", "default", "via", "2001:db8::1"],
    ] {
        assert!(host.exec(&route).status.success(), "{route:?}");
    }
    // What Docker Engine does to a host's FORWARD chains (ip6tables with its IPv6 on).
    for tool in ["iptables", "ip6tables"] {
        for args in [
            &["-N", "DOCKER-USER"][..],
            &["-A", "DOCKER-USER", "-j", "RETURN"],
            &["-A", "FORWARD", "-j", "DOCKER-USER"],
            &["-P", "FORWARD", "DROP"],
        ] {
            assert!(tables(&host, tool, args), "{tool} {args:?}");
        }
    }
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("hello.txt"), "from the internet\n").unwrap();
    let _world = HttpServer::serve(Some(&internet), 8000, site.path());
    let network = HostNetwork::open(
        Some(host.path()),
        // The host `machine` numbers its machines' addresses on.
        HostNumber::new(7).unwrap(),
        1420,
        Served::default(),
        Some(Egress::new("172.20.0.0/14".parse().unwrap())),
    )
    .await
    .unwrap();
    let machine_ns = TestNetns::create("dockerish-m");
    network
        .attach(machine(4, 1), &machine_ns.path())
        .await
        .unwrap();
    let urls = [
        "http://198.51.100.1:8000/hello.txt",
        "http://[2001:db8::1]:8000/hello.txt",
    ];
    for url in urls {
        assert_eq!(
            fetch(&machine_ns, url).as_deref(),
            Some("from the internet\n"),
            "{url} through the DROP policy"
        );
    }
    // Opening again adds nothing: one rule of each, in both families.
    network.enforce().await.unwrap();
    for tool in ["iptables", "ip6tables"] {
        let listed = host.exec(&[tool, "-w", "5", "-S", "DOCKER-USER"]);
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert_eq!(listed.matches("-i alb+ -j ACCEPT").count(), 1, "{listed}");
        assert_eq!(listed.matches("-o alb+").count(), 1, "{listed}");
    }
    // The negative control: without Aloft's rules the policy drops the same fetch...
    for tool in ["iptables", "ip6tables"] {
        assert!(tables(
            &host,
            tool,
            &["-D", "DOCKER-USER", "-i", "alb+", "-j", "ACCEPT"]
        ));
    }
    for url in urls {
        assert_eq!(fetch(&machine_ns, url), None, "{url} with the policy alone");
    }
    // ...and the next enforcement (every reconcile interval) puts them back.
    network.enforce().await.unwrap();
    for url in urls {
        assert!(fetch(&machine_ns, url).is_some(), "{url} after enforce");
    }
    network.close().await.unwrap();
}
