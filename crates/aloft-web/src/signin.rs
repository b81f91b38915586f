//! Signing in with an API token, and out.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::session::{self, SESSION_COOKIE, SESSION_SECONDS, SIGN_IN_COOKIE, Session};
use crate::{Signed, Web, WebError};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    nonce: String,
    error: Option<String>,
}

fn page(headers: &HeaderMap, error: Option<String>, status: StatusCode) -> Response {
    let nonce = session::sign_in_nonce();
    let secure = if crate::over_https(headers) {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SIGN_IN_COOKIE}={nonce}; Path=/sign-in; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    );
    match (SignInPage { nonce, error }).render() {
        Ok(html) => (status, [(header::SET_COOKIE, cookie)], Html(html)).into_response(),
        Err(error) => WebError::from(error).into_response(),
    }
}

/// `GET /sign-in`.
pub(crate) async fn form(headers: HeaderMap) -> Response {
    page(&headers, None, StatusCode::OK)
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
            &headers,
            Some("the sign-in form expired: try again".to_owned()),
            StatusCode::FORBIDDEN,
        );
    }
    let token = form.token.trim();
    if token.is_empty() {
        return page(
            &headers,
            Some("paste an API token (`aloft auth token` prints yours)".to_owned()),
            StatusCode::BAD_REQUEST,
        );
    }
    let known = match web.client(token).current_token().await {
        Ok(known) => known,
        Err(aloft_client::ClientError::Api { status: 401, .. }) => {
            return page(
                &headers,
                Some("the API does not accept this token (unknown, revoked or expired)".to_owned()),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(error) => return WebError::from(error).into_response(),
    };
    tracing::info!(token = %known.id, kind = %known.kind, "dashboard sign-in");
    let session = Session {
        token: token.to_owned(),
        name: known.name,
        kind: known.kind,
        issued_at: crate::now(),
    };
    let sealed = web.inner.key.seal(&session);
    let secure = if crate::over_https(&headers) {
        "; Secure"
    } else {
        ""
    };
    let mut response = Redirect::to("/apps").into_response();
    let cookies = response.headers_mut();
    for cookie in [
        format!(
            "{SESSION_COOKIE}={sealed}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_SECONDS}{secure}"
        ),
        format!("{SIGN_IN_COOKIE}=; Path=/sign-in; HttpOnly; SameSite=Strict; Max-Age=0"),
    ] {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            cookies.append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignOut {
    #[serde(default)]
    csrf: String,
}

/// `POST /sign-out`: the session cookie is cleared (the token itself stays valid: revoke it
/// with `aloft tokens revoke` to end it everywhere).
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
