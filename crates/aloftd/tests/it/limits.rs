//! Security: every machine runs within limits, those of its `guest` or Fly's default size
//! (one shared CPU, 256 MB) when it has none, with a cap on its tasks; a tenant's fork bomb
//! or memory hog stops inside its own machine.

use std::time::Duration;

use aloft_client::Client;
use aloft_testkit::{BUSYBOX_IMAGE, eventually};
use aloft_types::MachineState;
use aloft_types::api::{MachineRequest, MachineResponse};
use aloft_types::machine::{
    MachineConfig, MachineGuest, MachineInit, MachineRestart, RestartPolicy,
};

use crate::{Host, Server};

const APP: &str = "limits";

async fn machine(
    client: &Client,
    name: &str,
    script: &str,
    guest: Option<MachineGuest>,
) -> MachineResponse {
    let request = MachineRequest {
        name: Some(name.to_owned()),
        ..MachineRequest::new(MachineConfig {
            image: BUSYBOX_IMAGE.to_owned(),
            init: MachineInit {
                cmd: vec!["sh".into(), "-c".into(), script.into()],
                ..MachineInit::default()
            },
            guest,
            restart: Some(MachineRestart {
                policy: Some(RestartPolicy::No),
                max_retries: 0,
            }),
            ..MachineConfig::default()
        })
    };
    client.create_machine(APP, &request).await.unwrap()
}

/// Runs `script` in the machine; its exit code, stdout and stderr.
async fn sh(client: &Client, id: &str, script: &str) -> (i64, String, String) {
    let done = crate::sh(client, APP, id, script, Some(60)).await;
    (done.exit_code, done.stdout, done.stderr)
}

/// The machine's last exit event: its exit code and whether the kernel killed it for
/// memory.
async fn last_exit(client: &Client, id: &str) -> Option<(i64, bool)> {
    let events = client.events(APP, id).await.ok()?;
    let exit = events.iter().find(|e| e.kind == "exit")?;
    let event = &exit.request["exit_event"];
    Some((
        event["exit_code"].as_i64()?,
        event["oom_killed"].as_bool().unwrap_or(false),
    ))
}

/// A cgroup file of the machine (v1's or v2's path), read with the shell's own `read`,
/// which needs no fork (none may be left).
fn read_cgroup(v1: &str, v2: &str) -> String {
    format!(
        "if [ -e /sys/fs/cgroup/{v1} ]; then read n < /sys/fs/cgroup/{v1}; \
         else read n < /sys/fs/cgroup/{v2}; fi; echo $n"
    )
}

