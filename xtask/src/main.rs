//! `cargo xtask`: the project's own commands. `demo` and `test` set up a fresh Debian
//! machine (installing what is missing) and then do everything; `fuzz` and `bench` run the
//! fuzzers and benchmarks.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a developer tool that reports progress"
)]

mod api_fuzz;
mod demo;
mod layout;
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Aloft's developer commands")]
struct Args {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what is missing, start the platform and deploy the example app; runs until
    /// Ctrl-C.
    Demo {
        /// Stop once the app answers, and clean up (what `cargo xtask test` runs).
        #[arg(long)]
        check: bool,
    },
    /// Install what is missing, then check the layout, formatting, lints, docs and run every
    /// test.
    Test,
    /// Run a fuzz target for a while (needs cargo-fuzz; installed when missing).
    Fuzz {
        /// The target: `config` (fly.toml reading), `dns` (the DNS query path), `proxy_header`
        /// (PROXY protocol parsing) or `routing` (Host, SNI and fly-replay parsing).
        target: String,
        /// How long to fuzz, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Check the code's layout rules (what `test` checks first): no file under
    /// `crates/*/src` over 800 lines without a reason line, no module import circles.
    Layout,
    /// Regenerate the checked-in OpenAPI document (openapi/aloft.json) from the code.
    Openapi,
    /// Run a long campaign whose short version `test` runs: `deploys` (random deploys,
    /// crashes and restarts against the simulated runtime), `agents` (random desired
    /// states, crashes and agent restarts, in virtual time) or `api` (schemathesis over
    /// every operation of the API, `--cases` seconds per pass).
    Soak {
        /// The campaign: `deploys`, `agents` or `api`.
        name: String,
        /// How many random sequences to run (for `api`: seconds per pass).
        #[arg(long, default_value_t = 200)]
        cases: u32,
    },
    /// Run a benchmark suite: `config`, `machines`, `dns`, `proxy`, `deploy`, `logs`, `ssh` or `web`.
    Bench {
        /// The suite: `config` (fly.toml reading), `machines` (machine latency, API listing),
        /// `dns` (dnsperf against Aloft's DNS and unbound), `proxy` (against nginx and
        /// HAProxy), `deploy` (deploy wall time per strategy) or `logs` (log ingestion and
        /// queries over 10M lines).
        suite: String,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    match args.command {
        Task::Demo { check } => demo::demo(&root, check, cargo, demo::Binaries::Build),
        Task::Test => test(&root),
        Task::Layout => layout::check(&root),
        Task::Fuzz { target, seconds } => fuzz(&target, seconds),
        Task::Bench { suite } => bench(&suite),
        Task::Soak { name, cases } => soak(&name, cases),
        Task::Openapi => run(cargo()
            .args([
                "test",
                "--quiet",
                "--package",
                "aloft-control",
                "--test",
                "it",
                "the_checked_in_openapi_document_is_current",
            ])
            .env("ALOFT_UPDATE_OPENAPI", "1")),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_owned)
        .context("xtask lives inside the workspace")
}

/// Runs a command, echoing it first; fails when it fails.
fn run(command: &mut Command) -> Result<()> {
    eprintln!("+ {}", describe(command));
    let status = command
        .status()
        .with_context(|| format!("starting {}", describe(command)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(command));
    }
    Ok(())
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Cargo for `cargo xtask test`: no incremental caches, which a one-off build never reads
/// again and which were a third of a clean run's disk use.
fn cargo_once() -> Command {
    let mut command = cargo();
    command.env("CARGO_INCREMENTAL", "0");
    command
}

/// Cargo for the test run's builds, with clippy as the compiler of the workspace's own
/// crates (what `cargo clippy` does, through the same two variables): its lints run while
/// the tests build, and every dependency is compiled once, not checked for the lints and
/// then built again for the tests (three minutes of a clean run here).
fn cargo_linted() -> Result<Command> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let printed = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    if !printed.status.success() {
        bail!("rustc --print sysroot failed ({})", printed.status);
    }
    let sysroot = String::from_utf8_lossy(&printed.stdout).into_owned();
    let driver = Path::new(sysroot.trim()).join("bin").join("clippy-driver");
    if !driver.exists() {
        bail!(
            "{} is missing: the lints need clippy (rustup component add clippy)",
            driver.display()
        );
    }
    let mut command = cargo_once();
    command
        .env("RUSTC_WORKSPACE_WRAPPER", driver)
        // `-D warnings`, as cargo-clippy hands its arguments to clippy-driver.
        .env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        );
    Ok(command)
}

/// Starts a section of the output, saying how long the whole command has run so far (so
/// a CI log shows where the time goes).
fn section(title: &str) {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let elapsed = STARTED.get_or_init(std::time::Instant::now).elapsed();
    eprintln!(
        "\n==> {title} (at {}:{:02})",
        elapsed.as_secs() / 60,
        elapsed.as_secs() % 60
    );
}

fn test(root: &Path) -> Result<()> {
    section("Installing what the tests need");
    tools::ensure_test_tools()?;

    section("Formatting");
    run(cargo_once().args(["fmt", "--all", "--", "--check"]))?;

    section("Layout");
    layout::check(root)?;
    eprintln!("no file over 800 lines without a reason, no module circles");

    section("Lints, while building the tests and benchmarks");
    // Every target `cargo clippy --all-targets` lints: libraries, binaries and tests (the
    // test build), benchmarks (built as in the dev profile, not run).
    run(cargo_linted()?.args([
        "nextest",
        "run",
        "--workspace",
        "--profile",
        "ci",
        "--no-run",
    ]))?;
    run(cargo_linted()?.args(["build", "--workspace", "--benches", "--quiet"]))?;
    // The app the end-to-end tests run in machines (`aloft_testkit::testapp_image`), built
    // now so that no test needs cargo (below).
    run(cargo_linted()?.args(["build", "--package", "aloft-testapp", "--quiet"]))?;

    section("Tests");
    // Doc tests first (they need cargo), so that the run's last test summary is
    // nextest's, of every test.
    run(cargo_linted()?.args(["test", "--doc", "--workspace", "--quiet"]))?;
    // What nextest needs to run the built tests without cargo: cargo's lock on the target
    // directory is then free for the docs and fuzz-target build beside the tests. That
    // build shares the tests' target directory, so it compiles none of the proc macros
    // and build scripts again (seven tenths of its work in a directory of its own).
    let nextest_dir = root.join("target").join("nextest");
    std::fs::create_dir_all(&nextest_dir)
        .with_context(|| format!("creating {}", nextest_dir.display()))?;
    let binaries = nextest_dir.join("ci-binaries.json");
    write_output_of(
        cargo_linted()?.args([
            "nextest",
            "list",
            "--workspace",
            "--profile",
            "ci",
            "--list-type",
            "binaries-only",
            "--message-format",
            "json",
        ]),
        &binaries,
    )?;
    let metadata = nextest_dir.join("ci-cargo-metadata.json");
    write_output_of(
        cargo().args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--no-deps",
        ]),
        &metadata,
    )?;
    // The docs and the fuzz targets only compile: they build beside the tests, at the
    // lowest CPU priority, on the CPU that the end-to-end tests leave idle while they wait
    // on engines and timers. What they print is shown after the tests.
    let beside = std::thread::spawn(build_beside_tests);
    // A snapshot that is missing or differs fails the run; it is never written by CI.
    let testapp = root.join("target").join("debug").join("aloft-testapp");
    run(cargo()
        .args(["nextest", "run", "--profile", "ci"])
        .arg("--binaries-metadata")
        .arg(&binaries)
        .arg("--cargo-metadata")
        .arg(&metadata)
        .env(aloft_testapp_variable(), &testapp)
        .env("INSTA_UPDATE", "no")
        .env_remove("INSTA_FORCE_PASS"))?;

    section("The API fuzzed from its OpenAPI document (schemathesis)");
    let requests = api_fuzz::fuzz(root, API_FUZZ_SECONDS)?;
    eprintln!("{requests} requests: no server error, every answer as the document says");

    section("Docs and fuzz targets (built beside the tests)");
    let printed = beside
        .join()
        .map_err(|_| anyhow::anyhow!("building the docs and fuzz targets panicked"))??;
    eprint!("{printed}");
    eprintln!("the docs (warnings denied) and the fuzz targets build");

    // The README's first command, end to end: a fresh platform serves the example app.
    demo::demo(root, true, cargo_once, demo::Binaries::FromTests)?;

    section("All checks passed.");
    Ok(())
}

