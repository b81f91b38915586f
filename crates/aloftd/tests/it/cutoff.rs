//! A machine cut off from the network in the middle of a request (its host lost, its
//! link gone), which can send no reset: the proxy's keepalive probes notice, and the
//! request goes to another machine instead of waiting for an answer that cannot come.

use std::time::{Duration, Instant};

use aloft_testkit::{TestNetns, eventually};
use aloft_types::machine::MachineConfig;

use crate::proxy::{proxy_address, start};
use crate::{Host, Server};

const APP: &str = "cutoff";

/// Drops every packet between the namespace and `address`, both ways, in a table of the
/// test's own (the agent's firewall is not touched).
fn cut_off(netns: &TestNetns, address: &str) {
    for command in [
        vec!["nft", "add", "table", "inet", "cutoff"],
        vec![
            "nft",
            "add",
            "chain",
            "inet",
            "cutoff",
            "out",
            "{ type filter hook output priority -10 ; }",
        ],
        vec![
            "nft",
            "add",
            "chain",
            "inet",
            "cutoff",
            "in",
            "{ type filter hook input priority -10 ; }",
        ],
        vec![
            "nft", "add", "rule", "inet", "cutoff", "out", "ip6", "daddr", address, "drop",
        ],
        vec![
            "nft", "add", "rule", "inet", "cutoff", "in", "ip6", "saddr", address, "drop",
        ],
    ] {
        let done = netns.exec(&command);
        assert!(
            done.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
}

#[tokio::test]
async fn a_request_to_a_machine_cut_off_mid_answer_goes_to_another_machine() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app(APP, None).await.unwrap();
    let config = MachineConfig {
        image: aloft_testkit::testapp_image(),
        services: vec![aloft_testkit::checked_service()],
        ..MachineConfig::default()
    };
    let doomed = start(client, APP, config.clone()).await;
    let other = start(client, APP, config).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();
    let forced = |machine: &str, path: &str| {
        http.get(format!("http://{proxy}{path}"))
            .header("host", format!("{APP}.aloft.localhost"))
            .header("fly-force-instance-id", machine)
            .timeout(Duration::from_secs(10))
    };
    for machine in [&doomed.id, &other.id] {
        eventually(
            "both machines to be routed to",
            Duration::from_secs(30),
            || async {
                let answer = forced(machine, "/").send().await.ok()?;
                (answer.status() == 200).then_some(())
            },
        )
        .await;
    }

    // A slow request that prefers the doomed machine (so it may go elsewhere after).
    let slow = tokio::spawn({
        let (http, doomed) = (http.clone(), doomed.id.clone());
        async move {
            let started = Instant::now();
            let answer = http
                .get(format!("http://{proxy}/slow?ms=3000"))
                .header("host", format!("{APP}.aloft.localhost"))
                .header("fly-prefer-instance-id", &doomed)
                .timeout(Duration::from_secs(60))
                .send()
                .await;
            let answer = match answer {
                Ok(answer) => Ok((
                    answer.status().as_u16(),
                    answer.text().await.unwrap_or_default(),
                )),
                Err(error) => Err(format!("{error:?}")),
            };
            (answer, started.elapsed())
        }
    });
    // Positive control: the request is in flight on the doomed machine (its count
    // leaves out the asking request itself) before the machine is cut off.
    eventually(
        "the slow request to be in flight on the doomed machine",
        Duration::from_secs(10),
        || async {
            let stats = forced(&doomed.id, "/stats")
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            stats.contains("\"in_flight\":1").then_some(())
        },
    )
    .await;
    cut_off(&host.netns, &doomed.private_ip);

    let (answer, took) = slow.await.unwrap();
    let (status, body) = answer.unwrap_or_else(|e| panic!("the request got no answer: {e}"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("on machine {}", other.id)),
        "sent again to the other machine: {body}"
    );
    eprintln!("a request to a machine cut off mid-answer was answered by another in {took:?}");
}
