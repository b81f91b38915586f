//! Per-source limits: one machine (or one address on the operators' listener) may hold
//! only a share of what the server has for everyone, so it cannot starve the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts what each source address holds, up to `max` at once.
#[derive(Debug)]
pub(crate) struct PerSource {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One thing a source holds; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    of: Arc<PerSource>,
    source: IpAddr,
}

impl PerSource {
    pub(crate) fn new(max: usize) -> Arc<PerSource> {
        Arc::new(PerSource {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `source`, or `None` when it holds `max` already.
    pub(crate) fn take(self: &Arc<Self>, source: IpAddr) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(source).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            of: self.clone(),
            source,
        })
    }

    #[cfg(test)]
    fn holding(&self, source: IpAddr) -> usize {
        self.held
            .lock()
            .map(|held| held.get(&source).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.of.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_share_and_gets_it_back() {
        let limits = PerSource::new(2);
        let (a, b): (IpAddr, IpAddr) = ("fdaa::1".parse().unwrap(), "fdaa::2".parse().unwrap());
        let first = limits.take(a).unwrap();
        let _second = limits.take(a).unwrap();
        assert!(limits.take(a).is_none(), "a third for one source");
        assert!(limits.take(b).is_some(), "another source is not held back");
        drop(first);
        assert_eq!(limits.holding(a), 1);
        assert!(limits.take(a).is_some());
    }
}
