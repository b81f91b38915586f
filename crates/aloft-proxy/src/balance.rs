//! Choosing a machine: least-loaded first among those under their hard limit, those under
//! their soft limit before the others, ties taken in turn. A [`Lease`] counts one unit of
//! load until it is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::routes::Backend;

/// Load per machine, shared by every listener.
#[derive(Debug, Default)]
pub struct Loads {
    counts: Mutex<HashMap<Arc<str>, u32>>,
    /// When each machine last went from busy to idle.
    idle_since: Mutex<HashMap<Arc<str>, Instant>>,
    released: Notify,
    turn: AtomicUsize,
}

/// One request (or connection) on a machine; releases it when dropped.
#[derive(Debug)]
pub struct Lease {
    loads: Arc<Loads>,
    machine: Arc<str>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.loads.counts.lock()
            && let Some(count) = counts.get_mut(&self.machine)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.machine);
                if let Ok(mut idle) = self.loads.idle_since.lock() {
                    idle.insert(self.machine.clone(), Instant::now());
                }
            }
        }
        self.loads.released.notify_waiters();
    }
}

impl Loads {
    /// The load on `machine` now.
    pub fn load(&self, machine: &str) -> u32 {
        self.counts
            .lock()
            .map(|c| c.get(machine).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// How long `machine` has had nothing in flight: zero while busy, `None` when this
    /// proxy never sent it anything.
    pub fn idle_for(&self, machine: &str) -> Option<Duration> {
        if self.load(machine) > 0 {
            return Some(Duration::ZERO);
        }
        let idle = self.idle_since.lock().ok()?;
        idle.get(machine).map(Instant::elapsed)
    }

    /// Forgets machines that are gone (their idle times).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut idle) = self.idle_since.lock() {
            idle.retain(|machine, _| keep(machine));
        }
    }

    /// A machine for one more unit of load, if any is under its hard limit.
    pub fn try_pick(self: &Arc<Self>, backends: &[Backend]) -> Option<(Backend, Lease)> {
        self.try_pick_where(backends, |_| true)
    }

    /// Like [`Loads::try_pick`], among the backends `keep` accepts.
    pub fn try_pick_where(
        self: &Arc<Self>,
        backends: &[Backend],
        keep: impl Fn(&Backend) -> bool,
    ) -> Option<(Backend, Lease)> {
        let mut counts = self.counts.lock().ok()?;
        let load = |b: &Backend| counts.get(&b.machine).copied().unwrap_or(0);
        // Under the soft limit if any is, else under the hard limit; least-loaded among
        // those; ties taken in turn. No allocation: this runs for every request.
        let under = |b: &Backend, limit: u32| keep(b) && load(b) < limit;
        let relaxed = backends.iter().any(|b| under(b, b.soft_limit));
        let eligible = |b: &Backend| {
            if relaxed {
                under(b, b.soft_limit)
            } else {
                under(b, b.hard_limit)
            }
        };
        let least = backends.iter().filter(|b| eligible(b)).map(load).min()?;
        let least_loaded = |b: &&Backend| eligible(b) && load(b) == least;
        let tied = backends.iter().filter(least_loaded).count();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % tied;
        let chosen = backends.iter().filter(least_loaded).nth(turn)?.clone();
        *counts.entry(chosen.machine.clone()).or_default() += 1;
        let machine = chosen.machine.clone();
        Some((
            chosen,
            Lease {
                loads: self.clone(),
                machine,
            },
        ))
    }

    /// Like [`Loads::try_pick`], waiting up to `queue` for a machine to drop below its
    /// hard limit.
    pub async fn pick(
        self: &Arc<Self>,
        backends: &[Backend],
        queue: Duration,
    ) -> Option<(Backend, Lease)> {
        self.pick_where(backends, |_| true, queue).await
    }

    /// Like [`Loads::pick`], among the backends `keep` accepts.
    pub async fn pick_where(
        self: &Arc<Self>,
        backends: &[Backend],
        keep: impl Fn(&Backend) -> bool,
        queue: Duration,
    ) -> Option<(Backend, Lease)> {
        let deadline = tokio::time::Instant::now() + queue;
        loop {
            let released = self.released.notified();
            if let Some(picked) = self.try_pick_where(backends, &keep) {
                return Some(picked);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.try_pick_where(backends, &keep);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_types::machine::ConcurrencyKind;

    fn backend(id: &str, soft: u32, hard: u32) -> Backend {
        Backend {
            machine: Arc::from(id),
            address: "fdaa::2".parse().unwrap(),
            port: 8080,
            region: Arc::from("ams"),
            soft_limit: soft,
            hard_limit: hard,
            kind: ConcurrencyKind::Requests,
            statics: Arc::from(Vec::new()),
        }
    }

    #[test]
    fn least_loaded_first_and_never_past_the_hard_limit() {
        let loads = Arc::new(Loads::default());
        let backends = [backend("a", 2, 3), backend("b", 2, 3)];
        let mut leases = Vec::new();
        for _ in 0..6 {
            leases.push(loads.try_pick(&backends).unwrap());
        }
        assert_eq!((loads.load("a"), loads.load("b")), (3, 3));
        assert!(loads.try_pick(&backends).is_none(), "both at hard limit");
        leases.pop();
        assert!(loads.try_pick(&backends).is_some(), "a lease released room");
    }

    #[test]
    fn machines_under_soft_limit_come_first() {
        let loads = Arc::new(Loads::default());
        let backends = [backend("a", 1, 10), backend("b", 5, 10)];
        let (first, _one) = loads.try_pick(&backends).unwrap();
        let (second, _two) = loads.try_pick(&backends).unwrap();
        let (third, _three) = loads.try_pick(&backends).unwrap();
        // a reaches its soft limit after one: b takes the next ones though as loaded.
        assert_eq!(&*first.machine, "a");
        assert_eq!((&*second.machine, &*third.machine), ("b", "b"));
    }

    #[tokio::test]
    async fn a_full_app_queues_then_gives_up() {
        let loads = Arc::new(Loads::default());
        let backends = [backend("a", 1, 1)];
        let held = loads.try_pick(&backends).unwrap();
        assert!(
            loads
                .pick(&backends, Duration::from_millis(50))
                .await
                .is_none()
        );
        let waiting = {
            let loads = loads.clone();
            let backends = backends.clone();
            tokio::spawn(async move {
                loads
                    .pick(&backends, Duration::from_secs(5))
                    .await
                    .is_some()
            })
        };
        drop(held);
        assert!(waiting.await.unwrap(), "a release lets a queued request in");
    }
}
