//! Generated documents: whatever the input, reading, validating and lowering never panic.
//! Documents are built from fly.toml's own vocabulary (and near misses of it), so the
//! generator reaches deep into every section rather than bouncing off the top level.

use aloft_config::{Format, SourceFile};
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "app",
    "primary_region",
    "kill_signal",
    "kill_timeout",
    "swap_size_mb",
    "console_command",
    "env",
    "processes",
    "mounts",
    "mount",
    "http_service",
    "services",
    "checks",
    "vm",
    "compute",
    "restart",
    "files",
    "statics",
    "metrics",
    "metric",
    "build",
    "deploy",
    "experimental",
    "internal_port",
    "protocol",
    "ports",
    "port",
    "start_port",
    "end_port",
    "handlers",
    "force_https",
    "concurrency",
    "type",
    "soft_limit",
    "hard_limit",
    "tcp_checks",
    "http_checks",
    "interval",
    "timeout",
    "grace_period",
    "method",
    "path",
    "headers",
    "source",
    "destination",
    "initial_size",
    "size",
    "memory",
    "cpus",
    "cpu_kind",
    "policy",
    "retries",
    "guest_path",
    "raw_value",
    "url_prefix",
    "strategy",
    "release_command",
    "cmd",
    "entrypoint",
    "auto_stop_machines",
    "auto_start_machines",
    "min_machines_running",
    "tls_options",
    "http_options",
    "response",
    "replay_cache",
    "restart_limit",
    "name",
    "value",
    "web",
    "worker",
    "internal_prot",
    "max_machines_running",
    "build-target",
    "build_target",
    "args",
];

fn scalar() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        (0i64..70_000).prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<f64>().prop_map(toml::Value::Float),
        prop_oneof![
            Just("10s"),
            Just("1m30s"),
            Just("500ms"),
            Just("tcp"),
            Just("udp"),
            Just("http"),
            Just("tls"),
            Just("app"),
            Just("web"),
            Just("1gb"),
            Just("512mb"),
            Just("shared-cpu-1x"),
            Just("stop"),
            Just("off"),
            Just("20,25"),
            Just("rolling"),
            Just("bluegreen"),
            Just("/data"),
            Just("/"),
            Just("SIGTERM"),
            Just("never"),
            Just(""),
            Just("x y 'z"),
        ]
        .prop_map(|s| toml::Value::String(s.to_owned())),
        "\\PC{0,12}".prop_map(toml::Value::String),
    ]
}

fn value() -> impl Strategy<Value = toml::Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|entries| {
                toml::Value::Table(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                )
            }),
        ]
    })
}

fn document() -> impl Strategy<Value = toml::Table> {
    prop::collection::vec((prop::sample::select(KEYS), value()), 0..10).prop_map(|entries| {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    })
}

fn exercise(text: String, format: Format) {
    let parsed = aloft_config::parse(SourceFile::new("generated", text, format));
    let _ = parsed.render();
    if let Some(config) = parsed.config() {
        for group in config.process_groups() {
            let _ = config.to_machine_config(&group, std::path::Path::new("/nonexistent"), None);
        }
        for format in [Format::Toml, Format::Json, Format::Yaml] {
            let _ = aloft_config::show::to_string(config, format);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_documents_never_panic(document in document()) {
        if let Ok(text) = toml::to_string(&document) {
            exercise(text, Format::Toml);
        }
        if let Ok(text) = serde_json::to_string(&document) {
            exercise(text.clone(), Format::Json);
            exercise(text, Format::Yaml);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        for format in [Format::Toml, Format::Json, Format::Yaml] {
            exercise(text.clone(), format);
        }
    }
}
