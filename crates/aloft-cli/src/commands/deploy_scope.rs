//! flyctl's `--only-machines` and `--regions` for `aloft deploy`: each process group's
//! deployment changes only those of its machines, and a group with none of them is not
//! deployed at all.

use aloft_types::api::DeployRequest;

use crate::Failure;
use crate::output::Output;

/// `requests` (one per process group) narrowed to the machines `only_machines` names and
/// those in `regions`; all of them unchanged when both are empty.
pub(crate) async fn narrow(
    client: &aloft_client::Client,
    app: &str,
    requests: Vec<(String, DeployRequest)>,
    (only_machines, regions): (&[String], &[String]),
    out: &mut Output,
) -> Result<Vec<(String, DeployRequest)>, Failure> {
    if only_machines.is_empty() && regions.is_empty() {
        return Ok(requests);
    }
    let machines: Vec<_> = client
        .list_machines(app)
        .await
        .map_err(|e| anyhow::Error::from(e).context(format!("listing the machines of {app}")))?
        .into_iter()
        .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
        .collect();
    if let Some(unknown) = only_machines
        .iter()
        .find(|id| !machines.iter().any(|m| &m.id == *id))
    {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--only-machines: app {app} has no machine {unknown} (see `aloft machine list`)"
        )));
    }
    let in_scope = |m: &&aloft_types::api::MachineResponse| {
        (only_machines.is_empty() || only_machines.contains(&m.id))
            && (regions.is_empty() || regions.contains(&m.region))
    };
    let mut narrowed = Vec::new();
    for (group, mut request) in requests {
        let of_group: Vec<&str> = machines
            .iter()
            .filter(|m| m.config.process_group().unwrap_or("app") == group)
            .filter(in_scope)
            .map(|m| m.id.as_str())
            .collect();
        if of_group.is_empty() {
            out.status(&format!(
                "process group {group}: none of its machines is in --only-machines/--regions; not deployed"
            ));
            continue;
        }
        if !only_machines.is_empty() {
            request.only_machines = Some(of_group.iter().map(|id| (*id).to_owned()).collect());
        }
        if !regions.is_empty() {
            request.regions = Some(regions.to_vec());
        }
        narrowed.push((group, request));
    }
    if narrowed.is_empty() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "nothing to deploy: no machine of app {app} is in --only-machines/--regions"
        )));
    }
    Ok(narrowed)
}
