//! `aloft config validate|show`.

use std::fs;

use serde_json::json;

use crate::{SEED, aloft, dir_with, text};

#[test]
fn validate_accepts_the_seed_with_its_warning_on_stderr() {
    let dir = dir_with("fly.toml", SEED);
    let output = aloft(dir.path(), &["config", "validate"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("warning: services[0].http_checks[0].restart_limit"),
        "{stderr}"
    );
    assert!(stderr.contains("--> fly.toml:24:1"), "{stderr}");
    assert!(stderr.ends_with("fly.toml is valid\n"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "NO_COLOR output has escape codes: {stderr:?}"
    );
}

#[test]
fn validate_rejects_an_invalid_file_with_exit_1_and_positions() {
    let dir = dir_with(
        "fly.toml",
        "app = \"x\"\nkill_timeout = 900\n[http_service]\ninternal_prot = 8080\n",
    );
    let output = aloft(dir.path(), &["config", "validate"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stdout), "");
    insta::assert_snapshot!(text(&output.stderr));
}

#[test]
fn validate_json_reports_every_finding() {
    let dir = dir_with(
        "fly.toml",
        "app = \"x\"\n[http_service]\ninternal_prot = 8080\n",
    );
    let output = aloft(dir.path(), &["config", "validate", "--json", "--strict"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(
        report["diagnostics"][0],
        json!({
            "severity": "error", "path": "http_service.internal_prot", "message": "unknown key",
            "help": "did you mean `internal_port`?", "file": "fly.toml", "line": 3, "column": 1
        })
    );
    // Without --strict (as flyctl) the unknown key is a warning, and the key it was meant
    // for is still missing: the file stays invalid.
    let output = aloft(dir.path(), &["config", "validate", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let findings = report["diagnostics"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["severity"] == "warning" && f["path"] == "http_service.internal_prot"),
        "{report}"
    );
    assert!(
        findings.iter().any(|f| f["severity"] == "error"
            && f["message"].as_str().unwrap().contains("internal_port")),
        "{report}"
    );
    // An unknown key alone: valid with a warning, refused with --strict.
    let dir = dir_with("fly.toml", "app = \"x\"\nmax_machines_running = 3\n");
    let lenient = aloft(dir.path(), &["config", "validate"]);
    assert_eq!(lenient.status.code(), Some(0), "{}", text(&lenient.stderr));
    assert!(text(&lenient.stderr).contains("warning: max_machines_running: unknown key"));
    let strict = aloft(dir.path(), &["config", "validate", "--strict"]);
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict.stderr));
}

#[test]
fn config_falls_back_to_aloft_toml_and_says_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let output = aloft(dir.path(), &["config", "validate"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        text(&output.stderr).contains("no fly.toml or aloft.toml in"),
        "{}",
        text(&output.stderr)
    );
    fs::write(dir.path().join("aloft.toml"), "app = \"from-aloft-toml\"\n").unwrap();
    let output = aloft(dir.path(), &["config", "show", "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["app"], "from-aloft-toml");
}

#[test]
fn show_prints_the_normalized_file_in_each_format() {
    let dir = dir_with("fly.toml", SEED);
    let toml = aloft(dir.path(), &["config", "show"]);
    assert!(toml.status.success());
    insta::assert_snapshot!("show_toml", text(&toml.stdout));
    let yaml = aloft(dir.path(), &["config", "show", "--yaml"]);
    assert!(yaml.status.success());
    assert!(text(&yaml.stdout).contains("kill_signal: SIGINT"));
    let json = aloft(dir.path(), &["config", "show", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(shown["kill_timeout"], "1m0s");
    assert_eq!(shown["services"][0]["http_checks"][0]["method"], "GET");
    assert!(
        text(&json.stderr).contains("restart_limit"),
        "warnings still go to stderr"
    );
}

#[test]
fn show_machine_config_lowers_a_process_group() {
    let dir = dir_with(
        "fly.yaml",
        "app: multi\nprocesses:\n  web: ./web --port 8080\n  worker: ./worker\nhttp_service:\n  internal_port: 8080\n  processes: [web]\n",
    );
    let output = aloft(
        dir.path(),
        &[
            "-c",
            "fly.yaml",
            "config",
            "show",
            "--machine-config",
            "--process-group",
            "web",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let machine: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(machine["init"]["cmd"], json!(["./web", "--port", "8080"]));
    assert_eq!(
        machine["services"][0]["ports"][1]["handlers"],
        json!(["tls", "http"])
    );
    let worker = aloft(
        dir.path(),
        &[
            "-c",
            "fly.yaml",
            "config",
            "show",
            "--machine-config",
            "-g",
            "worker",
        ],
    );
    let machine: serde_json::Value = serde_json::from_slice(&worker.stdout).unwrap();
    assert!(machine.get("services").is_none());
    let missing = aloft(
        dir.path(),
        &[
            "-c",
            "fly.yaml",
            "config",
            "show",
            "--machine-config",
            "-g",
            "cron",
        ],
    );
    assert_eq!(missing.status.code(), Some(3));
    assert!(
        text(&missing.stderr).contains("there is no process group `cron`; the app has web, worker")
    );
}

#[test]
fn app_flag_overrides_the_app_name_and_is_checked() {
    let dir = dir_with("fly.toml", "app = \"one\"\n");
    let output = aloft(dir.path(), &["-a", "two", "config", "show", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["app"], "two");
    let bad = aloft(dir.path(), &["-a", "Two", "config", "show"]);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(text(&bad.stderr).contains("--app \"Two\""));
    // Every app command checks it, and one with no app to act on is a usage error too.
    let bad = aloft(dir.path(), &["-a", "Two", "status"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("--app \"Two\""),
        "{}",
        text(&bad.stderr)
    );
    let empty = tempfile::tempdir().unwrap();
    let none = aloft(empty.path(), &["status"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        text(&none.stderr).contains("which app?"),
        "{}",
        text(&none.stderr)
    );
}
