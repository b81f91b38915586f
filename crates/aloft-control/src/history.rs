//! The short history of each app's numbers, kept in memory so that the dashboard has
//! graphs without a Prometheus: requests by status class and latency percentiles from
//! what the edge counts, CPU, memory and network per machine from what the hosts sample.
//! The last 360 steps (an hour at `aloftd`'s default of 10 s) and a day in minutes; the
//! caller takes a step with the edge's counters ([`crate::Control::history_step`]). It
//! starts empty
//! when the control plane starts (a Prometheus scraping `/metrics` keeps the long run).
//! Served at `GET /v1/apps/{app}/metrics/history`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use aloft_agent_api::MachineSample;
use aloft_types::api::ErrorBody;
use aloft_types::history::{
    EdgeCounters, HistoryPoint, HistoryRange, MachinePoint, MetricsHistory, Percentiles,
    STATUS_CLASSES,
};
use axum::Json;
use axum::extract::{Query, State as Shared};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::ReadApp;
use crate::{ApiError, Inner};

/// A day in minutes.
const MINUTES: usize = 24 * 60;
/// Steps the fine series keeps.
const FINE_STEPS: usize = 360;
/// Machines of one app whose rates a step keeps (the first by id, so that lines stay the
/// same machines from step to step): a step of a thousand machines would hold a thousand,
/// and the charts draw six.
const MACHINES_PER_APP: usize = 16;

/// A machine's rates, computed when its host's samples arrive (every 15 s).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Rates {
    cpu_percent: f64,
    memory_mb: f64,
    receive: f64,
    transmit: f64,
}

/// One step of an app: what the edge counted in it, and its machines' rates.
#[derive(Debug, Clone, Default)]
struct Step {
    end_ms: i64,
    seconds: f64,
    edge: EdgeCounters,
    machines: BTreeMap<String, Rates>,
    /// Steps folded into this one (a minute holds several).
    folded: u32,
}

impl Step {
    /// Folds `other` (a later step of the same minute) into this one: counts add up,
    /// rates average.
    fn fold(&mut self, other: &Step) {
        self.end_ms = other.end_ms;
        self.seconds += other.seconds;
        self.edge.add(&other.edge);
        let n = f64::from(self.folded);
        for (id, rates) in &other.machines {
            let mine = self.machines.entry(id.clone()).or_default();
            let average = |a: f64, b: f64| (a * n + b) / (n + 1.0);
            mine.cpu_percent = average(mine.cpu_percent, rates.cpu_percent);
            mine.memory_mb = average(mine.memory_mb, rates.memory_mb);
            mine.receive = average(mine.receive, rates.receive);
            mine.transmit = average(mine.transmit, rates.transmit);
        }
        self.folded += 1;
    }

