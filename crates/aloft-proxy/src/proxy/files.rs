//! Answering a request from a machine's files (`[[statics]]`, see [`crate::statics`]).

use futures_util::StreamExt as _;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;

use super::pick::Choice;
use super::{BoxError, Proxy, ProxyBody};
use crate::body::empty;
use crate::statics::{content_type, file_for};

impl Proxy {
    /// The response for a `GET` or `HEAD` of a file that a `[[statics]]` mapping of the
    /// chosen machine covers and that exists there; `None`: the app answers.
    pub(super) async fn static_file(
        &self,
        method: &Method,
        path: &str,
        choice: &Choice,
    ) -> Option<Response<ProxyBody>> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let statics = self.statics.get()?;
        if !choice
            .backends
            .iter()
            .any(|b| file_for(&b.statics, path).is_some())
        {
            return None;
        }
        // The machine is chosen as for any request, and the file counts as one of its
        // requests until the last byte is sent.
        let (backend, lease) = self.pick(choice, &[], self.config.queue_timeout).await?;
        let (mapping, file_path) = file_for(&backend.statics, path)?;
        let opened = statics
            .open(
                backend.machine.to_string(),
                mapping.guest_path.clone(),
                file_path.clone(),
            )
            .await;
        let file = match opened {
            Ok(Some(file)) => file,
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(machine = %backend.machine, path, error = %error, "opening a static file failed; the app answers");
                return None;
            }
        };
        let body = if method == Method::HEAD {
            drop(lease);
            empty()
        } else {
            let chunks = tokio_util::io::ReaderStream::new(file.body).map(move |chunk| {
                let _held = &lease;
                chunk.map(hyper::body::Frame::data).map_err(BoxError::from)
            });
            BodyExt::boxed(http_body_util::StreamBody::new(chunks))
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(&file_path)),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.length));
        Some(response)
    }
}
