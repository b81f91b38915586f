//! The contract's clock: timestamps are Unix milliseconds from the wall clock, except in a
//! test that runs on tokio's paused clock, where they follow it, so that the deployer's
//! windows (smoke checks, grace periods) and the timers that wait for them agree.
//!
//! A paused clock jumps to the next timer whenever every task waits. That is wrong while a
//! task waits for work on a thread outside the runtime (sqlx runs each SQLite connection on
//! a thread of its own): a 30 s timeout would fire during a millisecond's query. Such work
//! holds a [`Busy`] guard, and while one is held on a paused test thread the clock runs in
//! real time instead.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Set once by [`follow_tokio_clock`]: the wall clock's reading and tokio's at that moment.
static ANCHOR: OnceLock<(i64, tokio::time::Instant)> = OnceLock::new();

thread_local! {
    /// Whether this thread drives a paused runtime that [`follow_tokio_clock`] was called for.
    static PAUSED_HERE: Cell<bool> = const { Cell::new(false) };
    /// How many [`Busy`] guards of this thread are alive.
    static BUSY: Cell<usize> = const { Cell::new(0) };
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    match ANCHOR.get() {
        Some((wall, instant)) => {
            let since = tokio::time::Instant::now().saturating_duration_since(*instant);
            wall.saturating_add(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        }
        None => wall_ms(),
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// From now on, in this process, [`now_ms`] moves with tokio's clock (and so with a paused
/// test clock that auto-advances) instead of the wall clock; and [`Busy`] guards on this
/// thread let the clock run in real time while they live. Call it on the thread that will
/// drive a `current_thread` runtime built with `start_paused(true)`, in a build with this
/// crate's `test-clock` feature (tokio's `test-util`, which a daemon must not carry). For
/// test binaries only: a daemon's timestamps must be the wall clock's.
pub fn follow_tokio_clock() {
    let _ = ANCHOR.set((wall_ms(), tokio::time::Instant::now()));
    PAUSED_HERE.set(true);
}

/// Held while a task waits for work done outside the runtime's threads (a database query):
/// on a paused test runtime ([`follow_tokio_clock`]) the clock runs in real time until the
/// last guard drops, so no timer fires early; elsewhere it does nothing.
#[derive(Debug)]
#[must_use = "the clock runs only while the guard lives"]
pub struct Busy {
    counted: bool,
}

impl Busy {
    pub fn new() -> Busy {
        if !cfg!(feature = "test-clock")
            || !PAUSED_HERE.get()
            || tokio::runtime::Handle::try_current().is_err()
        {
            return Busy { counted: false };
        }
        let before = BUSY.get();
        BUSY.set(before + 1);
        #[cfg(feature = "test-clock")]
        if before == 0 {
            tokio::time::resume();
        }
        Busy { counted: true }
    }
}

impl Default for Busy {
    fn default() -> Busy {
        Busy::new()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let after = BUSY.get().saturating_sub(1);
        BUSY.set(after);
        // Dropped while the runtime shuts down: the clock no longer matters.
        #[cfg(feature = "test-clock")]
        if after == 0 && tokio::runtime::Handle::try_current().is_ok() {
            tokio::time::pause();
        }
    }
}