/// Runs `command` and writes what it prints to `path`; its error output on failure.
fn write_output_of(command: &mut Command, path: &Path) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {}", describe(command)))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::write(path, &output.stdout).with_context(|| format!("writing {}", path.display()))
}

/// The variable that hands the tests a built `aloft-testapp` (see
/// `aloft_testkit::testapp_image`).
fn aloft_testapp_variable() -> &'static str {
    "ALOFT_TESTAPP_BINARY"
}

/// `cargo doc` (warnings denied) and a check of the fuzz targets, each under `nice`, in
/// the tests' target directory; what they printed, with how long each took.
fn build_beside_tests() -> Result<String> {
    let mut docs = cargo_once();
    docs.args(["doc", "--no-deps", "--workspace", "--quiet"])
        .env("RUSTDOCFLAGS", "-D warnings");
    let mut fuzz = cargo_once();
    fuzz.args([
        "check",
        "--quiet",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--bins",
        "--target-dir",
        "target",
    ]);
    let mut printed = String::new();
    for command in [docs, fuzz] {
        let mut niced = Command::new("nice");
        niced.args(["-n", "19"]).arg(command.get_program());
        niced.args(command.get_args());
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => niced.env(name, value),
                None => niced.env_remove(name),
            };
        }
        let started = std::time::Instant::now();
        let output = niced
            .output()
            .with_context(|| format!("running {}", describe(&niced)))?;
        printed.push_str(&String::from_utf8_lossy(&output.stdout));
        printed.push_str(&String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            bail!(
                "{} failed ({}):\n{printed}",
                describe(&niced),
                output.status
            );
        }
        printed.push_str(&format!(
            "{}: {:.0?}\n",
            describe(&niced),
            started.elapsed()
        ));
    }
    Ok(printed)
}

