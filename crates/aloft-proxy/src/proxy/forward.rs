//! Forwarding one request: routing it by host, sending it to a machine (retrying an
//! idempotent request on another machine when one closes without answering), upgrades,
//! and the bodies that hold a machine's lease until they end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aloft_types::machine::{ConcurrencyKind, Handler};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;

use super::conn::Activity;
use super::fly_replay::replay_of;
use super::headers::{
    FLY_REQUEST_ID, HOP_BY_HOP, VIA_ALOFT, apply_response_headers, request_id_at, wants_upgrade,
};
use super::lease::{Held, Leased, OutgoingBody, Pinned};
use super::pick::{Choice, Seen};
use super::replay_cache::{CACHE_STATUS, Caching};
use super::{BoxError, Proxy, ProxyBody};
use crate::balance::Lease;
use crate::body::{empty, text};
use crate::replay::{MAX_REPLAY_BODY, MAX_REPLAYS};
use crate::routes::Backend;

/// Whether a request's body is read before it is sent: none, or a length up to 1 MiB.
pub(super) fn buffers(headers: &http::HeaderMap, body: &Incoming) -> bool {
    if body.is_end_stream() {
        return true;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|length| length <= MAX_REPLAY_BODY)
}

/// Methods that may be sent twice without harm (RFC 9110, 9.2.2).
pub(super) fn idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

/// Why a request reached no machine.
#[derive(Debug)]
pub(super) enum SendFailure {
    /// Every machine stayed at its hard limit for the whole wait.
    Full(Duration),
    /// These machines refused the connection.
    Refused(Vec<Arc<str>>),
    /// This machine took the connection and gave no answer.
    NoAnswer(Arc<str>),
    BadPath(String),
}

impl SendFailure {
    pub(super) fn into_response(self, app: &str) -> Response<ProxyBody> {
        match self {
            SendFailure::Full(waited) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("every machine of app {app} is at its hard limit; waited {waited:?}\n"),
            ),
            SendFailure::Refused(machines) => text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "no machine of app {app} answered (tried {})\n",
                    machines.join(", ")
                ),
            ),
            SendFailure::NoAnswer(machine) => text(
                StatusCode::BAD_GATEWAY,
                format!("machine {machine} of app {app} did not answer\n"),
            ),
            SendFailure::BadPath(path) => {
                text(StatusCode::BAD_REQUEST, format!("bad path {path:?}\n"))
            }
        }
    }
}

/// Joins the client's and the machine's upgraded connections (a WebSocket, say); the
/// machine's lease is held until the tunnel closes.
pub(super) fn tunnel(
    mut response: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    lease: Held,
    machine: Arc<str>,
) -> Response<ProxyBody> {
    let backend_upgrade = hyper::upgrade::on(&mut response);
    if let Some(client_upgrade) = client_upgrade {
        tokio::spawn(async move {
            let _lease = lease;
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((client_io, backend_io)) => {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(client_io),
                        &mut TokioIo::new(backend_io),
                    )
                    .await;
                }
                Err(error) => {
                    tracing::debug!(%machine, error = %error, "an upgrade failed");
                }
            }
        });
    }
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, empty())
}

