//! The log store against a real file system: queries, restarts, torn writes, retention.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aloft_logs::{LogConfig, LogStore, NewEntry, Query, Stream};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn line(number: usize, machine: &str, at: i64) -> NewEntry {
    NewEntry {
        timestamp_ns: at,
        stream: if number.is_multiple_of(10) {
            Stream::Stderr
        } else {
            Stream::Stdout
        },
        app: "web".to_owned(),
        machine: machine.to_owned(),
        region: if machine == "m1" { "ams" } else { "fra" }.to_owned(),
        instance: "01".to_owned(),
        text: format!("line {number:07} of {machine}"),
    }
}

/// Appends and waits until everything is durable.
async fn append_all(store: &LogStore, entries: Vec<NewEntry>) {
    let target = store.durable_seq() + entries.len() as u64;
    let mut durable = store.subscribe();
    for chunk in entries.chunks(1000) {
        store.append(chunk.to_vec()).await.unwrap();
    }
    tokio::time::timeout(
        Duration::from_secs(60),
        durable.wait_for(|seq| *seq >= target),
    )
    .await
    .expect("the lines become durable")
    .unwrap();
}

fn small(dir: &std::path::Path) -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        ..LogConfig::new(dir)
    }
}

#[tokio::test]
async fn queries_filter_by_machine_region_text_time_and_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(small(dir.path())).unwrap();
    let base = now_ns() - 60_000_000_000;
    let entries: Vec<NewEntry> = (0..10_000)
        .map(|n| {
            line(
                n,
                if n % 2 == 0 { "m1" } else { "m2" },
                base + n as i64 * 1_000_000,
            )
        })
        .collect();
    append_all(&store, entries).await;
    assert!(store.stats().segments > 5, "small segments roll over");

    let all = store.query(&Query::default()).unwrap();
    assert_eq!(all.entries.len(), 10_000);
    assert!(all.entries.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all.next_after, 10_000);

    let m2 = store
        .query(&Query {
            machine: Some("m2".to_owned()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(m2.entries.len(), 5_000);
    assert!(
        m2.entries
            .iter()
            .all(|e| e.machine == "m2" && e.region == "fra")
    );

    let region = store
        .query(&Query {
            region: Some("ams".to_owned()),
            text: Some("line 000420".to_owned()),
            ..Query::default()
        })
        .unwrap();
    let texts: Vec<&str> = region.entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "line 0004200 of m1",
            "line 0004202 of m1",
            "line 0004204 of m1",
            "line 0004206 of m1",
            "line 0004208 of m1"
        ]
    );

    let window = store
        .query(&Query {
            since_ns: Some(base + 100 * 1_000_000),
            until_ns: Some(base + 200 * 1_000_000),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(window.entries.len(), 100);
    assert_eq!(window.entries[0].text, "line 0000100 of m1");

    let newest = store
        .query(&Query {
            limit: 3,
            newest: true,
            ..Query::default()
        })
        .unwrap();
    let texts: Vec<&str> = newest.entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "line 0009997 of m2",
            "line 0009998 of m1",
            "line 0009999 of m2"
        ]
    );

    // A cursor walks everything once, a page at a time.
    let mut after = 0;
    let mut seen = 0;
    loop {
        let page = store
            .query(&Query {
                after_seq: Some(after),
                limit: 3_000,
                ..Query::default()
            })
            .unwrap();
        seen += page.entries.len();
        if page.entries.is_empty() {
            break;
        }
        after = page.next_after;
    }
    assert_eq!(seen, 10_000);
}

#[tokio::test]
async fn a_reopened_store_keeps_every_line_and_drops_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let at = now_ns();
    {
        let store = LogStore::open(small(dir.path())).unwrap();
        append_all(&store, (0..3_000).map(|n| line(n, "m1", at)).collect()).await;
    }
    // A crash in the middle of a write: half a record at the end of the last segment.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let mut bytes = std::fs::read(last).unwrap();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
    std::fs::write(last, bytes).unwrap();

    let store = LogStore::open(small(dir.path())).unwrap();
    assert_eq!(store.durable_seq(), 3_000);
    let all = store.query(&Query::default()).unwrap();
    assert_eq!(all.entries.len(), 3_000);
    append_all(&store, (3_000..3_010).map(|n| line(n, "m1", at)).collect()).await;
    let all = store.query(&Query::default()).unwrap();
    assert_eq!(all.entries.len(), 3_010);
    assert_eq!(all.entries.last().unwrap().seq, 3_010);
    assert_eq!(all.entries.last().unwrap().text, "line 0003009 of m1");
}

#[tokio::test]
async fn retention_removes_old_data_and_nothing_newer() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_age: Duration::from_secs(3600),
        ..small(dir.path())
    };
    let store = LogStore::open(config.clone()).unwrap();
    let old = now_ns() - 2 * 3_600_000_000_000;
    append_all(&store, (0..2_000).map(|n| line(n, "m1", old)).collect()).await;
    let fresh = now_ns();
    append_all(
        &store,
        (2_000..4_000).map(|n| line(n, "m1", fresh)).collect(),
    )
    .await;
    let before = store.stats();
    store.enforce_retention();
    let after = store.stats();
    assert!(after.removed_segments > 0, "{before:?} {after:?}");
    let kept = store.query(&Query::default()).unwrap();
    assert_eq!(kept.entries.len(), 2_000, "every fresh line, no old one");
    assert!(kept.entries.iter().all(|e| e.timestamp_ns == fresh));
    drop(store);

    // By size: the oldest segments go until the store fits; the newest lines stay.
    let sized = LogStore::open(LogConfig {
        max_bytes: 256 * 1024,
        max_age: Duration::from_secs(86_400),
        ..config
    })
    .unwrap();
    append_all(
        &sized,
        (4_000..20_000).map(|n| line(n, "m1", now_ns())).collect(),
    )
    .await;
    sized.enforce_retention();
    let stats = sized.stats();
    assert!(stats.bytes <= 256 * 1024 + 64 * 1024, "{stats:?}");
    let kept = sized.query(&Query::default()).unwrap();
    assert_eq!(kept.entries.last().unwrap().text, "line 0019999 of m1");
    let first = kept.entries.first().unwrap().seq;
    assert!(
        kept.entries
            .iter()
            .zip(first..)
            .all(|(e, seq)| e.seq == seq),
        "what is kept is a contiguous run up to the newest line"
    );
}
