//! The 60 fly.toml files from public repositories (`data/realworld/INDEX.md`): every one
//! is accepted as flyctl deploys it (warnings saying what is ignored), and the eight below
//! are rejected under `--strict`, as `fly config validate --strict` rejects them; the
//! outcome of each is pinned so that compatibility can only grow.

use aloft_config::Strictness;

use crate::{data_dir, parse_data_file, parse_data_file_with};

/// Files that `--strict` rejects, and why.
const REJECTED: [(&str, &str); 8] = [
    (
        "06-fly-apps-fly-etcd.toml",
        "a Nomad-era `script` check, which machines do not run",
    ),
    (
        "24-mythal-boluo.toml",
        "`idle_timeout` belongs in [http_service.http_options]",
    ),
    (
        "25-FACorreiaa-go-website.toml",
        "a service with no internal_port, on port 443 already taken by [http_service]",
    ),
    (
        "36-dbernheisel-bernheisel.com.toml",
        "check headers written as an array of tables",
    ),
    (
        "41-superfly-flyctl.toml",
        "flyctl's own fixture of invalid values (`strategy = \"rolling-eyes\"`)",
    ),
    (
        "44-mythal-boluo.toml",
        "`max_machines_running` is not a fly.toml key",
    ),
    ("46-tryethernal-ethernal.toml", "a mount without `source`"),
    (
        "51-Accurate0-maccas-api.toml",
        "`max_machines_running` is not a fly.toml key",
    ),
];

#[test]
fn real_world_files_are_accepted_or_rejected_as_listed() {
    let mut files: Vec<_> = std::fs::read_dir(data_dir().join("realworld"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 60);
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let parsed = parse_data_file(&path);
        assert!(!parsed.has_errors(), "{name}:\n{}", parsed.render());
        let strict = parse_data_file_with(&path, Strictness::Strict);
        let expected_rejected = REJECTED.iter().any(|(file, _)| *file == name);
        assert_eq!(
            strict.has_errors(),
            expected_rejected,
            "{name} with --strict:\n{}",
            strict.render()
        );
        for error in strict.errors() {
            assert!(
                error.span.is_some(),
                "{name}: an error without a position: {error:?}"
            );
        }
        if let Some(config) = parsed.config() {
            for group in config.process_groups() {
                config
                    .to_machine_config(&group, std::path::Path::new("."), None)
                    .unwrap_or_else(|e| panic!("{name}: lowering {group}: {e}"));
            }
        }
    }
}

#[test]
fn outcome_of_every_real_world_file_is_pinned() {
    insta::glob!("../data/realworld", "*.toml", |path| {
        let parsed = parse_data_file(path);
        let verdict = if parsed.has_errors() {
            "rejected"
        } else {
            "accepted"
        };
        insta::assert_snapshot!(format!("{verdict}\n\n{}", parsed.render()));
    });
}
