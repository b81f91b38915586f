//! What the pages show, made from the API's answers, and the fragments that both a page
//! and its live stream render (so the first paint and every update are the same HTML).

use aloft_types::api::{
    DeploymentResponse, EventResponse, LogEntryResponse, MachineResponse, ReleaseResponse,
};
use askama::Template;

/// What every page's header needs.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub name: String,
    pub kind: String,
    /// The organization the pages show, and every one the session holds a token of.
    pub org: String,
    pub orgs: Vec<String>,
    pub operator: bool,
    pub can_change: bool,
    pub csrf: String,
}

/// The metadata key that names a machine's process group (Fly's).
const PROCESS_GROUP: &str = "fly_process_group";

/// A machine as a row of the app page.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineRow {
    pub id: String,
    pub name: String,
    pub group: String,
    pub region: String,
    pub state: String,
    pub tone: &'static str,
    pub checks: String,
    pub checks_tone: &'static str,
    pub image: String,
    pub version: String,
    /// The release that made it (`v3`), when a deploy did.
    pub release: Option<String>,
    /// The host it is placed on, short (as the platform page's first column starts).
    pub host: Option<String>,
    pub cordoned: bool,
    pub host_status: String,
    pub updated_at: String,
}

impl MachineRow {
    pub fn of(machine: &MachineResponse) -> MachineRow {
        let passing = machine
            .checks
            .iter()
            .filter(|check| check.status == aloft_types::CheckStatus::Passing)
            .count();
        let total = machine.checks.len();
        let (checks, checks_tone) = match total {
            0 => ("none".to_owned(), "idle"),
            _ if passing == total => (format!("{passing}/{total} passing"), "ok"),
            _ => (format!("{passing}/{total} passing"), "bad"),
        };
        MachineRow {
            id: machine.id.clone(),
            name: machine.name.clone(),
            group: machine
                .config
                .metadata
                .get(PROCESS_GROUP)
                .cloned()
                .unwrap_or_else(|| "app".to_owned()),
            region: machine.region.clone(),
            tone: state_tone(&machine.state),
            state: machine.state.clone(),
            checks,
            checks_tone,
            image: short_image(&machine.config.image),
            version: machine.version.clone(),
            release: machine
                .config
                .metadata
                .get(aloft_types::machine::METADATA_RELEASE_VERSION)
                .map(|v| format!("v{v}")),
            host: machine.host.as_deref().map(short_host),
            cordoned: machine.cordoned,
            host_status: machine.host_status.clone(),
            updated_at: machine.updated_at.clone(),
        }
    }
}

/// A host id as tables show it: its first 8 characters, enough to tell hosts apart and to
/// find the host on the platform page.
pub fn short_host(id: &str) -> String {
    id.chars().take(8).collect()
}

/// An image as a table shows it: a bare digest cut to 12 hex digits (as `docker images`
/// does), a name as it is.
pub fn short_image(image: &str) -> String {
    match image.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", hex.get(..12).unwrap_or(hex)),
        None => image.to_owned(),
    }
}

/// The colour a machine state is shown in.
pub fn state_tone(state: &str) -> &'static str {
    match state {
        "started" => "ok",
        "failed" | "destroyed" | "lost" => "bad",
        "starting" | "stopping" | "updating" | "replacing" | "restarting" | "created"
        | "destroying" | "launch_failed" => "warn",
        _ => "idle",
    }
}

/// The machines table's body, live on the app page.
#[derive(Template, Debug)]
#[template(path = "machines.html")]
pub struct MachinesFragment {
    pub app: String,
    pub rows: Vec<MachineRow>,
}

impl MachinesFragment {
    pub fn of(app: &str, machines: &[MachineResponse]) -> MachinesFragment {
        let mut rows: Vec<MachineRow> = machines
            .iter()
            .filter(|machine| machine.state != "destroyed")
            .map(MachineRow::of)
            .collect();
        rows.sort_by(|a, b| (&a.group, &a.region, &a.id).cmp(&(&b.group, &b.region, &b.id)));
        MachinesFragment {
            app: app.to_owned(),
            rows,
        }
    }
}

