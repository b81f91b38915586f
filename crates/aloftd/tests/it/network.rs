//! The private network end to end: machines in real containers find each other by name on
//! `fdaa::3`, reach each other over 6PN, and see nothing of other networks.

use std::time::{Duration, Instant};

use aloft_client::Client;
use aloft_testkit::{BUSYBOX_IMAGE, eventually};
use aloft_types::MachineState;
use aloft_types::api::{MachineRequest, MachineResponse};
use aloft_types::machine::{MachineConfig, MachineInit};

use crate::{Host, Server};

/// A machine serving its own id over HTTP on port 8080.
const WEB: &str =
    "mkdir -p /srv && echo $FLY_MACHINE_ID > /srv/index.html && exec httpd -f -p 8080 -h /srv";

async fn web(client: &Client, app: &str, name: &str) -> MachineResponse {
    let request = MachineRequest {
        name: Some(name.to_owned()),
        ..MachineRequest::new(MachineConfig {
            image: BUSYBOX_IMAGE.to_owned(),
            init: MachineInit {
                cmd: vec!["sh".into(), "-c".into(), WEB.into()],
                ..MachineInit::default()
            },
            ..MachineConfig::default()
        })
    };
    let machine = client.create_machine(app, &request).await.unwrap();
    client
        .wait(app, &machine.id, MachineState::Started, 60)
        .await
        .unwrap();
    client.machine(app, &machine.id).await.unwrap()
}

/// Runs a shell script in a machine: (exit code, stdout + stderr).
async fn sh(client: &Client, app: &str, machine: &str, script: &str) -> (i64, String) {
    let output = crate::sh(client, app, machine, script, None).await;
    (
        output.exit_code,
        format!("{}{}", output.stdout, output.stderr),
    )
}

async fn ok(client: &Client, app: &str, machine: &str, script: &str) -> String {
    let (code, output) = sh(client, app, machine, script).await;
    assert_eq!(code, 0, "{script}: {output}");
    output
}

/// busybox nslookup against fdaa::3 (from /etc/resolv.conf): its output.
async fn nslookup(client: &Client, app: &str, machine: &str, kind: &str, name: &str) -> String {
    sh(
        client,
        app,
        machine,
        &format!("nslookup -type={kind} {name}"),
    )
    .await
    .1
}

#[tokio::test]
async fn machines_find_and_reach_each_other_by_name() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("web", None).await.unwrap();
    client.create_app("db", None).await.unwrap();
    let first = web(client, "web", "first").await;
    let second = web(client, "web", "second").await;
    for machine in [&first, &second] {
        assert!(machine.private_ip.starts_with("fdaa:"), "{machine:?}");
    }

    // What every machine is given.
    let inside = ok(
        client,
        "web",
        &first.id,
        "cat /etc/resolv.conf /etc/hosts; echo ip=$FLY_PRIVATE_IP",
    )
    .await;
    assert!(inside.contains("nameserver fdaa::3"), "{inside}");
    assert!(
        inside.contains(&format!("{}\tfly-local-6pn", first.private_ip)),
        "{inside}"
    );
    assert!(
        inside.contains(&format!("{}\t{}", first.private_ip, first.id)),
        "{inside}"
    );
    assert!(
        inside.contains(&format!("ip={}", first.private_ip)),
        "{inside}"
    );

    // Names.
    let both = nslookup(client, "web", &first.id, "aaaa", "web.internal").await;
    assert!(
        both.contains(&first.private_ip) && both.contains(&second.private_ip),
        "{both}"
    );
    let vms = nslookup(client, "web", &first.id, "txt", "vms.web.internal").await;
    assert!(
        vms.contains(&format!("{} local", first.id))
            && vms.contains(&format!("{} local", second.id)),
        "{vms}"
    );
    let apps = nslookup(client, "web", &second.id, "txt", "_apps.internal").await;
    assert!(apps.contains("db,web"), "{apps}");

    // HTTP from one to the other, by name.
    let fetched = ok(
        client,
        "web",
        &first.id,
        &format!("wget -q -O- http://{}.vm.web.internal:8080/", second.id),
    )
    .await;
    assert_eq!(fetched.trim(), second.id);

    // A stopped machine leaves the answers at once.
    client
        .stop_machine("web", &second.id, None, None)
        .await
        .unwrap();
    client
        .wait("web", &second.id, MachineState::Stopped, 30)
        .await
        .unwrap();
    let stopped_at = Instant::now();
    eventually(
        "the stopped machine to leave web.internal",
        Duration::from_secs(1),
        || async {
            let answer = client.dig("web", "web.internal", "AAAA").await.ok()?;
            let ips: Vec<&str> = answer.answers.iter().map(|r| r.data.as_str()).collect();
            (ips == vec![first.private_ip.as_str()]).then_some(())
        },
    )
    .await;
    assert!(stopped_at.elapsed() <= Duration::from_secs(1));
    let left = nslookup(client, "web", &first.id, "aaaa", "web.internal").await;
    assert!(!left.contains(&second.private_ip), "{left}");

    // The operators' listener answers too, over real DNS.
    let dns = std::fs::read_to_string(host.data().join(aloftd::DNS_ADDR_FILE)).unwrap();
    let dns: std::net::SocketAddr = dns.trim().parse().unwrap();
    let output = std::process::Command::new("dig")
        .args([
            &format!("@{}", dns.ip()),
            "-p",
            &dns.port().to_string(),
            "+short",
            "web.internal",
            "AAAA",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        first.private_ip
    );
}

