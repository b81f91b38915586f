//! Paced virtual time: a test on tokio's paused clock, whose work also waits for threads
//! outside the runtime (sqlx runs each SQLite connection on a thread of its own).
//!
//! A paused clock jumps to the next timer whenever every task waits. When tasks wait for
//! a SQLite thread, that jump is wrong: a 30 s timeout fires while a query takes a
//! millisecond, and a deployment's wait for a machine ends before the agent could act.
//! [`pace`] holds the clock while any SQLite thread of the process runs, and lets it move
//! by at most one step while none does.

use std::fs::File;
use std::io::{Read, Seek};
use std::time::Duration;

/// How far the clock may move while a query is handed to its thread (before that thread
/// shows as running).
const STEP: Duration = Duration::from_millis(25);

/// Runs forever on a paused runtime (spawn it; abort it at the end of the test).
pub async fn pace() {
    let mut workers = Workers::default();
    loop {
        tokio::time::sleep(STEP).await;
        workers.relist();
        if !workers.busy() {
            continue;
        }
        // A blocking task holds tokio's auto-advance while it runs; other tasks go on.
        workers = tokio::task::spawn_blocking(move || {
            while workers.busy() {
                std::thread::sleep(Duration::from_micros(20));
            }
            workers
        })
        .await
        .unwrap_or_default();
    }
}

/// The SQLite worker threads of this process, with their `stat` files open.
#[derive(Default)]
struct Workers {
    stats: Vec<File>,
    /// The process's thread count when they were listed (connections come and go).
    threads: usize,
}

impl Workers {
    /// Lists the threads again when their number changed (a store opened or closed).
    fn relist(&mut self) {
        let threads = std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count);
        if threads != self.threads {
            self.threads = threads;
            self.list();
        }
    }

    fn list(&mut self) {
        self.stats.clear();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for task in tasks.flatten() {
            let path = task.path();
            // Names are cut to 15 bytes: "sqlx-sqlite-worker-N" reads "sqlx-sqlite-wor".
            let is_worker = std::fs::read_to_string(path.join("comm"))
                .is_ok_and(|name| name.starts_with("sqlx-sqlite"));
            if is_worker && let Ok(stat) = File::open(path.join("stat")) {
                self.stats.push(stat);
            }
        }
    }

    /// Whether a worker thread runs or waits for the disk.
    fn busy(&mut self) -> bool {
        let mut text = String::new();
        self.stats.iter_mut().any(|stat| {
            text.clear();
            if stat.rewind().is_err() || stat.read_to_string(&mut text).is_err() {
                return false;
            }
            // The state follows the name, which is in parentheses.
            let state = text
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            matches!(state, Some('R' | 'D'))
        })
    }
}
