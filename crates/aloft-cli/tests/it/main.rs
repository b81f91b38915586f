//! The `aloft` binary end to end: exit codes, which stream gets what, and its output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod browser;
mod config;
mod dashboard;
mod errors;
mod guards;
mod https;
mod machines;
mod platform;
mod regions;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `aloft` with `args` in `dir`, with a clean colour environment.
pub(crate) fn aloft(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("the aloft binary runs")
}

/// A temporary directory holding one file.
pub(crate) fn dir_with(name: &str, content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), content).unwrap();
    dir
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("output is UTF-8")
}

pub(crate) const SEED: &str = r#"app = "terrateam-app-staging"
kill_signal = "SIGINT"
kill_timeout = 60
[env]
DB_HOST = "terrateam-db-staging.internal"
DB_NAME = "terrateam"
DB_PORT = "5432"
DB_USER = "app"
TERRAT_PORT = "8180"
TERRAT_PYTHON_EXEC = "/usr/bin/python3"
[[services]]
internal_port = 8080
protocol = "tcp"
[services.concurrency]
hard_limit = 25
soft_limit = 20
type = "connections"
[[services.http_checks]]
grace_period = "10s"
interval = "10s"
method = "get"
path = "/health"
protocol = "http"
restart_limit = 0
timeout = "3s"
tls_skip_verify = false
[services.http_checks.headers]
[[services.ports]]
force_https = true
handlers = ["http"]
port = 80
[[services.ports]]
handlers = ["tls", "http"]
port = 443
[deploy]
strategy = "rolling"
"#;

#[test]
fn version_prints_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let output = aloft(dir.path(), &["version"]);
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout),
        format!("aloft {}\n", env!("CARGO_PKG_VERSION"))
    );
    let output = aloft(dir.path(), &["version", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn a_usage_error_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = aloft(dir.path(), &["config", "frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("frobnicate"));
}