impl Proxy {
    /// Answers one request that arrived on a shared listener (`tls`: the HTTPS one).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
        local_port: u16,
        tls: bool,
    ) -> Response<ProxyBody> {
        self.handle_for(request, client, local_port, tls, None, None)
            .await
    }

    /// Answers one request: for the app its `Host` names, or for `fixed` (an app and its
    /// public port) on an app's own address.
    pub(super) async fn handle_for(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
        local_port: u16,
        tls: bool,
        fixed: Option<(String, u16)>,
        activity: Option<&Activity>,
    ) -> Response<ProxyBody> {
        if !tls && let Some(answer) = self.acme_http(&request) {
            return answer;
        }
        let started = Instant::now();
        let request_id = request_id_at(&self.config.region, started);
        let handler = match (&fixed, tls) {
            (Some(_), _) => "app_address",
            (None, true) => "https",
            (None, false) => "http",
        };
        let mut seen = Seen::default();
        let mut response = self
            .route(
                request,
                client,
                (local_port, tls),
                fixed,
                activity.map(|a| &a.pinned),
                &mut seen,
            )
            .await;
        let Seen {
            options,
            app,
            idle_timeout,
        } = seen;
        if let (Some(activity), Some(seconds)) = (activity, idle_timeout) {
            activity.set_limit_seconds(seconds);
        }
        if let Some(app) = &app {
            self.metrics
                .request(app, response.status().as_u16(), handler, started.elapsed());
        }
        let headers = response.headers_mut();
        if !options.as_ref().and_then(|o| o.pristine).unwrap_or(false) {
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                headers.insert(FLY_REQUEST_ID, value);
            }
            headers.append(header::VIA, VIA_ALOFT);
            headers.insert(header::SERVER, HeaderValue::from_static("Aloft/1"));
        }
        if let Some(options) = &options {
            apply_response_headers(headers, options);
        }
        response
    }

    /// Routes one request. `listener` is the local port and whether it speaks TLS;
    /// `pinned` is the client connection's machine under `concurrency.type =
    /// "connections"`.
    pub(super) async fn route(
        &self,
        mut request: Request<Incoming>,
        client: SocketAddr,
        (local_port, tls): (u16, bool),
        fixed: Option<(String, u16)>,
        pinned: Option<&Pinned>,
        seen: &mut Seen,
    ) -> Response<ProxyBody> {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let (app, public_port) = match fixed {
            Some(fixed) => fixed,
            None => {
                let Some(app) = self.routes().app_for_host(&host, &self.config.apps_domain) else {
                    return text(
                        StatusCode::NOT_FOUND,
                        format!(
                            "no app answers at {host:?}: apps answer at <app>.{} and at hostnames added with `aloft certs add`\n",
                            self.config.apps_domain
                        ),
                    );
                };
                (app, if tls { 443 } else { 80 })
            }
        };
        let routes = self.routes();
        if !routes.has_app(&app) {
            return text(StatusCode::NOT_FOUND, format!("there is no app {app}\n"));
        }
        seen.app = Some(app.clone());
        let Some(route) = routes.route(&app, public_port) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("app {app} has no service on port {public_port}\n"),
            );
        };
        seen.options.clone_from(&route.response);
        seen.idle_timeout = route.http_options.as_ref().and_then(|o| o.idle_timeout);
        if !route.handlers.contains(&Handler::Http) {
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                format!("app {app}'s port {public_port} does not speak HTTP\n"),
            );
        }
        if route.force_https && !tls {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let name = host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n);
            let mut response = text(StatusCode::MOVED_PERMANENTLY, String::new());
            let authority = aloft_types::https_authority(name, self.config.public_https_port);
            if let Ok(location) = HeaderValue::from_str(&format!("https://{authority}{path}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            return response;
        }
        let backends = match self.started_backends(&app, public_port, route).await {
            Ok(backends) => backends,
            Err(response) => return response,
        };
        // An upgrade (WebSocket, say) keeps its two headers and becomes a tunnel on 101.
        let upgrade = wants_upgrade(request.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let choice = match Choice::of(request.headers(), backends, &self.config.region) {
            Ok(choice) => Choice {
                h2_backend: route.h2_backend(),
                ..choice
            },
            Err(why) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("app {app}: {why}\n"),
                );
            }
        };
        if upgrade.is_none()
            && let Some(response) = self
                .static_file(request.method(), request.uri().path(), &choice)
                .await
        {
            return response;
        }
        self.forwarded_headers(request.headers_mut(), &host, client, local_port, tls);
        if let Some(protocol) = &upgrade {
            let headers = request.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        let (parts, body) = request.into_parts();
        // A body of known size up to 1 MiB is read first: the request can then be sent again
        // (to another machine when one refuses the connection, or by fly-replay).
        let mut body = if upgrade.is_none() && buffers(&parts.headers, &body) {
            match body.collect().await {
                Ok(collected) => OutgoingBody::Buffered(collected.to_bytes()),
                Err(error) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("reading the request body failed: {error}\n"),
                    );
                }
            }
        } else {
            OutgoingBody::Streaming(Some(body.map_err(BoxError::from).boxed()))
        };
        // A replay remembered for this request goes straight to its target.
        let mut caching = self.replay_caching(&app, &host, route, &parts, &body);
        let hit = match &caching {
            Some(caching) => {
                self.cached_replay(&app, public_port, caching, &parts, &mut body)
                    .await
            }
            None => None,
        };
        let from_cache = hit.is_some();
        let (response, lease, backend) = match hit {
            Some(sent) => sent,
            None => match self
                .send(
                    &app,
                    &choice,
                    (&parts, &mut body),
                    pinned,
                    self.config.queue_timeout,
                )
                .await
            {
                Ok(sent) => sent,
                Err(failure) => return failure.into_response(&app),
            },
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return tunnel(response, client_upgrade, lease, backend.machine);
        }
        let mut response = response;
        let mut lease = lease;
        let mut backend = backend;
        for round in 0..MAX_REPLAYS {
            let replay = match replay_of(response).await {
                Ok(Ok(replay)) => replay,
                Ok(Err(answered)) => {
                    response = answered;
                    break;
                }
                Err(bad) => {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "machine {} of app {app} asked for a replay the proxy cannot read: {bad}\n",
                            backend.machine
                        ),
                    );
                }
            };
            let OutgoingBody::Buffered(_) = &body else {
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "machine {} of app {app} asked for a replay, but only requests with a body of known size up to {MAX_REPLAY_BODY} bytes can be replayed\n",
                        backend.machine
                    ),
                );
            };
            drop(lease);
            let mut replayed = parts.clone();
            if caching.is_none() && replay.cache.is_some() {
                caching = Some(Caching::bare(&host, &parts));
            }
            if let Some(caching) = &caching {
                self.learn_replay(&app, caching, &replay, &backend, round == 0 && !from_cache);
            }
            replayed
                .headers
                .insert(CACHE_STATUS, Caching::status(caching.as_ref(), from_cache));
            match self
                .replay(&app, public_port, &backend, &replay, &replayed, &mut body)
                .await
            {
                Ok((next, next_lease, next_backend)) => {
                    (response, lease, backend) = (next, next_lease, next_backend);
                }
                Err(failed) => return failed,
            }
        }
        let (mut parts, body) = response.into_parts();
        for name in &HOP_BY_HOP {
            parts.headers.remove(name);
        }
        let body = Leased {
            inner: body,
            held: lease,
            ended: false,
        };
        Response::from_parts(parts, body.map_err(BoxError::from).boxed())
    }

    /// Sends the request to a machine `choice` allows: the connection's `pinned` one when
    /// it has one, else the least-loaded, nearest first, waiting up to `queue` for one under
    /// its hard limit (and pinning it when its service counts connections). A machine that
    /// refuses the connection is left for another when the body can be sent again.
    pub(super) async fn send(
        &self,
        app: &str,
        choice: &Choice,
        (parts, body): (&http::request::Parts, &mut OutgoingBody),
        pinned: Option<&Pinned>,
        queue: Duration,
    ) -> Result<(Response<Incoming>, Held, Backend), SendFailure> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut failed: Vec<Arc<str>> = Vec::new();
        let attempts = if matches!(body, OutgoingBody::Buffered(_)) {
            3
        } else {
            1
        };
        for attempt in 0..attempts {
            let (backend, lease) = match pinned.and_then(|p| p.backend(choice, &failed)) {
                Some(backend) => (backend, None),
                None => {
                    let (backend, lease) = self
                        .pick_waiting(app, choice, &failed, attempt == 0, queue)
                        .await?;
                    match pinned {
                        Some(pinned) if backend.kind == ConcurrencyKind::Connections => {
                            pinned.hold(backend.machine.clone(), lease);
                            (backend, None)
                        }
                        _ => (backend, Some(lease)),
                    }
                }
            };
            let mut outgoing = Request::new(body.take());
            *outgoing.method_mut() = parts.method.clone();
            *outgoing.headers_mut() = parts.headers.clone();
            let asked = Instant::now();
            let sent = if choice.h2_backend {
                let target = format!("http://[{}]:{}{path}", backend.address, backend.port);
                let Ok(uri) = target.parse::<Uri>() else {
                    return Err(SendFailure::BadPath(path.to_owned()));
                };
                *outgoing.uri_mut() = uri;
                // HTTP/2's :authority names the machine the pool connects to; the client's
                // host goes along as X-Forwarded-Host.
                *outgoing.version_mut() = http::Version::HTTP_2;
                if let Some(host) = parts.headers.get(header::HOST).cloned() {
                    outgoing
                        .headers_mut()
                        .insert(HeaderName::from_static("x-forwarded-host"), host);
                }
                self.http2_client()
                    .request(outgoing)
                    .await
                    .map(|response| (response, None))
                    .map_err(|error| (error.is_connect(), error.to_string()))
            } else {
                // Origin-form, as HTTP/1.1 sends it; the connection names the machine.
                if let Some(path) = parts.uri.path_and_query() {
                    *outgoing.uri_mut() = Uri::from(path.clone());
                }
                let address = SocketAddr::new(backend.address.into(), backend.port);
                crate::pool::send(
                    self.pool_id(),
                    self.config.namespace.as_deref(),
                    address,
                    outgoing,
                )
                .await
                .map(|(response, checkin)| (response, Some(checkin)))
                .map_err(|error| {
                    (
                        matches!(error, crate::pool::SendError::Connect(_)),
                        error.to_string(),
                    )
                })
            };
            if sent.is_err()
                && let Some(pinned) = pinned
            {
                pinned.release(&backend.machine);
            }
            match sent {
                Ok((response, checkin)) => {
                    self.metrics.app_time(app, asked.elapsed());
                    return Ok((
                        response,
                        Held {
                            _lease: lease,
                            checkin,
                        },
                        backend,
                    ));
                }
                Err((true, error)) if attempt + 1 < attempts => {
                    tracing::debug!(machine = %backend.machine, %error, "connecting failed; trying another machine");
                    failed.push(backend.machine.clone());
                }
                // A machine that closed the connection before any answer (stopped by a
                // deploy while the request was on its way, or a kept-alive connection it
                // had just closed): an idempotent request goes to another one, as nginx's
                // `proxy_next_upstream error` does.
                Err((false, error)) if attempt + 1 < attempts && idempotent(&parts.method) => {
                    tracing::debug!(machine = %backend.machine, %error, "no answer; trying another machine");
                    failed.push(backend.machine.clone());
                }
                Err((connect, error)) => {
                    tracing::debug!(machine = %backend.machine, %error, "forwarding failed");
                    if connect {
                        failed.push(backend.machine.clone());
                        return Err(SendFailure::Refused(failed));
                    }
                    return Err(SendFailure::NoAnswer(backend.machine));
                }
            }
        }
        Err(SendFailure::Refused(failed))
    }

    /// A machine for one attempt: one with room now, else (when `may_wait`) the first to
    /// have room within `queue`.
    async fn pick_waiting(
        &self,
        app: &str,
        choice: &Choice,
        failed: &[Arc<str>],
        may_wait: bool,
        queue: Duration,
    ) -> Result<(Backend, Lease), SendFailure> {
        // The clock is read only when the request has to wait.
        let mut picked = self.pick(choice, failed, Duration::ZERO).await;
        let mut waited = Duration::ZERO;
        if picked.is_none() && may_wait && !queue.is_zero() {
            let since = Instant::now();
            picked = self.pick(choice, failed, queue).await;
            waited = since.elapsed();
        }
        if let Some((backend, _)) = &picked {
            self.metrics.queued(app, &backend.machine, waited);
        }
        picked.ok_or_else(|| {
            if failed.is_empty() {
                SendFailure::Full(queue)
            } else {
                SendFailure::Refused(failed.to_vec())
            }
        })
    }

    /// Those of `backends` whose port accepts connections, waiting (until `deadline`) for
    /// at least one: a machine just started may not listen yet, and a request's body can
    /// be sent only once.
    pub(super) async fn listening(
        &self,
        backends: Vec<Backend>,
        deadline: tokio::time::Instant,
    ) -> Vec<Backend> {
        let mut pause = Duration::from_millis(20);
        loop {
            let mut ready = Vec::new();
            for backend in &backends {
                let address = SocketAddr::new(backend.address.into(), backend.port);
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                let probe = aloft_net::netns::connect_tcp(
                    self.config.namespace.as_deref(),
                    address,
                    remaining.min(Duration::from_secs(1)),
                )
                .await;
                if probe.is_ok() {
                    ready.push(backend.clone());
                }
            }
            if !ready.is_empty() || tokio::time::Instant::now() + pause > deadline {
                return ready;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}
