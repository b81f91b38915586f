//! The contract's clock: timestamps are Unix milliseconds from the wall clock, except in a
//! test that runs on tokio's paused clock, where they follow it, so that the deployer's
//! windows (smoke checks, grace periods) and the timers that wait for them agree.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Set once by [`follow_tokio_clock`]: the wall clock's reading and tokio's at that moment.
static ANCHOR: OnceLock<(i64, tokio::time::Instant)> = OnceLock::new();

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
/// test clock that auto-advances) instead of the wall clock. For test binaries only: a
/// daemon's timestamps must be the wall clock's.
pub fn follow_tokio_clock() {
    let _ = ANCHOR.set((wall_ms(), tokio::time::Instant::now()));
}
