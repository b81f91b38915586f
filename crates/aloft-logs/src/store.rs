//! Segments, the writer thread, queries and retention.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::LogError;
use crate::record::{self, Entry, NewEntry, Read, View};

/// Records per index block.
pub const BLOCK_RECORDS: u32 = 512;
/// Batches waiting for the writer before `append` waits (backpressure).
const QUEUE_BATCHES: usize = 1024;
/// How often the writer enforces retention when idle.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Where and how long logs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// A segment is sealed and a new one started at this size.
    pub segment_bytes: u64,
    /// Lines older than this are not returned, and segments holding only such lines are
    /// deleted (default 30 days).
    pub max_age: Duration,
    /// The store's size limit: the oldest segments go first (default 10 GiB).
    pub max_bytes: u64,
}

impl LogConfig {
    /// The defaults in `dir`: 64 MiB segments, 30 days, 10 GiB.
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 10 << 30,
        }
    }
}

/// One block of a segment's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Block {
    offset: u64,
    first_seq: u64,
    last_seq: u64,
    min_ts: i64,
    max_ts: i64,
    count: u32,
}

/// What the store knows of a segment without reading it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SegmentMeta {
    first_seq: u64,
    /// 0 while empty.
    last_seq: u64,
    bytes: u64,
    min_ts: i64,
    max_ts: i64,
    apps: BTreeSet<String>,
    machines: BTreeSet<String>,
    blocks: Vec<Block>,
}

impl SegmentMeta {
    fn new(first_seq: u64) -> SegmentMeta {
        SegmentMeta {
            first_seq,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            ..SegmentMeta::default()
        }
    }

    fn add(&mut self, view: &View<'_>, offset: u64, size: u64) {
        let fresh = self.blocks.last().is_none_or(|b| b.count >= BLOCK_RECORDS);
        if fresh {
            self.blocks.push(Block {
                offset,
                first_seq: view.seq,
                last_seq: view.seq,
                min_ts: view.timestamp_ns,
                max_ts: view.timestamp_ns,
                count: 0,
            });
        }
        if let Some(block) = self.blocks.last_mut() {
            block.last_seq = view.seq;
            block.min_ts = block.min_ts.min(view.timestamp_ns);
            block.max_ts = block.max_ts.max(view.timestamp_ns);
            block.count += 1;
        }
        self.last_seq = view.seq;
        self.bytes = offset + size;
        self.min_ts = self.min_ts.min(view.timestamp_ns);
        self.max_ts = self.max_ts.max(view.timestamp_ns);
        // Lookups first: almost every line is of an app and machine already seen.
        if !self.apps.contains(as_str(view.app)) {
            self.apps.insert(as_str(view.app).to_owned());
        }
        if !self.machines.contains(as_str(view.machine)) {
            self.machines.insert(as_str(view.machine).to_owned());
        }
    }

    /// The end offset of block `index`.
    fn block_end(&self, index: usize) -> u64 {
        self.blocks
            .get(index + 1)
            .map_or(self.bytes, |next| next.offset)
    }
}

fn as_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("")
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    meta: RwLock<SegmentMeta>,
}

