//! An app's graphs: requests by status class, latency percentiles, and each machine's
//! CPU, memory and network over the last hour or day, from the short history `aloftd`
//! keeps itself, drawn on the server as SVG (no script, no chart library).

use std::fmt::Write as _;

use aloft_types::history::{HistoryRange, MetricsHistory};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use serde::Deserialize;

use crate::view::Chrome;
use crate::{Signed, Web, WebError};

/// Lines one chart draws (the machines with the highest peaks when there are more).
const MOST_LINES: usize = 6;
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 160.0;

/// A line of a chart: its name and a value per point (`None`: no value there).
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// A chart, ready to show: its SVG and, for each line, its newest value and its peak.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub id: String,
    pub title: String,
    pub unit: String,
    pub svg: String,
    pub latest: Vec<Legend>,
}

/// A line's name, newest value and peak, as the legend writes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Legend {
    pub name: String,
    pub latest: String,
    pub peak: String,
}

/// Draws `lines` over `labels` (the points' times): a polyline per line, scaled to the
/// highest value, with the scale's top and the range's ends written on it.
pub fn chart(id: &str, title: &str, unit: &str, labels: &[String], lines: &[Line]) -> Chart {
    let mut lines: Vec<&Line> = lines.iter().collect();
    let peak = |line: &Line| line.values.iter().flatten().copied().fold(0.0, f64::max);
    if lines.len() > MOST_LINES {
        lines.sort_by(|a, b| peak(b).total_cmp(&peak(a)));
        lines.truncate(MOST_LINES);
    }
    let top = lines.iter().map(|line| peak(line)).fold(0.0, f64::max);
    let scale = if top > 0.0 { nice(top) } else { 1.0 };
    let points = labels.len().max(2);
    #[allow(clippy::cast_precision_loss, reason = "a few hundred points")]
    let x = |i: usize| WIDTH * i as f64 / (points - 1) as f64;
    let y = |v: f64| HEIGHT - (v / scale).clamp(0.0, 1.0) * HEIGHT;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg viewBox=\"-48 -8 {} {}\" role=\"img\" aria-labelledby=\"{id}-title\" class=\"chart\">\
         <title id=\"{id}-title\">{} ({}), {} points</title>\
         <line class=\"axis\" x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\"/>\
         <line class=\"grid\" x1=\"0\" y1=\"0\" x2=\"{WIDTH}\" y2=\"0\"/>\
         <text class=\"tick\" x=\"-6\" y=\"4\" text-anchor=\"end\">{}</text>\
         <text class=\"tick\" x=\"-6\" y=\"{HEIGHT}\" text-anchor=\"end\">0</text>",
        WIDTH + 56.0,
        HEIGHT + 28.0,
        escape(title),
        escape(unit),
        labels.len(),
        number(scale),
    );
    if let (Some(first), Some(last)) = (labels.first(), labels.last()) {
        let _ = write!(
            svg,
            "<text class=\"tick\" x=\"0\" y=\"{}\">{}</text><text class=\"tick\" x=\"{WIDTH}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            HEIGHT + 16.0,
            escape(first),
            HEIGHT + 16.0,
            escape(last)
        );
    }
    for (index, line) in lines.iter().enumerate() {
        // A gap in the values breaks the line; a value alone between gaps is a dot.
        let mut path = String::new();
        let mut dots = String::new();
        let mut pen_down = false;
        let value_at = |i: usize| line.values.get(i).copied().flatten();
        for (i, value) in line.values.iter().enumerate() {
            match value {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(i),
                        y(*v)
                    );
                    let alone = (i == 0 || value_at(i - 1).is_none()) && value_at(i + 1).is_none();
                    if alone {
                        let _ = write!(
                            dots,
                            "<circle class=\"dot s{index}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"/>",
                            x(i),
                            y(*v)
                        );
                    }
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !path.is_empty() {
            let _ = write!(
                svg,
                "<path class=\"line s{index}\" d=\"{}\"><title>{}</title></path>{dots}",
                path.trim_end(),
                escape(&line.name)
            );
        }
    }
    svg.push_str("</svg>");
    Chart {
        id: id.to_owned(),
        title: title.to_owned(),
        unit: unit.to_owned(),
        svg,
        latest: lines
            .iter()
            .map(|line| {
                let value = line.values.iter().rev().flatten().next();
                Legend {
                    name: line.name.clone(),
                    latest: value.map_or("none".to_owned(), |v| number(*v)),
                    peak: number(peak(line)),
                }
            })
            .collect(),
    }
}

/// The next round number at or above `value` (1, 2 or 5 times a power of ten).
fn nice(value: f64) -> f64 {
    let power = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if value <= step * power {
            return step * power;
        }
    }
    10.0 * power
}

/// A value as a chart writes it: three significant digits or so.
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e9 {
        format!("{:.1}G", value / 1e9)
    } else if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if magnitude >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if magnitude >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The charts of a history.
