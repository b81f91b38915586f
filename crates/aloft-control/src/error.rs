//! The one API error type, and the one place it becomes an HTTP status and JSON body
//! (`{"error": "..."}`, as Fly's API answers).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use aloft_store::StoreError;

/// Why a request failed. 4xx for every bad input; 5xx only for our own faults.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid token: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// A request body past what the endpoint takes (413).
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<aloft_agent_api::LinkError> for ApiError {
    fn from(error: aloft_agent_api::LinkError) -> Self {
        match error {
            aloft_agent_api::LinkError::NotRunning { .. } => {
                ApiError::PreconditionFailed(error.to_string())
            }
            aloft_agent_api::LinkError::Unreachable(_)
            | aloft_agent_api::LinkError::Failed { .. } => ApiError::Unavailable(error.to_string()),
        }
    }
}

impl ApiError {
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::NotFound { what: what.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { what, id } => ApiError::NotFound {
                what: format!("{what} {id}"),
            },
            StoreError::Conflict { what, id, reason } => {
                ApiError::Conflict(format!("{what} {id}: {reason}"))
            }
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(source) = &self {
            // Logged once, here, with its whole chain; the client gets no internals.
            let mut chain = source.to_string();
            let mut cause = source.source();
            while let Some(next) = cause {
                chain.push_str(": ");
                chain.push_str(&next.to_string());
                cause = next.source();
            }
            tracing::error!(error = %chain, "request failed");
        }
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
