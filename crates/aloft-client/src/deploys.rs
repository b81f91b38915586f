//! Builds, deployments, releases, logs and log sinks.

use std::time::Duration;

use reqwest::Method;

use super::{BUILD_TIMEOUT, Client, ClientError};

/// Filters of [`Client::logs`] and [`Client::follow_logs`] (see the API's `LogsQuery`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsRequest {
    pub since: Option<String>,
    pub until: Option<String>,
    pub machine: Option<String>,
    pub region: Option<String>,
    pub text: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub newest: Option<bool>,
}

impl LogsRequest {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        let fields = [
            ("since", &self.since),
            ("until", &self.until),
            ("machine", &self.machine),
            ("region", &self.region),
            ("text", &self.text),
            ("cursor", &self.cursor),
        ];
        for (key, value) in fields {
            if let Some(value) = value {
                query.push((key, value.clone()));
            }
        }
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(newest) = self.newest {
            query.push(("newest", newest.to_string()));
        }
        query
    }
}

/// How to build an image ([`Client::build`]). `Debug` shows secrets' names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BuildRequest {
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// `ARG` values.
    pub args: std::collections::BTreeMap<String, String>,
    /// Build secrets by id (`RUN --mount=type=secret,id=ID`); sent in headers, never
    /// stored.
    pub secrets: std::collections::BTreeMap<String, String>,
    /// Run every step again, none from the builder's cache.
    pub no_cache: bool,
}

impl std::fmt::Debug for BuildRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildRequest")
            .field("dockerfile", &self.dockerfile)
            .field("target", &self.target)
            .field("args", &self.args)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("no_cache", &self.no_cache)
            .finish()
    }
}

impl Client {
    pub async fn create_log_sink(
        &self,
        request: &aloft_types::api::CreateLogSinkRequest,
    ) -> Result<aloft_types::api::LogSinkResponse, ClientError> {
        self.post("/v1/log_sinks", request).await
    }

    pub async fn log_sinks(&self) -> Result<Vec<aloft_types::api::LogSinkResponse>, ClientError> {
        self.get("/v1/log_sinks").await
    }

    pub async fn remove_log_sink(&self, id: &str) -> Result<(), ClientError> {
        self.delete(&format!("/v1/log_sinks/{id}")).await
    }

    /// A page of the app's log lines.
    pub async fn logs(
        &self,
        app: &str,
        request: &LogsRequest,
    ) -> Result<aloft_types::api::LogsResponse, ClientError> {
        let path = format!("/v1/apps/{app}/logs");
        let response = self
            .send(self.request(Method::GET, &path).query(&request.query()))
            .await?;
        response.json().await.map_err(|source| ClientError::Decode {
            what: format!("GET {path}"),
            source,
        })
    }

    /// Follows the app's log lines as they are stored (after `request.cursor`, else from
    /// now), calling `each` with every line until it returns `false` or the server ends
    /// the stream; returns the server's reason when it gave one (shutting down, the app
    /// destroyed).
    pub async fn follow_logs(
        &self,
        app: &str,
        request: &LogsRequest,
        mut each: impl FnMut(aloft_types::api::LogEntryResponse) -> bool,
    ) -> Result<Option<aloft_types::api::StreamEnd>, ClientError> {
        let path = format!("/v1/apps/{app}/logs/stream");
        let response = self
            .send(
                self.request(Method::GET, &path)
                    .query(&request.query())
                    .timeout(Duration::from_secs(365 * 86_400)),
            )
            .await?;
        let mut ended = None;
        self.ndjson_lines(response, |line| match line {
            aloft_types::api::LogStreamLine::Entry(entry) => Ok(each(entry)),
            aloft_types::api::LogStreamLine::End(end) => {
                ended = Some(end);
                Ok(false)
            }
        })
        .await?;
        Ok(ended)
    }

    /// Builds an image from `context` (a tar archive) on the server, calling `output` with
    /// the builder's output as it comes; returns the built image's id.
    pub async fn build(
        &self,
        app: &str,
        context: Vec<u8>,
        options: &BuildRequest,
        mut output: impl FnMut(&str),
    ) -> Result<aloft_types::api::BuildEvent, ClientError> {
        let path = format!("/v1/apps/{app}/builds");
        let mut query: Vec<(&str, String)> = vec![("dockerfile", options.dockerfile.clone())];
        if let Some(target) = &options.target {
            query.push(("target", target.clone()));
        }
        if !options.args.is_empty() {
            query.push((
                "args",
                serde_json::to_string(&options.args).unwrap_or_default(),
            ));
        }
        if options.no_cache {
            query.push(("no_cache", "true".to_owned()));
        }
        let mut request = self
            .request(Method::POST, &path)
            .query(&query)
            .header("content-type", "application/x-tar")
            .timeout(BUILD_TIMEOUT);
        for (id, value) in &options.secrets {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            request = request.header(
                aloft_types::api::BUILD_SECRET_HEADER,
                format!("{id}={encoded}"),
            );
        }
        let response = self.send(request.body(context)).await?;
        let mut last = None;
        self.ndjson_lines(response, |event: aloft_types::api::BuildEvent| {
            if let Some(text) = &event.output {
                output(text);
            }
            if event.image.is_some() || event.error.is_some() {
                last = Some(event);
            }
            Ok(true)
        })
        .await?;
        match last {
            Some(event) if event.image.is_some() => Ok(event),
            Some(event) => Err(ClientError::Build(event.error.unwrap_or_default())),
            None => Err(ClientError::Build(
                "the build ended without naming an image".to_owned(),
            )),
        }
    }

    /// Starts a server-side deployment of a new release; follow it with [`Client::deployment`].
    pub async fn deploy(
        &self,
        app: &str,
        request: &aloft_types::api::DeployRequest,
    ) -> Result<aloft_types::api::DeploymentResponse, ClientError> {
        self.post(&format!("/v1/apps/{app}/deployments"), request)
            .await
    }

    /// Starts a deployment of a new release with release `version`'s image and config.
    pub async fn rollback(
        &self,
        app: &str,
        version: i64,
    ) -> Result<aloft_types::api::DeploymentResponse, ClientError> {
        self.post(
            &format!("/v1/apps/{app}/releases/{version}/rollback"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn deployment(
        &self,
        app: &str,
        id: &str,
    ) -> Result<aloft_types::api::DeploymentResponse, ClientError> {
        self.get(&format!("/v1/apps/{app}/deployments/{id}")).await
    }

    /// The app's deployments, newest first.
    pub async fn deployments(
        &self,
        app: &str,
    ) -> Result<Vec<aloft_types::api::DeploymentResponse>, ClientError> {
        self.get(&format!("/v1/apps/{app}/deployments")).await
    }

    /// The app's releases, newest first.
    pub async fn releases(
        &self,
        app: &str,
    ) -> Result<Vec<aloft_types::api::ReleaseResponse>, ClientError> {
        self.get(&format!("/v1/apps/{app}/releases")).await
    }
}
