//! `cargo xtask bench machines`: how fast machines start and stop on a real Docker Engine
//! through `aloftd server`, and how fast the API lists an app's machines when the store
//! holds 1,000 and 10,000 of them (SQLite and PostgreSQL). Prints a Markdown table.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark program"
)]

mod common;

use std::time::{Duration, Instant};

use aloft_store::{Desired, NewMachine};
use aloft_testkit::{BUSYBOX_IMAGE, busybox_image};
use aloft_testplatform::{Backend, ControlApi, ControlOptions};
use aloft_types::api::MachineRequest;
use aloft_types::machine::{MachineConfig, MachineInit};
use aloft_types::{HostId, MachineState};

const RUNS: usize = 20;

fn summary(name: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p95 = samples[(samples.len() * 95)
        .div_ceil(100)
        .saturating_sub(1)
        .min(samples.len() - 1)];
    format!(
        "| {name} | {} | {:.1} ms | {:.1} ms |",
        samples.len(),
        median.as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3
    )
}

fn request(index: usize) -> MachineRequest {
    MachineRequest {
        name: Some(format!("bench-{index}")),
        ..MachineRequest::new(MachineConfig {
            image: BUSYBOX_IMAGE.to_owned(),
            init: MachineInit {
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "trap 'exit 0' INT TERM; while true; do sleep 1; done".into(),
                ],
                ..MachineInit::default()
            },
            ..MachineConfig::default()
        })
    }
}

async fn lifecycle() -> Vec<String> {
    busybox_image();
    let platform = common::Platform::start("benchmachines", |_| {}).await;
    let client = platform.client.clone();
    client.create_app("bench", None).await.unwrap();

    let mut create = Vec::new();
    let mut restart = Vec::new();
    let mut ids = Vec::new();
    for index in 0..RUNS {
        let started = Instant::now();
        let machine = client
            .create_machine("bench", &request(index))
            .await
            .unwrap();
        client
            .wait("bench", &machine.id, MachineState::Started, 60)
            .await
            .unwrap();
        create.push(started.elapsed());
        ids.push(machine.id);
    }
    for id in &ids {
        client
            .stop_machine("bench", id, None, Some(aloft_types::Duration::from_secs(5)))
            .await
            .unwrap();
        client
            .wait("bench", id, MachineState::Stopped, 60)
            .await
            .unwrap();
        let started = Instant::now();
        client.start_machine("bench", id).await.unwrap();
        client
            .wait("bench", id, MachineState::Started, 60)
            .await
            .unwrap();
        restart.push(started.elapsed());
    }
    for id in &ids {
        client.destroy_machine("bench", id, true).await.unwrap();
    }
    for id in &ids {
        client
            .wait("bench", id, MachineState::Destroyed, 60)
            .await
            .unwrap();
    }
    platform.stop().await;
    vec![
        summary("create → started (Docker, cached image)", create),
        summary("stop → start", restart),
    ]
}

async fn listing(backend: Backend, count: usize) -> String {
    let host = HostId::generate([3; 8]);
    let api = ControlApi::start(ControlOptions {
        host: Some(host.clone()),
        ..ControlOptions::new(backend)
    })
    .await;
    let org = api.store.org_by_slug("personal").await.unwrap();
    let app = api
        .store
        .create_app(&"listed".parse().unwrap(), &org.id, "default")
        .await
        .unwrap();
    for index in 0..count {
        api.store
            .insert_machine(NewMachine {
                app_id: app.id.clone(),
                name: format!("m-{index}"),
                region: "local".into(),
                host_id: Some(host.clone()),
                private_ip: None,
                config: request(index).config,
                state: MachineState::Stopped,
                desired: Desired::Stopped,
                cordoned: false,
                volume: None,
            })
            .await
            .unwrap();
    }
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let machines = api.client.list_machines("listed").await.unwrap();
        samples.push(started.elapsed());
        assert_eq!(machines.len(), count);
    }
    api.stop().await;
    let backend = match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    summary(
        &format!("GET machines, {count} in the store ({backend})"),
        samples,
    )
}

#[tokio::main]
async fn main() {
    let mut rows = lifecycle().await;
    for count in [1_000, 10_000] {
        rows.push(listing(Backend::Sqlite, count).await);
        // PostgreSQL: `cargo xtask bench machines` starts it.
        rows.push(listing(Backend::Postgres, count).await);
    }
    println!("| measurement | runs | median | p95 |\n|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
