//! Organizations, tokens and SSH certificates and tunnels.

use std::time::Duration;

use aloft_types::api::{
    CreateOrgRequest, CreateTokenRequest, CreatedOrg, CreatedToken, OrgResponse, TokenResponse,
};

use reqwest::StatusCode;

use super::{Client, ClientError, api_error};

impl Client {
    // Organizations and tokens.

    // SSH.

    /// Signs a user certificate for `request.public_key` with the organization's CA.
    pub async fn ssh_certificate(
        &self,
        org: &str,
        request: &aloft_types::api::SshCertificateRequest,
    ) -> Result<aloft_types::api::SshCertificate, ClientError> {
        self.post(&format!("/v1/orgs/{org}/ssh/certificates"), request)
            .await
    }

    /// Opens the API's SSH tunnel to `machine`'s host: the returned stream carries SSH.
    pub async fn ssh_tunnel(
        &self,
        app: &str,
        machine: &str,
    ) -> Result<reqwest::Upgraded, ClientError> {
        // No overall timeout: the tunnel lives as long as the session.
        let http = Client::builder(self.tls.as_deref())
            .http1_only()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| self.unreachable(e))?;
        let response = http
            .get(format!(
                "{}/v1/apps/{app}/machines/{machine}/ssh",
                self.base
            ))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, "ssh")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(api_error(status, response.text().await.unwrap_or_default()));
        }
        response.upgrade().await.map_err(|e| self.unreachable(e))
    }

    pub async fn list_orgs(&self) -> Result<Vec<OrgResponse>, ClientError> {
        self.get("/v1/orgs").await
    }

    pub async fn create_org(
        &self,
        slug: &str,
        name: Option<&str>,
    ) -> Result<CreatedOrg, ClientError> {
        self.post(
            "/v1/orgs",
            &CreateOrgRequest {
                slug: slug.to_owned(),
                name: name.map(str::to_owned),
            },
        )
        .await
    }

    pub async fn org(&self, slug: &str) -> Result<OrgResponse, ClientError> {
        self.get(&format!("/v1/orgs/{slug}")).await
    }

    pub async fn delete_org(&self, slug: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/orgs/{slug}")).await
    }

    pub async fn create_token(
        &self,
        request: &CreateTokenRequest,
    ) -> Result<CreatedToken, ClientError> {
        self.post("/v1/tokens", request).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenResponse>, ClientError> {
        self.get("/v1/tokens").await
    }

    pub async fn current_token(&self) -> Result<TokenResponse, ClientError> {
        self.get("/v1/tokens/current").await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/tokens/{id}")).await
    }
}
