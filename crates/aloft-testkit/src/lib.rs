//! Test support for Aloft's crates: test images built locally (no registry is reachable),
//! waiting for a condition with a deadline (never a fixed sleep), and guards that clean up
//! what a test created even when it fails.
//!
//! Tests that need Docker Engine call [`require_docker`], which fails the test (never
//! skips it) when the engine is missing.

#![allow(
    clippy::print_stderr,
    clippy::expect_used,
    reason = "test support: failing loudly is how it reports a broken environment"
)]

mod http_server;
mod mounts;
pub mod sim;

pub use http_server::HttpServer;
pub use mounts::{file_holds, unmount_under};

/// A build context: a tar archive holding one file, `Dockerfile`, with `dockerfile` in it.
pub fn dockerfile_context(dockerfile: &str) -> Vec<u8> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    archive
        .append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
        .expect("an archive in memory takes a file");
    archive.into_inner().expect("an archive in memory finishes")
}

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The test image: `FROM scratch` with Debian's busybox-static (sh, httpd, nc, wget,
/// nslookup, sleep, trap, ...), built once per Docker Engine and reused.
pub const BUSYBOX_IMAGE: &str = "aloft-test-busybox:1";

/// Where Debian's busybox-static installs its binary.
const BUSYBOX_BINARY: &str = "/bin/busybox";

/// Panics (failing the test) unless Docker Engine answers.
pub fn require_docker() {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "Docker Engine is not answering (`cargo xtask test` installs and starts it): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => {
            panic!("the docker CLI cannot run ({error}); `cargo xtask test` installs docker.io")
        }
    }
}

fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Builds [`BUSYBOX_IMAGE`] if the engine does not have it yet, and returns its name.
pub fn busybox_image() -> &'static str {
    require_docker();
    if image_exists(BUSYBOX_IMAGE) {
        return BUSYBOX_IMAGE;
    }
    assert!(
        Path::new(BUSYBOX_BINARY).exists(),
        "{BUSYBOX_BINARY} is missing: `cargo xtask test` installs Debian's busybox-static"
    );
    let context = tempfile::tempdir().expect("a temporary build context");
    std::fs::copy(BUSYBOX_BINARY, context.path().join("busybox")).expect("copying busybox");
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCMD [\"/bin/sh\"]\n",
    )
    .expect("writing the Dockerfile");
    let output = Command::new("docker")
        .args(["build", "--quiet", "--tag", BUSYBOX_IMAGE])
        .arg(context.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build runs");
    // A concurrent test may have built it meanwhile; that is as good.
    assert!(
        output.status.success() || image_exists(BUSYBOX_IMAGE),
        "building {BUSYBOX_IMAGE}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    BUSYBOX_IMAGE
}

/// A second tag of the test image, for tests that update a machine to a new image.
pub const BUSYBOX_IMAGE_V2: &str = "aloft-test-busybox:2";

/// Makes [`BUSYBOX_IMAGE_V2`] exist (the same image under a new name) and returns it.
pub fn busybox_image_v2() -> &'static str {
    busybox_image();
    if !image_exists(BUSYBOX_IMAGE_V2) {
        let output = Command::new("docker")
            .args(["tag", BUSYBOX_IMAGE, BUSYBOX_IMAGE_V2])
            .output()
            .expect("docker tag runs");
        assert!(
            output.status.success() || image_exists(BUSYBOX_IMAGE_V2),
            "tagging {BUSYBOX_IMAGE_V2}"
        );
    }
    BUSYBOX_IMAGE_V2
}

/// A loopback port nothing listens on now (a listener on port 0, closed), for a program
/// that takes its port from its configuration rather than from a listener handed to it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("a free loopback port: {error}"))
}

