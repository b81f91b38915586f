//! `aloftd server` as a process, end to end against a real Docker Engine: machines that
//! really run, stop as configured, restart per policy, and survive `kill -9` of the daemon.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod acme;
mod autoscale;
mod builds;
mod checks;
mod crashes;
mod cutoff;
mod data;
mod deploy;
mod lifecycle;
mod limits;
mod logs;
mod machines;
mod metrics;
mod network;
mod proxy;
mod replay;
mod seed;
mod ssh;
mod statics;
mod tcp;
mod udp;
mod volumes;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use aloft_client::Client;
use aloft_testkit::{TestNetns, busybox_image, eventually};

/// One test host: a data directory and the network namespace its private network lives
/// in (so tests run side by side), both removed when dropped. Servers started, killed and
/// started again on one host keep both.
pub(crate) struct Host {
    dir: tempfile::TempDir,
    pub(crate) netns: TestNetns,
    /// More lines for the config's `[proxy]` table.
    proxy: String,
}

impl Host {
    pub(crate) fn new() -> Host {
        Host::with_proxy("")
    }

    /// A host whose config's `[proxy]` table also has `settings` (TOML lines).
    pub(crate) fn with_proxy(settings: &str) -> Host {
        Host {
            dir: tempfile::tempdir().unwrap(),
            netns: TestNetns::create("aloftd"),
            proxy: settings.to_owned(),
        }
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's config: the host's namespace, DNS for operators on a free port.
    fn config(&self) -> PathBuf {
        let path = self.dir.path().join("aloftd.toml");
        std::fs::write(
            &path,
            format!(
                "[network]\nnamespace = \"{}\"\ndns_listen = \"127.0.0.1:0\"\ndns_upstream = []\n[logs]\n# The tests' log collectors listen on loopback.\nsink_allowed_networks = [\"127.0.0.0/8\", \"::1/128\"]\n# Every test server shares the engine's build cgroup: one value for all.\n[build]\nmemory_mb = {}\n[proxy]\nhttp_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\n{}\n",
                self.netns.path().display(),
                aloftd::config::LOOPBACK_BUILD_MEMORY_MB,
                self.proxy
            ),
        )
        .unwrap();
        path
    }
}

/// A running `aloftd server` on a data directory of its own.
pub(crate) struct Server {
    pub(crate) data_dir: PathBuf,
    child: Option<Child>,
    pub(crate) client: Client,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

impl Server {
    /// Starts a server on `host` (port 0) and waits until its API answers.
    pub(crate) async fn start(host: &Host) -> Server {
        Server::start_with(host, &[]).await
    }

