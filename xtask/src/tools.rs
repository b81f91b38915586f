//! Installing what the commands need on a fresh Debian machine (CI runs as root).

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};

use crate::{cargo, run};

/// Debian packages the test suite needs: Docker Engine for machines, busybox-static for
/// the test images (no registry is reachable, so images are built locally), PostgreSQL
/// for the store's second backend, iproute2 and nftables for the private network's
/// namespaces and rules, dig for real DNS queries, and curl for HTTPS and HTTP/2.
const TEST_APT_PACKAGES: &[&str] = &[
    "docker.io",
    "busybox-static",
    "postgresql",
    "iproute2",
    "nftables",
    "bind9-dnsutils",
    "curl",
    "openssl",
    // The metrics test scrapes aloftd with a real Prometheus.
    "prometheus",
    // The interactive SSH test drives `aloft ssh console` in a real terminal; the other
    // one checks certificates with OpenSSH's ssh-keygen and ssh-add.
    "tmux",
    "openssh-client",
    // The dashboard's browser test drives Debian's Chromium through its ChromeDriver.
    "chromium",
    "chromium-driver",
    // The ACME tests get certificates from Pebble, Let's Encrypt's test directory (with
    // its challenge test server as DNS).
    "pebble",
];

/// axe-core, which the dashboard's browser test runs on every page (accessibility), from
/// the npm registry into `target/tools` (the test reads it from there).
const AXE_CORE: &str = "axe-core@4.14.1";
const AXE_CORE_FILE: &str = "target/tools/node_modules/axe-core/axe.min.js";

/// What `cargo xtask demo` needs on the machine: the engine machines run on, the
/// private network's tools, and curl to show the app answering.
const DEMO_APT_PACKAGES: &[&str] = &["docker.io", "iproute2", "nftables", "curl"];

/// What `cargo xtask demo` needs, installed and running.
pub(crate) fn ensure_demo_tools() -> Result<()> {
    ensure_rust_components()?;
    ensure_apt_packages(DEMO_APT_PACKAGES)?;
    ensure_docker_running()
}

/// Debian packages of the DNS benchmark: dnsperf drives the load, unbound is the
/// reference server, dig checks both answer.
const BENCH_APT_PACKAGES: &[&str] = &["dnsperf", "unbound", "bind9-dnsutils"];

/// What `cargo xtask bench proxy` needs: the other proxies and the load generators.
const PROXY_BENCH_APT_PACKAGES: &[&str] =
    &["nginx-light", "haproxy", "wrk", "nghttp2-client", "openssl"];

/// What `cargo xtask bench proxy` needs. Debian starts the packaged nginx and HAProxy
/// services on install; they are stopped again, so that port 80 stays free for aloftd.
pub(crate) fn ensure_proxy_bench_tools() -> Result<()> {
    let fresh = !PROXY_BENCH_APT_PACKAGES
        .iter()
        .all(|package| succeeds(Command::new("dpkg").args(["-s", package])));
    ensure_apt_packages(PROXY_BENCH_APT_PACKAGES)?;
    if fresh {
        for service in ["nginx", "haproxy"] {
            let _ = Command::new("service").args([service, "stop"]).status();
        }
    }
    Ok(())
}

/// What `cargo xtask bench dns` needs.
pub(crate) fn ensure_bench_tools() -> Result<()> {
    ensure_apt_packages(BENCH_APT_PACKAGES)
}

/// How long to wait for a service started here to answer.
const SERVICE_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn has_cargo_subcommand(name: &str) -> bool {
    succeeds(cargo().args([name, "--version"]))
}

/// rustfmt and clippy, from the machine's one toolchain.
pub(crate) fn ensure_rust_components() -> Result<()> {
    for (component, subcommand) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        if !has_cargo_subcommand(subcommand) {
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

fn ensure_cargo_tool(subcommand: &str, krate: &str) -> Result<()> {
    if !has_cargo_subcommand(subcommand) {
        run(cargo().args(["install", "--locked", krate]))?;
    }
    Ok(())
}

/// Installs the Debian packages not yet installed (after `apt-get update`).
fn ensure_apt_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !succeeds(Command::new("dpkg").args(["-s", package])))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get update (xtask installs test dependencies as root)")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

pub(crate) fn ensure_test_tools() -> Result<()> {
    ensure_rust_components()?;
    ensure_cargo_tool("nextest", "cargo-nextest")?;
    let fresh_prometheus = !succeeds(Command::new("dpkg").args(["-s", "prometheus"]));
    ensure_apt_packages(TEST_APT_PACKAGES)?;
    if fresh_prometheus {
        // Debian starts the packaged services on install; the tests run their own.
        for service in ["prometheus", "prometheus-node-exporter"] {
            let _ = Command::new("service").args([service, "stop"]).status();
        }
    }
    ensure_docker_running()?;
    ensure_postgres_running()?;
    ensure_axe_core()
}

/// Installs axe-core with the machine's npm (Debian's when there is none).
fn ensure_axe_core() -> Result<()> {
    if std::path::Path::new(AXE_CORE_FILE).is_file() {
        return Ok(());
    }
    if !succeeds(Command::new("npm").arg("--version")) {
        ensure_apt_packages(&["npm"])?;
    }
    std::fs::create_dir_all("target/tools").context("creating target/tools")?;
    run(Command::new("npm").args([
        "install",
        "--prefix",
        "target/tools",
        "--no-audit",
        "--no-fund",
        AXE_CORE,
    ]))
}

/// Starts Debian's PostgreSQL cluster when it is down, and lets root connect over the
/// local socket as a superuser (the tests create and drop a database each).
fn ensure_postgres_running() -> Result<()> {
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .context("listing /etc/postgresql (is the postgresql package installed?)")?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    let version = versions
        .iter()
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .context("no PostgreSQL cluster under /etc/postgresql")?;
    let answers = || succeeds(Command::new("pg_isready").args(["-h", "/var/run/postgresql"]));
    if !answers() {
        run(Command::new("pg_ctlcluster").args([version, "main", "start"]))?;
    }
    let started = std::time::Instant::now();
    while !answers() {
        if started.elapsed() > SERVICE_START_TIMEOUT {
            anyhow::bail!("PostgreSQL {version} did not answer within {SERVICE_START_TIMEOUT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let create_role = "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'root') \
                       THEN CREATE ROLE root SUPERUSER LOGIN; END IF; END$$;";
    run(Command::new("runuser").args(["-u", "postgres", "--", "psql", "-qc", create_role]))
}

/// Starts Docker Engine when it is not answering (CI machines start with no services).
fn ensure_docker_running() -> Result<()> {
    let answers = || succeeds(Command::new("docker").arg("info"));
    if answers() {
        return Ok(());
    }
    eprintln!("+ dockerd (in the background, logging to target/dockerd.log)");
    std::fs::create_dir_all("target").context("creating target/")?;
    let log = std::fs::File::create("target/dockerd.log").context("creating target/dockerd.log")?;
    Command::new("dockerd")
        .stdout(log.try_clone().context("sharing the dockerd log")?)
        .stderr(log)
        .spawn()
        .context("starting dockerd")?;
    let started = std::time::Instant::now();
    while !answers() {
        if started.elapsed() > SERVICE_START_TIMEOUT {
            anyhow::bail!(
                "dockerd did not answer within {SERVICE_START_TIMEOUT:?}; see target/dockerd.log"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    Ok(())
}

pub(crate) fn ensure_cargo_fuzz() -> Result<()> {
    ensure_cargo_tool("fuzz", "cargo-fuzz")
}
