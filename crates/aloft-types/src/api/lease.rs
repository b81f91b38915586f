//! Machine leases as Fly's API shows them (fly-go's `MachineLease`).

use serde::{Deserialize, Serialize};

/// `GET`/`POST .../lease`: the lease held on a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseResponse {
    /// `success`.
    pub status: String,
    pub data: LeaseData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseData {
    /// What a writer sends in `fly-machine-lease-nonce` while it holds the lease.
    pub nonce: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub owner: String,
    #[serde(default)]
    pub description: String,
    /// The machine's version when the lease was read.
    pub version: String,
}