/// Polls `condition` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Removes every container (running or not) carrying the label `key=value`.
pub fn remove_containers_labelled(key: &str, value: &str) {
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label={key}={value}"))
        .output();
    if let Ok(output) = ids {
        let ids = String::from_utf8_lossy(&output.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

/// A PostgreSQL database of a test's own, on the cluster `cargo xtask test` starts.
pub mod postgres {
    use sqlx::Executor as _;

    /// Where tests find PostgreSQL (an admin connection able to create databases).
    pub const POSTGRES_URL_ENV: &str = "ALOFT_TEST_POSTGRES_URL";
    /// Debian's cluster over its local socket, as root (xtask creates the role).
    pub const DEFAULT_ADMIN_URL: &str = "postgres:///postgres?host=/var/run/postgresql&user=root";

    /// A fresh, empty database; [`TestDatabase::drop_database`] removes it.
    #[derive(Debug)]
    pub struct TestDatabase {
        /// Connects to the test's database.
        pub url: String,
        name: String,
        admin: sqlx::AnyPool,
    }

    fn with_database(url: &str, database: &str) -> String {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let base = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
        if query.is_empty() {
            format!("{base}/{database}")
        } else {
            format!("{base}/{database}?{query}")
        }
    }

    impl TestDatabase {
        /// Creates `<prefix>_<pid>_<nanos>`. Panics (failing the test, never skipping it)
        /// when PostgreSQL is not reachable.
        pub async fn create(prefix: &str) -> TestDatabase {
            sqlx::any::install_default_drivers();
            let admin_url =
                std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
            let admin = sqlx::AnyPool::connect(&admin_url).await.unwrap_or_else(|error| {
                panic!("PostgreSQL is not reachable at {admin_url} ({error}); `cargo xtask test` installs and starts it, or set {POSTGRES_URL_ENV}")
            });
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let name = format!("{prefix}_{}_{nanos}", std::process::id());
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("creating a test database");
            TestDatabase {
                url: with_database(&admin_url, &name),
                name,
                admin,
            }
        }

        /// Drops the database, closing whatever is still connected to it.
        pub async fn drop_database(self) {
            let _ = self
                .admin
                .execute(format!("DROP DATABASE {} WITH (FORCE)", self.name).as_str())
                .await;
            self.admin.close().await;
        }
    }
}

/// Removes every container carrying `label=value` when dropped, so a failing test leaves
/// nothing behind.
#[derive(Debug)]
pub struct ContainerCleanup {
    label: String,
}

impl ContainerCleanup {
    /// A unique `label=value` for one test's containers, and the guard that removes them.
    pub fn new(label_key: &str) -> ContainerCleanup {
        let unique = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        ContainerCleanup {
            label: format!("{label_key}={unique}"),
        }
    }

    /// The `key=value` label the test puts on its containers.
    pub fn label(&self) -> (&str, &str) {
        self.label.split_once('=').unwrap_or((&self.label, ""))
    }
}

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        let (key, value) = self.label();
        remove_containers_labelled(key, value);
    }
}

/// A network namespace made for one test (`ip netns add`), with loopback up, deleted with
/// everything in it (bridges, veths, addresses, nftables rules) when dropped.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
}

