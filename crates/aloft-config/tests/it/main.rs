//! Integration tests of aloft-config: one binary, one module per concern.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod corpus;
mod generated;
mod invalid;
mod realworld;
mod release;
mod seed;

use std::path::{Path, PathBuf};

use aloft_config::{Format, Parsed, SourceFile};

/// The test data folder.
pub(crate) fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Reads `data/<folder>/<file>`, naming the source `<folder>/<file>` so that rendered
/// messages do not depend on where the checkout lives.
pub(crate) fn parse_data_file(path: &Path) -> Parsed {
    parse_data_file_with(path, aloft_config::Strictness::Lenient)
}

/// [`parse_data_file`] as strictly as asked.
pub(crate) fn parse_data_file_with(path: &Path, strictness: aloft_config::Strictness) -> Parsed {
    let folder = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let text = std::fs::read_to_string(path).expect("test data is readable");
    aloft_config::parse_with(
        SourceFile::new(format!("{folder}/{file}"), text, Format::from_path(path)),
        strictness,
    )
}