/// A step of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub at: String,
    pub kind: String,
    pub machine: String,
    pub message: String,
}

/// The newest deployment and its steps, live on the app page.
#[derive(Template, Debug)]
#[template(path = "deployment.html")]
pub struct DeploymentFragment {
    pub deployment: Option<DeploymentView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentView {
    pub id: String,
    pub status: String,
    pub tone: &'static str,
    pub active: bool,
    pub strategy: String,
    pub version: i64,
    pub image: String,
    pub error: Option<String>,
    /// The newest steps (at most [`SHOWN_STEPS`]).
    pub steps: Vec<StepRow>,
    /// How many earlier steps are not shown.
    pub earlier: usize,
    pub created_at: String,
}

/// Steps a deployment shows: a deploy of a thousand machines has thousands, and the reader
/// wants the newest.
pub const SHOWN_STEPS: usize = 100;

impl DeploymentFragment {
    pub fn of(deployment: Option<&DeploymentResponse>) -> DeploymentFragment {
        DeploymentFragment {
            deployment: deployment.map(|deployment| {
                use aloft_types::deploy::DeploymentStatus as S;
                DeploymentView {
                    id: deployment.id.clone(),
                    status: deployment.status.to_string(),
                    tone: match deployment.status {
                        S::Succeeded => "ok",
                        S::Running | S::RollingBack => "warn",
                        S::Failed | S::RolledBack => "bad",
                    },
                    active: deployment.status.is_active(),
                    strategy: deployment.strategy.to_string(),
                    version: deployment.release.version,
                    image: short_image(&deployment.release.image),
                    error: deployment.error.clone(),
                    earlier: deployment.steps.len().saturating_sub(SHOWN_STEPS),
                    steps: deployment.steps[deployment.steps.len().saturating_sub(SHOWN_STEPS)..]
                        .iter()
                        .map(|step| StepRow {
                            at: clock(&step.at),
                            kind: step.kind.to_string(),
                            machine: step.machine_id.clone().unwrap_or_default(),
                            message: step.message.clone(),
                        })
                        .collect(),
                    created_at: deployment.created_at.clone(),
                }
            }),
        }
    }
}

/// Releases the app page lists (`aloft releases` shows them all).
pub const SHOWN_RELEASES: usize = 20;

/// A release, with whether the page offers to roll back to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseRow {
    pub version: i64,
    pub image: String,
    pub status: String,
    pub tone: &'static str,
    pub process_group: String,
    pub description: String,
    pub user: String,
    pub created_at: String,
    pub rollback: bool,
}

impl ReleaseRow {
    /// The newest releases (at most [`SHOWN_RELEASES`]); every complete one but the current
    /// is a rollback target.
    pub fn all(releases: &[ReleaseResponse]) -> Vec<ReleaseRow> {
        use aloft_types::deploy::ReleaseStatus;
        let current = releases
            .iter()
            .find(|release| release.status == ReleaseStatus::Complete)
            .map(|release| release.version);
        releases
            .iter()
            .map(|release| ReleaseRow {
                version: release.version,
                image: short_image(&release.image),
                status: release.status.to_string(),
                tone: match release.status {
                    ReleaseStatus::Complete => "ok",
                    ReleaseStatus::Running => "warn",
                    ReleaseStatus::Failed => "bad",
                },
                process_group: release.process_group.clone(),
                description: release.description.clone(),
                user: release.user.clone(),
                created_at: release.created_at.clone(),
                rollback: release.status == ReleaseStatus::Complete
                    && Some(release.version) != current,
            })
            .take(SHOWN_RELEASES)
            .collect()
    }
}

/// A machine's event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub at: String,
    pub kind: String,
    pub status: String,
    pub source: String,
    pub detail: String,
}

