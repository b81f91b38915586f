//! A BuildKit session that hands the build its secrets (`RUN --mount=type=secret,id=X`),
//! as `docker build --secret` does: `POST /session` upgrades the connection to HTTP/2
//! (h2c) on which the *engine* is the gRPC client and we answer two methods,
//! `moby.buildkit.secrets.v1.Secrets/GetSecret` and `grpc.health.v1.Health/Check`. The
//! build then names the session (`session=ID`). Messages are small protobufs, read and
//! written by hand.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Frame;

const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// A session serving secrets; it ends when dropped.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a build session could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("{}: {source}", socket.display())]
    Connect {
        socket: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening a build session: {0}")]
    Http(#[source] hyper::Error),
    #[error("the session request: {0}")]
    Request(String),
    #[error("the engine refused a build session ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("upgrading the build session: {0}")]
    Upgrade(#[source] hyper::Error),
}

/// Opens a session on the engine at `socket` that serves `secrets` by id.
pub(crate) async fn open(
    socket: &Path,
    version: &str,
    secrets: BTreeMap<String, String>,
) -> Result<Session, SessionError> {
    let id = random_id();
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| SessionError::Connect {
            socket: socket.to_owned(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(SessionError::Http)?;
    let connection = tokio::spawn(connection.with_upgrades());
    let request = hyper::Request::post(format!("/v{version}/session"))
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "h2c")
        .header("X-Docker-Expose-Session-Uuid", &id)
        .header("X-Docker-Expose-Session-Name", "aloft")
        .header("X-Docker-Expose-Session-Sharedkey", "")
        .header("X-Docker-Expose-Session-Grpc-Method", GET_SECRET)
        .header("X-Docker-Expose-Session-Grpc-Method", HEALTH_CHECK)
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| SessionError::Request(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(SessionError::Http)?;
    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
            .unwrap_or_default();
        connection.abort();
        return Err(SessionError::Refused {
            status: status.as_u16(),
            body: body.trim().to_owned(),
        });
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(SessionError::Upgrade)?;
    let secrets = Arc::new(secrets);
    let task = tokio::spawn(async move {
        let service = hyper::service::service_fn(move |request| {
            let secrets = secrets.clone();
            async move { Ok::<_, Infallible>(answer(request, &secrets).await) }
        });
        let served = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(upgraded, service)
            .await;
        if let Err(error) = served {
            tracing::debug!(%error, "the build session ended");
        }
        connection.abort();
    });
    Ok(Session { id, task })
}

type GrpcBody = http_body_util::StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
>;

/// Answers one gRPC call from the engine.
async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    secrets: &BTreeMap<String, String>,
) -> hyper::Response<GrpcBody> {
    let path = request.uri().path().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    match path.as_str() {
        GET_SECRET => {
            let message = body.get(5..).unwrap_or_default();
            let id = crate::protobuf::fields(message)
                .into_iter()
                .find_map(|(field, value)| match (field, value) {
                    (1, crate::protobuf::Value::Bytes(b)) => {
                        Some(String::from_utf8_lossy(b).into_owned())
                    }
                    _ => None,
                })
                .unwrap_or_default();
            match secrets.get(&id) {
                Some(value) => grpc(0, "", Some(length_delimited(1, value.as_bytes()))),
                // NOT_FOUND: BuildKit says which secret the Dockerfile asked for.
                None => grpc(5, &format!("secret {id} not found"), None),
            }
        }
        // SERVING.
        HEALTH_CHECK => grpc(0, "", Some(vec![0x08, 0x01])),
        _ => grpc(12, &format!("{path} is not served"), None),
    }
}

/// A gRPC response: an optional message, then the status in the trailers.
fn grpc(status: u32, message: &str, reply: Option<Vec<u8>>) -> hyper::Response<GrpcBody> {
    let mut frames = Vec::new();
    if let Some(reply) = reply {
        let mut data = vec![0u8];
        data.extend_from_slice(&u32::try_from(reply.len()).unwrap_or(0).to_be_bytes());
        data.extend_from_slice(&reply);
        frames.push(Ok(Frame::data(Bytes::from(data))));
    }
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from(status));
    if let Ok(value) = hyper::header::HeaderValue::from_str(message)
        && !message.is_empty()
    {
        trailers.insert("grpc-message", value);
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let mut response = hyper::Response::new(http_body_util::StreamBody::new(
        futures_util::stream::iter(frames),
    ));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A protobuf length-delimited field.
fn length_delimited(field: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 6);
    varint(&mut out, field << 3 | 2);
    varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(u8::try_from(value & 0x7f).unwrap_or(0) | 0x80);
        value >>= 7;
    }
    out.push(u8::try_from(value).unwrap_or(0));
}

/// A session id nobody else picks: 128 random bits from the process's hasher seeds.
fn random_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let half = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.finish()
    };
    format!("aloft{:016x}{:016x}", half(), half())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_reply_is_a_length_delimited_field() {
        assert_eq!(length_delimited(1, b"hi"), vec![0x0a, 2, b'h', b'i']);
        let long = vec![7u8; 300];
        let encoded = length_delimited(1, &long);
        assert_eq!(&encoded[..3], &[0x0a, 0xac, 0x02]);
        let decoded = crate::protobuf::fields(&encoded);
        assert_eq!(decoded, vec![(1, crate::protobuf::Value::Bytes(&long[..]))]);
        assert_ne!(random_id(), random_id());
    }
}
