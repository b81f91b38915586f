//! A deployment's scope: flyctl's `--only-machines` and `--regions`, checked against the
//! app's machines when the deployment is asked for.

use aloft_store::App;
use aloft_types::MachineId;
use aloft_types::deploy::{DeployScope, Strategy};
use aloft_types::machine::MachineConfig;

use super::steps::group_of;
use crate::{ApiError, Inner};

/// The scope `only_machines` and `regions` give a deployment of `config` (its process
/// group), or `None` for the whole group. Each machine named must be a live machine of the
/// group, and at least one machine of the group must be in scope; only rolling and
/// immediate deployments take one (the others create machines).
pub(super) async fn of(
    inner: &Inner,
    app: &App,
    config: &MachineConfig,
    strategy: Strategy,
    only_machines: Option<Vec<String>>,
    regions: Option<Vec<String>>,
) -> Result<Option<DeployScope>, ApiError> {
    let clean = |list: Option<Vec<String>>| -> Vec<String> {
        let mut list: Vec<String> = list
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        list.sort();
        list.dedup();
        list
    };
    let scope = DeployScope {
        machines: clean(only_machines),
        regions: clean(regions),
    };
    if scope.is_all() {
        return Ok(None);
    }
    if !matches!(strategy, Strategy::Rolling | Strategy::Immediate) {
        return Err(ApiError::BadRequest(format!(
            "only_machines and regions apply to rolling and immediate deployments; strategy \"{strategy}\" creates machines of its own"
        )));
    }
    let group = group_of(config);
    let live: Vec<_> = inner
        .store
        .list_machines(&app.id, &aloft_store::MachineFilter::default())
        .await?
        .into_iter()
        .filter(|m| !m.state.is_terminal() && m.desired != aloft_store::Desired::Destroyed)
        .filter(|m| group_of(&m.config) == group)
        .collect();
    for named in &scope.machines {
        named.parse::<MachineId>().map_err(|e| {
            ApiError::BadRequest(format!("only_machines: {named:?} is not a machine id: {e}"))
        })?;
        if !live.iter().any(|m| m.id.as_str() == named) {
            return Err(ApiError::Unprocessable(format!(
                "only_machines: {named} is not a live machine of process group {group} of app {}",
                app.name
            )));
        }
    }
    if !live.iter().any(|m| scope.admits(m.id.as_str(), &m.region)) {
        let mut regions: Vec<&str> = live.iter().map(|m| m.region.as_str()).collect();
        regions.sort_unstable();
        regions.dedup();
        return Err(ApiError::Unprocessable(format!(
            "no machine of process group {group} of app {} is in regions {} (its machines are in: {})",
            app.name,
            scope.regions.join(", "),
            if regions.is_empty() {
                "none".to_owned()
            } else {
                regions.join(", ")
            }
        )));
    }
    Ok(Some(scope))
}
