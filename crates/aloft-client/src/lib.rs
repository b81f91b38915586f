//! A typed client of Aloft's Machines API (Fly's paths and JSON). Errors keep the API's
//! status and message so callers can tell "not found" from "conflict" from "unreachable".
//!
//! Main types: [`Client`], [`ClientError`]. Apps, machines, deployments, builds and logs
//! are here; secrets and volumes in `data`, organizations, tokens and SSH in `access`,
//! the platform's regions and hosts in `platform`.

use aloft_types::percent_encode as encode;
mod access;
mod data;
mod deploys;
mod leases;
mod memory;
mod platform;
pub mod scale;
pub mod tls;

pub use deploys::{BuildRequest, LogsRequest};
pub use leases::LEASE_NONCE_HEADER;
pub use platform::HostAction;
pub use tls::Trust;

use std::time::Duration;

use aloft_types::api::{
    AppConfigResponse, AppList, AppResponse, CreateAppRequest, EventResponse, ExecRequest,
    ExecResponse, MachineRequest, MachineResponse, OkResponse, SignalRequest, StopRequest,
    VersionResponse,
};
use aloft_types::{MachineState, Signal};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A build ran and failed (the builder's own message).
    #[error("the build failed: {0}")]
    Build(String),
    /// The API answered with an error status. Shown with the next step to take.
    #[error("{message}{}", next_step(*status))]
    Api { status: u16, message: String },
    /// No answer from the API: `cause` is the innermost reason (connection refused, say).
    #[error(
        "cannot reach the Aloft API at {url}: {cause}. Is aloftd running there? Set the API's URL with `aloft auth login --api-url URL` or ALOFT_API_URL"
    )]
    Unreachable { url: String, cause: String },
    /// The API answered over TLS with a certificate this client does not trust.
    #[error(
        "refused the Aloft API at {url}: {cause}. If the platform's CA changed, log in again with `aloft auth login --api-url {url} --ca-fingerprint sha256:...` (aloftd prints the fingerprint at its first start)"
    )]
    Untrusted { url: String, cause: String },
    /// The trust setting could not be used (a CA file that is not a certificate).
    #[error(transparent)]
    Trust(#[from] tls::TrustError),
    #[error("the API's answer to {what} could not be read")]
    Decode {
        what: String,
        #[source]
        source: reqwest::Error,
    },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one Aloft API with one token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    /// The TLS settings of `https://` APIs (for the SSH tunnel's own connection too).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Longest time any single call may take (exec and wait bring their own, shorter, limits).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest time a build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);

impl Client {
    /// `base_url` such as `http://127.0.0.1:4280`; an `https://` API must have a
    /// certificate from a public CA (see [`Client::with_trust`]).
    pub fn new(base_url: &str, token: &str) -> Client {
        // The public roots with ring's safe protocol versions always make a configuration.
        Client::with_config(base_url, token, tls::client_config(&Trust::Public).ok())
    }

    /// A client that trusts `trust`'s certificates for an `https://` API.
    pub fn with_trust(base_url: &str, token: &str, trust: &Trust) -> Result<Client, ClientError> {
        Ok(Client::with_config(
            base_url,
            token,
            Some(tls::client_config(trust)?),
        ))
    }

    fn with_config(base_url: &str, token: &str, tls: Option<rustls::ClientConfig>) -> Client {
        let http = Client::builder(tls.as_ref())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Client {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            tls: tls.map(std::sync::Arc::new),
        }
    }

    /// A reqwest builder with `tls` (ring's, which is also installed as the process's
    /// default: reqwest has no crypto provider of its own here).
    fn builder(tls: Option<&rustls::ClientConfig>) -> reqwest::ClientBuilder {
        let _ = rustls::crypto::ring::default_provider().install_default();
        #[allow(
            clippy::disallowed_methods,
            reason = "the one place that builds the API's clients, with ring installed"
        )]
        let builder = reqwest::Client::builder();
        match tls {
            Some(tls) => builder.tls_backend_preconfigured(tls.clone()),
            None => builder,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to `path` with the token.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    fn unreachable(&self, error: reqwest::Error) -> ClientError {
        if let Some(cause) = tls::certificate_problem(&error) {
            return ClientError::Untrusted {
                url: self.base.clone(),
                cause,
            };
        }
        let cause = if error.is_timeout() {
            "no answer in time".to_owned()
        } else {
            let mut innermost: &dyn std::error::Error = &error;
            while let Some(next) = innermost.source() {
                innermost = next;
            }
            innermost.to_string()
        };
        ClientError::Unreachable {
            url: self.base.clone(),
            cause,
        }
    }

    /// Sends `request`; an error status becomes [`ClientError::Api`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(api_error(status, response.text().await.unwrap_or_default()));
        }
        Ok(response)
    }

    /// Reads a streamed NDJSON body line by line (blank lines are keep-alives), calling
    /// `each` until it returns `false` or the body ends.
    async fn ndjson_lines<T: DeserializeOwned>(
        &self,
        mut response: reqwest::Response,
        mut each: impl FnMut(T) -> Result<bool, ClientError>,
    ) -> Result<(), ClientError> {
        let status = response.status().as_u16();
        let mut pending = Vec::new();
        loop {
            let chunk = response.chunk().await.map_err(|e| self.unreachable(e))?;
            let ended = chunk.is_none();
            match chunk {
                Some(chunk) => pending.extend_from_slice(&chunk),
                None if !pending.is_empty() => pending.push(b'\n'),
                None => {}
            }
            while let Some(at) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=at).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let item = serde_json::from_slice(&line).map_err(|e| ClientError::Api {
                    status,
                    message: format!("an unreadable line in the answer: {e}"),
                })?;
                if !each(item)? {
                    return Ok(());
                }
            }
            if ended {
                return Ok(());
            }
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(api_error(status, response.text().await.unwrap_or_default()));
        }
        if status == StatusCode::NO_CONTENT || status == StatusCode::ACCEPTED {
            return serde_json::from_str("null")
                .or_else(|_| serde_json::from_str("{}"))
                .map_err(|_| ClientError::Api {
                    status: status.as_u16(),
                    message: "empty answer".to_owned(),
                });
        }
        response.json().await.map_err(|source| ClientError::Decode {
            what: format!("{method} {path}"),
            source,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// A DELETE whose answer body is not needed.
    async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(Method::DELETE, path, None::<&()>)
            .await
            .map(|_| ())
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    // Apps.

    pub async fn create_app(
        &self,
        name: &str,
        org_slug: Option<&str>,
    ) -> Result<AppResponse, ClientError> {
        self.create_app_in_network(name, org_slug, None).await
    }

    /// Creates an app in a named private network of its organization (the default one
    /// when `network` is `None`); an app's network never changes.
    pub async fn create_app_in_network(
        &self,
        name: &str,
        org_slug: Option<&str>,
        network: Option<&str>,
    ) -> Result<AppResponse, ClientError> {
        let request = CreateAppRequest {
            app_name: name.to_owned(),
            org_slug: org_slug.map(str::to_owned),
            network: network.map(str::to_owned),
        };
        self.post("/v1/apps", &request).await
    }

    pub async fn list_apps(&self) -> Result<AppList, ClientError> {
        self.get("/v1/apps").await
    }

    pub async fn app(&self, name: &str) -> Result<AppResponse, ClientError> {
        self.get(&format!("/v1/apps/{name}")).await
    }

    /// The fly.toml the app's current release was deployed from.
    pub async fn app_config(&self, name: &str) -> Result<AppConfigResponse, ClientError> {
        self.get(&format!("/v1/apps/{name}/config")).await
    }

    pub async fn delete_app(&self, name: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/apps/{name}")).await
    }

    // Machines.

    pub async fn create_machine(
        &self,
        app: &str,
        request: &MachineRequest,
    ) -> Result<MachineResponse, ClientError> {
        self.post(&format!("/v1/apps/{app}/machines"), request)
            .await
    }

    pub async fn update_machine(
        &self,
        app: &str,
        id: &str,
        request: &MachineRequest,
    ) -> Result<MachineResponse, ClientError> {
        self.post(&format!("/v1/apps/{app}/machines/{id}"), request)
            .await
    }

    // Deployments and releases.

    /// The edge's local CA certificate, PEM.
    pub async fn local_ca(&self) -> Result<String, ClientError> {
        let url = format!("{}/v1/certs/ca", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(api_error(status, text));
        }
        Ok(text)
    }

    /// Asks the private network's DNS server for `name` as the app's machines would.
    pub async fn dig(
        &self,
        app: &str,
        name: &str,
        record_type: &str,
    ) -> Result<aloft_types::api::DigResponse, ClientError> {
        self.get(&format!(
            "/v1/apps/{app}/dns?name={}&type={}",
            encode(name),
            encode(record_type)
        ))
        .await
    }

    /// The app's own hostnames (every page).
    pub async fn list_certificates(
        &self,
        app: &str,
    ) -> Result<Vec<aloft_types::api::CertificateSummary>, ClientError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(after) => format!("/v1/apps/{app}/certificates?cursor={}", encode(after)),
                None => format!("/v1/apps/{app}/certificates"),
            };
            let page: aloft_types::api::CertificateList = self.get(&path).await?;
            all.extend(page.certificates);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One page of the app's hostnames (`cursor`: the last page's `next_cursor`).
    pub async fn certificates_page(
        &self,
        app: &str,
        filter: Option<&str>,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<aloft_types::api::CertificateList, ClientError> {
        let mut query = Vec::new();
        if let Some(filter) = filter {
            query.push(format!("filter={}", encode(filter)));
        }
        if let Some(cursor) = cursor {
            query.push(format!("cursor={}", encode(cursor)));
        }
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        let path = if query.is_empty() {
            format!("/v1/apps/{app}/certificates")
        } else {
            format!("/v1/apps/{app}/certificates?{}", query.join("&"))
        };
        self.get(&path).await
    }

    /// Adds a hostname whose certificate an ACME directory issues once its DNS points at
    /// the app.
    pub async fn add_acme_certificate(
        &self,
        app: &str,
        hostname: &str,
    ) -> Result<aloft_types::api::CertificateDetail, ClientError> {
        self.add_hostname(app, hostname, "acme").await
    }

    /// Adds a hostname whose certificate the edge's local CA issues.
    pub async fn add_certificate(
        &self,
        app: &str,
        hostname: &str,
    ) -> Result<aloft_types::api::CertificateDetail, ClientError> {
        self.add_hostname(app, hostname, "local").await
    }

    /// `POST /v1/apps/{app}/certificates/{kind}` with a hostname.
    async fn add_hostname(
        &self,
        app: &str,
        hostname: &str,
        kind: &str,
    ) -> Result<aloft_types::api::CertificateDetail, ClientError> {
        let request = aloft_types::api::AddCertificateRequest {
            hostname: hostname.to_owned(),
        };
        self.post(&format!("/v1/apps/{app}/certificates/{kind}"), &request)
            .await
    }

    /// Adds a hostname with an imported certificate (PEM chain and key).
    pub async fn import_certificate(
        &self,
        app: &str,
        request: &aloft_types::api::ImportCertificateRequest,
    ) -> Result<aloft_types::api::CertificateDetail, ClientError> {
        self.post(&format!("/v1/apps/{app}/certificates/custom"), request)
            .await
    }

    /// One hostname, whole.
    pub async fn certificate(
        &self,
        app: &str,
        hostname: &str,
    ) -> Result<aloft_types::api::CertificateDetail, ClientError> {
        self.get(&format!("/v1/apps/{app}/certificates/{}", encode(hostname)))
            .await
    }

    /// Looks at the hostname's DNS now (and makes its ACME order due).
    pub async fn check_certificate(
        &self,
        app: &str,
        hostname: &str,
    ) -> Result<aloft_types::api::CertificateDetail, ClientError> {
        self.post(
            &format!("/v1/apps/{app}/certificates/{}/check", encode(hostname)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Removes one of the app's hostnames, with its certificates.
    pub async fn remove_certificate(&self, app: &str, hostname: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/apps/{app}/certificates/{}", encode(hostname)))
            .await
    }

    /// Removes the hostname's ACME (`"acme"`) or imported (`"custom"`) certificate only.
    pub async fn remove_certificate_kind(
        &self,
        app: &str,
        hostname: &str,
        kind: &str,
    ) -> Result<aloft_types::api::CertificateDetail, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/apps/{app}/certificates/{}/{kind}", encode(hostname)),
            None::<&()>,
        )
        .await
    }

    /// The app's dedicated IPv4 addresses.
    pub async fn list_ips(
        &self,
        app: &str,
    ) -> Result<Vec<aloft_types::api::IpResponse>, ClientError> {
        self.get(&format!("/v1/apps/{app}/ips")).await
    }

    /// Gives the app a dedicated IPv4 address from the operator's pool.
    pub async fn allocate_ipv4(
        &self,
        app: &str,
        region: Option<&str>,
    ) -> Result<aloft_types::api::IpResponse, ClientError> {
        let request = aloft_types::api::AllocateIpRequest {
            kind: "v4".to_owned(),
            region: region.map(str::to_owned),
        };
        self.post(&format!("/v1/apps/{app}/ips"), &request).await
    }

    /// Takes one of the app's addresses back.
    pub async fn release_ip(&self, app: &str, address: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/apps/{app}/ips/{}", encode(address)))
            .await
    }

    pub async fn list_machines(&self, app: &str) -> Result<Vec<MachineResponse>, ClientError> {
        self.get(&format!("/v1/apps/{app}/machines")).await
    }

    pub async fn machine(&self, app: &str, id: &str) -> Result<MachineResponse, ClientError> {
        self.get(&format!("/v1/apps/{app}/machines/{id}")).await
    }

    /// The app's short history (`range`: `1h` or `24h`): requests, latency, and its
    /// machines' CPU, memory and network, oldest first.
    pub async fn metrics_history(
        &self,
        app: &str,
        range: aloft_types::history::HistoryRange,
    ) -> Result<aloft_types::history::MetricsHistory, ClientError> {
        self.get(&format!(
            "/v1/apps/{app}/metrics/history?range={}",
            range.as_str()
        ))
        .await
    }

    /// The processes running in a started machine (Fly's `ps`).
    pub async fn machine_processes(
        &self,
        app: &str,
        id: &str,
    ) -> Result<Vec<aloft_types::api::ProcessStat>, ClientError> {
        self.get(&format!("/v1/apps/{app}/machines/{id}/ps")).await
    }

    pub async fn start_machine(&self, app: &str, id: &str) -> Result<OkResponse, ClientError> {
        self.post(
            &format!("/v1/apps/{app}/machines/{id}/start"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn stop_machine(
        &self,
        app: &str,
        id: &str,
        signal: Option<Signal>,
        timeout: Option<aloft_types::Duration>,
    ) -> Result<OkResponse, ClientError> {
        self.post(
            &format!("/v1/apps/{app}/machines/{id}/stop"),
            &StopRequest { signal, timeout },
        )
        .await
    }

    pub async fn restart_machine(&self, app: &str, id: &str) -> Result<OkResponse, ClientError> {
        self.restart_machine_forced(app, id, false).await
    }

    /// Restarts a machine; `force_stop` kills the old run at once instead of stopping it.
    pub async fn restart_machine_forced(
        &self,
        app: &str,
        id: &str,
        force_stop: bool,
    ) -> Result<OkResponse, ClientError> {
        self.post(
            &format!("/v1/apps/{app}/machines/{id}/restart?force_stop={force_stop}"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn signal_machine(
        &self,
        app: &str,
        id: &str,
        signal: Signal,
    ) -> Result<OkResponse, ClientError> {
        self.post(
            &format!("/v1/apps/{app}/machines/{id}/signal"),
            &SignalRequest { signal },
        )
        .await
    }

    pub async fn destroy_machine(
        &self,
        app: &str,
        id: &str,
        force: bool,
    ) -> Result<OkResponse, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/apps/{app}/machines/{id}?force={force}"),
            None::<&()>,
        )
        .await
    }

    pub async fn cordon_machine(
        &self,
        app: &str,
        id: &str,
        cordoned: bool,
    ) -> Result<OkResponse, ClientError> {
        let action = if cordoned { "cordon" } else { "uncordon" };
        self.post(
            &format!("/v1/apps/{app}/machines/{id}/{action}"),
            &serde_json::json!({}),
        )
        .await
    }

    /// Runs a command (a list of words) in a started machine.
    pub async fn exec(
        &self,
        app: &str,
        id: &str,
        command: Vec<String>,
        timeout: Option<u64>,
    ) -> Result<ExecResponse, ClientError> {
        let request = ExecRequest {
            command,
            cmd: None,
            stdin: None,
            timeout,
        };
        self.post(&format!("/v1/apps/{app}/machines/{id}/exec"), &request)
            .await
    }

    /// Waits (at most `timeout_seconds`, ≤ 60) for the machine to reach `state`.
    pub async fn wait(
        &self,
        app: &str,
        id: &str,
        state: MachineState,
        timeout_seconds: u64,
    ) -> Result<aloft_types::api::WaitResponse, ClientError> {
        self.get(&format!(
            "/v1/apps/{app}/machines/{id}/wait?state={state}&timeout={timeout_seconds}"
        ))
        .await
    }

    pub async fn events(&self, app: &str, id: &str) -> Result<Vec<EventResponse>, ClientError> {
        self.get(&format!("/v1/apps/{app}/machines/{id}/events"))
            .await
    }

    pub async fn versions(&self, app: &str, id: &str) -> Result<Vec<VersionResponse>, ClientError> {
        self.get(&format!("/v1/apps/{app}/machines/{id}/versions"))
            .await
    }
}

/// What to do after an error status, for the statuses whose message cannot say it.
fn next_step(status: u16) -> &'static str {
    match status {
        401 => {
            " (HTTP 401: the token was refused). Log in again with `aloft auth login --token TOKEN --api-url URL`, or set ALOFT_API_TOKEN"
        }
        403 => {
            " (HTTP 403: this token may not do that). Use an org token (`aloft tokens create org`) or one for this app"
        }
        500..=599 => " (the server failed; its log says why). Try again, or tell the operator",
        _ => "",
    }
}

/// The error of a failed answer: the API's `{"error": "..."}` message, else the body, else
/// the status.
fn api_error(status: StatusCode, text: String) -> ClientError {
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| {
            if text.is_empty() {
                status.to_string()
            } else {
                text
            }
        });
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}