impl EventRow {
    pub fn of(event: &EventResponse) -> EventRow {
        let detail = match &event.request {
            serde_json::Value::Null => String::new(),
            serde_json::Value::Object(map) if map.is_empty() => String::new(),
            other => other.to_string(),
        };
        EventRow {
            at: millis(event.timestamp),
            kind: event.kind.clone(),
            status: event.status.clone(),
            source: event.source.clone(),
            detail,
        }
    }
}

/// A machine's state, checks and events, live on its page.
#[derive(Template, Debug)]
#[template(path = "machine_state.html")]
pub struct MachineStateFragment {
    pub row: MachineRow,
    pub checks: Vec<CheckRow>,
    pub events: Vec<EventRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckRow {
    pub name: String,
    pub status: String,
    pub tone: &'static str,
    pub output: String,
    pub updated_at: String,
}

impl MachineStateFragment {
    pub fn of(machine: &MachineResponse) -> MachineStateFragment {
        let mut events: Vec<EventRow> = machine.events.iter().map(EventRow::of).collect();
        events.truncate(50);
        MachineStateFragment {
            row: MachineRow::of(machine),
            checks: machine
                .checks
                .iter()
                .map(|check| CheckRow {
                    name: check.name.clone(),
                    status: check.status.as_str().to_owned(),
                    tone: match check.status {
                        aloft_types::CheckStatus::Passing => "ok",
                        aloft_types::CheckStatus::Warning => "warn",
                        aloft_types::CheckStatus::Critical => "bad",
                    },
                    output: check.output.clone(),
                    updated_at: check.updated_at.clone(),
                })
                .collect(),
            events,
        }
    }
}

/// A log line as a list item (the logs page and the live follow).
#[derive(Template, Debug)]
#[template(path = "log_line.html")]
pub struct LogLine {
    pub at: String,
    pub machine: String,
    pub region: String,
    pub stream: String,
    pub message: String,
}

impl LogLine {
    pub fn of(entry: &LogEntryResponse) -> LogLine {
        LogLine {
            at: entry.timestamp.clone(),
            machine: entry.machine.clone(),
            region: entry.region.clone(),
            stream: entry.stream.clone(),
            message: entry.message.clone(),
        }
    }
}

/// A service of a process group, as its newest machine's config has it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    pub group: String,
    pub protocol: String,
    pub internal_port: u16,
    /// `80 (http, force https), 443 (tls, http)`.
    pub ports: String,
    pub concurrency: String,
    pub autostop: String,
    pub checks: usize,
}

