//! Image builds (Aloft's own API): `POST /v1/apps/{app}/builds` takes a build context (a
//! tar archive, as `aloft deploy` packs it honouring `.dockerignore`), writes it to a
//! file as it arrives (never whole in memory; at most the builder's
//! [`ImageBuilder::max_context_bytes`], else 413), builds it with the Docker Engine of
//! the control plane's host and streams the builder's output as NDJSON ([`BuildEvent`]
//! lines), the last naming the image by its id (`sha256:...`, a content digest), which is
//! what a release then runs. The file goes when the build's answer ends or is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use aloft_types::api::{BuildEvent, ErrorBody};
use aloft_types::build::{BuildOptions, BuildProgress, BuilderError};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::header;
use axum::response::Response;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use std::path::{Path, PathBuf};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::WriteApp;
use crate::{ApiError, Inner};
use aloft_agent_api::BoxFuture;

/// What builds images and names them by id: the Docker Engine of the control plane's
/// host in `aloftd server`.
pub trait ImageBuilder: Send + Sync {
    /// Where build contexts are written as they arrive (a directory only the host's
    /// root reads).
    fn spool_dir(&self) -> &Path;

    /// The largest build context taken, in bytes.
    fn max_context_bytes(&self) -> u64;

    /// Builds the context in the file `context` (a tar archive, which stays until the
    /// stream is dropped); the stream's last item is the image's id.
    fn build(
        &self,
        context: PathBuf,
        options: BuildOptions,
    ) -> BoxStream<'static, Result<BuildProgress, BuilderError>>;

    /// The id (`sha256:...`) of a local image, `None` when the engine does not have it.
    fn resolve<'a>(&'a self, image: &'a str)
    -> BoxFuture<'a, Result<Option<String>, BuilderError>>;

    /// Removes every image tagged in `repository` (an app's builds, once the app is
    /// destroyed); returns how many tags went.
    fn remove_repository<'a>(
        &'a self,
        repository: &'a str,
    ) -> BoxFuture<'a, Result<usize, BuilderError>>;
}

/// The repository an app's builds are tagged in.
pub(crate) fn repository_of(app: &str) -> String {
    format!("aloft/{app}")
}

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(build))
        // The handler counts the context itself, against the builder's limit.
        .layer(DefaultBodyLimit::disable())
}

/// Options of a build, in the query string.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct BuildQuery {
    /// The Dockerfile's path inside the context (default `Dockerfile`).
    dockerfile: Option<String>,
    /// The stage to build (default: the last one).
    target: Option<String>,
    /// `ARG` values, as a JSON object of strings.
    args: Option<String>,
    /// Run every step again, none from the builder's cache (deploy's `--no-cache`).
    no_cache: Option<bool>,
}

use aloft_types::api::BUILD_SECRET_HEADER;

/// The build secrets of a request's headers, by id.
fn build_secrets(headers: &axum::http::HeaderMap) -> Result<BTreeMap<String, String>, ApiError> {
    use base64::Engine as _;
    let mut secrets = BTreeMap::new();
    for value in headers.get_all(BUILD_SECRET_HEADER) {
        let bad = |why: &str| {
            ApiError::BadRequest(format!(
                "{BUILD_SECRET_HEADER}: {why}; send ID=<the value in base64>, one header per secret"
            ))
        };
        let text = value.to_str().map_err(|_| bad("not text"))?;
        let (id, encoded) = text.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let id = id.trim();
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(bad(&format!(
                "secret id {id:?} must be letters, digits, `_`, `-` or `.`"
            )));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad(&format!("the value of {id} is not base64")))?;
        let value = String::from_utf8(decoded)
            .map_err(|_| bad(&format!("the value of {id} is not UTF-8")))?;
        secrets.insert(id.to_owned(), value);
    }
    Ok(secrets)
}