static NETNS_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl TestNetns {
    /// A fresh namespace; panics (failing the test) when namespaces cannot be made.
    pub fn create(purpose: &str) -> TestNetns {
        let serial = NETNS_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("aloft-{purpose}-{}-{serial}", std::process::id());
        // One of that name is a leftover of a killed test process that had this pid: its
        // owner is gone, so it goes.
        let _ = Command::new("ip")
            .args(["netns", "delete", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run_ip(&["netns", "add", &name]);
        let namespace = TestNetns { name };
        run_ip(&["-n", &namespace.name, "link", "set", "lo", "up"]);
        namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, for `setns` and for `HostNetwork::open`.
    pub fn path(&self) -> std::path::PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Joins the namespace to this host's network with a veth pair: `host` (an address
    /// with its prefix, `192.0.2.1/30`) on this host's end, `inside` on the namespace's.
    /// Deleting the namespace deletes its end and so the pair. Returns the host end's name.
    /// Panics, changing nothing, when this host already routes either address other than
    /// by its default route: the test must not take an address of the host's own network.
    pub fn link_to_host(&self, host: &str, inside: &str) -> String {
        for address in [host, inside] {
            let ip = address.split('/').next().unwrap_or(address);
            let route = Command::new("ip")
                .args(["-o", "route", "get", ip])
                .output()
                .expect("running ip route get");
            let route = String::from_utf8_lossy(&route.stdout).into_owned();
            let via_default = Command::new("ip")
                .args(["-o", "route", "show", "default"])
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default();
            let gateway = via_default.split_whitespace().nth(2).unwrap_or("");
            // Unroutable, or only through the default gateway: nothing of the host's.
            assert!(
                route.is_empty()
                    || (!gateway.is_empty() && route.contains(&format!(" via {gateway} "))),
                "{ip} is on a network this host already uses ({}): pick another range for the test",
                route.trim()
            );
        }
        let serial = NETNS_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outer = format!("avh{}x{serial}", std::process::id() % 100_000);
        let inner = format!("avn{}x{serial}", std::process::id() % 100_000);
        run_ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &self.name,
        ]);
        run_ip(&["addr", "add", host, "dev", &outer]);
        run_ip(&["link", "set", &outer, "up"]);
        run_ip(&["-n", &self.name, "addr", "add", inside, "dev", &inner]);
        run_ip(&["-n", &self.name, "link", "set", &inner, "up"]);
        outer
    }

    /// Joins this namespace to `other` with a veth pair: `here` are this end's addresses
    /// (with prefixes), `there` the other end's; IPv6 ones skip duplicate detection.
    pub fn link_to(&self, other: &TestNetns, here: &[&str], there: &[&str]) {
        let serial = NETNS_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (a, b) = (
            format!("avl{}x{serial}", std::process::id() % 100_000),
            format!("avr{}x{serial}", std::process::id() % 100_000),
        );
        run_ip(&[
            "-n",
            &self.name,
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &other.name,
        ]);
        for (namespace, link, addresses) in [(&self.name, &a, here), (&other.name, &b, there)] {
            for address in addresses {
                let mut args = vec!["-n", namespace, "addr", "add", address, "dev", link];
                if address.contains(':') {
                    args.push("nodad");
                }
                run_ip(&args);
            }
            run_ip(&["-n", namespace, "link", "set", link, "up"]);
        }
    }

    /// Runs a command inside the namespace (`ip netns exec`) and returns its output.
    pub fn exec(&self, command: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(command)
            .output()
            .expect("running ip netns exec")
    }

    /// `ip -o link` inside the namespace: one line per link.
    pub fn links(&self) -> Vec<String> {
        let output = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show"])
            .output()
            .expect("running ip link");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect()
    }

    /// `ip -6 addr` inside the namespace: every global address.
    pub fn addresses(&self) -> Vec<String> {
        let output = Command::new("ip")
            .args([
                "-n", &self.name, "-6", "-o", "addr", "show", "scope", "global",
            ])
            .output()
            .expect("running ip addr");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "inet6")?;
                words.next().map(str::to_owned)
            })
            .collect()
    }

    /// The nftables ruleset inside the namespace.
    pub fn nft_ruleset(&self) -> String {
        String::from_utf8_lossy(&self.exec(&["nft", "list", "ruleset"]).stdout).into_owned()
    }
}

fn run_ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The variable naming a built `aloft-testapp` binary for [`testapp_image`].
pub const TESTAPP_BINARY_VARIABLE: &str = "ALOFT_TESTAPP_BINARY";