/// Whether `from` can open a TCP connection to `to`'s port 8080, and ping it.
async fn reaches(client: &Client, app: &str, from: &str, to: &str) -> (bool, bool) {
    let (tcp, _) = sh(
        client,
        app,
        from,
        &format!("echo | nc -w 2 {to} 8080 >/dev/null"),
    )
    .await;
    let (ping, _) = sh(client, app, from, &format!("ping -c 1 -W 1 {to}")).await;
    (tcp == 0, ping == 0)
}

#[tokio::test]
async fn other_networks_do_not_exist_and_cannot_be_reached() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let ours = &server.client;
    let other_org = ours.create_org("elsewhere", None).await.unwrap();
    let theirs = &Client::new(ours.base_url(), &other_org.token);

    ours.create_app("alpha", None).await.unwrap();
    ours.create_app_in_network("gamma", None, Some("secluded"))
        .await
        .unwrap();
    theirs.create_app("beta", None).await.unwrap();
    let a1 = web(ours, "alpha", "a1").await;
    let a2 = web(ours, "alpha", "a2").await;
    let g1 = web(ours, "gamma", "g1").await;
    let b1 = web(theirs, "beta", "b1").await;

    // Within a network, everything works (so the refusals below are the rules' doing).
    assert_eq!(
        reaches(ours, "alpha", &a1.id, &a2.private_ip).await,
        (true, true)
    );
    assert!(
        nslookup(ours, "alpha", &a1.id, "aaaa", "alpha.internal")
            .await
            .contains(&a2.private_ip)
    );

    let sides: [(&Client, &str, &MachineResponse, &str); 3] = [
        (ours, "alpha", &a1, "alpha"),
        (theirs, "beta", &b1, "beta"),
        (ours, "gamma", &g1, "gamma"),
    ];
    for (client, app, machine, _) in sides {
        for (_, _, other, other_app) in sides {
            if other.id == machine.id {
                continue;
            }
            let answer = nslookup(
                client,
                app,
                &machine.id,
                "aaaa",
                &format!("{other_app}.internal"),
            )
            .await;
            assert!(
                answer.contains("NXDOMAIN") && !answer.contains(&other.private_ip),
                "{app} asking for {other_app}: {answer}"
            );
            assert_eq!(
                reaches(client, app, &machine.id, &other.private_ip).await,
                (false, false),
                "{app} reaching {other_app}"
            );
        }
        let apps = nslookup(client, app, &machine.id, "txt", "_apps.internal").await;
        for (_, _, _, other_app) in sides {
            assert_eq!(apps.contains(other_app), other_app == app, "{app}: {apps}");
        }
    }
}