    fn point(&self) -> HistoryPoint {
        let seconds = self.seconds.max(f64::EPSILON);
        HistoryPoint {
            at: aloft_types::time::rfc3339(self.end_ms),
            #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            requests_per_second: STATUS_CLASSES
                .iter()
                .zip(self.edge.requests)
                .map(|(class, count)| ((*class).to_owned(), count as f64 / seconds))
                .collect(),
            latency_ms: self.edge.latency_quantile_ms(0.5).map(|p50| Percentiles {
                p50,
                p95: self.edge.latency_quantile_ms(0.95).unwrap_or(p50),
                p99: self.edge.latency_quantile_ms(0.99).unwrap_or(p50),
            }),
            machines: self
                .machines
                .iter()
                .map(|(id, rates)| MachinePoint {
                    id: id.clone(),
                    cpu_percent: rates.cpu_percent,
                    memory_mb: rates.memory_mb,
                    receive_bytes_per_second: rates.receive,
                    transmit_bytes_per_second: rates.transmit,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Series {
    fine: VecDeque<Step>,
    coarse: VecDeque<Step>,
    /// The minute being filled.
    minute: Option<Step>,
}

/// A machine's last sample (its cumulative counters) and when it arrived.
#[derive(Debug, Clone)]
struct Seen {
    app: String,
    at_ms: i64,
    sample: MachineSample,
    rates: Rates,
}

#[derive(Debug, Default)]
struct State {
    /// The edge's counters at the last step, per app.
    edge: BTreeMap<String, EdgeCounters>,
    machines: BTreeMap<String, Seen>,
    apps: BTreeMap<String, Series>,
    last_step_ms: Option<i64>,
}

/// Every app's short history.
#[derive(Debug, Default)]
pub(crate) struct History {
    state: Mutex<State>,
}

impl History {
    /// A host's samples arrived at `now_ms`: each machine's rates since its last sample.
    pub(crate) fn sampled(&self, now_ms: i64, samples: &[(String, MachineSample)]) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        for (app, sample) in samples {
            let id = sample.machine_id.to_string();
            #[allow(clippy::cast_precision_loss, reason = "bytes and nanoseconds as rates")]
            let memory_mb = sample.memory_bytes as f64 / 1_048_576.0;
            let rates = match state.machines.get(&id) {
                Some(seen) if now_ms > seen.at_ms => {
                    #[allow(clippy::cast_precision_loss, reason = "milliseconds")]
                    let seconds = (now_ms - seen.at_ms) as f64 / 1000.0;
                    #[allow(clippy::cast_precision_loss, reason = "bytes and nanoseconds as rates")]
                    let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
                    Rates {
                        cpu_percent: rate(sample.cpu_nanos, seen.sample.cpu_nanos) / 1e7,
                        memory_mb,
                        receive: rate(sample.receive_bytes, seen.sample.receive_bytes),
                        transmit: rate(sample.transmit_bytes, seen.sample.transmit_bytes),
                    }
                }
                // The first sample has no rates yet, only its memory.
                _ => Rates {
                    memory_mb,
                    ..Rates::default()
                },
            };
            state.machines.insert(
                id,
                Seen {
                    app: app.clone(),
                    at_ms: now_ms,
                    sample: sample.clone(),
                    rates,
                },
            );
        }
    }

    /// Ends a step at `now_ms` with the edge's counters as they are now (per app).
    /// Machines not sampled for three minutes (stopped, destroyed, moved) drop out.
    pub(crate) fn step(&self, now_ms: i64, edge: &BTreeMap<String, EdgeCounters>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let state = &mut *state;
        let Some(last) = state.last_step_ms.replace(now_ms) else {
            // The first step only sets where counting starts.
            state.edge = edge.clone();
            return;
        };
        #[allow(clippy::cast_precision_loss, reason = "milliseconds")]
        let seconds = (now_ms - last).max(1) as f64 / 1000.0;
        state
            .machines
            .retain(|_, seen| now_ms - seen.at_ms < 180_000);
        let mut steps: BTreeMap<String, Step> = BTreeMap::new();
        for (app, counters) in edge {
            let delta = match state.edge.get(app) {
                Some(earlier) => counters.since(earlier),
                None => *counters,
            };
            steps.entry(app.clone()).or_default().edge = delta;
        }
        state.edge = edge.clone();
        for (id, seen) in &state.machines {
            steps
                .entry(seen.app.clone())
                .or_default()
                .machines
                .insert(id.clone(), seen.rates);
        }
        for (app, mut step) in steps {
            if step.machines.len() > MACHINES_PER_APP {
                step.machines = std::mem::take(&mut step.machines)
                    .into_iter()
                    .take(MACHINES_PER_APP)
                    .collect();
            }
            step.end_ms = now_ms;
            step.seconds = seconds;
            step.folded = 1;
            let series = state.apps.entry(app).or_default();
            series.fine.push_back(step.clone());
            while series.fine.len() > FINE_STEPS {
                series.fine.pop_front();
            }
            let minute = |ms: i64| ms.div_euclid(60_000);
            match &mut series.minute {
                Some(open) if minute(open.end_ms) == minute(now_ms) => open.fold(&step),
                open => {
                    if let Some(done) = open.replace(step) {
                        series.coarse.push_back(done);
                        while series.coarse.len() > MINUTES {
                            series.coarse.pop_front();
                        }
                    }
                }
            }
        }
        // An app with no step for a day (deleted, renamed) is forgotten.
        state.apps.retain(|_, series| {
            let newest = series
                .minute
                .as_ref()
                .map_or(0, |minute| minute.end_ms)
                .max(series.fine.back().map_or(0, |step| step.end_ms));
            now_ms - newest < 86_400_000
        });
    }

    /// `app`'s history over `range`, from `since_ms` on (the app's creation: an app made
    /// under a deleted app's name never shows the old app's numbers).
    pub(crate) fn of(&self, app: &str, since_ms: i64, range: HistoryRange) -> MetricsHistory {
        let mut history = MetricsHistory {
            app: app.to_owned(),
            range,
            step_seconds: 60,
            points: Vec::new(),
        };
        let Ok(state) = self.state.lock() else {
            return history;
        };
        let Some(series) = state.apps.get(app) else {
            return history;
        };
        let steps: Vec<&Step> = match range {
            HistoryRange::Hour => {
                // The steps' length, as the caller takes them.
                if let Some(newest) = series.fine.back() {
                    #[allow(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "a step's seconds, rounded"
                    )]
                    let seconds = newest.seconds.round().max(1.0) as u64;
                    history.step_seconds = seconds;
                }
                series.fine.iter().collect()
            }
            HistoryRange::Day => series.coarse.iter().chain(series.minute.as_ref()).collect(),
        };
        history.points = steps
            .into_iter()
            .filter(|step| step.end_ms >= since_ms)
            .map(Step::point)
            .collect();
        history
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct HistoryQuery {
    /// `1h` (the default: the last 360 steps, 10 s each by default) or `24h` (minutes).
    range: Option<String>,
}

#[utoipa::path(get, path = "/v1/apps/{app}/metrics/history", tag = "apps", params(("app" = String, Path, description = "The app's name"), HistoryQuery), responses((status = 200, description = "The app's requests, latency and machines over the range, oldest first", body = MetricsHistory), (status = "4XX", description = "Bad input, missing or invalid token, not found", body = ErrorBody)), operation_id = "Apps_metrics_history")]
async fn history(
    Shared(inner): Shared<Arc<Inner>>,
    ReadApp(app): ReadApp,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<MetricsHistory>, ApiError> {
    let range = match query.range.as_deref() {
        None => HistoryRange::Hour,
        Some(text) => HistoryRange::parse(text)
            .ok_or_else(|| ApiError::BadRequest(format!("range {text:?}: `1h` or `24h`")))?,
    };
    Ok(Json(inner.history.of(
        app.name.as_str(),
        app.created_at,
        range,
    )))
}

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new().routes(routes!(history))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(ok: u64) -> BTreeMap<String, EdgeCounters> {
        let mut counters = EdgeCounters::default();
        counters.requests[1] = ok;
        counters.latency[2] = ok;
        BTreeMap::from([("web".to_owned(), counters)])
    }

    fn sample(machine: &str, cpu_nanos: u64, memory_bytes: u64) -> (String, MachineSample) {
        let sample = MachineSample {
            machine_id: machine.parse().unwrap(),
            cpu_nanos,
            memory_bytes,
            memory_limit_bytes: 0,
            disk_read_bytes: 0,
            disk_write_bytes: 0,
            receive_bytes: cpu_nanos / 1000,
            transmit_bytes: 0,
            app_metrics: None,
        };
        ("web".to_owned(), sample)
    }

    #[test]
    fn steps_count_requests_per_second_and_machines_by_their_samples() {
        let history = History::default();
        history.step(0, &edge(100));
        assert!(
            history.of("web", 0, HistoryRange::Hour).points.is_empty(),
            "a baseline only"
        );
        history.sampled(0, &[sample("0123456789abcd", 0, 64 * 1_048_576)]);
        history.sampled(
            15_000,
            &[sample("0123456789abcd", 7_500_000_000, 128 * 1_048_576)],
        );
        history.step(10_000, &edge(150));
        let points = history.of("web", 0, HistoryRange::Hour).points;
        assert_eq!(points.len(), 1);
        assert!((points[0].requests_per_second["2xx"] - 5.0).abs() < 1e-9);
        assert!(points[0].latency_ms.is_some());
        let machine = &points[0].machines[0];
        assert_eq!(machine.id, "0123456789abcd");
        assert!((machine.cpu_percent - 50.0).abs() < 1e-9, "{machine:?}");
        assert!((machine.memory_mb - 128.0).abs() < 1e-9);
        assert!((machine.receive_bytes_per_second - 500_000.0).abs() < 1e-6);
        // No request in a step: no percentiles.
        history.step(20_000, &edge(150));
        let points = history.of("web", 0, HistoryRange::Hour).points;
        assert_eq!(points.len(), 2);
        assert_eq!(points[1].latency_ms, None);
        assert_eq!(points[1].requests_per_second["2xx"], 0.0);
    }

    #[test]
    fn a_step_keeps_the_first_machines_of_a_big_app() {
        let history = History::default();
        history.step(0, &edge(0));
        let samples: Vec<(String, MachineSample)> = (0..40)
            .map(|n| sample(&format!("{n:014x}"), 0, 1_048_576))
            .collect();
        history.sampled(0, &samples);
        history.step(10_000, &edge(0));
        let points = history.of("web", 0, HistoryRange::Hour).points;
        let ids: Vec<&str> = points[0].machines.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), MACHINES_PER_APP);
        assert_eq!(ids[0], "00000000000000");
        assert_eq!(
            ids[MACHINES_PER_APP - 1],
            format!("{:014x}", MACHINES_PER_APP - 1)
        );
    }

    #[test]
    fn the_hour_keeps_its_steps_and_the_day_its_minutes() {
        let history = History::default();
        history.step(0, &edge(0));
        for step in 1..=400 {
            history.step(step * 10_000, &edge(u64::try_from(step).unwrap() * 10));
        }
        let hour = history.of("web", 0, HistoryRange::Hour);
        assert_eq!((hour.points.len(), hour.step_seconds), (360, 10));
        let day = history.of("web", 0, HistoryRange::Day);
        assert_eq!(day.step_seconds, 60);
        // 4,000 s: 66 whole minutes and the one being filled.
        assert_eq!(day.points.len(), 67);
        assert!((day.points[1].requests_per_second["2xx"] - 1.0).abs() < 1e-9);
        // An app made after some of it sees only what came after.
        let later = history.of("web", 3_000_000, HistoryRange::Hour);
        assert_eq!(later.points.len(), 101);
        assert!(history.of("other", 0, HistoryRange::Hour).points.is_empty());
    }
}
