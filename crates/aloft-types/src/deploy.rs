//! The vocabulary of deployments: their strategies, the states of a deployment and of a
//! release with the transitions allowed between them, and the kinds of step a deployment
//! logs. Each is written as its snake_case name in the API and in the store.

pub use crate::named::UnknownName;

named_enum! {
    /// How a deployment replaces an app's machines.
    pub enum Strategy ("deployment strategy") {
        /// A batch of machines at a time (`max_unavailable` of them), each batch healthy
        /// before the next.
        Rolling = "rolling",
        /// Every machine at once, without waiting between them.
        Immediate = "immediate",
        /// One new machine first; when it is healthy, the rest as `rolling`.
        Canary = "canary",
        /// A new machine beside each old one; when all are healthy, traffic switches and
        /// the old ones go.
        Bluegreen = "bluegreen",
    }
}

impl Strategy {
    /// Whether the strategy makes new machines beside the old ones (which volumes, tied to
    /// one machine each, cannot follow).
    pub const fn creates_machines(self) -> bool {
        matches!(self, Strategy::Canary | Strategy::Bluegreen)
    }
}

named_enum! {
    /// Where a deployment is. `running` and `rolling_back` have work left (a control plane
    /// that starts resumes them); the other three are final.
    pub enum DeploymentStatus ("deployment status") {
        Running = "running",
        /// The release failed after machines changed: they are being put back.
        RollingBack = "rolling_back",
        Succeeded = "succeeded",
        /// Failed before any machine changed, or a rollback could not restore them all.
        Failed = "failed",
        /// Failed, and every machine runs the previous release again.
        RolledBack = "rolled_back",
    }
}

impl DeploymentStatus {
    /// Whether the deployment still has work to do.
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Running | DeploymentStatus::RollingBack
        )
    }

    /// Whether a deployment may move from `self` to `next`. Staying put is allowed (a
    /// resumed deployment repeats the write it was killed after); a final status never
    /// changes.
    pub const fn can_become(self, next: DeploymentStatus) -> bool {
        use DeploymentStatus::*;
        matches!(
            (self, next),
            (Running, Running | RollingBack | Succeeded | Failed)
                | (RollingBack, RollingBack | RolledBack | Failed)
                | (Succeeded, Succeeded)
                | (Failed, Failed)
                | (RolledBack, RolledBack)
        )
    }
}

named_enum! {
    /// Where a release is: `running` while its deployment runs, then `complete` (every
    /// machine runs it) or `failed`.
    pub enum ReleaseStatus ("release status") {
        Running = "running",
        Complete = "complete",
        Failed = "failed",
    }
}

impl ReleaseStatus {
    /// Whether a release may move from `self` to `next` (staying put is allowed; a
    /// finished release does not change).
    pub const fn can_become(self, next: ReleaseStatus) -> bool {
        use ReleaseStatus::*;
        matches!(
            (self, next),
            (Running, _) | (Complete, Complete) | (Failed, Failed)
        )
    }
}

named_enum! {
    /// What one step of a deployment did.
    pub enum StepKind ("deployment step kind") {
        /// Created a machine of the release (the app had none of its process group).
        Create = "create",
        /// Updated a machine to the release; the step keeps its previous config.
        Update = "update",
        /// The machine started and passed its checks (and smoke checks).
        Healthy = "healthy",
        /// Still waiting for the machine, and why.
        Waiting = "waiting",
        /// The machine (or the release command) failed, and why.
        Failed = "failed",
        /// Put a machine back on its previous config, or destroyed one the deployment made.
        Rollback = "rollback",
        /// Created the canary machine.
        Canary = "canary",
        /// Created a bluegreen green machine (cordoned until the switch).
        Green = "green",
        /// The green machines entered the rotation, the old ones left it.
        Switch = "switch",
        /// Destroyed a machine that the release replaced (the canary, an old blue).
        Retire = "retire",
        /// Created the release command's machine.
        ReleaseCommand = "release_command",
        /// The release command succeeded.
        Released = "released",
        /// A note about the whole deployment.
        Note = "note",
    }
}

impl StepKind {
    /// The steps that create a machine (which a rollback destroys).
    pub const CREATING: [StepKind; 3] = [StepKind::Create, StepKind::Canary, StepKind::Green];

    /// The steps after which a machine starts on the release's (or, for a rollback, its
    /// previous) config.
    pub const STARTING: [StepKind; 5] = [
        StepKind::Create,
        StepKind::Update,
        StepKind::Canary,
        StepKind::Green,
        StepKind::Rollback,
    ];
}

/// Which machines of its process group a deployment changes (flyctl's
/// `--only-machines` and `--regions`): those named, and those in the regions; an empty
/// list does not narrow. The others keep their release, and such a deployment creates no
/// machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployScope {
    /// Only these machines (ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<String>,
    /// Only machines in these regions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

impl DeployScope {
    /// Whether it narrows nothing.
    pub fn is_all(&self) -> bool {
        self.machines.is_empty() && self.regions.is_empty()
    }

    /// Whether the machine `id` in `region` is in it.
    pub fn admits(&self, id: &str, region: &str) -> bool {
        (self.machines.is_empty() || self.machines.iter().any(|m| m == id))
            && (self.regions.is_empty() || self.regions.iter().any(|r| r == region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_say_what_is_expected() {
        // serde writes the snake_case of the variant; `as_str` must say the same.
        fn check<T>(all: &[T])
        where
            T: Copy + std::fmt::Display + std::str::FromStr<Err = UnknownName>,
            T: PartialEq + std::fmt::Debug,
            T: serde::Serialize + serde::de::DeserializeOwned,
        {
            for value in all {
                assert_eq!(value.to_string().parse::<T>(), Ok(*value));
                let json = serde_json::to_string(value).unwrap();
                assert_eq!(json, format!("\"{value}\""));
                assert_eq!(serde_json::from_str::<T>(&json).unwrap(), *value);
            }
        }
        check(DeploymentStatus::ALL);
        check(ReleaseStatus::ALL);
        check(StepKind::ALL);
        check(Strategy::ALL);
        let error = "paused".parse::<DeploymentStatus>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown deployment status \"paused\" (expected one of: running, rolling_back, succeeded, failed, rolled_back)"
        );
        assert!(serde_json::from_str::<Strategy>("\"blue-green\"").is_err());
        assert!(Strategy::Bluegreen == "bluegreen");
        // Width and alignment apply, as to a string (tables and progress lines pad).
        assert_eq!(
            format!("{:<8}|{:>9}", StepKind::Note, Strategy::Rolling),
            "note    |  rolling"
        );
    }

    #[test]
    fn final_deployments_never_change_and_only_a_rollback_ends_rolled_back() {
        use DeploymentStatus::*;
        for from in DeploymentStatus::ALL {
            for to in DeploymentStatus::ALL {
                let allowed = from.can_become(*to);
                if from == to {
                    assert!(allowed, "{from} -> {to}: a repeated write");
                } else if !from.is_active() {
                    assert!(!allowed, "{from} -> {to}: {from} is final");
                }
            }
        }
        assert!(Running.can_become(Succeeded));
        assert!(!Running.can_become(RolledBack), "nothing was rolled back");
        assert!(RollingBack.can_become(RolledBack));
        assert!(!RollingBack.can_become(Succeeded));
        assert!(!RollingBack.can_become(Running));
        assert!(ReleaseStatus::Running.can_become(ReleaseStatus::Complete));
        assert!(!ReleaseStatus::Failed.can_become(ReleaseStatus::Complete));
        assert!(!ReleaseStatus::Complete.can_become(ReleaseStatus::Running));
    }
}