impl Segment {
    fn meta(&self) -> SegmentMeta {
        self.meta.read().map(|m| m.clone()).unwrap_or_default()
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.to_owned();
    move |source| LogError::Io {
        action,
        path,
        source,
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Reads a whole segment, building its index; stops at the first torn record and says
/// where the intact part ends.
fn scan(path: &Path, first_seq: u64) -> Result<(SegmentMeta, u64), LogError> {
    let data = std::fs::read(path).map_err(io("reading", path))?;
    let mut meta = SegmentMeta::new(first_seq);
    let mut offset = 0;
    while offset < data.len() {
        match record::decode(&data[offset..]) {
            Read::Record(view, size) => {
                meta.add(&view, offset as u64, size as u64);
                offset += size;
            }
            Read::Partial | Read::Corrupt => break,
        }
    }
    Ok((meta, offset as u64))
}

/// Counters of the store, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Lines stored since the store opened.
    pub appended: u64,
    /// The last durable sequence number.
    pub durable_seq: u64,
    pub segments: usize,
    pub bytes: u64,
    /// Segments deleted by retention since the store opened.
    pub removed_segments: u64,
}

struct Shared {
    config: LogConfig,
    segments: RwLock<Vec<Arc<Segment>>>,
    durable: watch::Sender<u64>,
    appended: AtomicU64,
    removed: AtomicU64,
}

/// The log store of a host. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    /// The writer thread stops when the last clone is dropped (after storing what was
    /// queued).
    sender: mpsc::Sender<Vec<NewEntry>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.shared.config.dir)
            .finish_non_exhaustive()
    }
}

/// Which lines a query wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub app: Option<String>,
    pub machine: Option<String>,
    pub region: Option<String>,
    /// Lines containing this text (case-sensitive).
    pub text: Option<String>,
    /// Only what machines wrote (stdout and stderr), not the platform's events.
    pub output_only: bool,
    /// Unix nanoseconds, inclusive.
    pub since_ns: Option<i64>,
    /// Unix nanoseconds, exclusive.
    pub until_ns: Option<i64>,
    /// Only lines numbered after this (a cursor).
    pub after_seq: Option<u64>,
    /// At most this many lines (0: no limit).
    pub limit: usize,
    /// The newest `limit` matching lines instead of the oldest (still returned oldest
    /// first).
    pub newest: bool,
}

/// What a query found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// In arrival order.
    pub entries: Vec<Entry>,
    /// Where to continue a forward query (`after_seq`): every line up to here was looked
    /// at.
    pub next_after: u64,
}

