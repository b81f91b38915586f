//! The valid corpus written for these tests: every file is valid, round-trips through
//! `show` in all three formats to the same model, and its lowering is pinned.

use std::fmt::Write as _;
use std::path::Path;

use aloft_config::{AppConfig, Format, SourceFile, show};

use crate::{data_dir, parse_data_file};

fn valid_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(data_dir().join("valid"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_has_at_least_40_files_in_every_format() {
    let files = valid_files();
    assert!(files.len() >= 40, "{} files", files.len());
    for format in [Format::Toml, Format::Json, Format::Yaml] {
        assert!(
            files.iter().any(|f| Format::from_path(f) == format),
            "no {format:?} file"
        );
    }
}

fn round_trip(config: &AppConfig, format: Format, origin: &Path) {
    let text =
        show::to_string(config, format).unwrap_or_else(|e| panic!("{}: {e}", origin.display()));
    let reparsed = aloft_config::parse(SourceFile::new("shown", text.clone(), format));
    assert!(
        !reparsed.has_errors(),
        "{} shown as {format:?} does not parse:\n{}\n{text}",
        origin.display(),
        reparsed.render()
    );
    let legacy: Vec<_> = reparsed
        .warnings()
        .filter(|w| w.message.contains("legacy"))
        .collect();
    assert!(
        legacy.is_empty(),
        "{} shown as {format:?} still has legacy forms: {legacy:#?}",
        origin.display()
    );
    assert_eq!(
        reparsed.config(),
        Some(config),
        "{} changed in a {format:?} round trip:\n{text}",
        origin.display()
    );
}

#[test]
fn every_valid_file_round_trips_in_every_format() {
    for path in valid_files() {
        let parsed = parse_data_file(&path);
        assert!(
            !parsed.has_errors(),
            "{}:\n{}",
            path.display(),
            parsed.render()
        );
        let config = parsed.config().unwrap();
        for format in [Format::Toml, Format::Json, Format::Yaml] {
            round_trip(config, format, &path);
        }
    }
}

#[test]
fn lowering_of_every_valid_file_is_pinned() {
    insta::glob!("../data/valid", "*.*", |path| {
        let parsed = parse_data_file(path);
        let config = parsed.config().expect("valid corpus file");
        let mut report = String::new();
        for warning in parsed.warnings() {
            report.push_str(&warning.render(parsed.source()));
        }
        let base = path.parent().unwrap();
        for group in config.process_groups() {
            let machine = config.to_machine_config(&group, base, None).unwrap();
            let _ = writeln!(report, "== process group {group}");
            report.push_str(&serde_json::to_string_pretty(&machine).unwrap());
            report.push('\n');
        }
        insta::assert_snapshot!(report);
    });
}
