//! Parse + validate + lower of the seed post's staging fly.toml, and of a larger
//! multi-process file, as a user's `aloft deploy` does once per deploy.

#![allow(clippy::expect_used, reason = "a benchmark of files known to be valid")]

use std::hint::black_box;
use std::path::Path;

use aloft_config::{Format, SourceFile};
use criterion::{Criterion, criterion_group, criterion_main};

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/valid")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_validate_lower(text: &str) -> usize {
    let parsed = aloft_config::parse(SourceFile::new("fly.toml", text, Format::Toml));
    let config = parsed.config().expect("the benchmark files are valid");
    config
        .process_groups()
        .iter()
        .map(|group| {
            config
                .to_machine_config(group, Path::new("."), None)
                .expect("lowers")
                .services
                .len()
        })
        .sum()
}

fn benches(c: &mut Criterion) {
    let seed = read("01-seed-terrateam-staging.toml");
    c.bench_function("seed: parse + validate + lower", |b| {
        b.iter(|| parse_validate_lower(black_box(&seed)))
    });
    let multi = read("14-multi-process.toml");
    c.bench_function("multi-process: parse + validate + lower", |b| {
        b.iter(|| parse_validate_lower(black_box(&multi)))
    });
}

criterion_group!(config, benches);
criterion_main!(config);
