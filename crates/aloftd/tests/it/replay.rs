//! fly-replay end to end: a machine's answer sends the request to another app, another
//! machine of its own app, or (when nothing can take it) back to itself with
//! `fly-replay-failed`.

use std::time::Duration;

use aloft_testkit::eventually;

use crate::proxy::{ECHO, get, proxy_address, serve, service};
use crate::{Host, Server};

/// Answers by path: asks for replays in the header and JSON forms, and shows what a
/// replayed or returned request carried.
const ROUTER: &str = r#"#!/bin/sh
read -r method path rest
headers=""
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  headers="$headers$line
"
done
failed=$(printf '%s' "$headers" | grep -i '^fly-replay-failed:')
source=$(printf '%s' "$headers" | grep -i '^fly-replay-src:')
extra=""
type="text/plain"
body="machine=$FLY_MACHINE_ID"
if [ -n "$failed" ]; then
  body="fallback machine=$FLY_MACHINE_ID $failed"
elif [ -n "$source" ]; then
  body="machine=$FLY_MACHINE_ID $source"
elif [ "$path" = "/to-target" ]; then
  extra="fly-replay: app=target;state=s1\r\n"
elif [ "$path" = "/nowhere" ]; then
  extra="fly-replay: app=target;instance=nosuchmachine;fallback=prefer_self\r\n"
elif [ "$path" = "/nowhere-strict" ]; then
  extra="fly-replay: app=target;instance=nosuchmachine\r\n"
elif [ "$path" = "/elsewhere" ]; then
  extra="fly-replay: elsewhere=true\r\n"
elif [ "$path" = "/json" ]; then
  type="application/vnd.fly.replay+json"
  body='{"app":"target","transform":{"path":"/transformed","set_headers":[{"name":"x-set","value":"yes"}]}}'
fi
printf "HTTP/1.1 200 OK\r\nContent-Type: $type\r\n${extra}Content-Length: ${#body}\r\nConnection: close\r\n\r\n"
printf '%s' "$body"
"#;

#[tokio::test]
async fn replays_reach_other_apps_and_machines_and_fail_back_to_the_origin() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("origin", None).await.unwrap();
    client.create_app("target", None).await.unwrap();
    let first = serve(client, "origin", ROUTER, service(false)).await;
    let second = serve(client, "origin", ROUTER, service(false)).await;
    let target = serve(client, "target", ECHO, service(false)).await;
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();
    eventually(
        "both apps to be routed",
        Duration::from_secs(30),
        || async {
            let origin = get(&http, proxy, "origin.aloft.localhost", "/").await;
            let target = get(&http, proxy, "target.aloft.localhost", "/").await;
            (origin.status() == 200 && target.status() == 200).then_some(())
        },
    )
    .await;
    let origins = [first.id.as_str(), second.id.as_str()];

    // To another app, with the state and the asking machine in fly-replay-src.
    let body = get(&http, proxy, "origin.aloft.localhost", "/to-target")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        body.starts_with(&format!("machine={}", target.id)),
        "{body}"
    );
    let source = body
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("fly-replay-src:"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        origins
            .iter()
            .any(|m| source.contains(&format!("instance={m};region=local;t="))),
        "{source}"
    );
    assert!(source.ends_with(";state=s1"), "{source}");

    // The JSON form, with a transform, and a body that is sent again.
    let response = http
        .post(format!("http://{proxy}/json"))
        .header("host", "origin.aloft.localhost")
        .body("hello")
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap().to_ascii_lowercase();
    assert!(
        body.starts_with(&format!("machine={}", target.id)),
        "{body}"
    );
    for expected in [
        "post /transformed http/1.1",
        "x-set: yes",
        "content-length: 5",
    ] {
        assert!(body.contains(expected), "{expected:?} in {body}");
    }

    // elsewhere=true: the other machine of the same app takes it.
    for _ in 0..4 {
        let body = get(&http, proxy, "origin.aloft.localhost", "/elsewhere")
            .await
            .text()
            .await
            .unwrap();
        let answered = body
            .strip_prefix("machine=")
            .and_then(|b| b.split_whitespace().next())
            .unwrap()
            .to_owned();
        assert!(origins.contains(&answered.as_str()), "{body}");
        assert!(
            !body.contains(&format!("instance={answered};")),
            "the asking machine answered its own replay: {body}"
        );
    }

    // No candidate: with a fallback the origin gets it back with fly-replay-failed...
    let body = get(&http, proxy, "origin.aloft.localhost", "/nowhere")
        .await
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("fallback machine="), "{body}");
    let failed = body.to_ascii_lowercase();
    assert!(
        failed.contains(
            "fly-replay-failed: instance=nosuchmachine;app=target;region=;replay_source="
        ) && failed.contains(";reason=no_candidate;elapsed_ms="),
        "{body}"
    );
    // ...and without one the client gets an error that says why.
    let response = get(&http, proxy, "origin.aloft.localhost", "/nowhere-strict").await;
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("fly-replay failed") && body.contains("no_candidate"),
        "{body}"
    );
}