pub fn charts(history: &MetricsHistory) -> Vec<Chart> {
    let labels: Vec<String> = history
        .points
        .iter()
        .map(|point| {
            point
                .at
                .split_once('T')
                .map_or(point.at.clone(), |(_, time)| time.chars().take(5).collect())
        })
        .collect();
    let column = |pick: &dyn Fn(&aloft_types::history::HistoryPoint) -> Option<f64>| {
        history.points.iter().map(pick).collect::<Vec<_>>()
    };
    let requests: Vec<Line> = ["2xx", "3xx", "4xx", "5xx"]
        .iter()
        .map(|class| Line {
            name: (*class).to_owned(),
            values: column(&|p| p.requests_per_second.get(*class).copied()),
        })
        .collect();
    let latency: Vec<Line> = [("p50", 0), ("p95", 1), ("p99", 2)]
        .iter()
        .map(|(name, which)| Line {
            name: (*name).to_owned(),
            values: column(&|p| p.latency_ms.map(|l| [l.p50, l.p95, l.p99][*which])),
        })
        .collect();
    let mut machines: Vec<String> = history
        .points
        .iter()
        .flat_map(|p| p.machines.iter().map(|m| m.id.clone()))
        .collect();
    machines.sort();
    machines.dedup();
    type Pick = fn(&aloft_types::history::MachinePoint) -> f64;
    let per_machine = |pick: Pick| -> Vec<Line> {
        machines
            .iter()
            .map(|id| Line {
                name: id.clone(),
                values: column(&|p| p.machines.iter().find(|m| &m.id == id).map(pick)),
            })
            .collect()
    };
    let mut network = per_machine(|m| m.receive_bytes_per_second);
    for line in &mut network {
        line.name = format!("{} in", line.name);
    }
    let mut sent = per_machine(|m| m.transmit_bytes_per_second);
    for line in &mut sent {
        line.name = format!("{} out", line.name);
    }
    network.extend(sent);
    vec![
        chart(
            "requests",
            "Requests",
            "per second, by status",
            &labels,
            &requests,
        ),
        chart(
            "latency",
            "Latency at the edge",
            "milliseconds",
            &labels,
            &latency,
        ),
        chart(
            "cpu",
            "CPU",
            "percent of one CPU, per machine",
            &labels,
            &per_machine(|m| m.cpu_percent),
        ),
        chart(
            "memory",
            "Memory",
            "MB, per machine",
            &labels,
            &per_machine(|m| m.memory_mb),
        ),
        chart(
            "network",
            "Private network",
            "bytes per second, per machine",
            &labels,
            &network,
        ),
    ]
}

#[derive(Debug, Deserialize)]
pub(crate) struct RangeQuery {
    #[serde(default)]
    range: Option<String>,
}

#[derive(Template)]
#[template(path = "metrics.html")]
struct MetricsPage {
    chrome: Chrome,
    app: String,
    range: &'static str,
    step_seconds: u64,
    points: usize,
    charts: Vec<Chart>,
    /// The app's dashboard in the operator's Grafana, when one is configured.
    grafana: Option<String>,
}

/// `GET /apps/{app}/metrics?range=1h|24h`.
pub(crate) async fn page(
    State(web): State<Web>,
    signed: Signed,
    Path(app): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Result<Html<String>, WebError> {
    let range = match query.range.as_deref() {
        None | Some("") => HistoryRange::Hour,
        Some(text) => HistoryRange::parse(text)
            .ok_or_else(|| WebError::BadInput(format!("range {text:?}: 1h or 24h")))?,
    };
    let history = signed.client.metrics_history(&app, range).await?;
    Ok(Html(
        MetricsPage {
            chrome: signed.chrome(),
            range: range.as_str(),
            step_seconds: history.step_seconds,
            points: history.points.len(),
            charts: charts(&history),
            grafana: web.grafana_of(&app),
            app,
        }
        .render()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_scales_to_a_round_top_and_breaks_at_gaps() {
        let labels: Vec<String> = (0..4).map(|i| format!("10:0{i}")).collect();
        let drawn = chart(
            "c",
            "Requests",
            "per second",
            &labels,
            &[Line {
                name: "2xx".to_owned(),
                values: vec![Some(0.0), Some(37.0), None, Some(10.0)],
            }],
        );
        assert!(
            drawn.svg.contains(">50</text>"),
            "the top is 50: {}",
            drawn.svg
        );
        // Two pieces: M..L.. then a new M after the gap, where 10 stands alone: a dot.
        assert_eq!(drawn.svg.matches('M').count(), 2, "{}", drawn.svg);
        assert_eq!(drawn.svg.matches("<circle").count(), 1, "{}", drawn.svg);
        assert_eq!(
            drawn.latest,
            [Legend {
                name: "2xx".to_owned(),
                latest: "10".to_owned(),
                peak: "37".to_owned()
            }]
        );
        assert!(drawn.svg.contains("10:00") && drawn.svg.contains("10:03"));
    }

    #[test]
    fn many_lines_keep_the_highest_and_names_are_escaped() {
        let lines: Vec<Line> = (0..9)
            .map(|i| Line {
                name: format!("<m{i}>"),
                values: vec![Some(f64::from(i))],
            })
            .collect();
        let drawn = chart("c", "CPU", "%", &["now".to_owned()], &lines);
        assert_eq!(drawn.latest.len(), MOST_LINES);
        assert_eq!(drawn.latest[0].name, "<m8>");
        assert!(drawn.svg.contains("&lt;m8&gt;") && !drawn.svg.contains("<m8>"));
        assert!(!drawn.svg.contains("&lt;m0&gt;"), "the lowest are left out");
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(nice(37.0), 50.0);
        assert_eq!(nice(0.3), 0.5);
        assert_eq!(nice(100.0), 100.0);
        assert_eq!(number(1_500_000.0), "1.5M");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(0.0123), "0.012");
        assert_eq!(number(250.0), "250");
    }
}
