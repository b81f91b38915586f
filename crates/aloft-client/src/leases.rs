//! Machines' leases and suspension, as `aloft machine leases` and `suspend` use them.

use aloft_types::api::{LeaseResponse, OkResponse};
use reqwest::Method;

use super::{Client, ClientError};

/// The header that carries a lease's nonce (Fly's).
pub const LEASE_NONCE_HEADER: &str = "fly-machine-lease-nonce";

impl Client {
    /// The lease held on a machine; a 404 when none is.
    pub async fn machine_lease(&self, app: &str, id: &str) -> Result<LeaseResponse, ClientError> {
        self.get(&format!("/v1/apps/{app}/machines/{id}/lease"))
            .await
    }

    /// Takes a lease on a machine for `ttl_seconds`: until it expires or is released, a
    /// change of the machine must carry its nonce.
    pub async fn acquire_lease(
        &self,
        app: &str,
        id: &str,
        ttl_seconds: u64,
        description: &str,
    ) -> Result<LeaseResponse, ClientError> {
        self.post(
            &format!("/v1/apps/{app}/machines/{id}/lease"),
            &serde_json::json!({ "ttl": ttl_seconds, "description": description }),
        )
        .await
    }

    /// Releases the lease whose nonce is `nonce`.
    pub async fn release_lease(&self, app: &str, id: &str, nonce: &str) -> Result<(), ClientError> {
        let request = self
            .request(
                Method::DELETE,
                &format!("/v1/apps/{app}/machines/{id}/lease"),
            )
            .header(LEASE_NONCE_HEADER, nonce);
        self.send(request).await.map(|_| ())
    }

    /// Suspends a machine (here: stops it, as Fly does where suspend is unavailable).
    pub async fn suspend_machine(&self, app: &str, id: &str) -> Result<OkResponse, ClientError> {
        self.post(
            &format!("/v1/apps/{app}/machines/{id}/suspend"),
            &serde_json::json!({}),
        )
        .await
    }
}
