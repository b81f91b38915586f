//! What a page shows when it cannot show what was asked.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

/// Why a page could not be served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// No session, or an expired one, or a token the API no longer accepts.
    #[error("sign in first")]
    SignIn,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    /// The API refused or failed; its own message.
    #[error(transparent)]
    Api(#[from] aloft_client::ClientError),
    #[error("rendering the page: {0}")]
    Render(#[from] askama::Error),
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            WebError::SignIn => return Redirect::to("/sign-in").into_response(),
            WebError::Api(aloft_client::ClientError::Api { status: 401, .. }) => {
                return Redirect::to("/sign-in").into_response();
            }
            WebError::Api(aloft_client::ClientError::Api { status, message }) => {
                let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                let title = match *status {
                    403 => "Not allowed",
                    404 => "Not found",
                    409 => "Conflict",
                    400..=499 => "Refused",
                    _ => "The API failed",
                };
                (code, title, message.clone())
            }
            WebError::Api(other) => (StatusCode::BAD_GATEWAY, "The API failed", other.to_string()),
            WebError::Forbidden(message) => (StatusCode::FORBIDDEN, "Not allowed", message.clone()),
            WebError::NotFound(message) => (StatusCode::NOT_FOUND, "Not found", message.clone()),
            WebError::BadInput(message) => (StatusCode::BAD_REQUEST, "Refused", message.clone()),
            WebError::Render(error) => {
                tracing::error!(%error, "rendering a dashboard page");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The page failed",
                    "the page could not be rendered; the daemon's log says why".to_owned(),
                )
            }
        };
        let page = ErrorPage { title, message };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, page.message).into_response(),
        }
    }
}
