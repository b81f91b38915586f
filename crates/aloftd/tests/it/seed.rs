//! The seed's load balancer end to end: machines made from the lowered `[[services]]` of
//! the Terrateam staging fly.toml (ports 80/443 with `force_https`, `tls`+`http`,
//! connections soft 20 / hard 25, `/health` checks every 10 s), running an app that
//! counts how many requests it serves at once.

use std::time::Duration;

use aloft_client::Client;
use aloft_config::{Format, SourceFile};
use aloft_testkit::{BUSYBOX_IMAGE, eventually};
use aloft_types::machine::MachineConfig;

use crate::proxy::{curl_https, get, proxy_address, start};
use crate::{Host, Server};

/// Serves `/health`, and any other path after `$DELAY` seconds; every request records how
/// many are in flight (files in /tmp/active) in /tmp/counts.
const COUNTING: &str = r#"#!/bin/sh
read -r method path rest
headers=""
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  headers="$headers$line
"
done
if [ "$path" = "/health" ]; then
  body="ok"
else
  mkdir -p /tmp/active
  touch /tmp/active/$$
  ls /tmp/active | wc -l >> /tmp/counts
  sleep "$DELAY"
  rm -f /tmp/active/$$
  body="machine=$FLY_MACHINE_ID
$headers"
fi
printf 'HTTP/1.1 200 OK\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "${#body}" "$body"
"#;

/// The seed's fly.toml lowered as `aloft deploy` would, running [`COUNTING`].
fn seed_config(delay_seconds: u32) -> MachineConfig {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../aloft-config/tests/data/valid/01-seed-terrateam-staging.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let parsed = aloft_config::parse(SourceFile::new(path, text, Format::Toml));
    let config = parsed.config().expect("the seed's fly.toml is valid");
    let mut machine = config
        .to_machine_config("app", std::path::Path::new(path), Some(BUSYBOX_IMAGE))
        .unwrap();
    machine.init.cmd = vec![
        "sh".into(),
        "-c".into(),
        "mkdir -p /srv && printf '%s' \"$ECHO_SCRIPT\" > /srv/echo && chmod +x /srv/echo && exec nc -ll -p 8080 -e /srv/echo".into(),
    ];
    machine.env.insert("ECHO_SCRIPT".into(), COUNTING.into());
    machine
        .env
        .insert("DELAY".into(), delay_seconds.to_string());
    machine
}

/// The most requests the machine's app ever had in flight at once.
async fn most_at_once(client: &Client, app: &str, machine: &str) -> u32 {
    let counts = client
        .exec(app, machine, vec!["cat".into(), "/tmp/counts".into()], None)
        .await
        .unwrap();
    counts
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn the_seeds_services_redirect_serve_https_and_hold_the_hard_limit() {
    let host = Host::with_proxy("queue_timeout_seconds = 2");
    let server = Server::start(&host).await;
    let client = &server.client;
    let app = "terrateam-app-staging";
    client.create_app(app, None).await.unwrap();
    // Each slow request takes 8 s, four times the 2 s queue: a request that reaches the
    // proxy late (60 curls take a while to start on a loaded machine) still finds every
    // slot taken. With 4 s, CI once saw 56 served: the last requests came after 2 s.
    let config = seed_config(8);
    let service = &config.services[0];
    assert_eq!(
        service
            .concurrency
            .as_ref()
            .map(|c| (c.soft_limit, c.hard_limit)),
        Some((Some(20), Some(25)))
    );
    let first = start(client, app, config.clone()).await;
    let second = start(client, app, config).await;
    let proxy = proxy_address(&host);
    let host_name = format!("{app}.aloft.localhost");
    let http = aloft_testkit::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    // The /health checks (10 s grace, 10 s interval) let both machines in.
    for machine in [&first.id, &second.id] {
        eventually(
            "the seed's check to pass",
            Duration::from_secs(60),
            || async {
                let machine = client.machine(app, machine).await.ok()?;
                machine
                    .checks
                    .iter()
                    .any(|c| c.status == aloft_types::CheckStatus::Passing)
                    .then_some(())
            },
        )
        .await;
    }

    // http:// answers 301 to https://; https:// serves with the local CA.
    let response = eventually("the app to be routed", Duration::from_secs(10), || async {
        let response = get(&http, proxy, &host_name, "/page?x=1").await;
        (response.status() == 301).then_some(response)
    })
    .await;
    assert_eq!(
        response.headers()["location"],
        format!(
            "https://{host_name}:{}/page?x=1",
            crate::proxy::https_address(&host).port()
        )
        .as_str()
    );
    let ca = host.data().join(aloftd::TLS_DIR).join("ca.crt");
    let (code, answer) = curl_https(&host, app, &["--cacert", ca.to_str().unwrap()]);
    assert_eq!(code, 0, "{answer}");
    for expected in [
        "http/2 200",
        "fly-request-id: ",
        "via: ",
        "fly-client-ip: 127.0.0.1",
        "x-forwarded-proto: https",
        "fly-forwarded-port: ",
    ] {
        assert!(answer.contains(expected), "{expected:?} in {answer}");
    }

    // 60 slow requests at once (over HTTPS, the seed's only served scheme): each machine
    // takes at most 25, the other 10 wait 2 s in the queue and get a 503 that says why.
    let https: std::net::SocketAddr =
        std::fs::read_to_string(host.data().join(aloftd::HTTPS_ADDR_FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let name = format!("{host_name}:{}:127.0.0.1", https.port());
    let url = format!("https://{host_name}:{}/slow", https.port());
    let requests: Vec<_> = (0..60)
        .map(|_| {
            let mut curl = tokio::process::Command::new("curl");
            curl.args(["-s", "--http1.1", "--max-time", "30", "--resolve", &name])
                .arg("--cacert")
                .arg(&ca)
                .args(["-w", "\n%{http_code}", &url]);
            // Each in a task of its own: all 60 are in flight together.
            tokio::spawn(async move { curl.output().await })
        })
        .collect();
    let mut answered = Vec::new();
    for request in requests {
        let output = request.await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        answered.push((status.parse::<u16>().unwrap_or(0), body.to_owned()));
    }
    let served = answered.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = answered.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!((served, refused.len()), (50, 10), "{answered:?}");
    assert!(
        refused[0].1.contains("at its hard limit"),
        "{}",
        refused[0].1
    );
    for machine in [&first.id, &second.id] {
        assert_eq!(
            most_at_once(client, app, machine).await,
            25,
            "machine {machine}"
        );
    }
}
