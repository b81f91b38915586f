//! Log queries through the API against a real log store: each organization sees only
//! its own retention window.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aloft_client::{Client, LogsRequest};
use aloft_logs::{LogConfig, LogStore, NewEntry, Stream};
use aloft_testplatform::{Backend, ControlApi, ControlOptions};
use aloft_types::HostId;

fn line(app: &str, text: &str, age: Duration) -> NewEntry {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    NewEntry {
        timestamp_ns: now - age.as_nanos() as i64,
        stream: Stream::Stdout,
        app: app.to_owned(),
        machine: "148e21ea7d2e89".to_owned(),
        region: "local".to_owned(),
        instance: "01".to_owned(),
        text: text.to_owned(),
    }
}

async fn messages(client: &Client, app: &str, since: Option<&str>) -> Vec<String> {
    client
        .logs(
            app,
            &LogsRequest {
                since: since.map(str::to_owned),
                newest: Some(false),
                ..LogsRequest::default()
            },
        )
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.message)
        .collect()
}

#[tokio::test]
async fn each_organization_sees_its_own_log_retention() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostId::generate([2; 8]);
    let logs = LogStore::open(LogConfig::new(dir.path().join("logs"))).unwrap();
    let day = Duration::from_secs(86_400);
    let platform = ControlApi::start(ControlOptions {
        parts: aloft_control::ControlParts {
            logs: Some((host.clone(), logs.clone())),
            log_retention: aloft_control::LogRetention {
                default: Some(30 * day),
                by_org: HashMap::from([("trial".to_owned(), day)]),
            },
            ..aloft_control::ControlParts::default()
        },
        host: Some(host),
        ..ControlOptions::new(Backend::Sqlite)
    })
    .await;
    let url = platform.url.clone();

    let admin = platform.client.clone();
    admin.create_app("keeper", None).await.unwrap();
    let trial = admin.create_org("trial", None).await.unwrap();
    let trial = Client::new(&url, &trial.token);
    trial.create_app("brief", None).await.unwrap();
    let mut durable = logs.subscribe();
    logs.append(vec![
        line("keeper", "three days old", 3 * day),
        line("keeper", "fresh", Duration::ZERO),
        line("brief", "three days old", 3 * day),
        line("brief", "fresh", Duration::ZERO),
    ])
    .await
    .unwrap();
    durable.wait_for(|seq| *seq >= 4).await.unwrap();

    assert_eq!(
        messages(&admin, "keeper", None).await,
        ["three days old", "fresh"],
        "30 days by default"
    );
    assert_eq!(
        messages(&trial, "brief", None).await,
        ["fresh"],
        "trial keeps one day"
    );
    assert_eq!(
        messages(&trial, "brief", Some("7d")).await,
        ["fresh"],
        "asking further back changes nothing"
    );
    assert!(
        admin.logs("brief", &LogsRequest::default()).await.is_err(),
        "another organization's app is not found"
    );
    platform.stop().await;
}

/// Security: lines are kept by app name, and a deleted app's name is free again. Another
/// organization that creates an app under it reads only its own app's lines.
#[tokio::test]
async fn an_app_created_under_a_freed_name_does_not_read_the_old_apps_lines() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostId::generate([2; 8]);
    let logs = LogStore::open(LogConfig::new(dir.path().join("logs"))).unwrap();
    let platform = ControlApi::start(ControlOptions {
        parts: aloft_control::ControlParts {
            logs: Some((host.clone(), logs.clone())),
            ..aloft_control::ControlParts::default()
        },
        host: Some(host),
        ..ControlOptions::new(Backend::Sqlite)
    })
    .await;
    let admin = platform.client.clone();
    admin.create_app("reused", None).await.unwrap();
    let mut durable = logs.subscribe();
    logs.append(vec![line(
        "reused",
        "the first owner's secret",
        Duration::ZERO,
    )])
    .await
    .unwrap();
    durable.wait_for(|seq| *seq >= 1).await.unwrap();
    // The positive control: the owner reads it.
    assert_eq!(
        messages(&admin, "reused", None).await,
        ["the first owner's secret"]
    );
    admin.delete_app("reused").await.unwrap();

    let other = admin.create_org("other", None).await.unwrap();
    let other = Client::new(&platform.url, &other.token);
    other.create_app("reused", None).await.unwrap();
    logs.append(vec![line("reused", "the new owner's line", Duration::ZERO)])
        .await
        .unwrap();
    durable.wait_for(|seq| *seq >= 2).await.unwrap();
    assert_eq!(
        messages(&other, "reused", Some("7d")).await,
        ["the new owner's line"],
        "the old app's lines stay hidden"
    );
    platform.stop().await;
}
