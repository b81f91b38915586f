//! The build sandbox: a tenant's `RUN` steps reach the internet and nothing of the host,
//! and a step past the builds' memory is killed alone.

use std::process::Command;

use aloft_client::{Client, ClientError};
use aloft_testkit::{HttpServer, busybox_image};

use crate::{Host, Server};

/// Builds `dockerfile` for `app` with no cache; the output and the outcome.
async fn build(client: &Client, app: &str, dockerfile: &str) -> (String, Result<(), String>) {
    let mut output = String::new();
    let options = aloft_client::BuildRequest {
        dockerfile: "Dockerfile".to_owned(),
        target: None,
        args: Default::default(),
        secrets: Default::default(),
        no_cache: true,
    };
    let outcome = client
        .build(
            app,
            aloft_testkit::dockerfile_context(dockerfile),
            &options,
            |text| output.push_str(text),
        )
        .await;
    let outcome = match outcome {
        Ok(_) => Ok(()),
        Err(ClientError::Build(message)) => Err(message),
        Err(other) => panic!("the build request failed: {other}"),
    };
    (output, outcome)
}

/// Whether this host gets `hello.txt` from `address` (`a.b.c.d:port`).
fn fetches(address: &str) -> bool {
    Command::new("curl")
        .args(["-sf", "-m", "2", "-o", "/dev/null"])
        .arg(format!("http://{address}/hello.txt"))
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether a step of the build printed `word` (its own line of output, not the echo in
/// the step's command line).
fn printed(output: &str, word: &str) -> bool {
    output
        .lines()
        .any(|line| line.split_whitespace().last() == Some(word) && !line.contains("echo"))
}

/// A port free on every address of this host (a listener on port 0, closed).
fn free_port() -> u16 {
    std::net::TcpListener::bind("[::]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// This host's own IPv4 addresses: those of its interfaces but loopback and the links
/// tests make (`av*`, which come and go with other tests), and `uplink`'s.
fn host_addresses(uplink: &str) -> Vec<String> {
    let output = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let interface = words.nth(1)?;
            let address = words.nth(1)?;
            (interface == uplink || !interface.starts_with("av"))
                .then(|| address.split('/').next().map(str::to_owned))?
        })
        .collect()
}

/// The engine's default bridge's gateway (the host's address on `docker0`).
fn bridge_gateway() -> String {
    let output = Command::new("docker")
        .args(["network", "inspect", "bridge", "--format"])
        .arg("{{(index .IPAM.Config 0).Gateway}}")
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn build_steps_reach_the_internet_and_nothing_of_the_host_and_a_memory_hog_dies_alone() {
    let image = busybox_image();
    // "The internet": a namespace behind this host (where the engine's bridge is), with
    // documentation addresses, and a link-local address standing for a metadata service.
    let internet = aloft_testkit::TestNetns::create("buildnet");
    let uplink = internet.link_to_host("198.51.100.201/30", "198.51.100.202/30");
    let link_local = "169.254.77.77";
    assert!(
        internet
            .exec(&[
                "ip",
                "addr",
                "add",
                &format!("{link_local}/32"),
                "dev",
                "lo"
            ])
            .status
            .success()
    );
    let routed = Command::new("ip")
        .args([
            "route",
            "add",
            &format!("{link_local}/32"),
            "via",
            "198.51.100.202",
        ])
        .args(["dev", &uplink])
        .status()
        .unwrap();
    assert!(routed.success());
    let world_port = free_port();
    let _world = HttpServer::hello(Some(&internet), world_port, "from the server\n");
    // A service of this host on every address, as aloftd, sshd or PostgreSQL would be.
    let host_port = free_port();
    let _hosted = HttpServer::hello(None, host_port, "from the server\n");
    let mut forbidden: Vec<String> = host_addresses(&uplink)
        .into_iter()
        .map(|address| format!("{address}:{host_port}"))
        .collect();
    forbidden.push(format!("{link_local}:{world_port}"));
    // The positive controls: from the host, each of them answers.
    for address in &forbidden {
        assert!(fetches(address), "the control: {address} answers the host");
    }
    for must in [bridge_gateway(), "198.51.100.201".to_owned()] {
        assert!(
            forbidden.contains(&format!("{must}:{host_port}")),
            "{must} is probed: {forbidden:?}"
        );
    }

    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("builder", None).await.unwrap();
    let world = format!("198.51.100.202:{world_port}");
    let targets = std::iter::once(world.clone())
        .chain(forbidden.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let probe = format!(
        "FROM {image}\nRUN for a in {targets}; do if printf 'GET /hello.txt HTTP/1.0\\r\\n\\r\\n' \
         | nc -w 3 ${{a%:*}} ${{a#*:}} 2>/dev/null | grep -q 'from the server'; then echo \
         reached-$a; else echo blocked-$a; fi; done\n"
    );
    let (output, outcome) = build(client, "builder", &probe).await;
    outcome.unwrap_or_else(|error| panic!("{error}\n{output}"));
    assert!(
        printed(&output, &format!("reached-{world}")),
        "a build step reaches the internet:\n{output}"
    );
    for address in &forbidden {
        assert!(
            printed(&output, &format!("blocked-{address}")),
            "a build step must not reach {address}:\n{output}"
        );
    }

    // Memory: the same small sort passes, one past the builds' 512 MB is killed and its
    // build fails; the platform goes on.
    let sort = |megabytes: u32| {
        format!(
            "FROM {image}\nRUN head -c {megabytes}m /dev/zero | sort > /dev/null && echo sorted-{megabytes}\n"
        )
    };
    let (output, outcome) = build(client, "builder", &sort(4)).await;
    outcome.unwrap_or_else(|error| panic!("the control: {error}\n{output}"));
    assert!(printed(&output, "sorted-4"), "{output}");
    let (output, outcome) = build(client, "builder", &sort(1500)).await;
    let error = outcome.expect_err("a step past the builds' memory fails");
    assert!(
        error.contains("137") || error.contains("exit code"),
        "{error}\n{output}"
    );
    assert!(!printed(&output, "sorted-1500"), "{output}");
    assert!(client.list_apps().await.is_ok(), "the platform goes on");
    drop(server);
}
