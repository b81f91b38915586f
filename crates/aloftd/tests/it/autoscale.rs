//! Autostop and autostart end to end: idle machines stop by Fly's rules, and a request to
//! an app whose machines are all stopped starts one and is answered.

use std::time::{Duration, Instant};

use aloft_client::Client;
use aloft_testkit::eventually;
use aloft_types::MachineState;
use aloft_types::machine::{Autostop, MachineService};

use crate::proxy::{ECHO, get, proxy_address, serve, service};
use crate::{Host, Server};

fn sleepy_service(autostart: bool) -> MachineService {
    MachineService {
        autostop: Some(Autostop::Stop),
        autostart: Some(autostart),
        min_machines_running: Some(0),
        ..service(false)
    }
}

async fn state_of(client: &Client, app: &str, machine: &str) -> Option<MachineState> {
    client.machine(app, machine).await.ok()?.state.parse().ok()
}

/// The `reason` of the machine's latest `flyd` event of `kind`.
async fn platform_reason(client: &Client, app: &str, machine: &str, kind: &str) -> Option<String> {
    let events = client.events(app, machine).await.ok()?;
    events
        .iter()
        .find(|e| e.kind == kind && e.source == "flyd" && e.status == "requested")
        .and_then(|e| e.request.get("reason")?.as_str().map(str::to_owned))
}

#[tokio::test]
async fn idle_machines_stop_and_a_request_starts_one_again() {
    let host = Host::with_proxy("autostop_interval_seconds = 1");
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("sleepy", None).await.unwrap();
    let first = serve(client, "sleepy", ECHO, sleepy_service(true)).await;
    let second = serve(client, "sleepy", ECHO, sleepy_service(true)).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();

    // Idle: one machine stops per look (excess), then the lone one (idle).
    for machine in [&first.id, &second.id] {
        eventually("idle machines to stop", Duration::from_secs(30), || async {
            (state_of(client, "sleepy", machine).await == Some(MachineState::Stopped)).then_some(())
        })
        .await;
        assert_eq!(
            platform_reason(client, "sleepy", machine, "stop")
                .await
                .as_deref(),
            Some("autostop")
        );
    }

    // A request to an app whose machines are all stopped starts one and is answered.
    let cold = Instant::now();
    let response = get(&http, proxy, "sleepy.aloft.localhost", "/").await;
    let cold_start = cold.elapsed();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let body = response.text().await.unwrap();
    let woken = body
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("machine="))
        .unwrap()
        .to_owned();
    assert!(woken == first.id || woken == second.id, "{body}");
    assert_eq!(
        platform_reason(client, "sleepy", &woken, "start")
            .await
            .as_deref(),
        Some("autostart")
    );
    // The cold start's time, for the record (`--nocapture` shows it).
    eprintln!("cold start through the proxy: {cold_start:?}");
    // Only one machine was started for it.
    let others: Vec<_> = [&first.id, &second.id]
        .into_iter()
        .filter(|m| **m != woken)
        .collect();
    assert_eq!(
        state_of(client, "sleepy", others[0]).await,
        Some(MachineState::Stopped)
    );
}

#[tokio::test]
async fn a_service_without_autostart_stays_stopped_and_says_so() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("manual", None).await.unwrap();
    let machine = serve(client, "manual", ECHO, sleepy_service(false)).await;
    client
        .stop_machine("manual", &machine.id, None, None)
        .await
        .unwrap();
    client
        .wait("manual", &machine.id, MachineState::Stopped, 60)
        .await
        .unwrap();
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();
    // The catalog reaches the proxy within moments; until then it may still route.
    let response = eventually(
        "a 503 for a stopped app",
        Duration::from_secs(10),
        || async {
            let response = get(&http, proxy, "manual.aloft.localhost", "/").await;
            (response.status() == 503).then_some(response)
        },
    )
    .await;
    let body = response.text().await.unwrap();
    assert!(body.contains("no started machine"), "{body}");
    assert_eq!(
        state_of(client, "manual", &machine.id).await,
        Some(MachineState::Stopped)
    );
}
