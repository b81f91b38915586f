//! Aloft's web dashboard, served by the API role on the API's listener (under `/`; the
//! API's `/v1/...` paths are untouched).
//!
//! Every page is a client of the public API, through `aloft-client`, with the token the
//! visitor signed in with: a page can never show what that token could not read, and the
//! API stays the one source of the rules (organizations, token kinds). Pages are rendered
//! on the server (askama) and read with JavaScript off; the live parts (machines, the
//! deployment in progress, logs) follow server-sent events through one small script.

mod apps;
mod error;
mod live;
mod logs;
mod machine;
pub mod metrics;
pub mod session;
mod signin;
pub mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

pub use apps::AppPage;
pub use error::WebError;
pub use session::{Session, SessionKey};

/// The dashboard: where the API is, and the key that seals its sessions.
#[derive(Debug, Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    api: String,
    key: SessionKey,
    /// The operator's Grafana (`[api] grafana_url`), where the metrics page links to the
    /// app's dashboard (`deploy/grafana/aloft-app.json`, uid `aloft-app`).
    grafana: Option<String>,
    /// The certificate the API's listener serves (DER) when it speaks HTTPS itself: pages
    /// reach the API trusting exactly it, and cookies are `Secure`.
    https: Option<Vec<u8>>,
}

impl Web {
    /// A dashboard whose pages read the API at `api` (its base URL, `http://127.0.0.1:4280`).
    pub fn new(api: &str, key: SessionKey) -> Web {
        Web {
            inner: Arc::new(Inner {
                api: api.trim_end_matches('/').to_owned(),
                key,
                grafana: None,
                https: None,
            }),
        }
    }

    /// The same dashboard, linking each app's metrics to its dashboard in the Grafana at
    /// `grafana` (its base URL), where `deploy/grafana/aloft-app.json` is imported.
    pub fn with_grafana(self, grafana: Option<&str>) -> Web {
        Web {
            inner: Arc::new(Inner {
                api: self.inner.api.clone(),
                key: self.inner.key.clone(),
                grafana: grafana.map(|g| g.trim_end_matches('/').to_owned()),
                https: self.inner.https.clone(),
            }),
        }
    }

    /// The same dashboard on a listener that serves HTTPS with `certificate` (DER): its
    /// pages call the API trusting exactly that certificate, and its cookies are `Secure`.
    pub fn over_https(self, certificate: Vec<u8>) -> Web {
        Web {
            inner: Arc::new(Inner {
                api: self.inner.api.clone(),
                key: self.inner.key.clone(),
                grafana: self.inner.grafana.clone(),
                https: Some(certificate),
            }),
        }
    }

    /// Whether the visitor came over HTTPS: to this listener, or through a proxy that
    /// says so.
    pub(crate) fn over_https_for(&self, headers: &HeaderMap) -> bool {
        self.inner.https.is_some() || over_https(headers)
    }

    /// The app's dashboard in the operator's Grafana, when there is one.
    fn grafana_of(&self, app: &str) -> Option<String> {
        self.inner
            .grafana
            .as_ref()
            .map(|base| format!("{base}/d/aloft-app/aloft-app?var-app={app}"))
    }

    fn client(&self, token: &str) -> aloft_client::Client {
        match &self.inner.https {
            Some(certificate) => aloft_client::Client::with_trust(
                &self.inner.api,
                token,
                &aloft_client::Trust::Exactly(certificate.clone()),
            )
            .unwrap_or_else(|_| aloft_client::Client::new(&self.inner.api, token)),
            None => aloft_client::Client::new(&self.inner.api, token),
        }
    }

