//! What `aloft machine list` and `status` print.

use aloft_types::api::MachineResponse;

use crate::table;

/// A machine's checks as `passing/total` (empty without checks), as `fly machine list`
/// shows them.
/// `aloft machine list`: the app's name over a table of its machines.
pub(super) fn machines_table(app: &str, machines: &[MachineResponse]) -> String {
    let rows = machines
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.name.clone(),
                m.state.clone(),
                checks_summary(&m.checks),
                m.region.clone(),
                table::short_image(&m.config.image),
                m.config
                    .metadata
                    .get("fly_process_group")
                    .cloned()
                    .unwrap_or_default(),
                m.created_at.clone(),
                m.updated_at.clone(),
            ]
        })
        .collect::<Vec<_>>();
    format!(
        "{app}\n{}",
        table::render(
            &[
                "ID",
                "NAME",
                "STATE",
                "CHECKS",
                "REGION",
                "IMAGE",
                "PROCESS GROUP",
                "CREATED",
                "LAST UPDATED"
            ],
            &rows
        )
    )
}

pub(crate) fn checks_summary(checks: &[aloft_types::api::CheckResponse]) -> String {
    if checks.is_empty() {
        return String::new();
    }
    let passing = checks
        .iter()
        .filter(|c| c.status == aloft_types::CheckStatus::Passing)
        .count();
    format!("{passing}/{}", checks.len())
}

pub(super) fn describe(machine: &MachineResponse) -> String {
    let mut text = format!(
        "Machine ID = {}\nName       = {}\nState      = {}\nRegion     = {}\nImage      = {}\nVersion    = {}\nCordoned   = {}\nCreated    = {}\n",
        machine.id,
        machine.name,
        machine.state,
        machine.region,
        machine.config.image,
        machine.version,
        machine.cordoned,
        machine.created_at
    );
    if !machine.checks.is_empty() {
        text.push_str("\nChecks\n");
        let rows: Vec<Vec<String>> = machine
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.status.to_string(),
                    c.updated_at.clone(),
                    c.output.lines().next().unwrap_or_default().to_owned(),
                ]
            })
            .collect();
        text.push_str(&table::render(
            &["NAME", "STATUS", "LAST UPDATED", "OUTPUT"],
            &rows,
        ));
    }
    if !machine.events.is_empty() {
        text.push_str("\nEvents\n");
        let rows = machine
            .events
            .iter()
            .map(|e| {
                let exit = e
                    .request
                    .get("exit_event")
                    .and_then(|x| x.get("exit_code"))
                    .map(|c| format!("exit code {c}"))
                    .unwrap_or_default();
                vec![
                    aloft_types::time::rfc3339(e.timestamp),
                    e.kind.clone(),
                    e.status.clone(),
                    e.source.clone(),
                    exit,
                ]
            })
            .collect::<Vec<_>>();
        text.push_str(&table::render(
            &["TIMESTAMP", "TYPE", "STATUS", "SOURCE", "DETAIL"],
            &rows,
        ));
    }
    text
}

/// `aloft machine leases view`: one row per machine, with its lease or none.
pub(super) fn leases_table(leases: &[(String, Option<aloft_types::api::LeaseResponse>)]) -> String {
    let rows = leases
        .iter()
        .map(|(id, lease)| match lease {
            Some(lease) => vec![
                id.clone(),
                lease.data.owner.clone(),
                lease.data.description.clone(),
                aloft_types::time::rfc3339(lease.data.expires_at.saturating_mul(1000)),
                lease.data.nonce.clone(),
            ],
            None => vec![
                id.clone(),
                "(no lease)".to_owned(),
                String::new(),
                String::new(),
                String::new(),
            ],
        })
        .collect::<Vec<_>>();
    table::render(
        &["MACHINE", "OWNER", "DESCRIPTION", "EXPIRES", "NONCE"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use aloft_types::CheckStatus;
    use aloft_types::api::CheckResponse;

    use aloft_types::machine::MachineConfig;

    use super::*;

    #[test]
    fn checks_read_as_passing_over_total() {
        let check = |status| CheckResponse {
            name: "c".to_owned(),
            status,
            output: String::new(),
            updated_at: String::new(),
        };
        assert_eq!(checks_summary(&[]), "");
        assert_eq!(
            checks_summary(&[check(CheckStatus::Passing), check(CheckStatus::Critical)]),
            "1/2"
        );
    }

    fn machine(id: &str, state: &str, group: &str, checks: &[CheckStatus]) -> MachineResponse {
        let mut config = MachineConfig {
            image: "registry.local/aloft/web@sha256:4b825dc642cb6eb9a060e54bf8d69288fbee4904aaaaaaaaaaaaaaaaaaaaaaaa".to_owned(),
            ..MachineConfig::default()
        };
        config
            .metadata
            .insert("fly_process_group".to_owned(), group.to_owned());
        MachineResponse {
            id: id.to_owned(),
            name: format!("{group}-{}", &id[..4]),
            state: state.to_owned(),
            region: "ams".to_owned(),
            instance_id: "01JEXAMPLE".to_owned(),
            version: "01JEXAMPLE".to_owned(),
            private_ip: "fdaa:0:1:a7b:ams:1::2".to_owned(),
            image_ref: aloft_types::api::ImageRef::parse(&config.image),
            config,
            events: Vec::new(),
            checks: checks
                .iter()
                .map(|status| CheckResponse {
                    name: "servicecheck-00-http-8080".to_owned(),
                    status: *status,
                    output: String::new(),
                    updated_at: String::new(),
                })
                .collect(),
            host_status: "ok".to_owned(),
            cordoned: false,
            created_at: "2026-12-06T09:00:00Z".to_owned(),
            updated_at: "2026-12-06T10:01:02Z".to_owned(),
            nonce: None,
            host: None,
        }
    }

    /// `aloft machine list`, as Fly's `machine list` lays it out.
    #[test]
    fn the_machine_list_shows_state_checks_and_process_group() {
        let machines = [
            machine("148e21ea7d2e89", "started", "app", &[CheckStatus::Passing]),
            machine(
                "3d8d9e4b1c2a70",
                "starting",
                "app",
                &[CheckStatus::Critical],
            ),
            machine("9080e6f1a2b3c4", "stopped", "worker", &[]),
        ];
        insta::assert_snapshot!(machines_table("web", &machines));
        insta::assert_snapshot!("no_machines", machines_table("web", &[]));
    }
}
