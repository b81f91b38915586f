//! `aloft machine kill|suspend|wait|leases|clone|update` (flyctl's machine commands) on
//! a platform of simulated hosts (`SimPlatform`, in real time: no Docker).

use std::process::{Command, Output};
use std::time::Duration;

use aloft_testkit::eventually;
use aloft_testplatform::SimPlatform;
use aloft_types::MachineState;
use aloft_types::api::MachineRequest;
use aloft_types::machine::MachineConfig;

use crate::text;

const APP: &str = "machines";

fn run(url: &str, token: &str, home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(args)
        .args(["-a", APP])
        .env("ALOFT_CONFIG_DIR", home)
        .env("ALOFT_API_URL", url)
        .env("ALOFT_API_TOKEN", token)
        .env("NO_COLOR", "1")
        .current_dir(home)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// A started machine of the app.
async fn started(platform: &SimPlatform) -> String {
    let mut config = MachineConfig {
        image: "sim/app:1".to_owned(),
        ..MachineConfig::default()
    };
    config.env.insert("KEEP".to_owned(), "1".to_owned());
    let machine = platform
        .client
        .create_machine(APP, &MachineRequest::new(config))
        .await
        .unwrap();
    platform
        .client
        .wait(APP, &machine.id, MachineState::Started, 30)
        .await
        .unwrap();
    machine.id
}

#[tokio::test(flavor = "multi_thread")]
async fn flyctls_machine_commands_do_what_they_say() {
    let platform = SimPlatform::start(1).await;
    let (url, token) = platform.api();
    let home = tempfile::tempdir().unwrap();
    let aloft =
        |args: &[&str]| tokio::task::block_in_place(|| run(&url, &token, home.path(), args));
    let client = &platform.client;
    client.create_app(APP, None).await.unwrap();
    let id = started(&platform).await;

    // wait: settled at once for a started machine; a state it is not in times out.
    let settled = aloft(&["machine", "wait", &id]);
    assert!(settled.status.success(), "{}", text(&settled.stderr));
    assert!(text(&settled.stderr).contains(&format!("Machine {id} is started")));
    let waited = aloft(&["machine", "wait", &id, "--state", "stopped", "-w", "1s"]);
    assert!(!waited.status.success());
    assert!(
        text(&waited.stderr).contains("is started and did not become stopped within 1s"),
        "{}",
        text(&waited.stderr)
    );
    let bad = aloft(&["machine", "wait", &id, "--state", "asleep"]);
    assert!(text(&bad.stderr).contains("--state \"asleep\" is not a machine state"));

    // leases: none, then the one taken, then none once cleared.
    let none = aloft(&["machine", "leases", "view"]);
    assert!(none.status.success(), "{}", text(&none.stderr));
    assert!(
        text(&none.stdout).contains("(no lease)"),
        "{}",
        text(&none.stdout)
    );
    let lease = client
        .acquire_lease(APP, &id, 600, "held by the test")
        .await
        .unwrap();
    let view = aloft(&["machine", "leases", "view", &id]);
    let shown = text(&view.stdout);
    assert!(shown.contains("held by the test"), "{shown}");
    assert!(shown.contains(&lease.data.nonce), "{shown}");
    let cleared = aloft(&["machine", "leases", "clear"]);
    assert!(cleared.status.success(), "{}", text(&cleared.stderr));
    assert!(text(&cleared.stderr).contains(&format!("Released the lease on machine {id}")));
    assert_eq!(
        client.machine_lease(APP, &id).await.unwrap_err().status(),
        Some(404)
    );

    // update: refused without --yes where nobody can be asked, then done with it.
    let asked = aloft(&["machine", "update", &id, "-i", "sim/app:2", "-e", "NEW=2"]);
    assert!(!asked.status.success());
    assert!(
        text(&asked.stderr).contains("pass --yes"),
        "{}",
        text(&asked.stderr)
    );
    assert_eq!(
        client.machine(APP, &id).await.unwrap().config.image,
        "sim/app:1"
    );
    let before = client.machine(APP, &id).await.unwrap().version;
    let updated = aloft(&[
        "machine",
        "update",
        &id,
        "-i",
        "sim/app:2",
        "-e",
        "NEW=2",
        "--yes",
    ]);
    assert!(updated.status.success(), "{}", text(&updated.stderr));
    let machine = client.machine(APP, &id).await.unwrap();
    assert_eq!(machine.config.image, "sim/app:2");
    assert_eq!(machine.config.env.get("NEW").map(String::as_str), Some("2"));
    assert_eq!(
        machine.config.env.get("KEEP").map(String::as_str),
        Some("1")
    );
    assert_ne!(machine.version, before);
    assert_eq!(machine.state, "started");
    let nothing = aloft(&["machine", "update", &id, "--yes"]);
    assert!(
        text(&nothing.stderr).contains("changes nothing"),
        "{}",
        text(&nothing.stderr)
    );

    // clone: another machine with the same config.
    let cloned = aloft(&[
        "machine", "clone", &id, "--name", "copy", "--detach", "--json",
    ]);
    assert!(cloned.status.success(), "{}", text(&cloned.stderr));
    let copy: serde_json::Value = serde_json::from_slice(&cloned.stdout).unwrap();
    let copy_id = copy["id"].as_str().unwrap().to_owned();
    assert_ne!(copy_id, id);
    let copy = client.machine(APP, &copy_id).await.unwrap();
    assert_eq!(copy.name, "copy");
    assert_eq!(copy.config.image, "sim/app:2");
    assert_eq!(copy.config.env.get("NEW").map(String::as_str), Some("2"));

    // kill: SIGKILL ends the run (exit code 137).
    let killed = aloft(&["machine", "kill", &copy_id]);
    assert!(killed.status.success(), "{}", text(&killed.stderr));
    eventually(
        "the killed run's exit event",
        Duration::from_secs(30),
        || async {
            let events = client.events(APP, &copy_id).await.ok()?;
            events
                .iter()
                .any(|e| {
                    e.kind == "exit"
                        && e.request.pointer("/exit_event/exit_code") == Some(&137.into())
                })
                .then_some(())
        },
    )
    .await;

    // suspend: a container is stopped instead, and says so.
    let suspended = aloft(&["machine", "suspend", &id]);
    assert!(suspended.status.success(), "{}", text(&suspended.stderr));
    assert!(
        text(&suspended.stderr).contains("a container is stopped: stopped"),
        "{}",
        text(&suspended.stderr)
    );
    assert_eq!(client.machine(APP, &id).await.unwrap().state, "stopped");
    platform.stop().await;
}
