//! The short history of an app's numbers that `aloftd` keeps itself (the dashboard's
//! graphs, without a Prometheus): what the edge counts per app, and the answer of
//! `GET /v1/apps/{app}/metrics/history`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Upper bounds of the edge's latency buckets, in seconds (the proxy's histograms).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// HTTP status classes, in the order [`EdgeCounters::requests`] keeps them.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// An app's counters at the edge since the edge started (they only grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeCounters {
    /// Requests answered, by status class ([`STATUS_CLASSES`]).
    pub requests: [u64; 5],
    /// Requests by the bucket of their time at the edge ([`LATENCY_BUCKETS`], not
    /// cumulative); the last counts those over the largest bound.
    pub latency: [u64; 15],
}

impl EdgeCounters {
    /// What was counted between `earlier` and `self` (a restarted edge counts from zero:
    /// then all of `self`).
    pub fn since(&self, earlier: &EdgeCounters) -> EdgeCounters {
        let restarted = self.requests.iter().sum::<u64>() < earlier.requests.iter().sum::<u64>();
        if restarted {
            return *self;
        }
        let mut delta = EdgeCounters::default();
        for (i, slot) in delta.requests.iter_mut().enumerate() {
            *slot = self.requests[i].saturating_sub(earlier.requests[i]);
        }
        for (i, slot) in delta.latency.iter_mut().enumerate() {
            *slot = self.latency[i].saturating_sub(earlier.latency[i]);
        }
        delta
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &EdgeCounters) {
        for (mine, theirs) in self.requests.iter_mut().zip(other.requests) {
            *mine += theirs;
        }
        for (mine, theirs) in self.latency.iter_mut().zip(other.latency) {
            *mine += theirs;
        }
    }

    /// The `q` quantile (0 to 1) of the latency, in milliseconds, as Prometheus'
    /// `histogram_quantile` estimates it (linear within the bucket it falls in; the
    /// largest bound for the last); `None` without requests.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (index, count) in self.latency.iter().enumerate() {
            #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let reached = (below + count) as f64;
            if *count > 0 && reached >= rank {
                let Some(upper) = LATENCY_BUCKETS.get(index) else {
                    return Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] * 1000.0);
                };
                let lower = if index == 0 {
                    0.0
                } else {
                    LATENCY_BUCKETS[index - 1]
                };
                #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
                let within = (rank - below as f64) / *count as f64;
                return Some((lower + (upper - lower) * within) * 1000.0);
            }
            below += count;
        }
        Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] * 1000.0)
    }
}

/// The range a history covers: the last hour in 10-second steps, or the last day in
/// minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HistoryRange {
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "24h")]
    Day,
}

impl HistoryRange {
    pub const fn as_str(self) -> &'static str {
        match self {
            HistoryRange::Hour => "1h",
            HistoryRange::Day => "24h",
        }
    }

    /// `1h` or `24h`.
    pub fn parse(text: &str) -> Option<HistoryRange> {
        match text {
            "1h" => Some(HistoryRange::Hour),
            "24h" | "1d" => Some(HistoryRange::Day),
            _ => None,
        }
    }
}

/// `GET /v1/apps/{app}/metrics/history`: the app's numbers over the range, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsHistory {
    pub app: String,
    pub range: HistoryRange,
    /// Seconds each point covers.
    pub step_seconds: u64,
    pub points: Vec<HistoryPoint>,
}

/// One step of an app's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPoint {
    /// The step's end, RFC 3339.
    pub at: String,
    /// Requests per second answered at the edge, by status class (`2xx`...).
    pub requests_per_second: BTreeMap<String, f64>,
    /// Time at the edge in milliseconds: 50th, 95th and 99th percentiles (absent when no
    /// request was answered in the step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Percentiles>,
    /// The machines sampled in the step.
    pub machines: Vec<MachinePoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// A machine's resources in a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachinePoint {
    pub id: String,
    /// CPU time used per second of the step, in percent of one CPU.
    pub cpu_percent: f64,
    pub memory_mb: f64,
    /// Private network traffic, bytes per second.
    pub receive_bytes_per_second: f64,
    pub transmit_bytes_per_second: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_latency(pairs: &[(usize, u64)]) -> EdgeCounters {
        let mut counters = EdgeCounters::default();
        for (bucket, count) in pairs {
            counters.latency[*bucket] = *count;
            counters.requests[1] += count;
        }
        counters
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket_as_prometheus_does() {
        assert_eq!(EdgeCounters::default().latency_quantile_ms(0.5), None);
        // 100 requests all in (1 ms, 2.5 ms]: the median is halfway, 1.75 ms.
        let one_bucket = with_latency(&[(2, 100)]);
        let median = one_bucket.latency_quantile_ms(0.5).unwrap();
        assert!((median - 1.75).abs() < 1e-9, "{median}");
        // 90 fast (<= 0.5 ms), 10 slow in (100 ms, 250 ms]: p50 fast, p99 slow.
        let mixed = with_latency(&[(0, 90), (8, 10)]);
        assert!(mixed.latency_quantile_ms(0.5).unwrap() <= 0.5);
        let p99 = mixed.latency_quantile_ms(0.99).unwrap();
        assert!(p99 > 100.0 && p99 <= 250.0, "{p99}");
        // Over the largest bound: the largest bound.
        let slowest = with_latency(&[(14, 3)]);
        assert_eq!(slowest.latency_quantile_ms(0.99), Some(10_000.0));
    }

    #[test]
    fn deltas_subtract_and_a_restarted_edge_counts_from_zero() {
        let earlier = with_latency(&[(0, 10)]);
        let later = with_latency(&[(0, 15), (3, 2)]);
        let delta = later.since(&earlier);
        assert_eq!(delta.requests[1], 7);
        assert_eq!((delta.latency[0], delta.latency[3]), (5, 2));
        let restarted = with_latency(&[(0, 4)]);
        assert_eq!(restarted.since(&later), restarted);
        let mut sum = delta;
        sum.add(&restarted);
        assert_eq!(sum.requests[1], 11);
    }

    #[test]
    fn ranges_read_as_written() {
        assert_eq!(HistoryRange::parse("1h"), Some(HistoryRange::Hour));
        assert_eq!(HistoryRange::parse("24h"), Some(HistoryRange::Day));
        assert_eq!(HistoryRange::parse("1d"), Some(HistoryRange::Day));
        assert_eq!(HistoryRange::parse("7d"), None);
        assert_eq!(HistoryRange::Hour.as_str(), "1h");
    }
}
