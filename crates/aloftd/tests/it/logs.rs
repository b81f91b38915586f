//! Machine logs end to end: a machine's output in the host's log store, through the API.

use std::time::{Duration, Instant};

use aloft_client::{Client, LogsRequest};
use aloft_types::MachineState;

use crate::{Host, Server};

const APP: &str = "chatty";
const LINES: u64 = 1_000_000;

/// Reads one page after `cursor`: the numbers the machine printed, and the next cursor.
async fn page(client: &Client, cursor: &str) -> Option<(Vec<u64>, String, usize)> {
    let page = client
        .logs(
            APP,
            &LogsRequest {
                cursor: Some(cursor.to_owned()),
                newest: Some(false),
                limit: Some(10_000),
                ..LogsRequest::default()
            },
        )
        .await
        .ok()?;
    let numbers = page
        .entries
        .iter()
        .filter(|e| e.stream == "stdout")
        .map(|e| e.message.parse().unwrap_or(u64::MAX))
        .collect();
    Some((numbers, page.next_cursor, page.entries.len()))
}

/// A machine prints a million numbered lines as fast as it can; `aloftd` is killed with
/// -9 in the middle and started again. Every line is stored exactly once and in order
/// (the test reads them all back through the API with a cursor), lines written while the
/// daemon was down included; platform lines tell of the machine's start and exit; text
/// and machine filters find single lines.
#[tokio::test]
async fn a_million_lines_are_all_stored_once_and_survive_kill_9() {
    let host = Host::new();
    let mut server = Server::start(&host).await;
    server.client.create_app(APP, None).await.unwrap();
    let request: aloft_types::api::MachineRequest = serde_json::from_value(serde_json::json!({
        "name": "printer",
        "config": {
            "image": aloft_testkit::busybox_image(),
            "init": { "cmd": ["sh", "-c", format!("seq 1 {LINES}; sleep 3600")] },
            "restart": { "policy": "no" }
        }
    }))
    .unwrap();
    let machine = server.client.create_machine(APP, &request).await.unwrap();
    server
        .client
        .wait(APP, &machine.id, MachineState::Started, 60)
        .await
        .unwrap();

    let started = Instant::now();
    let mut cursor = "0".to_owned();
    let mut seen: Vec<u64> = Vec::with_capacity(LINES as usize);
    let mut killed = false;
    while (seen.len() as u64) < LINES {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {} of {LINES} lines after 5 minutes",
            seen.len()
        );
        if !killed && seen.len() > 100_000 {
            // Everything read so far was acknowledged (only synced lines are visible).
            server.kill();
            server = Server::start(&host).await;
            killed = true;
            continue;
        }
        match page(&server.client, &cursor).await {
            Some((numbers, next, count)) => {
                seen.extend(numbers);
                cursor = next;
                if count == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(killed, "the daemon was killed mid-stream");
    assert_eq!(seen.len() as u64, LINES, "no line twice");
    for (index, number) in seen.iter().enumerate() {
        assert_eq!(
            *number,
            index as u64 + 1,
            "line {} is out of place",
            index + 1
        );
    }
    eprintln!(
        "{LINES} lines stored and read back in {:?}, aloftd killed -9 once",
        started.elapsed()
    );

    let client = &server.client;
    let found = client
        .logs(
            APP,
            &LogsRequest {
                since: Some("10m".to_owned()),
                text: Some("999999".to_owned()),
                newest: Some(false),
                ..LogsRequest::default()
            },
        )
        .await
        .unwrap();
    let texts: Vec<&str> = found.entries.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(texts, ["999999"]);
    assert_eq!(found.entries[0].machine, machine.id);
    assert!(
        found.entries[0].id.starts_with(&server.host_id()),
        "a line's id names its host: {}",
        found.entries[0].id
    );
    let other = client
        .logs(
            APP,
            &LogsRequest {
                machine: Some("nosuchmachine0".to_owned()),
                ..LogsRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(other.entries.is_empty());
    let platform = client
        .logs(
            APP,
            &LogsRequest {
                text: Some("machine".to_owned()),
                newest: Some(false),
                ..LogsRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(
        platform
            .entries
            .iter()
            .any(|e| e.stream == "platform" && e.message.contains("start")),
        "the platform's events are lines too: {:?}",
        platform.entries
    );
    let bad = client
        .logs(
            APP,
            &LogsRequest {
                since: Some("yesterday".to_owned()),
                ..LogsRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(400), "{bad}");
    client
        .destroy_machine(APP, &machine.id, true)
        .await
        .unwrap();
}
