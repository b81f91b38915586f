//! Invalid files: each is rejected, and the exact text of its errors (position, key path,
//! suggestion) is pinned.

use crate::{data_dir, parse_data_file};

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
        let parsed = parse_data_file(path);
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
fn several_errors_are_reported_in_file_order() {
    let parsed = parse_data_file(&data_dir().join("invalid/45-several-errors.toml"));
    let errors: Vec<_> = parsed.errors().collect();
    assert!(errors.len() >= 6, "{}", parsed.render());
    let starts: Vec<usize> = errors.iter().map(|e| e.span.unwrap().start).collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted);
}
