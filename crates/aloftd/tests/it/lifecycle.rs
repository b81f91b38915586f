//! The daemon's own life: signals and its configuration file.

use std::process::Command;
use std::time::Duration;

use aloft_types::MachineState;

use crate::{Host, Server, signal_and_wait};

#[tokio::test]
async fn sigterm_and_sigint_exit_cleanly_and_leave_machines_running() {
    let host = Host::new();
    let mut server = Server::start(&host).await;
    server.client.create_app("signals", None).await.unwrap();
    let request: aloft_types::api::MachineRequest = serde_json::from_value(serde_json::json!({
        "name": "keeper",
        "config": { "image": aloft_testkit::BUSYBOX_IMAGE, "init": { "cmd": ["sh", "-c", "while true; do sleep 1; done"] } }
    }))
    .unwrap();
    let machine = server
        .client
        .create_machine("signals", &request)
        .await
        .unwrap();
    server
        .client
        .wait("signals", &machine.id, MachineState::Started, 60)
        .await
        .unwrap();

    assert_eq!(
        signal_and_wait(&mut server, "TERM", Duration::from_secs(30)),
        Some(0),
        "SIGTERM drains and exits 0"
    );
    assert_eq!(
        server.containers_of(&machine.id).len(),
        1,
        "the machine outlives the daemon"
    );

    let mut server = Server::start(&host).await;
    server
        .client
        .wait("signals", &machine.id, MachineState::Started, 60)
        .await
        .unwrap();
    assert_eq!(
        signal_and_wait(&mut server, "INT", Duration::from_secs(10)),
        Some(0),
        "SIGINT exits at once"
    );
    assert_eq!(server.containers_of(&machine.id).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_start_prints_the_login_command_and_sigterm_ends_log_followers_within_the_grace()
{
    const GRACE: u64 = 8;
    let host = Host::with_proxy(&format!("[api]\nshutdown_grace_seconds = {GRACE}"));
    let mut server = Server::start(&host).await;
    // The banner names the whole login command, URL included.
    let banner = std::fs::read_to_string(host.data().with_extension("out")).unwrap();
    let url = std::fs::read_to_string(host.data().join("api-url")).unwrap();
    let token = std::fs::read_to_string(host.data().join("admin-token")).unwrap();
    assert!(
        banner.contains(&format!(
            "aloft auth login --token {} --api-url {}",
            token.trim(),
            url.trim()
        )),
        "{banner}"
    );

    // A redirected log carries no colour codes (its INFO lines are there: a positive
    // control that the log is the one written).
    let log = std::fs::read_to_string(host.data().with_extension("log")).unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\x1b'), "escape codes in {log}");

    server.client.create_app("chatty", None).await.unwrap();
    let request: aloft_types::api::MachineRequest = serde_json::from_value(serde_json::json!({
        "config": { "image": aloft_testkit::BUSYBOX_IMAGE, "init": { "cmd": ["sh", "-c", "while true; do echo tick; sleep 0.2; done"] } }
    }))
    .unwrap();
    let machine = server
        .client
        .create_machine("chatty", &request)
        .await
        .unwrap();
    server
        .client
        .wait("chatty", &machine.id, MachineState::Started, 60)
        .await
        .unwrap();
    // Five followers, each seen receiving lines before the signal.
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let followers: Vec<_> = (0..5)
        .map(|_| {
            let (client, seen) = (server.client.clone(), seen.clone());
            tokio::spawn(async move {
                let mut first = true;
                client
                    .follow_logs("chatty", &aloft_client::LogsRequest::default(), |_| {
                        if std::mem::take(&mut first) {
                            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        true
                    })
                    .await
            })
        })
        .collect();
    aloft_testkit::eventually(
        "every follower to get a line",
        Duration::from_secs(30),
        || async { (seen.load(std::sync::atomic::Ordering::SeqCst) == 5).then_some(()) },
    )
    .await;

    assert_eq!(
        signal_and_wait(&mut server, "TERM", Duration::from_secs(GRACE)),
        Some(0),
        "SIGTERM with 5 followers exits within the grace"
    );
    for follower in followers {
        let ended = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("the follower ended")
            .unwrap()
            .unwrap();
        assert_eq!(
            ended.map(|e| e.end).as_deref(),
            Some("shutting_down"),
            "each follower is told why"
        );
    }
}

#[test]
fn config_check_accepts_the_example_and_names_what_is_wrong() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/aloftd.example.toml");
    let ok = Command::new(env!("CARGO_BIN_EXE_aloftd"))
        .args(["config", "check", "--config", example])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("is valid"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "region = \"local\"\n[api]\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_aloftd"))
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(78),
        "invalid configuration exits EX_CONFIG"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("lisen"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_aloftd"))
        .args(["server", "--region", "Not A Region"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("region"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
