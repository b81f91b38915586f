//! `cargo xtask bench ssh`: SSH into a machine through the API's tunnel on a real Docker
//! Engine: how long a cold session takes (certificate, tunnel, handshake, one command),
//! one command on an open connection, SFTP throughput both ways, and a port forward's
//! round trips and throughput. Prints Markdown tables.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark program"
)]

mod common;

use std::time::{Duration, Instant};

use aloft_client::Client;
use aloft_ssh::client::{Connection, Control, Credentials, Run};
use aloft_types::api::{MachineRequest, SshCertificateRequest};
use aloft_types::machine::{MachineConfig, MachineInit};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const APP: &str = "bench-ssh";
/// Samples per latency row.
const RUNS: usize = 30;
/// Bytes per throughput row.
const BULK: usize = 64 << 20;

async fn credentials(client: &Client) -> Credentials {
    let key = aloft_ssh::ca::ed25519_from_seed(&aloft_store::random());
    let issued = client
        .ssh_certificate(
            "personal",
            &SshCertificateRequest {
                public_key: aloft_ssh::ca::public_to_openssh(key.public_key()).unwrap(),
                hours: Some(1),
                app: Some(APP.to_owned()),
            },
        )
        .await
        .unwrap();
    Credentials {
        key,
        certificate: aloft_ssh::ca::certificate_from_openssh(&issued.certificate).unwrap(),
    }
}

async fn connect(client: &Client, machine: &str, credentials: &Credentials) -> Connection {
    let tunnel = client.ssh_tunnel(APP, machine).await.unwrap();
    aloft_ssh::client::connect(tunnel, "", credentials)
        .await
        .unwrap()
}

/// Runs `command` on the connection, its output discarded; its exit code.
async fn run(connection: &Connection, command: &str) -> u32 {
    let (_stdin_sender, stdin) = tokio::sync::mpsc::channel(1);
    drop(_stdin_sender);
    let (_controls, receiver) = tokio::sync::mpsc::channel::<Control>(1);
    let run = Run {
        command: Some(command.to_owned()),
        pty: None,
        env: Vec::new(),
    };
    connection
        .run(&run, stdin, tokio::io::sink(), tokio::io::sink(), receiver)
        .await
        .unwrap()
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn mb_per_s(bytes: usize, took: Duration) -> String {
    format!("{:.0}", bytes as f64 / took.as_secs_f64() / 1e6)
}

#[tokio::main]
async fn main() {
    let helper = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(std::path::Path::parent)
        .map(|debug| debug.join("aloftd"))
        .filter(|path| path.exists());
    let platform = common::Platform::start("benchssh", |config| config.agent.helper = helper).await;
    let client = platform.client.clone();
    let image = aloft_testkit::busybox_image();
    client.create_app(APP, None).await.unwrap();
    let machine = client
        .create_machine(
            APP,
            &MachineRequest::new(MachineConfig {
                image: image.to_owned(),
                init: MachineInit {
                    cmd: vec![
                        "nc".into(),
                        "-ll".into(),
                        "-p".into(),
                        "5000".into(),
                        "-e".into(),
                        "cat".into(),
                    ],
                    ..MachineInit::default()
                },
                ..MachineConfig::default()
            }),
        )
        .await
        .unwrap();
    client
        .wait(APP, &machine.id, aloft_types::MachineState::Started, 60)
        .await
        .unwrap();

    // A cold session as `aloft ssh console -C true` makes it.
    let mut cold = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let credentials = credentials(&client).await;
        let connection = connect(&client, &machine.id, &credentials).await;
        assert_eq!(run(&connection, "true").await, 0);
        cold.push(started.elapsed());
        connection.close().await.unwrap();
    }
    let credentials = credentials(&client).await;
    let mut handshakes = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let connection = connect(&client, &machine.id, &credentials).await;
        handshakes.push(started.elapsed());
        connection.close().await.unwrap();
    }
    let connection = connect(&client, &machine.id, &credentials).await;
    let mut commands = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        assert_eq!(run(&connection, "true").await, 0);
        commands.push(started.elapsed());
    }

    // SFTP, both ways.
    let sftp = connection.sftp().await.unwrap();
    let payload: Vec<u8> = (0..BULK).map(|i| (i * 7 + i / 4096) as u8).collect();
    let started = Instant::now();
    let mut file = sftp.create("/bench.bin").await.unwrap();
    file.write_all(&payload).await.unwrap();
    file.shutdown().await.unwrap();
    let put = started.elapsed();
    let started = Instant::now();
    let mut file = sftp.open("/bench.bin").await.unwrap();
    let mut back = Vec::with_capacity(BULK);
    file.read_to_end(&mut back).await.unwrap();
    let get = started.elapsed();
    assert!(back == payload, "SFTP changed the file");

    // A port forward to the machine's echo server.
    let (mut forward, far_end) = tokio::io::duplex(256 << 10);
    let connection = std::sync::Arc::new(connection);
    let forwarding = {
        let connection = connection.clone();
        tokio::spawn(async move { connection.forward(5000, far_end).await })
    };
    let mut round_trips = Vec::new();
    let mut byte = [0u8; 1];
    for _ in 0..RUNS {
        let started = Instant::now();
        forward.write_all(b"x").await.unwrap();
        forward.read_exact(&mut byte).await.unwrap();
        round_trips.push(started.elapsed());
    }
    let (mut reader, mut writer) = tokio::io::split(forward);
    let started = Instant::now();
    let sending = tokio::spawn(async move {
        let chunk = vec![b'y'; 64 << 10];
        for _ in 0..BULK / chunk.len() {
            writer.write_all(&chunk).await.unwrap();
        }
        writer
    });
    let mut received = 0;
    let mut buffer = vec![0u8; 256 << 10];
    while received < BULK {
        let n = reader.read(&mut buffer).await.unwrap();
        if n == 0 {
            let ended = forwarding.await;
            panic!("the echo ended early, after {received} bytes; the forward: {ended:?}");
        }
        received += n;
    }
    let echoed = started.elapsed();
    drop(sending.await.unwrap());
    drop(reader);
    forwarding.abort();

    println!("\n| SSH through the API's tunnel | median | p95 | runs |");
    println!("|---|---:|---:|---:|");
    for (what, samples) in [
        (
            "cold session: certificate + tunnel + handshake + `true` (what `aloft ssh console -C true` does)",
            &mut cold,
        ),
        (
            "tunnel + handshake + certificate check (key already certified)",
            &mut handshakes,
        ),
        (
            "one command (`true`) on an open connection (Docker exec)",
            &mut commands,
        ),
        (
            "port forward round trip (1 byte to an echo server and back)",
            &mut round_trips,
        ),
    ] {
        println!(
            "| {what} | {} | {} | {RUNS} |",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.95))
        );
    }
    println!("\n| bulk transfer | MiB | seconds | MB/s |");
    println!("|---|---:|---:|---:|");
    let mib = BULK >> 20;
    println!(
        "| SFTP put | {mib} | {:.2} | {} |",
        put.as_secs_f64(),
        mb_per_s(BULK, put)
    );
    println!(
        "| SFTP get | {mib} | {:.2} | {} |",
        get.as_secs_f64(),
        mb_per_s(BULK, get)
    );
    println!(
        "| port forward, echoed (each byte both ways) | {mib} | {:.2} | {} |",
        echoed.as_secs_f64(),
        mb_per_s(BULK, echoed)
    );
    platform.stop().await;
}
