//! Health-check results: the three statuses of Fly's machine checks and the names the
//! platform gives service checks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a check stands (Fly's spellings). A new run starts at `warning` until its first
/// result; only `passing` service checks let the proxy route to a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not `passing`, `warning` or `critical`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown check status {0:?} (expected passing, warning or critical)")]
pub struct UnknownCheckStatus(pub String);

impl FromStr for CheckStatus {
    type Err = UnknownCheckStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "passing" => Ok(CheckStatus::Passing),
            "warning" => Ok(CheckStatus::Warning),
            "critical" => Ok(CheckStatus::Critical),
            other => Err(UnknownCheckStatus(other.to_owned())),
        }
    }
}

/// The name of a service's check, as Fly's machines show it: `servicecheck-NN-TYPE-PORT`,
/// numbered across all of the machine's services so that names never repeat.
pub fn service_check_name(number: usize, kind: &str, port: u16) -> String {
    format!("servicecheck-{number:02}-{kind}-{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in [
            CheckStatus::Passing,
            CheckStatus::Warning,
            CheckStatus::Critical,
        ] {
            assert_eq!(status.as_str().parse::<CheckStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).ok(),
                Some(format!("\"{status}\""))
            );
        }
        assert!("ok".parse::<CheckStatus>().is_err());
    }

    #[test]
    fn service_checks_are_named_as_on_fly() {
        assert_eq!(
            service_check_name(0, "http", 8080),
            "servicecheck-00-http-8080"
        );
        assert_eq!(
            service_check_name(12, "tcp", 5432),
            "servicecheck-12-tcp-5432"
        );
    }
}
