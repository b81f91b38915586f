//! The platform: its regions, its hosts (the operator's) and where machines would go.

use super::{Client, ClientError};

impl Client {
    /// The regions that have hosts, and the control plane's (`nearest`).
    pub async fn platform_regions(&self) -> Result<aloft_types::api::PlatformRegions, ClientError> {
        self.get("/v1/platform/regions").await
    }

    /// Every host of the platform (the operator's token only).
    pub async fn platform_hosts(&self) -> Result<aloft_types::api::PlatformHosts, ClientError> {
        self.get("/v1/platform/hosts").await
    }

    /// Sets a host's state (the operator's token only): `cordon` (no new machines),
    /// `uncordon` (back to up), or `drain` (its machines move to other hosts one by one).
    pub async fn set_host_state(
        &self,
        host: &str,
        action: HostAction,
    ) -> Result<aloft_types::api::PlatformHost, ClientError> {
        self.post(
            &format!("/v1/platform/hosts/{host}/{}", action.as_str()),
            &serde_json::json!({}),
        )
        .await
    }

    /// Where machines of a size would go, without creating any.
    pub async fn placements(
        &self,
        request: &aloft_types::api::PlacementsRequest,
    ) -> Result<aloft_types::api::Placements, ClientError> {
        self.post("/v1/platform/placements", request).await
    }
}

/// What the operator does to a host ([`Client::set_host_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAction {
    Cordon,
    Uncordon,
    Drain,
}

impl HostAction {
    pub fn as_str(self) -> &'static str {
        match self {
            HostAction::Cordon => "cordon",
            HostAction::Uncordon => "uncordon",
            HostAction::Drain => "drain",
        }
    }
}