impl LogStore {
    /// Opens (or creates) the store in `config.dir`, recovering from a crash; starts its
    /// writer thread.
    pub fn open(config: LogConfig) -> Result<LogStore, LogError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let mut firsts: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(io("listing", &dir))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = Vec::new();
        for (index, first) in firsts.iter().enumerate() {
            let path = segment_path(&dir, *first);
            let last = index + 1 == firsts.len();
            let length = std::fs::metadata(&path)
                .map_err(io("reading", &path))?
                .len();
            let indexed: Option<SegmentMeta> = std::fs::read(index_path(&path))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .filter(|m: &SegmentMeta| m.bytes == length && m.first_seq == *first);
            let meta = match indexed {
                Some(meta) if !last => meta,
                _ => {
                    let (meta, intact) = scan(&path, *first)?;
                    if intact < length {
                        tracing::warn!(segment = %path.display(), intact, length, "truncating a torn log segment");
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io("opening", &path))?;
                        file.set_len(intact).map_err(io("truncating", &path))?;
                        file.sync_all().map_err(io("syncing", &path))?;
                    }
                    if !last {
                        write_index(&path, &meta)?;
                    }
                    meta
                }
            };
            segments.push(Arc::new(Segment {
                path,
                meta: RwLock::new(meta),
            }));
        }
        let last_seq = segments
            .iter()
            .rev()
            .map(|s| s.meta().last_seq)
            .find(|seq| *seq > 0)
            .unwrap_or(0);
        // The active segment: the last one, or a new one.
        let active = match segments.last() {
            Some(segment) if segment.meta().bytes < config.segment_bytes => segment.clone(),
            _ => {
                let segment = Arc::new(Segment {
                    path: segment_path(&dir, last_seq + 1),
                    meta: RwLock::new(SegmentMeta::new(last_seq + 1)),
                });
                segments.push(segment.clone());
                segment
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&active.path)
            .map_err(io("opening", &active.path))?;
        sync_dir(&dir)?;
        let (durable, _) = watch::channel(last_seq);
        let shared = Arc::new(Shared {
            config,
            segments: RwLock::new(segments),
            durable,
            appended: AtomicU64::new(0),
            removed: AtomicU64::new(0),
        });
        let (sender, receiver) = mpsc::channel(QUEUE_BATCHES);
        let writer = Writer {
            shared: shared.clone(),
            active,
            file,
            next_seq: last_seq + 1,
            buffer: Vec::new(),
        };
        std::thread::Builder::new()
            .name("aloft-logs-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(io("starting the writer thread for", &dir))?;
        let store = LogStore { shared, sender };
        store.enforce_retention();
        tracing::info!(dir = %dir.display(), last_seq, "log store open");
        Ok(store)
    }

    /// Queues lines for storage; waits when the writer is far behind (backpressure). They
    /// become visible once synced to disk.
    pub async fn append(&self, entries: Vec<NewEntry>) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.sender
            .send(entries)
            .await
            .map_err(|_| LogError::Closed)
    }

    /// The highest sequence number synced to disk (0 when empty).
    pub fn durable_seq(&self) -> u64 {
        *self.shared.durable.borrow()
    }

    /// Changes of [`LogStore::durable_seq`], for following.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    pub fn stats(&self) -> StoreStats {
        let segments = self
            .shared
            .segments
            .read()
            .map(|s| s.clone())
            .unwrap_or_default();
        StoreStats {
            appended: self.shared.appended.load(Ordering::Relaxed),
            durable_seq: self.durable_seq(),
            segments: segments.len(),
            bytes: segments.iter().map(|s| s.meta().bytes).sum(),
            removed_segments: self.shared.removed.load(Ordering::Relaxed),
        }
    }

    /// Lines matching `query` among those synced to disk.
    pub fn query(&self, query: &Query) -> Result<QueryResult, LogError> {
        let durable = self.durable_seq();
        let cutoff = now_ns().saturating_sub(
            i64::try_from(self.shared.config.max_age.as_nanos()).unwrap_or(i64::MAX),
        );
        let since = query.since_ns.unwrap_or(i64::MIN).max(cutoff);
        let until = query.until_ns.unwrap_or(i64::MAX);
        let after = query.after_seq.unwrap_or(0);
        let finder = query
            .text
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| memchr::memmem::Finder::new(t.as_bytes()).into_owned());
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let segments: Vec<(Arc<Segment>, SegmentMeta)> = self
            .shared
            .segments
            .read()
            .map(|s| s.iter().map(|s| (s.clone(), s.meta())).collect())
            .unwrap_or_default();
        let wanted = |meta: &SegmentMeta| {
            meta.last_seq > after
                && meta.first_seq <= durable
                && meta.max_ts >= since
                && meta.min_ts < until
                && query.app.as_ref().is_none_or(|a| meta.apps.contains(a))
                && query
                    .machine
                    .as_ref()
                    .is_none_or(|m| meta.machines.contains(m))
        };
        let block_wanted = |block: &Block| {
            block.last_seq > after
                && block.first_seq <= durable
                && block.max_ts >= since
                && block.min_ts < until
        };
        let matches = |view: &View<'_>| {
            view.seq > after
                && view.seq <= durable
                && view.timestamp_ns >= since
                && view.timestamp_ns < until
                && query.app.as_ref().is_none_or(|a| view.app == a.as_bytes())
                && query
                    .machine
                    .as_ref()
                    .is_none_or(|m| view.machine == m.as_bytes())
                && query
                    .region
                    .as_ref()
                    .is_none_or(|r| view.region == r.as_bytes())
                && (!query.output_only || view.stream != crate::Stream::Platform)
                && finder.as_ref().is_none_or(|f| f.find(view.text).is_some())
        };
        let mut found: Vec<Entry> = Vec::new();
        let mut reached_limit = false;
        if query.newest {
            // Blocks from the newest back, each read forward; collected newest block first.
            let mut chunks: Vec<Vec<Entry>> = Vec::new();
            let mut total = 0;
            'segments: for (segment, meta) in segments.iter().rev().filter(|(_, m)| wanted(m)) {
                let Some(file) = open_segment(&segment.path)? else {
                    continue;
                };
                for index in (0..meta.blocks.len()).rev() {
                    if !block_wanted(&meta.blocks[index]) {
                        continue;
                    }
                    let mut chunk = Vec::new();
                    read_block(&file, &segment.path, meta, index, |view| {
                        if matches(view) {
                            chunk.push(view.to_entry());
                        }
                        true
                    })?;
                    total += chunk.len();
                    chunks.push(chunk);
                    if total >= limit {
                        break 'segments;
                    }
                }
            }
            for chunk in chunks.into_iter().rev() {
                found.extend(chunk);
            }
            if found.len() > limit {
                found.drain(..found.len() - limit);
            }
        } else {
            'forward: for (segment, meta) in segments.iter().filter(|(_, m)| wanted(m)) {
                let Some(file) = open_segment(&segment.path)? else {
                    continue;
                };
                for index in 0..meta.blocks.len() {
                    if !block_wanted(&meta.blocks[index]) {
                        continue;
                    }
                    read_block(&file, &segment.path, meta, index, |view| {
                        if matches(view) {
                            found.push(view.to_entry());
                        }
                        found.len() < limit
                    })?;
                    if found.len() >= limit {
                        reached_limit = true;
                        break 'forward;
                    }
                }
            }
        }
        let next_after = if reached_limit {
            found.last().map_or(after, |e| e.seq)
        } else {
            durable.max(after)
        };
        Ok(QueryResult {
            entries: found,
            next_after,
        })
    }

    /// Deletes sealed segments over the size limit (oldest first) or wholly older than the
    /// age limit.
    pub fn enforce_retention(&self) {
        enforce_retention(&self.shared);
    }
}

