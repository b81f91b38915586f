//! `clock::Busy` on a paused test clock: without a guard, a task waiting for a thread lets
//! the clock jump to its timeout; with one, the clock runs in real time until the work ends.

#![allow(clippy::unwrap_used, reason = "test code fails loudly")]

use std::time::Duration;

use aloft_agent_api::clock::{self, Busy};

/// Work on a thread outside the runtime that takes 50 ms, as a database query does.
fn work_on_a_thread() -> tokio::sync::oneshot::Receiver<()> {
    let (done, wait) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let _ = done.send(());
    });
    wait
}

#[test]
fn a_paused_clock_waits_for_work_held_busy_and_jumps_past_work_that_is_not() {
    clock::follow_tokio_clock();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let timeout = Duration::from_secs(30);
        // Not held: every task waits, so the clock jumps to the timeout at once.
        let unheld = tokio::time::timeout(timeout, work_on_a_thread()).await;
        assert!(unheld.is_err(), "the paused clock should have jumped 30 s");

        let started = tokio::time::Instant::now();
        let held = {
            let _busy = Busy::new();
            tokio::time::timeout(timeout, work_on_a_thread()).await
        };
        assert!(
            held.is_ok(),
            "the timeout fired while the work was held busy"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_secs(10),
            "the clock ran {took:?} (real time expected)"
        );

        // The guard dropped: the clock is paused again and jumps as before.
        let again = tokio::time::timeout(timeout, work_on_a_thread()).await;
        assert!(again.is_err(), "the clock should be paused again");
    });
}