fn fuzz(target: &str, seconds: u64) -> Result<()> {
    if !["config", "dns", "proxy_header", "routing"].contains(&target) {
        bail!(
            "unknown fuzz target {target:?}; the targets are: config, dns, proxy_header, routing"
        );
    }
    tools::ensure_cargo_fuzz()?;
    // cargo-fuzz needs nightly-only compiler flags; the machine has one stable toolchain,
    // whose compiler accepts them when bootstrapping is allowed.
    run(cargo()
        .args([
            "fuzz",
            "run",
            target,
            "--",
            &format!("-max_total_time={seconds}"),
        ])
        .env("RUSTC_BOOTSTRAP", "1"))
}

/// Seconds of each schemathesis pass in `cargo xtask test` (`soak api` takes longer).
const API_FUZZ_SECONDS: u64 = 20;

fn soak(name: &str, cases: u32) -> Result<()> {
    match name {
        "api" => {
            let root = workspace_root()?;
            run(cargo().args(["build", "--package", "aloftd", "--quiet"]))?;
            let requests = api_fuzz::fuzz(&root, u64::from(cases))?;
            eprintln!("{requests} requests: no server error, every answer as the document says");
            Ok(())
        }
        "deploys" => run(cargo()
            .args([
                "test",
                "--release",
                "--package",
                "aloftd",
                "--test",
                "sim",
                "--",
                "--include-ignored",
                "--nocapture",
            ])
            .env("ALOFT_SIM_CASES", cases.to_string())
            .env("ALOFT_SIM_RANDOM", "1")),
        "agents" => run(cargo()
            .args([
                "test",
                "--release",
                "--package",
                "aloft-agent",
                "--test",
                "converge",
                "--",
                "--nocapture",
            ])
            .env("ALOFT_AGENT_CASES", cases.to_string())
            .env("ALOFT_SIM_RANDOM", "1")),
        // `aloftd` killed at every time every failpoint is reached (`cargo xtask test`
        // kills at a sample of them); `--cases` is not used: the traces set the count.
        "crashes" => {
            tools::ensure_test_tools()?;
            run(cargo().args(["build", "--package", "aloft-testapp", "--quiet"]))?;
            let root = workspace_root()?;
            let testapp = root.join("target").join("debug").join("aloft-testapp");
            run(cargo()
                .args([
                    "test",
                    "--package",
                    "aloftd",
                    "--test",
                    "it",
                    "crashes::",
                    "--",
                    "--nocapture",
                    "--test-threads",
                    "2",
                ])
                .env(aloft_testapp_variable(), &testapp)
                .env("ALOFT_CRASH_ALL", "1"))
        }
        other => {
            bail!(
                "unknown soak campaign {other:?}; the campaigns are: deploys, agents, api, crashes"
            )
        }
    }
}

fn bench(suite: &str) -> Result<()> {
    match suite {
        "config" => run(cargo().args(["bench", "--package", "aloft-config", "--bench", "config"])),
        "machines" => {
            tools::ensure_test_tools()?;
            run(cargo().args(["bench", "--package", "aloftd", "--bench", "machines"]))
        }
        "dns" => {
            tools::ensure_bench_tools()?;
            run(cargo().args(["bench", "--package", "aloft-dns", "--bench", "dns"]))
        }
        "logs" => run(cargo().args(["bench", "--package", "aloft-logs", "--bench", "logs"])),
        "web" => run(cargo().args(["bench", "--package", "aloft-web", "--bench", "render"])),
        "deploy" => {
            tools::ensure_test_tools()?;
            run(cargo().args(["bench", "--package", "aloftd", "--bench", "deploy"]))
        }
        "ssh" => {
            tools::ensure_test_tools()?;
            // The SFTP helper is the aloftd binary.
            run(cargo().args([
                "build",
                "--package",
                "aloftd",
                "--bin",
                "aloftd",
                "--release",
            ]))?;
            run(cargo().args(["bench", "--package", "aloftd", "--bench", "ssh"]))
        }
        "proxy" => {
            tools::ensure_proxy_bench_tools()?;
            run(cargo().args(["bench", "--package", "aloft-proxy", "--bench", "proxy"]))
        }
        other => {
            bail!(
                "unknown benchmark suite {other:?}; the suites are: config, machines, dns, proxy, deploy, logs, ssh, web"
            )
        }
    }
}
