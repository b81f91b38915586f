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

use aloft_client::Client;
use aloft_control::{Control, ControlConfig, SecretsKey};
use aloft_store::{Desired, Host, NewMachine, Store, now_ms};
use aloft_testkit::{BUSYBOX_IMAGE, busybox_image};
use aloft_types::api::MachineRequest;
use aloft_types::machine::{MachineConfig, MachineInit};
use aloft_types::{HostId, MachineState};
use sqlx::Executor as _;

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

async fn listing(backend: &str, url: &str, count: usize) -> String {
    let store = Store::open(url).await.unwrap();
    let host = HostId::generate([3; 8]);
    store
        .upsert_host(&Host {
            id: host.clone(),
            region: "local".into(),
            cpus: 2,
            memory_mb: 2048,
            address: None,
            last_heartbeat: now_ms(),
        })
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let control = Control::new(
        store.clone(),
        ControlConfig {
            default_region: "local".into(),
            secrets_key: SecretsKey::from_bytes([1; 32]),
            ipv4_pool: aloft_net::DEFAULT_IPV4_POOL.parse().unwrap(),
            edge: None,
            machine_caps: aloft_store::MachineCaps::NONE,
        },
        aloft_control::ControlParts::default(),
    );
    let token = control.bootstrap(data.path()).await.unwrap().unwrap();
    let org = store.org_by_slug("personal").await.unwrap();
    let app = store
        .create_app(&"listed".parse().unwrap(), &org.id, "default")
        .await
        .unwrap();
    for index in 0..count {
        store
            .insert_machine(NewMachine {
                app_id: app.id.clone(),
                name: format!("m-{index}"),
                region: "local".into(),
                host_id: Some(host.clone()),
                private_ip: None,
                config: request(index).config,
                state: MachineState::Stopped,
                desired: Desired::Stopped,
            })
            .await
            .unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, control.router()).await });
    let client = Client::new(&api, &token);
    let mut samples = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let machines = client.list_machines("listed").await.unwrap();
        samples.push(started.elapsed());
        assert_eq!(machines.len(), count);
    }
    server.abort();
    store.close().await;
    summary(
        &format!("GET machines, {count} in the store ({backend})"),
        samples,
    )
}

#[tokio::main]
async fn main() {
    let mut rows = lifecycle().await;
    for count in [1_000, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        rows.push(
            listing(
                "SQLite",
                &format!("sqlite://{}", dir.path().join("state.db").display()),
                count,
            )
            .await,
        );
        sqlx::any::install_default_drivers();
        let admin_url = "postgres:///postgres?host=/var/run/postgresql&user=root";
        let admin = sqlx::AnyPool::connect(admin_url)
            .await
            .expect("PostgreSQL (cargo xtask bench machines starts it)");
        let database = format!("aloft_bench_{}", now_ms());
        admin
            .execute(format!("CREATE DATABASE {database}").as_str())
            .await
            .unwrap();
        rows.push(
            listing(
                "PostgreSQL",
                &format!("postgres:///{database}?host=/var/run/postgresql&user=root"),
                count,
            )
            .await,
        );
        admin
            .execute(format!("DROP DATABASE {database} WITH (FORCE)").as_str())
            .await
            .unwrap();
    }
    println!("| measurement | runs | median | p95 |\n|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
