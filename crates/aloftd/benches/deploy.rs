//! `cargo xtask bench deploy`: the wall time of server-side deploys on a real Docker
//! Engine through `aloftd server`, from `POST /deployments` until the deployment ends
//! `succeeded`, for 1 and 3 machines and every strategy, with the image cached (the test
//! app, whose `/health` check runs every second with a one-second grace period). Prints a
//! Markdown table.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark program"
)]

mod common;

use std::time::{Duration, Instant};

use aloft_client::Client;
use aloft_testkit::eventually;
use aloft_types::api::DeployRequest;
use aloft_types::machine::MachineConfig;

/// Deploys measured per strategy and size (after the first, which creates the machines).
const RUNS: usize = 3;

fn request(image: &str, version: usize, machines: u32, strategy: &str) -> DeployRequest {
    let mut config = MachineConfig {
        services: vec![aloft_testkit::checked_service()],
        ..MachineConfig::default()
    };
    config
        .env
        .insert("TESTAPP_VERSION".to_owned(), version.to_string());
    DeployRequest {
        image: image.to_owned(),
        config,
        strategy: Some(strategy.to_owned()),
        max_unavailable: None,
        wait_timeout: Some(120),
        initial_count: Some(machines),
        description: None,
        release_command: None,
        release_command_timeout: None,
        release_command_guest: None,
        smoke_checks: None,
        smoke_check_seconds: None,
        only_machines: None,
        regions: None,
        fly_toml: None,
    }
}

/// Deploys and waits for the end; the wall time.
async fn timed(client: &Client, app: &str, request: &DeployRequest) -> Duration {
    let started = Instant::now();
    let deployment = client.deploy(app, request).await.unwrap();
    let ended = eventually(
        "the deployment to end",
        Duration::from_secs(600),
        || async {
            let current = client.deployment(app, &deployment.id).await.ok()?;
            (!matches!(current.status.as_str(), "running" | "rolling_back")).then_some(current)
        },
    )
    .await;
    let took = started.elapsed();
    assert_eq!(ended.status, "succeeded", "{ended:#?}");
    took
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

#[tokio::main]
async fn main() {
    aloft_testkit::require_docker();
    let image = aloft_testkit::testapp_image();
    let platform = common::Platform::start("benchdeploy", |_| {}).await;
    let client = platform.client.clone();

    let mut rows = Vec::new();
    for machines in [1_u32, 3] {
        let app = format!("bench-{machines}");
        client.create_app(&app, None).await.unwrap();
        let first = timed(&client, &app, &request(&image, 0, machines, "rolling")).await;
        rows.push(format!(
            "| first deploy (creates them) | {machines} | {} | {} | 1 |",
            seconds(first),
            seconds(first)
        ));
        let mut version = 0;
        for strategy in ["rolling", "immediate", "canary", "bluegreen"] {
            let mut samples = Vec::new();
            for _ in 0..RUNS {
                version += 1;
                samples.push(
                    timed(&client, &app, &request(&image, version, machines, strategy)).await,
                );
            }
            samples.sort();
            rows.push(format!(
                "| {strategy} | {machines} | {} | {} | {RUNS} |",
                seconds(samples[samples.len() / 2]),
                seconds(samples[samples.len() - 1])
            ));
        }
        client.delete_app(&app).await.unwrap();
    }
    platform.stop().await;
    println!("\n| deploy | machines | median | max | runs |");
    println!("|---|---:|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
}
