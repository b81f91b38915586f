//! The staging fly.toml of the "Flying away from AWS" post, exactly as quoted there.

use std::path::Path;

use aloft_config::{Format, show};
use aloft_types::Duration;
use serde_json::{Value, json};

use crate::{data_dir, parse_data_file};

fn seed() -> aloft_config::Parsed {
    parse_data_file(&data_dir().join("valid/01-seed-terrateam-staging.toml"))
}

#[test]
fn seed_validates_with_only_the_restart_limit_deprecation() {
    let parsed = seed();
    assert!(!parsed.has_errors(), "{}", parsed.render());
    let warnings: Vec<String> = parsed
        .warnings()
        .map(|w| format!("{}: {}", w.path, w.message))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with(
            "services[0].http_checks[0].restart_limit: `restart_limit` is a legacy key"
        )
    );
}

#[test]
fn seed_shows_every_setting() {
    let parsed = seed();
    let config = parsed.config().expect("valid");
    let shown: Value =
        serde_json::from_str(&show::to_string(config, Format::Json).unwrap()).unwrap();
    assert_eq!(shown["kill_signal"], "SIGINT");
    assert_eq!(config.kill_timeout, Some(Duration::from_secs(60)));
    let env = shown["env"].as_object().unwrap();
    assert_eq!(env.len(), 6);
    for (name, value) in [
        ("DB_HOST", "terrateam-db-staging.internal"),
        ("DB_NAME", "terrateam"),
        ("DB_PORT", "5432"),
        ("DB_USER", "app"),
        ("TERRAT_PORT", "8180"),
        ("TERRAT_PYTHON_EXEC", "/usr/bin/python3"),
    ] {
        assert_eq!(env[name], name_value(value), "{name}");
    }
    let services = shown["services"].as_array().unwrap();
    assert_eq!(services.len(), 1);
    let service = &services[0];
    assert_eq!(service["protocol"], "tcp");
    assert_eq!(service["internal_port"], 8080);
    assert_eq!(
        service["concurrency"],
        json!({"type": "connections", "soft_limit": 20, "hard_limit": 25})
    );
    assert_eq!(
        service["http_checks"],
        json!([{
            "method": "GET", "path": "/health", "interval": "10s", "timeout": "3s",
            "grace_period": "10s", "protocol": "http", "tls_skip_verify": false
        }])
    );
    assert_eq!(
        service["ports"],
        json!([
            {"port": 80, "handlers": ["http"], "force_https": true},
            {"port": 443, "handlers": ["tls", "http"]}
        ])
    );
    assert_eq!(shown["deploy"]["strategy"], "rolling");
}

fn name_value(value: &str) -> Value {
    Value::String(value.to_owned())
}

#[test]
fn seed_lowers_to_a_machine_config() {
    let parsed = seed();
    let config = parsed.config().expect("valid");
    let machine = config
        .to_machine_config("app", Path::new("."), None)
        .unwrap();
    let stop = machine.stop_config.as_ref().unwrap();
    assert_eq!(stop.timeout, Some(Duration::from_secs(60)));
    let json = serde_json::to_value(&machine).unwrap();
    assert_eq!(
        json["stop_config"],
        json!({"signal": "SIGINT", "timeout": "1m0s"})
    );
    assert_eq!(json["services"].as_array().unwrap().len(), 1);
    let service = &json["services"][0];
    assert_eq!(service["internal_port"], 8080);
    assert_eq!(
        service["concurrency"],
        json!({"type": "connections", "soft_limit": 20, "hard_limit": 25})
    );
    assert_eq!(
        service["checks"],
        json!([{
            "type": "http", "method": "GET", "path": "/health", "interval": "10s", "timeout": "3s",
            "grace_period": "10s", "protocol": "http", "tls_skip_verify": false
        }])
    );
    assert_eq!(
        service["ports"][0],
        json!({"port": 80, "handlers": ["http"], "force_https": true})
    );
    assert_eq!(
        service["ports"][1],
        json!({"port": 443, "handlers": ["tls", "http"]})
    );
    assert_eq!(json["metadata"]["fly_process_group"], "app");
    assert_eq!(json["env"]["FLY_PROCESS_GROUP"], "app");
}
