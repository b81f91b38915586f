//! Request bodies: JSON errors become a 400 that says what is wrong and where.

use axum::extract::{FromRequest, Request};
use bytes_body::read_body;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Largest request body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A JSON body that must be present.
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

/// A JSON body that may be absent or empty (then `T::default()`).
#[derive(Debug)]
pub(crate) struct OptionalBody<T>(pub(crate) T);

/// Parses a request body. Fields Aloft does not know are ignored, as Fly's API ignores
/// them (its clients send more than any one server reads), and logged at debug.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let mut ignored = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| ignored.push(path.to_string());
    let tracked = serde_ignored::Deserializer::new(&mut deserializer, &mut record);
    let value = serde_path_to_error::deserialize(tracked).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let what = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "malformed JSON"
            }
            serde_json::error::Category::Data => "invalid request body",
            serde_json::error::Category::Io => "unreadable request body",
        };
        if path.is_empty() || path == "." {
            ApiError::BadRequest(format!("{what}: {inner}"))
        } else {
            ApiError::BadRequest(format!("{what}: {path}: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::BadRequest(format!("malformed JSON: {error}")))?;
    if !ignored.is_empty() {
        tracing::debug!(fields = ?ignored, "ignored request fields this server does not know");
    }
    Ok(value)
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest(
                "a JSON request body is required".to_owned(),
            ));
        }
        parse(&bytes).map(Body)
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        parse(&bytes).map(OptionalBody)
    }
}

mod bytes_body {
    use axum::body::to_bytes;
    use axum::extract::Request;

    use super::MAX_BODY_BYTES;
    use crate::ApiError;

    pub(crate) async fn read_body(request: Request) -> Result<Vec<u8>, ApiError> {
        let bytes = to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::BadRequest(format!(
                    "the request body is unreadable or larger than {MAX_BODY_BYTES} bytes"
                ))
            })?;
        Ok(bytes.to_vec())
    }
}

/// Every client error of the API in its JSON shape (`{"error": "..."}`), as the OpenAPI
/// document says: axum's own rejections (a path or query parameter that does not parse,
/// say) are plain text, so they are rewrapped here with their message.
pub(crate) async fn json_rejections(
    response: axum::response::Response,
) -> axum::response::Response {
    use axum::http::header::CONTENT_TYPE;
    use axum::response::IntoResponse as _;
    let plain = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes().starts_with(b"text/plain"));
    if !(response.status().is_client_error() && plain) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let error = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_owned()
    } else {
        text
    };
    let mut json = (
        parts.status,
        axum::Json(aloft_types::api::ErrorBody { error }),
    )
        .into_response();
    // What else the rejection said (an `Allow` list, say) stays.
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}