#[tokio::test]
async fn nothing_stale_is_left_after_a_crash_a_restart_and_destroying_everything() {
    let host = Host::new();
    let mut server = Server::start(&host).await;
    let client = server.client.clone();
    client.create_app("web", None).await.unwrap();
    let first = web(&client, "web", "first").await;
    let second = web(&client, "web", "second").await;
    let links = host.netns.links();
    assert_eq!(
        links.iter().filter(|l| l.starts_with("alb")).count(),
        1,
        "one bridge: {links:?}"
    );
    assert_eq!(
        links.iter().filter(|l| l.starts_with("alv")).count(),
        2,
        "a veth per machine: {links:?}"
    );
    assert!(host.netns.nft_ruleset().contains("table inet aloft"));
    let addresses = host.netns.addresses();
    assert_eq!(addresses.len(), 2, "fdaa::3 and the bridge: {addresses:?}");

    // kill -9, start again: the same links, rules and addresses, and machines still talk.
    server.kill();
    let server = Server::start(&host).await;
    let client = server.client.clone();
    let mut after = host.netns.links();
    after.sort();
    let mut before = links.clone();
    before.sort();
    assert_eq!(after, before);
    assert_eq!(host.netns.addresses().len(), 2);
    assert_eq!(
        ok(
            &client,
            "web",
            &first.id,
            &format!("wget -q -O- http://{}.vm.web.internal:8080/", second.id)
        )
        .await
        .trim(),
        second.id
    );

    // A restarted container gets its interface back, with the same address.
    client.restart_machine("web", &second.id).await.unwrap();
    eventually(
        "the restarted machine to answer again",
        Duration::from_secs(30),
        || async {
            let (code, out) = sh(
                &client,
                "web",
                &first.id,
                &format!("wget -q -O- http://[{}]:8080/", second.private_ip),
            )
            .await;
            (code == 0 && out.trim() == second.id).then_some(())
        },
    )
    .await;
    assert_eq!(
        client.machine("web", &second.id).await.unwrap().private_ip,
        second.private_ip
    );

    // Destroy everything: no bridge, veth, rule or address but fdaa::3 remains.
    for machine in [&first, &second] {
        client
            .destroy_machine("web", &machine.id, true)
            .await
            .unwrap();
    }
    eventually(
        "the network to be taken down",
        Duration::from_secs(30),
        || async {
            let links = host.netns.links();
            let clean = !links
                .iter()
                .any(|l| l.starts_with("alb") || l.starts_with("alv") || l.starts_with("alp"))
                && !host.netns.nft_ruleset().contains("aloft")
                && host.netns.addresses() == vec!["fdaa::3/128".to_owned()];
            clean.then_some(())
        },
    )
    .await;
}

/// A shell line that GETs `/hello.txt` from `address` port 8000 and prints the answer.
fn get(address: &str) -> String {
    format!("printf 'GET /hello.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} 8000")
}

#[tokio::test]
async fn machines_fetch_from_the_internet_and_reach_nothing_of_the_host() {
    let host = Host::new();
    // "The internet": a namespace behind the host's uplink, documentation addresses.
    let internet = aloft_testkit::TestNetns::create("internet");
    host.netns.link_to(
        &internet,
        &["198.51.100.2/24", "2001:db8::2/64"],
        &["198.51.100.1/24", "2001:db8::1/64"],
    );
    for route in [
        &["ip", "route", "add", "default", "via", "198.51.100.1"][..],
        &["ip", "-6", "route", "add", "default", "via", "2001:db8::1"][..],
    ] {
        assert!(host.netns.exec(route).status.success(), "{route:?}");
    }
    let _world = aloft_testkit::HttpServer::hello(Some(&internet), 8000, "from the internet\n");
    // A service of the host on every address, as aloftd, sshd or PostgreSQL would be.
    let _hosted = aloft_testkit::HttpServer::hello(Some(&host.netns), 8001, "from the internet\n");
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("outward", None).await.unwrap();
    let machine = web(client, "outward", "out").await;

    // Both families out, answers back (so the host masqueraded: the internet has no
    // route to the machines' addresses).
    // busybox's wget (static, glibc) crashes in its name service lookups: a raw GET.
    let fetch = get("198.51.100.1");
    let address = ok(client, "outward", &machine.id, "ip -4 -o addr show eth0").await;
    assert!(address.contains("inet 172.2"), "{address}");
    let got = eventually(
        "the machine's IPv4 egress",
        Duration::from_secs(20),
        || async {
            let (code, output) = sh(client, "outward", &machine.id, &fetch).await;
            (code == 0 && output.contains("from the internet")).then_some(output)
        },
    )
    .await;
    assert!(got.starts_with("HTTP/1.0 200"), "{got}");
    let six = ok(client, "outward", &machine.id, &get("2001:db8::1")).await;
    assert!(six.contains("from the internet"), "{six}");
    // Nothing of the host, on any of its addresses, though its service answers there.
    assert!(
        host.netns
            .exec(&[
                "curl",
                "-sf",
                "-m",
                "2",
                "-o",
                "/dev/null",
                "http://198.51.100.2:8001/hello.txt"
            ])
            .status
            .success()
    );
    for address in ["198.51.100.2", "169.254.0.1", "2001:db8::2", "fdaa::3"] {
        let (_, output) = sh(
            client,
            "outward",
            &machine.id,
            &get(address).replace(" 8000", " 8001"),
        )
        .await;
        assert!(
            !output.contains("200 OK"),
            "{address} from a machine: {output}"
        );
    }
    drop(server);
}
