//! The deployer's vocabulary: its step log (writing steps, finding machines in it), the
//! config a release's machines run and when a machine already runs it, process groups,
//! and how many machines one batch replaces.

use aloft_store::{DeploymentRecord, DeploymentStep, ReleaseRecord};
use aloft_types::MachineId;
use aloft_types::deploy::{StepKind, Strategy};
use aloft_types::machine::{
    METADATA_PLATFORM_VERSION, METADATA_RELEASE_ID, METADATA_RELEASE_VERSION, MachineConfig,
};

use crate::{ApiError, Inner};

pub(super) use crate::placement::group_of;

/// Whether a machine already runs `target` (the platform's own metadata aside).
pub(super) fn runs(machine: &MachineConfig, target: &MachineConfig) -> bool {
    let plain = |config: &MachineConfig| {
        let mut config = config.clone();
        config.metadata.remove(METADATA_PLATFORM_VERSION);
        // Which deployment created a machine is the machine's, not the release's.
        config.metadata.remove(METADATA_DEPLOYMENT);
        config.metadata.remove(METADATA_DEPLOYMENT_STEP);
        // A machine that replaced one of a lost or drained host runs the same release.
        config.metadata.remove(crate::hostwatch::METADATA_REPLACES);
        // Which volume a mount got (and its size then) is the machine's, not the release's.
        for mount in &mut config.mounts {
            mount.volume.clear();
            mount.size_gb = 0;
            mount.encrypted = false;
        }
        serde_json::to_value(config).ok()
    };
    plain(machine) == plain(target)
}

/// How many machines one batch replaces, as flyctl reads `max_unavailable`: 1 or more is
/// a count of machines (`1` is one machine, not all of them), below 1 a fraction of the
/// group, rounded up (`0.33` of 3 machines is 1, of 10 is 4). Never 0, never more than the
/// group.
pub(super) fn batch_size(strategy: Strategy, max_unavailable: f64, machines: usize) -> usize {
    if strategy == Strategy::Immediate {
        return machines.max(1);
    }
    let size = if max_unavailable >= 1.0 {
        max_unavailable.trunc() as usize
    } else {
        // The epsilon keeps 0.1 of 30 machines at 3 (the product is 3.0000000000000004).
        (max_unavailable * machines as f64 - 1e-9).ceil().max(0.0) as usize
    };
    size.clamp(1, machines.max(1))
}

pub(super) async fn step(
    inner: &Inner,
    deployment: &DeploymentRecord,
    machine: Option<&MachineId>,
    kind: StepKind,
    message: &str,
    previous: Option<&MachineConfig>,
) -> Result<(), ApiError> {
    tracing::info!(deployment = %deployment.id, machine = ?machine.map(MachineId::as_str), %kind, message, "deployment step");
    inner
        .store
        .append_step(&deployment.id, machine, kind, message, previous)
        .await?;
    aloft_crash::reach(aloft_crash::Point::DeployStep);
    if let Some(machine) = machine {
        let text = format!("deploy {}: {kind}: {message}", deployment.id);
        crate::logs::platform_line(inner.logs.as_ref(), &inner.store, machine, text).await;
    }
    Ok(())
}

/// The machines steps of `kind` name, in order.
pub(super) fn machines_in(steps: &[DeploymentStep], kind: StepKind) -> Vec<MachineId> {
    steps
        .iter()
        .filter(|s| s.kind == kind)
        .filter_map(|s| s.machine_id.clone())
        .collect()
}

/// The config the release's machines run: the release's, with its version and id in the
/// metadata (Fly's keys), so `aloft status` can say which release a machine runs.
pub(super) fn target_of(release: &ReleaseRecord) -> MachineConfig {
    let mut config = release.config.clone();
    config.metadata.insert(
        METADATA_RELEASE_VERSION.to_owned(),
        release.version.to_string(),
    );
    config
        .metadata
        .insert(METADATA_RELEASE_ID.to_owned(), release.id.clone());
    config
}

/// Metadata naming the deployment that created a machine, and the step kind it was
/// created for (`create`, `canary`, `green`, `release_command`). The step is logged once
/// the machine exists (it names the machine's id); a machine created just before a
/// restart, whose step was not logged yet, is found by these and adopted when the
/// deployment resumes, instead of being left behind.
pub(super) const METADATA_DEPLOYMENT: &str = "aloft_deployment";

pub(super) const METADATA_DEPLOYMENT_STEP: &str = "aloft_deployment_step";

pub(super) fn created_by(
    mut config: MachineConfig,
    deployment: &DeploymentRecord,
    kind: StepKind,
) -> MachineConfig {
    config
        .metadata
        .insert(METADATA_DEPLOYMENT.to_owned(), deployment.id.clone());
    config.metadata.insert(
        METADATA_DEPLOYMENT_STEP.to_owned(),
        kind.as_str().to_owned(),
    );
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_max_unavailable() {
        assert_eq!(
            batch_size(Strategy::Rolling, 1.0, 3),
            1,
            "1 is one machine, not 100%"
        );
        assert_eq!(
            batch_size(Strategy::Canary, 1.0, 3),
            1,
            "1 is one machine, not 100%"
        );
        assert_eq!(batch_size(Strategy::Rolling, 1.0, 1), 1);
        assert_eq!(batch_size(Strategy::Rolling, 0.33, 3), 1);
        assert_eq!(
            batch_size(Strategy::Rolling, 0.34, 3),
            2,
            "rounded up, as flyctl does"
        );
        assert_eq!(batch_size(Strategy::Rolling, 0.33, 10), 4);
        assert_eq!(batch_size(Strategy::Rolling, 0.1, 30), 3, "no float noise");
        assert_eq!(batch_size(Strategy::Rolling, 0.5, 1), 1, "never zero");
        assert_eq!(batch_size(Strategy::Rolling, 0.01, 3), 1, "never zero");
        assert_eq!(batch_size(Strategy::Rolling, 0.999, 3), 3);
        assert_eq!(batch_size(Strategy::Rolling, 2.0, 5), 2, "a count");
        assert_eq!(batch_size(Strategy::Rolling, 2.0, 3), 2, "a count");
        assert_eq!(batch_size(Strategy::Rolling, 9.0, 5), 5, "at most all");
        assert_eq!(batch_size(Strategy::Rolling, 1.0, 0), 1);
        assert_eq!(batch_size(Strategy::Immediate, 0.33, 5), 5);
        assert_eq!(batch_size(Strategy::Immediate, 1.0, 5), 5);
    }

    #[test]
    fn a_machine_runs_a_release_whatever_the_platform_metadata() {
        let target = MachineConfig {
            image: "web:2".to_owned(),
            ..MachineConfig::default()
        };
        let mut running = target.clone();
        running
            .metadata
            .insert(METADATA_PLATFORM_VERSION.to_owned(), "v2".to_owned());
        assert!(runs(&running, &target));
        running.image = "web:1".to_owned();
        assert!(!runs(&running, &target));
        assert_eq!(group_of(&target), "app");
    }
}
