//! `cargo xtask bench dns`: dnsperf against Aloft's DNS server and against unbound serving
//! the same `.internal` names as local-data, one after the other in one run, on loopback.
//!
//! Both get one worker: unbound `num-threads: 1`; Aloft answers its own names on the one
//! task that reads the UDP socket. The query mix is half AAAA (`<app>.internal`,
//! `<id>.vm.<app>.internal`) and half TXT (`vms.<app>.internal`, `_apps.internal`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark program reports on the terminal and fails loudly"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aloft_dns::{Listener, Resolver, Sockets};
use aloft_types::MachineState;
use aloft_types::catalog::{Catalog, CatalogApp, CatalogMachine};
use tokio_util::sync::CancellationToken;

const APPS: usize = 50;
const MACHINES_PER_APP: usize = 4;
const SECONDS: &str = "10";

fn catalog() -> Catalog {
    let mut apps = Vec::new();
    let mut machines = Vec::new();
    for a in 0..APPS {
        let app = format!("app{a:03}");
        apps.push(CatalogApp {
            name: app.clone(),
            org_id: "o".into(),
            network: 1,
            ipv4: Vec::new(),
            hostnames: Vec::new(),
        });
        for m in 0..MACHINES_PER_APP {
            machines.push(CatalogMachine {
                id: format!("m{a:03}{m:010}"),
                app: app.clone(),
                region: "ams".into(),
                state: MachineState::Started,
                private_ip: format!("fdaa:0:1:0:1:0:{:x}:2", a * MACHINES_PER_APP + m + 1)
                    .parse()
                    .ok(),
                process_group: "app".into(),
                metadata: BTreeMap::new(),
                skip_registration: false,
                cordoned: false,
                services: Vec::new(),
                checks: Vec::new(),
                autostart_disabled: false,
                primary_region: None,
                statics: Vec::new(),
            });
        }
    }
    Catalog {
        acme_challenges: Vec::new(),
        apps,
        machines,
    }
}

fn queries(catalog: &Catalog) -> String {
    let mut text = String::new();
    for (n, machine) in catalog.machines.iter().enumerate() {
        let _ = match n % 4 {
            0 => writeln!(text, "{}.internal AAAA", machine.app),
            1 => writeln!(text, "{}.vm.{}.internal AAAA", machine.id, machine.app),
            2 => writeln!(text, "vms.{}.internal TXT", machine.app),
            _ => writeln!(text, "_apps.internal TXT"),
        };
    }
    text
}

fn unbound_config(catalog: &Catalog, port: u16, dir: &std::path::Path) -> String {
    let mut text = format!(
        "server:\n  interface: 127.0.0.1@{port}\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  num-threads: 1\n  access-control: 127.0.0.0/8 allow\n  do-not-query-localhost: no\n  local-zone: \"internal.\" static\n",
        dir = dir.display()
    );
    let mut vms: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for machine in &catalog.machines {
        let ip = machine.private_ip.unwrap();
        let _ = writeln!(
            text,
            "  local-data: \"{}.internal. 5 IN AAAA {ip}\"",
            machine.app
        );
        let _ = writeln!(
            text,
            "  local-data: \"{}.vm.{}.internal. 5 IN AAAA {ip}\"",
            machine.id, machine.app
        );
        vms.entry(&machine.app)
            .or_default()
            .push(format!("{} {}", machine.id, machine.region));
    }
    for (app, list) in vms {
        let _ = writeln!(
            text,
            "  local-data: 'vms.{app}.internal. 5 IN TXT {}'",
            txt_strings(&list.join(","))
        );
    }
    let apps: Vec<&str> = catalog.apps.iter().map(|a| a.name.as_str()).collect();
    let _ = writeln!(
        text,
        "  local-data: '_apps.internal. 5 IN TXT {}'",
        txt_strings(&apps.join(","))
    );
    text
}

/// A TXT value as the quoted strings of at most 255 bytes that zone files need, split
/// where Aloft's server splits it.
fn txt_strings(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// (queries per second, average latency in µs, lost queries).
fn dnsperf(server: SocketAddr, queries: &std::path::Path) -> (f64, f64, String) {
    let output = Command::new("dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .arg("-d")
        .arg(queries)
        .args(["-l", SECONDS, "-c", "4", "-q", "200"])
        .output()
        .expect("dnsperf runs (Debian package dnsperf; `cargo xtask bench dns` installs it)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |label: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("dnsperf printed no {label:?}:\n{text}"))
    };
    let qps: f64 = field("Queries per second:").parse().unwrap();
    let latency: f64 = field("Average Latency (s):")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (qps, latency * 1e6, field("Queries lost:"))
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Unbound(Child);

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn answers(server: SocketAddr) -> bool {
    Command::new("dig")
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
        ])
        .args(["+short", "+time=1", "+tries=1", "_apps.internal", "TXT"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not use.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog();
    let query_file = dir.path().join("queries.txt");
    std::fs::write(&query_file, queries(&catalog)).unwrap();

    let stop = CancellationToken::new();
    let aloft = runtime.block_on(async {
        let resolver = Resolver::new("ams", Vec::new());
        resolver.set_catalog(&Arc::new(catalog.clone()));
        let sockets = Sockets::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let address = sockets.local_addr().unwrap();
        tokio::spawn(sockets.serve(resolver, Listener::Operator, stop.clone()));
        address
    });

    let port = free_port();
    let config = dir.path().join("unbound.conf");
    std::fs::write(&config, unbound_config(&catalog, port, dir.path())).unwrap();
    let unbound_address: SocketAddr = ([127, 0, 0, 1], port).into();
    let _unbound = Unbound(
        Command::new("unbound")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unbound runs (Debian package unbound; `cargo xtask bench dns` installs it)"),
    );
    let started = std::time::Instant::now();
    while !answers(unbound_address) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "unbound did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(answers(aloft), "Aloft's DNS answers");

    println!(
        "dnsperf, {SECONDS} s each, 4 clients, 200 queries in flight, {} names ({APPS} apps x {MACHINES_PER_APP} machines), half AAAA half TXT\n",
        catalog.machines.len()
    );
    println!(
        "{:<10} {:>14} {:>18} {:>8}",
        "server", "queries/s", "avg latency (µs)", "lost"
    );
    for (name, address) in [("aloft", aloft), ("unbound", unbound_address)] {
        let (qps, latency, lost) = dnsperf(address, &query_file);
        println!("{name:<10} {qps:>14.0} {latency:>18.1} {lost:>8}");
    }
    stop.cancel();
    runtime.shutdown_timeout(Duration::from_secs(5));
}
