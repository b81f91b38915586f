//! Machine states, with the transitions the platform allows (Fly's machine states).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a machine is in its life. Persistent states last; transient ones pass; terminal
/// ones never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Creating,
    Created,
    Starting,
    Started,
    Stopping,
    Stopped,
    Restarting,
    Suspending,
    Suspended,
    Updating,
    Replacing,
    Destroying,
    Failed,
    LaunchFailed,
    Destroyed,
    Replaced,
    Migrated,
}

/// A state name that is not one of [`MachineState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown machine state {0:?}")]
pub struct UnknownState(pub String);

impl MachineState {
    pub const ALL: [MachineState; 17] = [
        MachineState::Creating,
        MachineState::Created,
        MachineState::Starting,
        MachineState::Started,
        MachineState::Stopping,
        MachineState::Stopped,
        MachineState::Restarting,
        MachineState::Suspending,
        MachineState::Suspended,
        MachineState::Updating,
        MachineState::Replacing,
        MachineState::Destroying,
        MachineState::Failed,
        MachineState::LaunchFailed,
        MachineState::Destroyed,
        MachineState::Replaced,
        MachineState::Migrated,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            MachineState::Creating => "creating",
            MachineState::Created => "created",
            MachineState::Starting => "starting",
            MachineState::Started => "started",
            MachineState::Stopping => "stopping",
            MachineState::Stopped => "stopped",
            MachineState::Restarting => "restarting",
            MachineState::Suspending => "suspending",
            MachineState::Suspended => "suspended",
            MachineState::Updating => "updating",
            MachineState::Replacing => "replacing",
            MachineState::Destroying => "destroying",
            MachineState::Failed => "failed",
            MachineState::LaunchFailed => "launch_failed",
            MachineState::Destroyed => "destroyed",
            MachineState::Replaced => "replaced",
            MachineState::Migrated => "migrated",
        }
    }

    /// Destroyed, replaced or migrated: the machine (version) is gone for good.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            MachineState::Destroyed | MachineState::Replaced | MachineState::Migrated
        )
    }

    /// Whether the platform may move a machine from `self` to `next`.
    pub fn can_become(self, next: MachineState) -> bool {
        use MachineState::*;
        if self == next {
            return !self.is_terminal();
        }
        if self.is_terminal() {
            return false;
        }
        match next {
            // Anything alive can be destroyed (force), updated or fail.
            Destroying | Destroyed | Updating | Failed => true,
            Creating => false,
            Created => matches!(self, Creating | Updating),
            Starting => matches!(
                self,
                Created | Stopped | Suspended | Failed | Restarting | Updating | Started
            ),
            Started => matches!(
                self,
                Starting | Restarting | Created | Stopped | Suspended | Updating
            ),
            Stopping => matches!(self, Started | Starting | Restarting | Suspended),
            Stopped => matches!(
                self,
                Stopping
                    | Started
                    | Starting
                    | Restarting
                    | Created
                    | Suspended
                    | Updating
                    | Failed
            ),
            Restarting => matches!(self, Started | Stopped | Failed | Starting),
            Suspending => matches!(self, Started),
            Suspended => matches!(self, Suspending),
            Replacing => !matches!(self, Creating),
            LaunchFailed => matches!(self, Creating | Starting),
            Replaced => matches!(self, Replacing | Updating),
            Migrated => !matches!(self, Creating),
        }
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for MachineState {
    type Err = UnknownState;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        MachineState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
            .ok_or_else(|| UnknownState(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in MachineState::ALL {
            assert_eq!(state.as_str().parse::<MachineState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    #[test]
    fn terminal_states_never_change() {
        for terminal in MachineState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for next in MachineState::ALL {
                assert!(!terminal.can_become(next), "{terminal} -> {next}");
            }
        }
    }

    #[test]
    fn the_common_life_is_allowed() {
        use MachineState::*;
        let life = [
            Creating, Created, Starting, Started, Stopping, Stopped, Starting, Started, Destroying,
            Destroyed,
        ];
        for pair in life.windows(2) {
            assert!(pair[0].can_become(pair[1]), "{} -> {}", pair[0], pair[1]);
        }
        assert!(!Stopped.can_become(Suspended));
        assert!(!Created.can_become(Creating));
    }
}