fn enforce_retention(shared: &Shared) {
    let cutoff = now_ns()
        .saturating_sub(i64::try_from(shared.config.max_age.as_nanos()).unwrap_or(i64::MAX));
    let Ok(mut segments) = shared.segments.write() else {
        return;
    };
    let mut total: u64 = segments.iter().map(|s| s.meta().bytes).sum();
    while segments.len() > 1 {
        let meta = segments[0].meta();
        let too_old = meta.last_seq > 0 && meta.max_ts < cutoff;
        if !(total > shared.config.max_bytes || too_old) {
            break;
        }
        let segment = segments.remove(0);
        total = total.saturating_sub(meta.bytes);
        let _ = std::fs::remove_file(index_path(&segment.path));
        if let Err(error) = std::fs::remove_file(&segment.path) {
            tracing::warn!(segment = %segment.path.display(), %error, "removing a log segment failed");
        }
        shared.removed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(segment = %segment.path.display(), bytes = meta.bytes, too_old, "log retention removed a segment");
    }
}

fn open_segment(path: &Path) -> Result<Option<File>, LogError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        // Removed by retention since the query started.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io("opening", path)(error)),
    }
}

/// Reads block `index` of a segment and hands each record to `each` until it says stop.
fn read_block(
    file: &File,
    path: &Path,
    meta: &SegmentMeta,
    index: usize,
    mut each: impl FnMut(&View<'_>) -> bool,
) -> Result<(), LogError> {
    let start = meta.blocks[index].offset;
    let end = meta.block_end(index);
    let mut buffer = vec![0; usize::try_from(end - start).unwrap_or(0)];
    file.read_exact_at(&mut buffer, start)
        .map_err(io("reading", path))?;
    let mut offset = 0;
    while offset < buffer.len() {
        match record::decode(&buffer[offset..]) {
            Read::Record(view, size) => {
                if !each(&view) {
                    return Ok(());
                }
                offset += size;
            }
            // An index never points past what was written and synced.
            Read::Partial | Read::Corrupt => break,
        }
    }
    Ok(())
}

fn write_index(segment: &Path, meta: &SegmentMeta) -> Result<(), LogError> {
    let path = index_path(segment);
    let temporary = path.with_extension("idx.tmp");
    let text = serde_json::to_vec(meta).unwrap_or_default();
    std::fs::write(&temporary, text).map_err(io("writing", &temporary))?;
    std::fs::rename(&temporary, &path).map_err(io("renaming", &temporary))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// The single writer: appends batches to the active segment, syncs, publishes.
struct Writer {
    shared: Arc<Shared>,
    active: Arc<Segment>,
    file: File,
    next_seq: u64,
    buffer: Vec<u8>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Vec<NewEntry>>) {
        let mut last_retention = std::time::Instant::now();
        loop {
            let Some(first) = receiver.blocking_recv() else {
                return;
            };
            let mut batch = first;
            // Group commit: everything queued meanwhile goes with one sync.
            while batch.len() < 65_536 {
                match receiver.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            if let Err(error) = self.write(&batch) {
                tracing::error!(%error, lines = batch.len(), "writing log lines failed; they are lost");
            }
            if last_retention.elapsed() > RETENTION_EVERY {
                enforce_retention(&self.shared);
                last_retention = std::time::Instant::now();
            }
        }
    }

    /// Stores a batch: appended to the active segment, which is sealed whenever it
    /// reaches its size (so one batch can span segments), then synced and published.
    fn write(&mut self, batch: &[NewEntry]) -> Result<(), LogError> {
        let mut rest = batch;
        while !rest.is_empty() {
            let base = self.active.meta.read().map(|m| m.bytes).unwrap_or_default();
            let room = self.shared.config.segment_bytes.saturating_sub(base);
            self.buffer.clear();
            let mut placed = Vec::new();
            let mut taken = 0;
            for entry in rest {
                // At least one record per segment, however large.
                if taken > 0 && self.buffer.len() as u64 >= room {
                    break;
                }
                let start = self.buffer.len();
                record::encode(self.next_seq, entry, &mut self.buffer);
                placed.push((start, self.buffer.len() - start));
                self.next_seq += 1;
                taken += 1;
            }
            rest = &rest[taken..];
            self.commit(base, &placed)?;
            if base + self.buffer.len() as u64 >= self.shared.config.segment_bytes {
                self.seal()?;
            }
        }
        Ok(())
    }

    /// Appends the encoded buffer at `base`, syncs it, indexes it and publishes it.
    fn commit(&mut self, base: u64, placed: &[(usize, usize)]) -> Result<(), LogError> {
        let path = self.active.path.clone();
        self.file
            .write_all(&self.buffer)
            .map_err(io("appending to", &path))?;
        self.file.sync_data().map_err(io("syncing", &path))?;
        let mut last = 0;
        if let Ok(mut meta) = self.active.meta.write() {
            for (start, size) in placed {
                if let Read::Record(view, _) = record::decode(&self.buffer[*start..start + size]) {
                    meta.add(&view, base + *start as u64, *size as u64);
                    last = view.seq;
                }
            }
        }
        self.shared
            .appended
            .fetch_add(placed.len() as u64, Ordering::Relaxed);
        self.shared.durable.send_replace(last);
        Ok(())
    }

    /// Writes the full segment's index and starts a new segment.
    fn seal(&mut self) -> Result<(), LogError> {
        let meta = self.active.meta();
        write_index(&self.active.path, &meta)?;
        let path = segment_path(&self.shared.config.dir, self.next_seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("creating", &path))?;
        sync_dir(&self.shared.config.dir)?;
        let segment = Arc::new(Segment {
            path,
            meta: RwLock::new(SegmentMeta::new(self.next_seq)),
        });
        if let Ok(mut segments) = self.shared.segments.write() {
            segments.push(segment.clone());
        }
        self.active = segment;
        self.file = file;
        enforce_retention(&self.shared);
        Ok(())
    }
}
