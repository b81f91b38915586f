//! Health checks end to end: the agent checks real machines over the private network,
//! the API shows the results, and the proxy routes by them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aloft_client::Client;
use aloft_testkit::eventually;
use aloft_types::CheckStatus;
use aloft_types::machine::{CheckType, MachineCheck, MachineService};

use crate::proxy::{get, proxy_address, script_config, start};
use crate::{Host, Server};

/// `/health` answers 200 while `/srv/healthy` exists, 503 otherwise; anything else
/// answers with the machine's id.
const HEALTH: &str = r#"#!/bin/sh
read -r method path rest
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
done
status="200 OK"
body="machine=$FLY_MACHINE_ID"
if [ "$path" = "/health" ]; then
  if [ -e /srv/healthy ]; then body="ok"; else status="503 Service Unavailable"; body="down"; fi
fi
printf 'HTTP/1.1 %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "$status" "${#body}" "$body"
"#;

/// Port 80 over HTTP to 8080, with an HTTP check of `/health` every second.
pub(crate) fn checked_service() -> MachineService {
    aloft_testkit::checked_service()
}

const CHECK: &str = "servicecheck-00-http-8080";

async fn check_status(client: &Client, app: &str, machine: &str) -> Option<(CheckStatus, String)> {
    let machine = client.machine(app, machine).await.ok()?;
    let check = machine.checks.iter().find(|c| c.name == CHECK)?;
    Some((check.status, check.output.clone()))
}

async fn set_healthy(client: &Client, app: &str, machine: &str, healthy: bool) {
    let command = if healthy {
        "touch /srv/healthy"
    } else {
        "rm -f /srv/healthy"
    };
    let done = crate::sh(client, app, machine, command, None).await;
    assert_eq!(done.exit_code, 0, "{done:?}");
}

/// The machines that answered `count` requests through the proxy.
async fn answering(
    http: &reqwest::Client,
    proxy: std::net::SocketAddr,
    count: usize,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..count {
        let response = get(http, proxy, "checked.aloft.localhost", "/").await;
        let body = response.text().await.unwrap_or_default();
        if let Some(machine) = body.strip_prefix("machine=") {
            seen.insert(machine.to_owned());
        }
    }
    seen
}

#[tokio::test]
async fn a_machine_failing_its_check_gets_no_traffic_until_it_passes_again() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("checked", None).await.unwrap();
    let mut machines = Vec::new();
    for _ in 0..2 {
        let mut config = script_config(HEALTH, checked_service());
        // A top-level check that always fails: reported, but routing ignores it.
        config.checks.insert(
            "sidecar".to_owned(),
            MachineCheck {
                port: Some(9999),
                kind: Some(CheckType::Tcp),
                interval: "1s".parse().ok(),
                ..MachineCheck::default()
            },
        );
        let machine = start(client, "checked", config).await;
        set_healthy(client, "checked", &machine.id, true).await;
        machines.push(machine.id);
    }
    let (sick, well) = (&machines[0], &machines[1]);
    let proxy = proxy_address(&host);
    // A connection per request: the service counts connections (Fly's default), so a
    // kept-alive connection would stay on one machine.
    let http = aloft_testkit::http_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    for machine in &machines {
        let (status, output) = eventually("the check to pass", Duration::from_secs(30), || async {
            check_status(client, "checked", machine)
                .await
                .filter(|(status, _)| *status == CheckStatus::Passing)
        })
        .await;
        assert_eq!(status, CheckStatus::Passing);
        assert!(output.contains("/health: 200 OK: ok"), "{output}");
    }
    eventually(
        "both machines to take requests",
        Duration::from_secs(10),
        || async { (answering(&http, proxy, 10).await.len() == 2).then_some(()) },
    )
    .await;
    let sidecar = eventually(
        "the top-level check to fail",
        Duration::from_secs(10),
        || async {
            let machine = client.machine("checked", well).await.ok()?;
            machine
                .checks
                .into_iter()
                .find(|c| c.name == "sidecar" && c.status == CheckStatus::Critical)
        },
    )
    .await;
    assert!(sidecar.output.contains(":9999"), "{sidecar:?}");
    // ...and both machines still take requests.
    assert_eq!(answering(&http, proxy, 10).await.len(), 2);

    // Failing: critical within an interval, and from then on no request reaches it.
    set_healthy(client, "checked", sick, false).await;
    let failed = Instant::now();
    let (_, output) = eventually("the check to fail", Duration::from_secs(10), || async {
        check_status(client, "checked", sick)
            .await
            .filter(|(status, _)| *status == CheckStatus::Critical)
    })
    .await;
    assert!(output.contains("503 Service Unavailable: down"), "{output}");
    eventually(
        "traffic to leave the failing machine",
        Duration::from_secs(5),
        || async {
            (answering(&http, proxy, 1).await == BTreeSet::from([well.clone()])).then_some(())
        },
    )
    .await;
    let took = failed.elapsed();
    assert_eq!(
        answering(&http, proxy, 20).await,
        BTreeSet::from([well.clone()])
    );
    // The interval is 1 s and the grace period is over: one interval plus the catalog's
    // turn, with room for a slow machine.
    assert!(
        took < Duration::from_secs(4),
        "routing followed the check after {took:?}"
    );

    // Restored: it passes again and gets traffic again.
    set_healthy(client, "checked", sick, true).await;
    eventually(
        "the restored machine to take requests",
        Duration::from_secs(10),
        || async {
            answering(&http, proxy, 10)
                .await
                .contains(sick)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        check_status(client, "checked", sick).await.map(|c| c.0),
        Some(CheckStatus::Passing)
    );

    // Prometheus sees the requests, the machines' load and the checks.
    let api = std::fs::read_to_string(host.data().join(aloftd::API_URL_FILE)).unwrap();
    let operator = std::fs::read_to_string(host.data().join("admin-token")).unwrap();
    let expected = [
        "aloft_proxy_requests_total{app=\"checked\",status=\"2xx\",handler=\"http\"} ".to_owned(),
        "aloft_proxy_request_duration_seconds_count{app=\"checked\"} ".to_owned(),
        "aloft_proxy_app_duration_seconds_bucket{app=\"checked\",le=\"+Inf\"} ".to_owned(),
        // Every client connection has closed (the proxy sees it close moments later).
        format!("aloft_proxy_machine_concurrency{{app=\"checked\",machine=\"{well}\"}} 0"),
        format!(
            "aloft_check_status{{app=\"checked\",machine=\"{well}\",check=\"{CHECK}\",status=\"passing\"}} 1"
        ),
        format!(
            "aloft_check_status{{app=\"checked\",machine=\"{well}\",check=\"sidecar\",status=\"critical\"}} 1"
        ),
    ];
    let mut metrics = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let answer = http
            .get(format!("{}/metrics", api.trim()))
            .bearer_auth(operator.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        metrics = answer.text().await.unwrap();
        if expected.iter().all(|e| metrics.contains(e)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for expected in &expected {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }

    // A stopped machine's checks are critical.
    client
        .stop_machine("checked", sick, None, None)
        .await
        .unwrap();
    let (_, output) = eventually(
        "the stopped machine's check to fail",
        Duration::from_secs(30),
        || async {
            check_status(client, "checked", sick)
                .await
                .filter(|(status, _)| *status == CheckStatus::Critical)
        },
    )
    .await;
    assert_eq!(output, aloft_agent::checks::STOPPED_OUTPUT);
}
