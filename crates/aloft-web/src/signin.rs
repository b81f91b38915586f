//! Signing in with an API token, and out.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::session::{self, Held, SESSION_COOKIE, SESSION_SECONDS, SIGN_IN_COOKIE, Session};
use crate::{Signed, Web, WebError};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    nonce: String,
    error: Option<String>,
    /// Signed in already: this adds an organization to the session.
    adding: bool,
}

/// The session the request's cookie carries, if any and still good.
fn current(web: &Web, headers: &HeaderMap) -> Option<Session> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|header| session::cookie(header, SESSION_COOKIE))
        .and_then(|cookie| web.inner.key.open(cookie, crate::now()))
}

/// The `Set-Cookie` value that carries `session`.
fn session_cookie(web: &Web, session: &Session, headers: &HeaderMap) -> Option<HeaderValue> {
    let sealed = web.inner.key.seal(session);
    let secure = if web.over_https_for(headers) {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={sealed}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_SECONDS}{secure}"
    ))
    .ok()
}

fn page(web: &Web, headers: &HeaderMap, error: Option<String>, status: StatusCode) -> Response {
    let nonce = session::sign_in_nonce();
    let secure = if web.over_https_for(headers) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SIGN_IN_COOKIE}={nonce}; Path=/sign-in; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    );
    let adding = current(web, headers).is_some();
    match (SignInPage {
        nonce,
        error,
        adding,
    })
    .render()
    {
        Ok(html) => (status, [(header::SET_COOKIE, cookie)], Html(html)).into_response(),
        Err(error) => WebError::from(error).into_response(),
    }
}

/// `GET /sign-in`.
pub(crate) async fn form(State(web): State<Web>, headers: HeaderMap) -> Response {
    page(&web, &headers, None, StatusCode::OK)
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignIn {
    token: String,
    #[serde(default)]
    nonce: String,
}

/// `POST /sign-in`: the token is asked about at the API; a good one starts a session.
pub(crate) async fn submit(
    State(web): State<Web>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<SignIn>,
) -> Response {
    let kept = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|header| session::cookie(header, SIGN_IN_COOKIE));
    if !kept.is_some_and(|kept| session::equal(kept.as_bytes(), form.nonce.as_bytes())) {
        return page(
            &web,
            &headers,
            Some("the sign-in form expired: try again".to_owned()),
            StatusCode::FORBIDDEN,
        );
    }
    let token = form.token.trim();
    if token.is_empty() {
        return page(
            &web,
            &headers,
            Some("paste an API token (`aloft auth token` prints yours)".to_owned()),
            StatusCode::BAD_REQUEST,
        );
    }
    let known = match web.client(token).current_token().await {
        Ok(known) => known,
        Err(aloft_client::ClientError::Api { status: 401, .. }) => {
            return page(
                &web,
                &headers,
                Some("the API does not accept this token (unknown, revoked or expired)".to_owned()),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(error) => return WebError::from(error).into_response(),
    };
    let client = web.client(token);
    let org = match client.list_orgs().await {
        Ok(orgs) => orgs
            .into_iter()
            .next()
            .map(|org| org.slug)
            .unwrap_or_default(),
        Err(error) => return WebError::from(error).into_response(),
    };
    tracing::info!(token = %known.id, kind = %known.kind, %org, "dashboard sign-in");
    let held = Held {
        token: token.to_owned(),
        name: known.name,
        kind: known.kind,
        org,
    };
    // Signed in already: the organization joins the session (the switcher shows it).
    let session = match current(&web, &headers) {
        Some(mut session) => {
            session.add(held);
            session
        }
        None => Session::of(held, crate::now()),
    };
    let mut response = Redirect::to("/apps").into_response();
    let cookies = response.headers_mut();
    if let Some(value) = session_cookie(&web, &session, &headers) {
        cookies.append(header::SET_COOKIE, value);
    }
    cookies.append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "aloft_sign_in=; Path=/sign-in; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct Switch {
    #[serde(default)]
    csrf: String,
    org: String,
}

/// `POST /switch`: the pages show another organization the session holds a token of.
pub(crate) async fn switch(
    State(web): State<Web>,
    signed: Signed,
    headers: HeaderMap,
    axum::Form(form): axum::Form<Switch>,
) -> Result<Response, WebError> {
    signed.check(&web, &form.csrf)?;
    let mut session = signed.session;
    if !session.switch(&form.org) {
        return Err(WebError::Forbidden(format!(
            "this session holds no token of organization {:?}: sign in with one",
            form.org
        )));
    }
    let mut response = Redirect::to("/apps").into_response();
    if let Some(value) = session_cookie(&web, &session, &headers) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignOut {
    #[serde(default)]
    csrf: String,
}

/// `POST /sign-out`: the session cookie is cleared, with every organization's token it
/// held (the tokens themselves stay valid: `aloft tokens revoke` ends one everywhere).
pub(crate) async fn sign_out(
    State(web): State<Web>,
    signed: Option<Signed>,
    axum::Form(form): axum::Form<SignOut>,
) -> Result<Response, WebError> {
    if let Some(signed) = signed {
        signed.check(&web, &form.csrf)?;
    }
    let mut response = Redirect::to("/sign-in").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("aloft_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(response)
}