/// Builds `aloft-testapp` (the workspace's test app: `/health`, a WebSocket echo, slow
/// requests and a concurrency count; see its crate) with the cargo running the tests
/// (unless [`TESTAPP_BINARY_VARIABLE`] names a built one), and makes an image of it: `FROM scratch` with the binary and the shared libraries it links.
/// The tag is the binary's digest, so a changed app makes a new image. Returns the tag.
pub fn testapp_image() -> String {
    use sha2::Digest as _;
    require_docker();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("the workspace root")
        .to_path_buf();
    let binary = match std::env::var_os(TESTAPP_BINARY_VARIABLE) {
        // Built already (`cargo xtask test` does, so that no test waits on cargo's lock).
        Some(path) => std::path::PathBuf::from(path),
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let built = Command::new(&cargo)
                .args(["build", "--quiet", "--package", "aloft-testapp"])
                .current_dir(&root)
                .output()
                .expect("cargo runs");
            assert!(
                built.status.success(),
                "building aloft-testapp: {}",
                String::from_utf8_lossy(&built.stderr)
            );
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), std::path::PathBuf::from);
            target.join("debug").join("aloft-testapp")
        }
    };
    let bytes = std::fs::read(&binary).expect("reading the aloft-testapp binary");
    let digest = sha2::Sha256::digest(&bytes);
    let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let image = format!("aloft-testapp:{tag}");
    if image_exists(&image) {
        return image;
    }
    let context = tempfile::tempdir().expect("a temporary build context");
    std::fs::copy(&binary, context.path().join("aloft-testapp")).expect("copying the binary");
    let mut dockerfile = String::from("FROM scratch\nCOPY aloft-testapp /aloft-testapp\n");
    // The loader and libraries `ldd` names, each at its own path.
    let ldd = Command::new("ldd").arg(&binary).output().expect("ldd runs");
    let listing = String::from_utf8_lossy(&ldd.stdout).into_owned();
    for (index, library) in listing
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .enumerate()
    {
        let name = format!("lib{index}");
        std::fs::copy(library, context.path().join(&name)).expect("copying a library");
        dockerfile.push_str(&format!("COPY {name} {library}\n"));
    }
    dockerfile.push_str("ENV PORT=8080\nEXPOSE 8080\nCMD [\"/aloft-testapp\"]\n");
    std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("writing the Dockerfile");
    let output = Command::new("docker")
        .args(["build", "--quiet", "--tag", &image])
        .arg(context.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build runs");
    assert!(
        output.status.success() || image_exists(&image),
        "building {image}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    image
}

/// A service of the test app on port 8080: HTTP on port 80 with a `/health` check every
/// second (1 s grace and timeout), the one deploy tests and benchmarks wait on.
pub fn checked_service() -> aloft_types::machine::MachineService {
    use aloft_types::machine::{
        CheckType, Handler, MachineCheck, MachinePort, MachineService, Protocol,
    };
    MachineService {
        protocol: Protocol::Tcp,
        internal_port: 8080,
        autostop: None,
        autostart: None,
        min_machines_running: None,
        ports: vec![MachinePort {
            port: Some(80),
            handlers: vec![Handler::Http],
            ..MachinePort::default()
        }],
        checks: vec![MachineCheck {
            kind: Some(CheckType::Http),
            path: Some("/health".to_owned()),
            interval: "1s".parse().ok(),
            timeout: "1s".parse().ok(),
            grace_period: "1s".parse().ok(),
            ..MachineCheck::default()
        }],
        concurrency: None,
        force_instance_key: None,
        force_instance_description: None,
    }
}

/// A plain `reqwest` client for tests. reqwest is built without a TLS crypto provider of
/// its own (Aloft uses ring's), so a client built with `reqwest::Client::new()` panics
/// unless ring is installed as the process's default first: this does both.
pub fn http() -> reqwest::Client {
    http_builder()
        .build()
        .unwrap_or_else(|error| panic!("an HTTP client: {error}"))
}

/// [`http`]'s builder, for a test that sets timeouts or redirects.
pub fn http_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    #[allow(
        clippy::disallowed_methods,
        reason = "the tests' one builder, with ring installed just above"
    )]
    reqwest::Client::builder()
}