    /// The dashboard's routes, to merge beside the API's.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(home))
            .route("/sign-in", get(signin::form).post(signin::submit))
            .route("/sign-out", post(signin::sign_out))
            .route("/switch", post(signin::switch))
            .route("/apps", get(apps::list))
            .route("/apps/{app}", get(apps::overview))
            .route("/apps/{app}/secrets", post(apps::set_secret))
            .route("/apps/{app}/scale", post(apps::scale))
            .route("/apps/{app}/secrets/unset", post(apps::unset_secret))
            .route(
                "/apps/{app}/releases/{version}/rollback",
                post(apps::rollback),
            )
            .route("/apps/{app}/machines/{id}", get(machine::page))
            .route("/apps/{app}/machines/{id}/{action}", post(machine::act))
            .route("/apps/{app}/logs", get(logs::page))
            .route("/apps/{app}/metrics", get(metrics::page))
            .route("/apps/{app}/live/machines", get(live::machines))
            .route("/apps/{app}/live/deployment", get(live::deployment))
            .route("/apps/{app}/live/logs", get(live::logs))
            .route("/apps/{app}/machines/{id}/live", get(live::machine))
            .route("/platform", get(apps::platform))
            .route("/assets/{file}", get(asset))
            .layer(axum::middleware::from_fn(guard))
            .with_state(self.clone())
    }
}

/// A signed-in visitor: the session, its cookie (for CSRF tokens) and an API client with
/// its token. A page asked for without a session sends the browser to sign in.
#[derive(Debug)]
pub(crate) struct Signed {
    pub(crate) session: Session,
    /// The token the pages use now (the session's current organization).
    pub(crate) held: session::Held,
    pub(crate) csrf: String,
    pub(crate) cookie: String,
    pub(crate) client: aloft_client::Client,
}

impl Signed {
    /// Refuses a form whose CSRF token is not this session's.
    pub(crate) fn check(&self, web: &Web, csrf: &str) -> Result<(), WebError> {
        if web.inner.key.csrf_holds(&self.cookie, csrf) {
            Ok(())
        } else {
            Err(WebError::Forbidden(
                "the form's security token is missing or stale: reload the page and try again"
                    .to_owned(),
            ))
        }
    }

    /// What every page's header shows.
    pub(crate) fn chrome(&self) -> view::Chrome {
        view::Chrome {
            name: self.held.name.clone(),
            kind: self.held.kind.clone(),
            org: self.held.org.clone(),
            orgs: self
                .session
                .tokens
                .iter()
                .map(|held| held.org.clone())
                .collect(),
            operator: self.held.is_operator(),
            can_change: self.held.can_change(),
            csrf: self.csrf.clone(),
        }
    }
}

impl FromRequestParts<Web> for Signed {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Signed, WebError> {
        let cookie = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(|header| session::cookie(header, session::SESSION_COOKIE))
            .ok_or(WebError::SignIn)?
            .to_owned();
        let session = web.inner.key.open(&cookie, now()).ok_or(WebError::SignIn)?;
        let held = session.held().cloned().ok_or(WebError::SignIn)?;
        Ok(Signed {
            client: web.client(&held.token),
            held,
            csrf: web.inner.key.csrf(&cookie),
            cookie,
            session,
        })
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

async fn home(signed: Option<Signed>) -> Redirect {
    match signed {
        Some(_) => Redirect::to("/apps"),
        None => Redirect::to("/sign-in"),
    }
}

impl axum::extract::OptionalFromRequestParts<Web> for Signed {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        web: &Web,
    ) -> Result<Option<Signed>, std::convert::Infallible> {
        Ok(
            <Signed as FromRequestParts<Web>>::from_request_parts(parts, web)
                .await
                .ok(),
        )
    }
}

/// Refuses a form posted from another origin (the browser names it in `Origin`), and gives
/// every answer the headers that keep pages out of frames and other origins' scripts.
async fn guard(request: Request, next: Next) -> Response {
    if request.method() == Method::POST && !same_origin(request.headers()) {
        return WebError::Forbidden("a form from another site".to_owned()).into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Whether a POST comes from this site: its `Origin` (when the browser sends one) names
/// the host it was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok().map(|o| {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
            .unwrap_or("")
    });
    matches!((origin, host), (Some(origin), Some(host)) if origin == host)
}

/// Whether the visitor came over HTTPS (directly, or through the edge, which says so).
pub(crate) fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

const STYLE: &str = include_str!("../assets/app.css");
const SCRIPT: &str = include_str!("../assets/live.js");

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.css" => (STYLE, "text/css; charset=utf-8"),
        "live.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_is_same_origin_when_its_origin_names_the_host_or_is_absent() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4280"));
        assert!(same_origin(&headers), "no Origin: a non-browser client");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:4280"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers), "an opaque origin");
    }
}
