//! Invalid files: each is rejected under `--strict`, and the exact text of its errors
//! (position, key path, suggestion) is pinned; read leniently (as flyctl deploys), the
//! few whose problems flyctl lets through are accepted with warnings that say what is
//! ignored.

use aloft_config::Strictness;

use crate::{data_dir, parse_data_file, parse_data_file_with};

/// Invalid files that flyctl deploys anyway (with the setting ignored): accepted with
/// warnings unless `--strict`.
const LENIENT: [&str; 12] = [
    "01-unknown-top-level-key.toml",
    "02-unknown-service-key.toml",
    "03-unknown-section.toml",
    "11-force-https-without-http.toml",
    "12-unknown-handler.toml",
    "17-unknown-strategy.toml",
    "19-service-unknown-process.toml",
    "21-mount-without-source.toml",
    "34-check-script-type.toml",
    "49-check-headers-array-of-tables.toml",
    "51-misplaced-idle-timeout.toml",
    "52-json-unknown-key.json",
];

#[test]
fn there_are_at_least_40_invalid_files() {
    let count = std::fs::read_dir(data_dir().join("invalid"))
        .unwrap()
        .count();
    assert!(count >= 40, "{count} files");
}

#[test]
fn every_invalid_file_is_rejected_with_pinned_errors() {
    insta::glob!("../data/invalid", "*.*", |path| {
        let parsed = parse_data_file_with(path, Strictness::Strict);
        assert!(parsed.has_errors(), "{} was accepted", path.display());
        for error in parsed.errors() {
            assert!(
                error.span.is_some(),
                "{}: an error without a position: {error:?}",
                path.display()
            );
        }
        insta::assert_snapshot!(parsed.render());
    });
}

#[test]
fn read_leniently_only_what_flyctl_lets_through_is_accepted_with_warnings() {
    let mut files: Vec<_> = std::fs::read_dir(data_dir().join("invalid"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let parsed = parse_data_file(&path);
        if LENIENT.contains(&name) {
            assert!(!parsed.has_errors(), "{name}:\n{}", parsed.render());
            assert!(
                parsed
                    .warnings()
                    .any(|w| w.message.contains("`--strict` refuses it")),
                "{name} says what it ignores:\n{}",
                parsed.render()
            );
        } else {
            assert!(parsed.has_errors(), "{name} was accepted leniently");
        }
    }
}

#[test]
fn several_errors_are_reported_in_file_order() {
    let parsed = parse_data_file_with(
        &data_dir().join("invalid/45-several-errors.toml"),
        Strictness::Strict,
    );
    let errors: Vec<_> = parsed.errors().collect();
    assert!(errors.len() >= 6, "{}", parsed.render());
    let starts: Vec<usize> = errors.iter().map(|e| e.span.unwrap().start).collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted);
}
