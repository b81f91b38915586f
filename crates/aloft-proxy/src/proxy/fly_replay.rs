//! `fly-replay`: a machine's answer that sends the request elsewhere (another app,
//! region or machine), with the body kept to replay it.

use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::headers::FLY_REPLAY;
use super::lease::{Held, OutgoingBody};
use super::pick::Choice;
use super::{Proxy, ProxyBody};
use crate::body::text;
use crate::replay::{
    FailReason, Fallback, MAX_REPLAY_BODY, REPLAY_CACHE, REPLAY_CACHE_ALLOW_BYPASS,
    REPLAY_CACHE_TTL, REPLAY_JSON, Replay, ReplayError, Transform, cache_directive, failed_header,
    parse_header, parse_json, source_header,
};
use crate::routes::{Backend, Route};

/// The replay a machine's response asks for (`fly-replay` header or a replay JSON body);
/// the response itself when it asks for none; an error for a replay that cannot be read.
pub(super) async fn replay_of(
    response: Response<Incoming>,
) -> Result<Result<Replay, Response<Incoming>>, ReplayError> {
    if let Some(value) = response.headers().get(FLY_REPLAY) {
        let value = value.to_str().map_err(|_| ReplayError::NotText)?;
        let mut replay = parse_header(value)?;
        let named = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        // Caching is an optimisation: headers that cannot be read leave the replay standing.
        replay.cache = cache_directive(
            named(REPLAY_CACHE),
            named(REPLAY_CACHE_TTL),
            named(REPLAY_CACHE_ALLOW_BYPASS),
        )
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "a replay's cache headers are ignored");
            None
        });
        return Ok(Ok(replay));
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(REPLAY_JSON))
        });
    if !json {
        return Ok(Err(response));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_REPLAY_BODY)
        .collect()
        .await
        .map_err(|e| ReplayError::Body(e.to_string()))?
        .to_bytes();
    parse_json(&body).map(Ok)
}

/// A replay's `transform`: a new path, headers removed and set.
pub(super) fn apply_transform(parts: &mut http::request::Parts, transform: &Transform) {
    if let Some(path) = &transform.path
        && let Ok(uri) = path.parse::<Uri>()
    {
        parts.uri = uri;
    }
    for name in &transform.delete_headers {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            parts.headers.remove(name);
        }
    }
    for set in &transform.set_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(set.name.as_bytes()),
            HeaderValue::from_str(&set.value),
        ) {
            parts.headers.insert(name, value);
        }
    }
}

impl Proxy {
    /// Delivers the request again where `replay` says, with `fly-replay-src`; when that
    /// fails, back to the asking machine with `fly-replay-failed` if the replay has a
    /// fallback, else an error for the client.
    pub(super) async fn replay(
        &self,
        origin_app: &str,
        public_port: u16,
        origin: &Backend,
        replay: &Replay,
        parts: &http::request::Parts,
        body: &mut OutgoingBody,
    ) -> Result<(Response<Incoming>, Held, Backend), Response<ProxyBody>> {
        let started = Instant::now();
        let target_app = replay
            .app
            .as_deref()
            .unwrap_or(origin_app)
            .to_ascii_lowercase();
        let catalog = self.catalog.read().map(|c| c.clone()).unwrap_or_default();
        let network = |name: &str| {
            catalog
                .apps
                .iter()
                .find(|a| a.name == name)
                .map(|a| (a.org_id.clone(), a.network))
        };
        if network(&target_app).is_none() || network(&target_app) != network(origin_app) {
            return Err(text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "fly-replay from app {origin_app} to app {target_app}: no such app in its organization's network\n"
                ),
            ));
        }
        let routes = self.routes();
        let mut backends: Vec<Backend> = routes
            .route(&target_app, public_port)
            .map(|r| r.backends.clone())
            .unwrap_or_default();
        backends.retain(|b| {
            (replay.regions.is_empty() || replay.regions.iter().any(|r| *r == *b.region))
                && replay.instance.as_ref().is_none_or(|i| *b.machine == **i)
                && !(replay.elsewhere && b.machine == origin.machine)
        });
        let mut replayed = parts.clone();
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        if let Ok(value) = HeaderValue::from_str(&source_header(
            &origin.machine,
            &origin.region,
            micros,
            replay.state.as_deref(),
        )) {
            replayed
                .headers
                .insert(HeaderName::from_static("fly-replay-src"), value);
        }
        apply_transform(&mut replayed, &replay.transform);
        let reason = if backends.is_empty() {
            FailReason::NoCandidate
        } else {
            let choice = Choice {
                backends,
                h2_backend: routes
                    .route(&target_app, public_port)
                    .is_some_and(Route::h2_backend),
                preferred_instance: replay.prefer_instance.clone(),
                regions: vec![self.config.region.clone()],
            };
            let queue = replay.timeout.unwrap_or(self.config.queue_timeout);
            let sent = tokio::time::timeout(
                replay.timeout.unwrap_or(Duration::MAX),
                self.send(&target_app, &choice, (&replayed, body), None, queue),
            )
            .await;
            match sent {
                Ok(Ok(sent)) => return Ok(sent),
                Ok(Err(_)) => FailReason::RetriesExhausted,
                Err(_) => FailReason::Timeout,
            }
        };
        let failed = failed_header(
            replay,
            &target_app,
            &origin.machine,
            reason,
            started.elapsed(),
        );
        tracing::debug!(app = %origin_app, %failed, "a replay failed");
        let Some(fallback) = replay.fallback else {
            return Err(text(
                StatusCode::BAD_GATEWAY,
                format!("fly-replay failed: {failed}\n"),
            ));
        };
        // Back to the machine that asked (or, for prefer_self, any of its app's).
        let mut back = parts.clone();
        if let Ok(value) = HeaderValue::from_str(&failed) {
            back.headers
                .insert(HeaderName::from_static("fly-replay-failed"), value);
        }
        let own: Vec<Backend> = routes
            .route(origin_app, public_port)
            .map(|r| r.backends.clone())
            .unwrap_or_default();
        let choice = Choice {
            h2_backend: routes
                .route(origin_app, public_port)
                .is_some_and(Route::h2_backend),
            backends: match fallback {
                Fallback::ForceSelf => vec![origin.clone()],
                Fallback::PreferSelf if own.is_empty() => vec![origin.clone()],
                Fallback::PreferSelf => own,
            },
            preferred_instance: Some(origin.machine.to_string()),
            regions: vec![self.config.region.clone()],
        };
        self.send(
            origin_app,
            &choice,
            (&back, body),
            None,
            self.config.queue_timeout,
        )
        .await
        .map_err(|failure| failure.into_response(origin_app))
    }
}
