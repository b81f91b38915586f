//! Building the API's response bodies (defined in `aloft_types::api`) from stored records.

use aloft_store::{App, CheckRecord, MachineEvent, MachineRecord, MachineVersion, Org};
pub use aloft_types::api::*;

use aloft_types::MachineState;
use aloft_types::time::rfc3339;

pub(crate) fn app_response(
    app: &App,
    org: &Org,
    machines: &[MachineRecord],
    volume_count: usize,
    edge: Option<&crate::EdgeAddress>,
) -> AppResponse {
    AppResponse {
        id: app.id.to_string(),
        name: app.name.to_string(),
        organization: OrgRef {
            slug: org.slug.clone(),
            name: org.name.clone(),
        },
        network: app.network.clone(),
        status: app_status(machines.iter().map(|m| m.state)).to_owned(),
        machine_count: machines.len(),
        volume_count,
        created_at: rfc3339(app.created_at),
        hostname: edge.map(|e| e.hostname(app.name.as_str())),
        url: edge.map(|e| e.url(app.name.as_str())),
    }
}

/// What an app's machines say about it: `pending` (none yet), `deployed` (one at least
/// runs or is on its way), `failed` (none runs and one could not be launched) or
/// `suspended` (every machine is stopped, crashed ones included: Fly's word).
pub(crate) fn app_status(states: impl IntoIterator<Item = MachineState>) -> &'static str {
    use aloft_types::MachineState as S;
    let live: Vec<S> = states
        .into_iter()
        .filter(|s| !s.is_terminal() && *s != S::Destroying)
        .collect();
    if live.is_empty() {
        "pending"
    } else if live.iter().any(|s| {
        matches!(
            s,
            S::Creating | S::Starting | S::Started | S::Restarting | S::Updating | S::Replacing
        )
    }) {
        "deployed"
    } else if live
        .iter()
        .any(|s| matches!(s, S::Failed | S::LaunchFailed))
    {
        "failed"
    } else {
        "suspended"
    }
}

pub(crate) fn event_response(event: &MachineEvent) -> EventResponse {
    EventResponse {
        id: event.seq.to_string(),
        kind: event.kind.to_string(),
        status: event.status.clone(),
        source: event.source.clone(),
        timestamp: event.at,
        request: event.request.clone(),
    }
}

pub(crate) fn check_response(check: &CheckRecord) -> CheckResponse {
    CheckResponse {
        name: check.name.clone(),
        status: check.status,
        output: check.output.clone(),
        updated_at: rfc3339(check.updated_at),
    }
}

/// A machine as the API shows it; one on a host in `down` (declared down: a machine with
/// a volume stays there until its host returns) shows state `lost` and host status
/// `unreachable` (Fly's word for a host it cannot reach).
pub(crate) fn machine_response(
    machine: &MachineRecord,
    events: &[MachineEvent],
    checks: &[CheckRecord],
    down: &std::collections::BTreeSet<aloft_types::HostId>,
) -> MachineResponse {
    let lost =
        !machine.state.is_terminal() && machine.host_id.as_ref().is_some_and(|h| down.contains(h));
    MachineResponse {
        id: machine.id.to_string(),
        name: machine.name.clone(),
        state: if lost {
            "lost".to_owned()
        } else {
            machine.state.to_string()
        },
        region: machine.region.clone(),
        instance_id: machine.instance_id.clone(),
        version: machine.version.to_string(),
        private_ip: machine.private_ip.clone().unwrap_or_default(),
        config: machine.config.clone(),
        image_ref: ImageRef::parse(&machine.config.image),
        events: events.iter().map(event_response).collect(),
        checks: checks
            .iter()
            .filter(|c| c.machine_id == machine.id)
            .map(check_response)
            .collect(),
        host_status: if lost { "unreachable" } else { "ok" }.to_owned(),
        cordoned: machine.cordoned,
        created_at: rfc3339(machine.created_at),
        updated_at: rfc3339(machine.updated_at),
        nonce: None,
        host: machine.host_id.as_ref().map(ToString::to_string),
    }
}

pub(crate) fn version_response(version: &MachineVersion) -> VersionResponse {
    VersionResponse {
        version: version.version.to_string(),
        instance_id: version.instance_id.clone(),
        user_config: version.config.clone(),
        created_at: rfc3339(version.created_at),
    }
}

#[cfg(test)]
mod tests {
    use super::app_status;
    use aloft_types::MachineState as S;

    #[test]
    fn an_app_whose_machines_all_stopped_or_failed_says_so() {
        assert_eq!(app_status([]), "pending");
        assert_eq!(app_status([S::Destroyed]), "pending");
        assert_eq!(app_status([S::Started, S::Stopped]), "deployed");
        assert_eq!(app_status([S::Restarting, S::Stopped]), "deployed");
        assert_eq!(app_status([S::Stopped, S::Stopped]), "suspended");
        assert_eq!(app_status([S::Stopped, S::Failed]), "failed");
        assert_eq!(
            app_status([S::Failed, S::Destroyed, S::Started]),
            "deployed"
        );
    }
}