    /// Starts `aloftd server` on `host` with `env` added to its environment, and returns
    /// at once: the process, whose output goes beside the data directory.
    pub(crate) fn spawn(host: &Host, env: &[(&str, &std::ffi::OsStr)]) -> Child {
        let data_dir = &host.data();
        busybox_image();
        let _ = std::fs::remove_file(data_dir.join("api-url"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_aloftd"))
            .arg("server")
            .arg("--config")
            .arg(host.config())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--api-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(data_dir.with_extension("out")).unwrap())
            .stderr(log)
            .spawn()
            .expect("aloftd starts")
    }

    /// [`Server::start`] with `env` added to the server's environment.
    pub(crate) async fn start_with(host: &Host, env: &[(&str, &std::ffi::OsStr)]) -> Server {
        let data_dir = &host.data();
        let child = Server::spawn(host, env);
        let url = eventually(
            "aloftd to write its API URL",
            Duration::from_secs(30),
            || async { read_trimmed(&data_dir.join("api-url")) },
        )
        .await;
        let token = read_trimmed(&data_dir.join("admin-token"))
            .expect("the first start writes an admin token");
        let client = Client::new(&url, &token);
        eventually("the API to answer", Duration::from_secs(30), || async {
            client.list_apps().await.ok()
        })
        .await;
        Server {
            data_dir: data_dir.to_owned(),
            child: Some(child),
            client,
        }
    }

    /// `kill -9`: no shutdown of any kind.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9`, then a new server on the same host in this one's place. The killed one
    /// leaves the host's containers to the new one (dropping it would remove them).
    pub(crate) async fn restart_after_kill(&mut self, host: &Host) {
        self.kill();
        let restarted = Server::start(host).await;
        let mut killed = std::mem::replace(self, restarted);
        killed.data_dir = PathBuf::new();
    }

    /// The host id this server's agent labels its containers with.
    pub(crate) fn host_id(&self) -> String {
        read_trimmed(&self.data_dir.join("host-id")).expect("the host id file")
    }

    /// Ids of the containers of `machine` (running or not).
    pub(crate) fn containers_of(&self, machine: &str) -> Vec<String> {
        let output = Command::new("docker")
            .args(["ps", "-aq", "--no-trunc", "--filter"])
            .arg(format!("label=dev.aloft.machine={machine}"))
            .output()
            .unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }
}

/// Runs `script` with `sh -c` in a machine (the API's exec, `timeout` seconds or its
/// default): its exit code, stdout and stderr.
pub(crate) async fn sh(
    client: &Client,
    app: &str,
    machine: &str,
    script: &str,
    timeout: Option<u64>,
) -> aloft_types::api::ExecResponse {
    client
        .exec(
            app,
            machine,
            vec!["sh".into(), "-c".into(), script.into()],
            timeout,
        )
        .await
        .unwrap_or_else(|e| panic!("exec {script:?} in {machine}: {e}"))
}

/// A busybox machine that runs until it is stopped.
pub(crate) fn sleeper() -> aloft_types::machine::MachineConfig {
    aloft_types::machine::MachineConfig {
        image: aloft_testkit::BUSYBOX_IMAGE.to_owned(),
        init: aloft_types::machine::MachineInit {
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "while true; do sleep 1; done".into(),
            ],
            ..aloft_types::machine::MachineInit::default()
        },
        ..aloft_types::machine::MachineConfig::default()
    }
}

/// How many lines of its log a failing test's server shows.
const LOG_TAIL: usize = 80;

impl Drop for Server {
    #[allow(
        clippy::print_stderr,
        reason = "a failed test shows what the daemon said; CI keeps nothing else"
    )]
    fn drop(&mut self) {
        self.kill();
        // A failing test's server shows its log's last lines: the temporary directory
        // with the whole log is gone with the test.
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.data_dir.with_extension("log"))
        {
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "--- the last {} lines of aloftd's log ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
        // Everything this host's agent created goes, passing or failing.
        if let Some(host) = read_trimmed(&self.data_dir.join("host-id")) {
            aloft_testkit::remove_containers_labelled("dev.aloft.host", &host);
        }
        // And the volumes' filesystems it mounted (none for a server killed to be
        // started again: its data directory is cleared).
        aloft_testkit::unmount_under(&self.data_dir);
    }
}

/// Waits until the machine's container runs `instance` (the version an update made).
pub(crate) async fn machines_wait_version(
    server: &Server,
    app: &str,
    machine: &str,
    instance: &str,
) {
    let client = &server.client;
    eventually(
        "the updated version to run",
        Duration::from_secs(60),
        || async {
            let current = client.machine(app, machine).await.ok()?;
            let running = std::process::Command::new("docker")
                .args(["ps", "-q", "--filter"])
                .arg(format!("label=dev.aloft.instance={instance}"))
                .output()
                .ok()?;
            (current.state == "started" && !running.stdout.is_empty()).then_some(())
        },
    )
    .await;
}

/// Sends a signal to the server process and waits for it to exit; returns its exit code.
pub(crate) fn signal_and_wait(
    server: &mut Server,
    signal: &str,
    deadline: Duration,
) -> Option<i32> {
    let child = server.child.as_mut().expect("the server runs");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            server.child = None;
            return status.code();
        }
        assert!(
            start.elapsed() < deadline,
            "aloftd did not exit within {deadline:?} of SIG{signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
