//! Secrets and volumes.

use std::collections::BTreeMap;

use aloft_types::api::{
    CreateVolumeRequest, ExtendResponse, ExtendVolumeRequest, SecretInfo, SecretsUpdate,
    SecretsVersion, VolumeResponse, VolumeSnapshotResponse,
};

use reqwest::Method;

use super::{Client, ClientError};

impl Client {
    // Secrets.

    /// Sets (`Some`) and unsets (`None`) secrets in one change.
    pub async fn update_secrets(
        &self,
        app: &str,
        values: BTreeMap<String, Option<String>>,
    ) -> Result<SecretsVersion, ClientError> {
        self.post(
            &format!("/v1/apps/{app}/secrets"),
            &SecretsUpdate { values },
        )
        .await
    }

    pub async fn list_secrets(&self, app: &str) -> Result<Vec<SecretInfo>, ClientError> {
        let list: aloft_types::api::SecretList =
            self.get(&format!("/v1/apps/{app}/secrets")).await?;
        Ok(list.secrets)
    }

    // Volumes.

    pub async fn create_volume(
        &self,
        app: &str,
        request: &CreateVolumeRequest,
    ) -> Result<VolumeResponse, ClientError> {
        self.post(&format!("/v1/apps/{app}/volumes"), request).await
    }

    pub async fn list_volumes(&self, app: &str) -> Result<Vec<VolumeResponse>, ClientError> {
        self.get(&format!("/v1/apps/{app}/volumes")).await
    }

    pub async fn volume(&self, app: &str, id: &str) -> Result<VolumeResponse, ClientError> {
        self.get(&format!("/v1/apps/{app}/volumes/{id}")).await
    }

    pub async fn extend_volume(
        &self,
        app: &str,
        id: &str,
        size_gb: i64,
    ) -> Result<ExtendResponse, ClientError> {
        self.call(
            Method::PUT,
            &format!("/v1/apps/{app}/volumes/{id}/extend"),
            Some(&ExtendVolumeRequest { size_gb }),
        )
        .await
    }

    /// Fly's volume update: snapshot retention and daily snapshots
    /// (`auto_backup_enabled`).
    pub async fn update_volume(
        &self,
        app: &str,
        id: &str,
        request: &aloft_types::api::UpdateVolumeRequest,
    ) -> Result<VolumeResponse, ClientError> {
        self.call(
            Method::PUT,
            &format!("/v1/apps/{app}/volumes/{id}"),
            Some(request),
        )
        .await
    }

    /// A volume's snapshots, oldest first.
    pub async fn volume_snapshots(
        &self,
        app: &str,
        id: &str,
    ) -> Result<Vec<VolumeSnapshotResponse>, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/apps/{app}/volumes/{id}/snapshots"),
            None::<&()>,
        )
        .await
    }

    /// Takes a snapshot of a volume now; answers when its host has written it.
    pub async fn create_volume_snapshot(
        &self,
        app: &str,
        id: &str,
    ) -> Result<VolumeSnapshotResponse, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/apps/{app}/volumes/{id}/snapshots"),
            None::<&()>,
        )
        .await
    }

    pub async fn destroy_volume(&self, app: &str, id: &str) -> Result<VolumeResponse, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/apps/{app}/volumes/{id}"),
            None::<&()>,
        )
        .await
    }
}
