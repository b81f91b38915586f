//! `cargo xtask bench logs`: how fast one host's log store ingests lines, and how fast it
//! answers queries over 10,000,000 stored lines (about 1 GB on disk). Prints Markdown
//! tables.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark program"
)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aloft_logs::{LogConfig, LogStore, NewEntry, Query, Stream};

const LINES: u64 = 10_000_000;
/// Machines the lines come from.
const MACHINES: u64 = 20;
/// Lines per `append` call (what a busy capture task hands over).
const BATCH: usize = 2048;
/// Runs per query.
const RUNS: usize = 20;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn line(number: u64, at: i64) -> NewEntry {
    let machine = number % MACHINES;
    NewEntry {
        timestamp_ns: at,
        stream: Stream::Stdout,
        app: format!("app{}", machine % 4),
        machine: format!("{machine:014x}"),
        region: if machine.is_multiple_of(2) {
            "ams"
        } else {
            "fra"
        }
        .to_owned(),
        instance: "01JABCDEFGHJKMNPQRSTVWXYZ0".to_owned(),
        text: format!(
            "{number} GET /api/items/{} 200 in {}ms user={} request_id=req-{number:x}",
            number % 977,
            number % 53,
            number % 10_007
        ),
    }
}

fn timed(store: &LogStore, name: &str, query: &Query) -> String {
    let mut samples = Vec::with_capacity(RUNS);
    let mut found = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        found = store.query(query).unwrap().entries.len();
        samples.push(started.elapsed());
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "| {name} | {found} | {:.2} ms | {:.2} ms |",
        ms(samples[RUNS / 2]),
        ms(samples[RUNS * 95 / 100])
    )
}

#[tokio::main]
async fn main() {
    // On the disk the store would be on (not a tmpfs): the workspace's target directory.
    let base = std::env::var("ALOFT_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
    let dir = tempfile::tempdir_in(base).unwrap();
    let store = LogStore::open(LogConfig::new(dir.path())).unwrap();
    // The lines span the last 30 minutes, in order.
    let span = 30 * 60 * 1_000_000_000_i64;
    let start = now_ns() - span;
    let step = span / LINES as i64;
    let mut durable = store.subscribe();
    let began = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for number in 0..LINES {
        batch.push(line(number, start + number as i64 * step));
        if batch.len() == BATCH {
            store.append(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    store.append(batch).await.unwrap();
    durable.wait_for(|seq| *seq >= LINES).await.unwrap();
    let took = began.elapsed();
    let stats = store.stats();
    println!("\n| ingestion | lines | seconds | lines/s | MB on disk | MB/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| append + fdatasync per batch, one host | {LINES} | {:.1} | {:.0} | {} | {:.0} |",
        took.as_secs_f64(),
        LINES as f64 / took.as_secs_f64(),
        stats.bytes >> 20,
        (stats.bytes >> 20) as f64 / took.as_secs_f64()
    );

    let ten_minutes = now_ns() - 10 * 60 * 1_000_000_000;
    let rows = [
        timed(
            &store,
            "newest 100 lines of an app (`aloft logs`)",
            &Query {
                app: Some("app1".to_owned()),
                limit: 100,
                newest: true,
                ..Query::default()
            },
        ),
        timed(
            &store,
            "`--since 10m --grep X --no-tail` (a rare text, 3.3M lines in range)",
            &Query {
                app: Some("app1".to_owned()),
                since_ns: Some(ten_minutes),
                text: Some("request_id=req-98966d".to_owned()),
                limit: 5_000,
                ..Query::default()
            },
        ),
        timed(
            &store,
            "`--since 10m --grep X` on one machine",
            &Query {
                machine: Some(format!("{:014x}", 5)),
                since_ns: Some(ten_minutes),
                text: Some("user=42 ".to_owned()),
                limit: 5_000,
                ..Query::default()
            },
        ),
        timed(
            &store,
            "one minute, 20 minutes ago, first 1000 lines",
            &Query {
                since_ns: Some(now_ns() - 20 * 60 * 1_000_000_000),
                until_ns: Some(now_ns() - 19 * 60 * 1_000_000_000),
                limit: 1_000,
                ..Query::default()
            },
        ),
        timed(
            &store,
            "grep over all 10M lines (worst case)",
            &Query {
                text: Some("request_id=req-0 ".to_owned()),
                limit: 100,
                ..Query::default()
            },
        ),
    ];
    println!("\n| query over {LINES} lines | lines found | median | p95 |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        println!("{row}");
    }
}