/// A value's name as the API writes it (`pg_tls`).
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl ServiceRow {
    /// Each group's services, from the group's newest machine.
    pub fn all(machines: &[MachineResponse]) -> Vec<ServiceRow> {
        use aloft_client::scale::{group_of, newest};
        let live: Vec<&MachineResponse> = machines
            .iter()
            .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
            .collect();
        let mut groups: Vec<String> = live.iter().map(|m| group_of(m)).collect();
        groups.sort();
        groups.dedup();
        let mut rows = Vec::new();
        for group in groups {
            let of_group: Vec<&MachineResponse> = live
                .iter()
                .copied()
                .filter(|m| group_of(m) == group)
                .collect();
            let Some(machine) = newest(&of_group) else {
                continue;
            };
            for service in &machine.config.services {
                let ports = service
                    .ports
                    .iter()
                    .map(|port| {
                        let number = match (port.port, port.start_port, port.end_port) {
                            (Some(port), _, _) => port.to_string(),
                            (None, Some(start), Some(end)) => format!("{start}-{end}"),
                            _ => "?".to_owned(),
                        };
                        let mut how: Vec<String> = port.handlers.iter().map(wire_name).collect();
                        if port.force_https {
                            how.push("force https".to_owned());
                        }
                        if how.is_empty() {
                            number
                        } else {
                            format!("{number} ({})", how.join(", "))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let concurrency = service.concurrency.as_ref().map_or(String::new(), |c| {
                    let kind = c.kind.as_ref().map_or("connections".to_owned(), wire_name);
                    let mut text = kind;
                    if let Some(soft) = c.soft_limit {
                        text.push_str(&format!(", soft {soft}"));
                    }
                    if let Some(hard) = c.hard_limit {
                        text.push_str(&format!(", hard {hard}"));
                    }
                    text
                });
                rows.push(ServiceRow {
                    group: group.clone(),
                    protocol: wire_name(&service.protocol),
                    internal_port: service.internal_port,
                    ports: if ports.is_empty() {
                        "private only".to_owned()
                    } else {
                        ports
                    },
                    concurrency,
                    autostop: service
                        .autostop
                        .as_ref()
                        .map_or("off".to_owned(), wire_name),
                    checks: service.checks.len(),
                });
            }
        }
        rows
    }
}

/// The time of day of an RFC 3339 timestamp (`12:03:04`), or the whole text.
fn clock(rfc3339: &str) -> String {
    rfc3339
        .split_once('T')
        .map(|(_, time)| time.chars().take(8).collect())
        .unwrap_or_else(|| rfc3339.to_owned())
}

/// A Unix time in milliseconds as RFC 3339 (UTC, to the second).
fn millis(ms: i64) -> String {
    aloft_types::time::rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_complete_release_but_the_current_one_can_be_rolled_back_to() {
        let release = |version, status: &str| ReleaseResponse {
            id: format!("r{version}"),
            version,
            image: format!("app:v{version}"),
            status: status.parse().unwrap(),
            process_group: "app".to_owned(),
            description: String::new(),
            user: "admin".to_owned(),
            created_at: String::new(),
        };
        let rows = ReleaseRow::all(&[
            release(4, "failed"),
            release(3, "complete"),
            release(2, "complete"),
            release(1, "failed"),
        ]);
        let offered: Vec<i64> = rows
            .iter()
            .filter(|r| r.rollback)
            .map(|r| r.version)
            .collect();
        assert_eq!(offered, [2]);
    }

    #[test]
    fn a_bare_digest_is_cut_and_a_name_kept() {
        assert_eq!(
            short_image("sha256:f09a4f42588e25b38e6e8e71966af12588438d09"),
            "sha256:f09a4f42588e"
        );
        assert_eq!(short_image("sha256:abc"), "sha256:abc");
        assert_eq!(
            short_image("registry.example/app:v1"),
            "registry.example/app:v1"
        );
    }

    #[test]
    fn a_long_deployment_shows_its_newest_steps_and_counts_the_rest() {
        let step = |number: i64| aloft_types::api::DeploymentStepResponse {
            number,
            machine_id: None,
            kind: aloft_types::deploy::StepKind::Update,
            message: format!("step {number}"),
            at: "2026-12-07T10:11:12Z".to_owned(),
        };
        let mut deployment: DeploymentResponse = serde_json::from_value(serde_json::json!({
            "id": "d1", "strategy": "rolling", "max_unavailable": 1.0, "wait_timeout": 60,
            "status": "running", "steps": [], "created_at": "", "updated_at": "",
            "release": { "id": "r1", "version": 1, "image": "app:1", "status": "running",
                         "process_group": "app", "description": "", "user": "", "created_at": "" }
        }))
        .unwrap();
        deployment.steps = (1..=250).map(step).collect();
        let view = DeploymentFragment::of(Some(&deployment))
            .deployment
            .unwrap();
        assert_eq!(view.earlier, 150);
        assert_eq!(view.steps.len(), SHOWN_STEPS);
        assert_eq!(view.steps[0].message, "step 151");
        assert_eq!(view.steps.last().unwrap().message, "step 250");
        deployment.steps.truncate(3);
        let view = DeploymentFragment::of(Some(&deployment))
            .deployment
            .unwrap();
        assert_eq!((view.earlier, view.steps.len()), (0, 3));
    }

    #[test]
    fn clock_shows_the_time_of_day() {
        assert_eq!(clock("2026-12-07T10:11:12.345Z"), "10:11:12");
        assert_eq!(clock("garbage"), "garbage");
    }
}