#[tokio::test]
async fn a_fork_bomb_and_a_memory_hog_stay_inside_their_machine() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app(APP, None).await.unwrap();

    // No `guest`: Fly's default size, and 1,024 tasks.
    let bounded = machine(client, "bounded", "sleep 3600", None).await;
    client
        .wait(APP, &bounded.id, MachineState::Started, 60)
        .await
        .unwrap();
    let (_, memory, _) = sh(
        client,
        &bounded.id,
        &read_cgroup("memory/memory.limit_in_bytes", "memory.max"),
    )
    .await;
    assert_eq!(memory.trim(), "268435456", "256 MB");
    let (_, pids, _) = sh(
        client,
        &bounded.id,
        &read_cgroup("pids/pids.max", "pids.max"),
    )
    .await;
    assert_eq!(pids.trim(), "1024");
    let (_, env, _) = sh(client, &bounded.id, "echo $FLY_VM_MEMORY_MB").await;
    assert_eq!(env.trim(), "256");

    // The fork bomb: a shell forks sleeps until the cap, and dies when fork fails (ash
    // gives up); its parent reads the peak with builtins alone (nothing else can start).
    // The positive control: the peak is near the cap, so the probe does see a bomb.
    let bomb = format!(
        "mkdir -p /tmp; sh -c 'i=0; while [ $i -lt 3000 ]; do sleep 5 & i=$((i+1)); done' \
         2>/tmp/forks; {}",
        read_cgroup("pids/pids.current", "pids.current")
    );
    let (_, peak, _) = sh(client, &bounded.id, &bomb).await;
    let peak: u32 = peak.trim().parse().unwrap_or_else(|_| panic!("{peak:?}"));
    assert!(
        (900..=1024).contains(&peak),
        "the bomb peaked at {peak} tasks (the cap is 1,024)"
    );
    // The machine lives on: once the sleeps end, the machine's init reaps them (no
    // zombie keeps a slot) and it runs commands again.
    let left = eventually(
        "the machine to run commands again after the bomb",
        Duration::from_secs(60),
        || async {
            let answer = client
                .exec(
                    APP,
                    &bounded.id,
                    vec![
                        "sh".into(),
                        "-c".into(),
                        read_cgroup("pids/pids.current", "pids.current"),
                    ],
                    Some(10),
                )
                .await
                .ok()?;
            let tasks: u32 = answer.stdout.trim().parse().ok()?;
            (tasks < 10).then_some(tasks)
        },
    )
    .await;
    eprintln!("after the bomb: {left} tasks");
    let (_, failed, _) = sh(client, &bounded.id, "cat /tmp/forks").await;
    assert!(
        failed.contains("can't fork"),
        "fork failed inside: {failed:?}"
    );

    // An exec's output is held to 1 MiB per stream and its command killed past it, or
    // past its timeout: the agent's memory and the machine's tasks are safe. The positive
    // controls: 512 KiB comes back whole, and the probe sees a command that runs.
    let (code, half, _) = sh(client, &bounded.id, "head -c 524288 /dev/zero | tr '\\0' x").await;
    assert_eq!((code, half.len()), (0, 524_288));
    let flood = client
        .exec(APP, &bounded.id, vec!["yes".into()], Some(60))
        .await
        .unwrap_err()
        .to_string();
    assert!(flood.contains("more than 1048576 bytes"), "{flood}");
    let hung = client
        .exec(
            APP,
            &bounded.id,
            vec!["sleep".into(), "600".into()],
            Some(1),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(hung.contains("did not finish within"), "{hung}");
    // The background command needs a moment to exec: the probe looks for up to 5 s.
    let (_, seen, _) = sh(
        client,
        &bounded.id,
        "sleep 31 & for i in $(seq 50); do ps | grep -q 'sleep 31$' && break; sleep 0.1; done; ps | grep -c 'sleep 31$'",
    )
    .await;
    assert_eq!(seen.trim(), "1", "the probe sees a running command");
    // A killed command is gone once its parent (the engine's init) has reaped it.
    let left = eventually(
        "the killed commands to go",
        Duration::from_secs(10),
        || async {
            let (_, left, _) = sh(
                client,
                &bounded.id,
                "ps | grep -c ' yes$\\|sleep 600$' || true",
            )
            .await;
            (left.trim() == "0").then_some(left)
        },
    )
    .await;
    assert_eq!(left.trim(), "0", "the killed commands are gone");

    // The memory hog: `tail` keeps all of a line, and /dev/zero has no newline. With 1 GB
    // (the positive control) 300 MB fits; with the default 256 MB, 600 MB is killed.
    let hog = "head -c 300m /dev/zero | tail > /dev/null && echo fine";
    let roomy = machine(
        client,
        "roomy",
        hog,
        Some(MachineGuest {
            cpus: 1,
            memory_mb: 1024,
            ..MachineGuest::default()
        }),
    )
    .await;
    let hungry = machine(client, "hungry", &hog.replace("300m", "600m"), None).await;
    let roomy_exit = eventually("the roomy hog to exit", Duration::from_secs(60), || {
        last_exit(client, &roomy.id)
    })
    .await;
    assert_eq!(roomy_exit, (0, false), "300 MB fit in 1 GB");
    let hungry_exit = eventually("the hungry hog to exit", Duration::from_secs(60), || {
        last_exit(client, &hungry.id)
    })
    .await;
    assert!(hungry_exit.1, "killed for memory: {hungry_exit:?}");
    assert_ne!(hungry_exit.0, 0);
}

#[tokio::test]
async fn a_running_machine_memory_limit_changes_in_place_until_it_starts_again() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app(APP, None).await.unwrap();
    let m = machine(client, "elastic", "sleep 3600", None).await;
    client
        .wait(APP, &m.id, MachineState::Started, 60)
        .await
        .unwrap();
    let cgroup_limit = || async {
        let (_, limit, _) = sh(
            client,
            &m.id,
            &read_cgroup("memory/memory.limit_in_bytes", "memory.max"),
        )
        .await;
        limit.trim().to_owned()
    };
    // The positive control: the probe reads the machine's size first.
    assert_eq!(cgroup_limit().await, "268435456");
    let memory = client.machine_memory(APP, &m.id).await.unwrap();
    assert_eq!((memory.limit_mb, memory.available_mb), (256, 256));

    let lowered = client.set_machine_memory(APP, &m.id, 128).await.unwrap();
    assert_eq!((lowered.limit_mb, lowered.available_mb), (128, 256));
    assert_eq!(
        cgroup_limit().await,
        "134217728",
        "128 MB in the kernel's limit"
    );
    let same = client.machine(APP, &m.id).await.unwrap();
    assert_eq!(
        same.instance_id, m.instance_id,
        "no restart, no new version"
    );

    let refused = client
        .set_machine_memory(APP, &m.id, 512)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
    assert!(refused.to_string().contains("64 to 256 MB"), "{refused}");

    // Started again, it runs under its size.
    client.restart_machine(APP, &m.id).await.unwrap();
    eventually(
        "the machine's size to apply again after a restart",
        Duration::from_secs(60),
        || async {
            let started = client
                .machine(APP, &m.id)
                .await
                .is_ok_and(|now| now.state == "started");
            match client.machine_memory(APP, &m.id).await {
                Ok(memory) if started && memory.limit_mb == 256 => Some(()),
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(cgroup_limit().await, "268435456");
    client.destroy_machine(APP, &m.id, true).await.unwrap();
}