fn line(event: &BuildEvent) -> Bytes {
    let mut text = serde_json::to_vec(event).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

#[utoipa::path(post, path = "/v1/apps/{app}/builds", tag = "deployments", params(("app" = String, Path, description = "The app's name"), BuildQuery, ("aloft-build-secret" = Option<String>, Header, description = "A build secret for `RUN --mount=type=secret,id=ID`: `ID=<value in base64>`, one header per secret (BuildKit only; never stored)")), request_body(content = Vec<u8>, content_type = "application/x-tar", description = "The build context, a tar archive"), responses((status = 200, description = "The builder's output as NDJSON, one BuildEvent per line; the last has `image` (success) or `error`", body = BuildEvent, content_type = "application/x-ndjson"), (status = "4XX", description = "Bad options, missing or invalid token, no such app, a context past the server's limit (413)", body = ErrorBody), (status = 503, description = "This server cannot build images", body = ErrorBody)), operation_id = "Builds_create")]
async fn build(
    State(inner): State<Arc<Inner>>,
    WriteApp(app): WriteApp,
    Query(query): Query<BuildQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let builder = inner.builder()?;
    let secrets = build_secrets(&headers)?;
    let args: BTreeMap<String, String> = match &query.args {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            ApiError::BadRequest(format!("args: expected a JSON object of strings: {e}"))
        })?,
        None => BTreeMap::new(),
    };
    let dockerfile = query.dockerfile.unwrap_or_else(|| "Dockerfile".to_owned());
    if dockerfile.trim().is_empty() || dockerfile.starts_with('/') || dockerfile.contains("..") {
        return Err(ApiError::BadRequest(format!(
            "dockerfile {dockerfile:?}: a relative path inside the build context"
        )));
    }
    let (context, bytes) = spool(builder.as_ref(), body).await?;
    if bytes == 0 {
        return Err(ApiError::BadRequest(
            "the build context is empty: send a tar archive with the Dockerfile in it".to_owned(),
        ));
    }
    let tag = format!(
        "{}:build-{}",
        repository_of(app.name.as_str()),
        aloft_store::random_hex()
    );
    let options = BuildOptions {
        dockerfile,
        tag: tag.clone(),
        target: query.target.filter(|t| !t.is_empty()),
        args,
        labels: BTreeMap::from([("dev.aloft.app".to_owned(), app.name.to_string())]),
        secrets,
        no_cache: query.no_cache.unwrap_or(false),
    };
    tracing::info!(app = %app.name, %tag, bytes, "building an image");
    let app_name = app.name.to_string();
    let events = builder
        .build(context.to_path_buf(), options)
        .map(move |progress| {
            // The context's file lives as long as the answer.
            let _context = &context;
            let event = match progress {
                Ok(BuildProgress::Output(output)) => BuildEvent {
                    output: Some(output),
                    ..BuildEvent::default()
                },
                Ok(BuildProgress::Built { id }) => {
                    tracing::info!(app = %app_name, %tag, image = %id, "image built");
                    BuildEvent {
                        image: Some(id),
                        tag: Some(tag.clone()),
                        ..BuildEvent::default()
                    }
                }
                Err(error) => {
                    tracing::warn!(app = %app_name, %tag, %error, "a build failed");
                    BuildEvent {
                        error: Some(error.to_string()),
                        ..BuildEvent::default()
                    }
                }
            };
            Ok::<_, std::convert::Infallible>(line(&event))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(events))
        .map_err(|e| ApiError::Internal(Box::new(e)))
}

/// Writes the request's body to a new file in the builder's spool directory, counting
/// it against the builder's limit; returns the file (removed when dropped) and its size.
async fn spool(
    builder: &dyn ImageBuilder,
    body: Body,
) -> Result<(tempfile::TempPath, u64), ApiError> {
    use tokio::io::AsyncWriteExt as _;
    let internal = |error: std::io::Error| ApiError::Internal(Box::new(error));
    let limit = builder.max_context_bytes();
    let file = tempfile::Builder::new()
        .prefix("context-")
        .suffix(".tar")
        .tempfile_in(builder.spool_dir())
        .map_err(internal)?;
    let (file, path) = file.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut written: u64 = 0;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|error| ApiError::BadRequest(format!("reading the build context: {error}")))?;
        written = written.saturating_add(chunk.len() as u64);
        if written > limit {
            return Err(ApiError::TooLarge(format!(
                "the build context is larger than this server takes ({} MiB, [build] \
                 max_context_mb): leave out what the image does not need with .dockerignore",
                limit >> 20
            )));
        }
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    Ok((path, written))
}

impl Inner {
    pub(crate) fn builder(&self) -> Result<Arc<dyn ImageBuilder>, ApiError> {
        self.builder.clone().ok_or_else(|| {
            ApiError::Unavailable(
                "this server has no image builder (it runs without a Docker Engine)".to_owned(),
            )
        })
    }
}
