//! A running machine's memory limit, read and changed in place.

use aloft_types::api::{MemoryResponse, SetMemoryLimitRequest};
use reqwest::Method;

use super::{Client, ClientError};

impl Client {
    /// The limit a running machine runs under and the most it may be set to.
    pub async fn machine_memory(&self, app: &str, id: &str) -> Result<MemoryResponse, ClientError> {
        self.get(&format!("/v1/apps/{app}/machines/{id}/memory"))
            .await
    }

    /// Changes a running machine's memory limit in place (no restart), up to its size,
    /// until it next starts.
    pub async fn set_machine_memory(
        &self,
        app: &str,
        id: &str,
        limit_mb: u64,
    ) -> Result<MemoryResponse, ClientError> {
        self.call(
            Method::PUT,
            &format!("/v1/apps/{app}/machines/{id}/memory"),
            Some(&SetMemoryLimitRequest {
                limit_mb: Some(limit_mb),
            }),
        )
        .await
    }
}
