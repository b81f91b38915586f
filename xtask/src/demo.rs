//! `cargo xtask demo`: from a fresh machine to a reachable app in one command. Installs
//! what is missing, builds `aloft`, `aloftd` and the example app (a static binary for a
//! `FROM scratch` image), starts `aloftd server` with its embedded defaults in
//! `target/demo`, deploys `examples/hello` with `aloft deploy` (the server builds its
//! Dockerfile), checks that the app answers 200 over HTTPS, prints its URL, a curl line
//! and `aloft status`, and runs until Ctrl-C. `--check` stops after the check and cleans
//! up (what `cargo xtask test` runs).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{run, section, tools};

/// The target the example app is linked statically for (the machine's own).
const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The example app's name (its fly.toml's `app`).
const APP: &str = "hello";
/// How long aloftd gets to start listening, and the app to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `aloftd server` run by the demo; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The end of the server's log, for an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Waits for `path` to hold a value (a file aloftd writes once it listens).
fn wait_for_file(server: &mut Server, path: &Path) -> Result<String> {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return Ok(text.trim().to_owned());
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!(
                "aloftd server exited ({status}) before listening; its log ({}):\n{}",
                server.log.display(),
                server.log_tail()
            );
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "aloftd server did not write {} within {START_TIMEOUT:?}; its log:\n{}",
                path.display(),
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Which `aloft` and `aloftd` the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binaries {
    /// Built now (`cargo xtask demo`).
    Build,
    /// The ones the test run just built for its end-to-end tests (in `target/debug`):
    /// building them again without the tests' dev-dependency features (tokio's
    /// `test-util`) would recompile tokio and everything above it, 1.5 minutes here.
    FromTests,
}

/// Runs the demo; `cargo` makes the cargo commands (the test run passes its own).
pub(crate) fn demo(
    root: &Path,
    check: bool,
    cargo: fn() -> Command,
    binaries: Binaries,
) -> Result<()> {
    section("Installing what is missing");
    tools::ensure_demo_tools()?;

    let aloft_bin = root.join("target/debug/aloft");
    let aloftd_bin = root.join("target/debug/aloftd");
    if binaries == Binaries::FromTests && aloft_bin.exists() && aloftd_bin.exists() {
        section("Using the aloft and aloftd the tests built");
    } else {
        section("Building aloft and aloftd");
        run(cargo().args(["build", "--quiet", "--bin", "aloft", "--bin", "aloftd"]))?;
    }

    section("Building the example app's server (statically linked, for FROM scratch)");
    run(cargo()
        .args([
            "build",
            "--quiet",
            "--release",
            "--package",
            "aloft-hello",
            "--target",
            HOST_TARGET,
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static"))?;
    let example = root.join("examples/hello");
    let built = root.join(format!("target/{HOST_TARGET}/release/hello"));
    std::fs::copy(&built, example.join("hello"))
        .with_context(|| format!("copying {} into examples/hello", built.display()))?;

    let data = root.join("target/demo");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    // Files the server writes once it listens: stale ones from an earlier run would lie.
    for file in ["api-url", "http-addr", "https-addr"] {
        let _ = std::fs::remove_file(data.join(file));
    }
    section("Starting aloftd server (state in target/demo, machines on Docker Engine)");
    let log = data.join("aloftd.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    // Its own process group: Ctrl-C in the terminal reaches the demo, which cleans up
    // and then stops aloftd, instead of aloftd exiting with the app still running.
    let child = Command::new(&aloftd_bin)
        .process_group(0)
        .arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--https-listen",
            "127.0.0.1:0",
        ])
        .stdout(log_file.try_clone().context("sharing the log file")?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {}", aloftd_bin.display()))?;
    let mut server = Server { child, log };
    let url = wait_for_file(&mut server, &data.join("api-url"))?;
    let https = wait_for_file(&mut server, &data.join("https-addr"))?;
    let port = https
        .rsplit(':')
        .next()
        .context("an https address with a port")?
        .to_owned();
    let token = std::fs::read_to_string(data.join("admin-token"))
        .context("reading the admin token aloftd wrote at its first start")?
        .trim()
        .to_owned();
    eprintln!(
        "aloftd server is up: API at {url} (log: {})",
        server.log.display()
    );
    let aloft = |args: &[&str]| {
        let mut command = Command::new(&aloft_bin);
        command
            .args(args)
            .env("ALOFT_API_URL", &url)
            .env("ALOFT_API_TOKEN", &token)
            .env("ALOFT_CONFIG_DIR", data.join("cli"));
        command
    };

    let apps = aloft(&["apps", "list", "--json"])
        .output()
        .context("listing apps")?;
    if !String::from_utf8_lossy(&apps.stdout).contains(&format!("\"{APP}\"")) {
        section("aloft apps create hello");
        run(&mut aloft(&["apps", "create", APP]))?;
    }
    section("aloft deploy -c examples/hello/fly.toml");
    let config = example.join("fly.toml");
    let config = config.to_str().context("the checkout path is not UTF-8")?;
    run(&mut aloft(&["deploy", "-c", config]))?;

    let ca = data.join("ca.pem");
    let pem = aloft(&["certs", "ca"])
        .output()
        .context("reading the local CA")?;
    std::fs::write(&ca, &pem.stdout).with_context(|| format!("writing {}", ca.display()))?;
    let host = format!("{APP}.aloft.localhost");
    let app_url = format!("https://{host}:{port}/");
    let curl_args = [
        "--cacert".to_owned(),
        ca.display().to_string(),
        "--resolve".to_owned(),
        format!("{host}:{port}:127.0.0.1"),
        app_url.clone(),
    ];
    let started = Instant::now();
    loop {
        let answer = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(&curl_args)
            .stderr(Stdio::null())
            .output()
            .context("running curl")?;
        let code = String::from_utf8_lossy(&answer.stdout).trim().to_owned();
        if code == "200" {
            break;
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "{app_url} answered {code:?}, not 200, for {START_TIMEOUT:?}; aloftd's log:\n{}",
                server.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    section("aloft status -a hello");
    run(&mut aloft(&["status", "-a", APP]))?;
    println!(
        "\nThe example app is live and answers 200 at:\n\n  {app_url}\n\nTry it:\n\n  curl {}\n\n\
         Use the CLI against this platform:\n\n  export ALOFT_API_URL={url} ALOFT_API_TOKEN={token}\n  \
         target/debug/aloft status -a {APP}\n\n\
         Or the dashboard: open {url}/ and sign in with the token above.\n",
        curl_args.join(" ")
    );
    if check {
        section("Cleaning up (--check)");
        clean_up(
            &mut server,
            &data,
            &mut aloft(&["apps", "destroy", APP, "--yes"]),
        )?;
        println!("The demo works.");
        return Ok(());
    }
    eprintln!(
        "aloftd keeps running; press Ctrl-C to destroy the example app and stop it (its state stays in {}).",
        data.display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime to wait for Ctrl-C")?;
    let exited = runtime.block_on(async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => false,
            () = async {
                while let Ok(None) = server.child.try_wait() {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            } => true,
        }
    });
    if exited {
        let status = server.child.wait().context("waiting for aloftd")?;
        let host = std::fs::read_to_string(data.join("host-id")).unwrap_or_default();
        eprintln!(
            "aloftd stopped ({status}); the example's machines keep running: `docker ps --filter label=dev.aloft.host={}` lists them, `docker rm -f` removes them (or run the demo again).",
            host.trim()
        );
        return Ok(());
    }
    section("Ctrl-C: cleaning up");
    clean_up(
        &mut server,
        &data,
        &mut aloft(&["apps", "destroy", APP, "--yes"]),
    )?;
    Ok(())
}

/// Destroys the example app (`destroy`), stops aloftd, then checks that no container of
/// this host is left and says what was done.
fn clean_up(server: &mut Server, data: &Path, destroy: &mut Command) -> Result<()> {
    run(destroy)?;
    server.stop();
    let host = std::fs::read_to_string(data.join("host-id")).unwrap_or_default();
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=dev.aloft.host={}", host.trim()))
        .output()
        .context("listing the demo's containers")?;
    let left = String::from_utf8_lossy(&left.stdout).trim().to_owned();
    if !left.is_empty() {
        bail!(
            "containers of the demo are still there after the cleanup: {}; `docker rm -f` them",
            left.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    eprintln!(
        "Destroyed the example app {APP} (its machines are gone) and stopped aloftd; its state stays in {} for the next run.",
        data.display()
    );
    Ok(())
}
