//! Builds with the engine's `POST /build`: BuildKit (`version=2`, the context uploaded as a
//! tar in the request body, which the engine accepts without a client session), or the
//! classic builder (`version=1`) where the engine has no BuildKit. bollard cannot read
//! BuildKit's progress (`moby.buildkit.trace` lines carry a base64 protobuf
//! `StatusResponse` where it expects an object), so this speaks the endpoint itself over
//! the engine's Unix socket and turns the trace into lines like `docker build
//! --progress=plain` prints. The context is streamed from its file, never held whole in
//! memory, and the output goes through a bounded channel: a reader that does not keep up
//! slows the engine down instead of filling memory.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use http_body_util::BodyExt as _;

use crate::protobuf::{Value, fields};
use crate::{BuildOptions, BuildProgress, RuntimeError};

/// What became of a build.
pub(crate) enum Outcome {
    /// It ran (the sender got its output and its end, success or failure).
    Done,
    /// The engine does not build with BuildKit; nothing was sent.
    Unsupported(String),
}

/// Which of the engine's builders runs a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builder {
    BuildKit,
    Classic,
}

/// The most output lines (or trace messages) waiting for a reader before the engine's
/// answer is read no further.
pub(crate) const OUTPUT_BACKLOG: usize = 64;

/// The longest line the engine may send before the build is failed (its lines are JSON
/// messages of a few kilobytes; a step's output is cut into many).
const MAX_LINE_BYTES: usize = 8 << 20;

pub(crate) type Sender = tokio::sync::mpsc::Sender<Result<BuildProgress, RuntimeError>>;

/// Builds the context in the file `context` (a tar archive) on the engine at `socket`
/// (API `version`, such as `1.41`) with `builder`, sending the output as it comes and
/// then the image's id, or the failure.
pub(crate) async fn build(
    socket: &Path,
    version: &str,
    builder: Builder,
    context: &Path,
    options: &BuildOptions,
    sender: &Sender,
) -> Outcome {
    let fail = |message: String| async move {
        let _ = sender
            .send(Err(RuntimeError::Build {
                tag: options.tag.clone(),
                message,
            }))
            .await;
        Outcome::Done
    };
    let file = match tokio::fs::File::open(context).await {
        Ok(file) => file,
        Err(error) => {
            return fail(format!("the build context {}: {error}", context.display())).await;
        }
    };
    // Secrets travel in a session the build names; without one BuildKit has none.
    let session = if options.secrets.is_empty() || builder == Builder::Classic {
        None
    } else {
        match crate::session::open(socket, version, options.secrets.clone()).await {
            Ok(session) => Some(session),
            Err(error) => return fail(format!("build secrets: {error}")).await,
        }
    };
    let stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(stream) => stream,
        Err(error) => return Outcome::Unsupported(format!("{}: {error}", socket.display())),
    };
    let (mut request_sender, connection) =
        match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
            Ok(parts) => parts,
            Err(error) => return Outcome::Unsupported(format!("talking to the engine: {error}")),
        };
    let driver = tokio::spawn(connection);
    let mut query = query(options, builder);
    if let Some(session) = &session {
        query.push_str(&format!("&session={}", session.id));
    }
    use futures_util::StreamExt as _;
    let body = http_body_util::StreamBody::new(
        tokio_util::io::ReaderStream::new(file).map(|chunk| chunk.map(hyper::body::Frame::data)),
    );
    let request = hyper::Request::post(format!("/v{version}/build?{query}"))
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONTENT_TYPE, "application/x-tar")
        .body(body);
    let request = match request {
        Ok(request) => request,
        Err(error) => return fail(format!("the build request: {error}")).await,
    };
    let response = match request_sender.send_request(request).await {
        Ok(response) => response,
        Err(error) => return fail(format!("sending the build to the engine: {error}")).await,
    };
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let text = match body.collect().await {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(error) => error.to_string(),
        };
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or(text);
        driver.abort();
        // An engine without BuildKit (or one that refuses version 2) builds the old way;
        // any other refusal is the build's.
        return if builder == Builder::BuildKit
            && status == hyper::StatusCode::BAD_REQUEST
            && message.to_ascii_lowercase().contains("buildkit")
        {
            Outcome::Unsupported(message)
        } else {
            fail(message).await
        };
    }
    let mut progress = Progress::default();
    let mut pending = Vec::new();
    let mut built = None;
    loop {
        let frame = match body.frame().await {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                return fail(format!("reading the engine's answer: {error}")).await;
            }
            None => break,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        if pending.len() > MAX_LINE_BYTES && !pending.contains(&b'\n') {
            driver.abort();
            return fail(format!(
                "the engine sent a line longer than {} MiB",
                MAX_LINE_BYTES >> 20
            ))
            .await;
        }
        while let Some(at) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            let Ok(message) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(error) = message.get("error").and_then(|e| e.as_str()) {
                driver.abort();
                return fail(error.trim().to_owned()).await;
            }
            if let Some(text) = message.get("stream").and_then(|s| s.as_str())
                && !text.is_empty()
                && sender
                    .send(Ok(BuildProgress::Output(text.to_owned())))
                    .await
                    .is_err()
            {
                // Nobody reads any more: the engine's build goes with the connection.
                driver.abort();
                return Outcome::Done;
            }
            match message.get("id").and_then(|i| i.as_str()) {
                // BuildKit names the image in `moby.image.id`, the classic builder in
                // an `aux` without an id.
                Some("moby.image.id") | None if message.pointer("/aux/ID").is_some() => {
                    built = message
                        .pointer("/aux/ID")
                        .and_then(|i| i.as_str())
                        .map(str::to_owned);
                }
                Some("moby.buildkit.trace") => {
                    let Some(trace) = message.get("aux").and_then(|a| a.as_str()) else {
                        continue;
                    };
                    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(trace) else {
                        continue;
                    };
                    let text = progress.render(&bytes);
                    if !text.is_empty()
                        && sender.send(Ok(BuildProgress::Output(text))).await.is_err()
                    {
                        driver.abort();
                        return Outcome::Done;
                    }
                }
                _ => {}
            }
        }
    }
    driver.abort();
    drop(session);
    match built {
        Some(id) => {
            let _ = sender.send(Ok(BuildProgress::Built { id })).await;
            Outcome::Done
        }
        None => fail("the engine reported no image".to_owned()).await,
    }
}

/// The query of `POST /build`: the builder, the Dockerfile, tag, target, args and labels.
fn query(options: &BuildOptions, builder: Builder) -> String {
    let json = |map: &std::collections::BTreeMap<String, String>| {
        serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
    };
    let mut pairs = vec![
        (
            "version",
            match builder {
                Builder::BuildKit => "2",
                Builder::Classic => "1",
            }
            .to_owned(),
        ),
        ("dockerfile", options.dockerfile.clone()),
        ("t", options.tag.clone()),
        ("rm", "1".to_owned()),
        ("forcerm", "1".to_owned()),
        ("buildargs", json(&options.args)),
        ("labels", json(&options.labels)),
    ];
    if let Some(target) = &options.target {
        pairs.push(("target", target.clone()));
    }
    if options.no_cache {
        pairs.push(("nocache", "1".to_owned()));
    }
    pairs
        .into_iter()
        .map(|(key, value)| format!("{key}={}", aloft_types::percent_encode(&value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// BuildKit's steps as `--progress=plain` shows them: `#N name`, its log lines, then
/// `#N DONE`, `#N CACHED` or `#N ERROR: ...`.
#[derive(Debug, Default)]
struct Progress {
    /// Step numbers by vertex digest, in the order they appeared.
    numbers: HashMap<String, usize>,
    /// Steps whose start (and whose end) was printed.
    started: std::collections::HashSet<String>,
    ended: std::collections::HashSet<String>,
}

impl Progress {
    /// The lines a `StatusResponse` adds.
    fn render(&mut self, status: &[u8]) -> String {
        let mut text = String::new();
        for (field, value) in fields(status) {
            match (field, value) {
                (1, Value::Bytes(vertex)) => self.vertex(vertex, &mut text),
                (3, Value::Bytes(log)) => self.log(log, &mut text),
                _ => {}
            }
        }
        text
    }

    fn number(&mut self, digest: &str) -> usize {
        let next = self.numbers.len() + 1;
        *self.numbers.entry(digest.to_owned()).or_insert(next)
    }

    fn vertex(&mut self, vertex: &[u8], text: &mut String) {
        let (mut digest, mut name, mut error) = (String::new(), String::new(), String::new());
        let (mut cached, mut started, mut completed) = (false, false, false);
        for (field, value) in fields(vertex) {
            match (field, value) {
                (1, Value::Bytes(b)) => digest = String::from_utf8_lossy(b).into_owned(),
                (3, Value::Bytes(b)) => name = String::from_utf8_lossy(b).into_owned(),
                (4, Value::Varint(v)) => cached = v != 0,
                (5, Value::Bytes(_)) => started = true,
                (6, Value::Bytes(_)) => completed = true,
                (7, Value::Bytes(b)) => error = String::from_utf8_lossy(b).into_owned(),
                _ => {}
            }
        }
        if digest.is_empty() {
            return;
        }
        let number = self.number(&digest);
        if (started || cached || completed) && self.started.insert(digest.clone()) {
            text.push_str(&format!("#{number} {name}\n"));
        }
        if (completed || cached) && self.ended.insert(digest) {
            if !error.is_empty() {
                text.push_str(&format!("#{number} ERROR: {error}\n"));
            } else if cached {
                text.push_str(&format!("#{number} CACHED\n"));
            } else {
                text.push_str(&format!("#{number} DONE\n"));
            }
        }
    }

    fn log(&mut self, log: &[u8], text: &mut String) {
        let (mut digest, mut message) = (String::new(), Vec::new());
        for (field, value) in fields(log) {
            match (field, value) {
                (1, Value::Bytes(b)) => digest = String::from_utf8_lossy(b).into_owned(),
                (4, Value::Bytes(b)) => message.extend_from_slice(b),
                _ => {}
            }
        }
        let number = self.number(&digest);
        for line in String::from_utf8_lossy(&message).lines() {
            text.push_str(&format!("#{number} {line}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(number << 3 | 2).unwrap_or(0)];
        out.push(u8::try_from(bytes.len()).unwrap_or(0));
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn a_trace_becomes_plain_progress_lines() {
        // A vertex that started, then the same one completed, then its log line.
        let started = [
            field(1, b"sha256:aa"),
            field(3, b"[1/2] FROM base"),
            field(5, &[8, 1]),
        ]
        .concat();
        let completed = [started.clone(), field(6, &[8, 2])].concat();
        let log = [field(1, b"sha256:aa"), field(4, b"hello\nworld\n")].concat();
        let mut progress = Progress::default();
        assert_eq!(progress.render(&field(1, &started)), "#1 [1/2] FROM base\n");
        assert_eq!(progress.render(&field(3, &log)), "#1 hello\n#1 world\n");
        assert_eq!(progress.render(&field(1, &completed)), "#1 DONE\n");
        // A cached vertex, seen for the first time, prints its name and CACHED.
        let cached = [
            field(1, b"sha256:bb"),
            field(3, b"[2/2] RUN x"),
            vec![4 << 3, 1],
        ]
        .concat();
        assert_eq!(
            progress.render(&field(1, &cached)),
            "#2 [2/2] RUN x\n#2 CACHED\n"
        );
        // Garbage decodes to nothing rather than failing.
        assert_eq!(progress.render(&[0xff, 0xff]), "");
    }

    #[test]
    fn the_query_names_buildkit_and_encodes_values() {
        let options = BuildOptions {
            dockerfile: "docker/Dockerfile".to_owned(),
            tag: "aloft/web:build-1".to_owned(),
            target: Some("prod".to_owned()),
            args: [("A".to_owned(), "1 2".to_owned())].into(),
            labels: Default::default(),
            secrets: Default::default(),
            no_cache: false,
        };
        let query = query(&options, Builder::BuildKit);
        assert!(!query.contains("nocache"), "{query}");
        let fresh = super::query(
            &BuildOptions {
                no_cache: true,
                ..options.clone()
            },
            Builder::Classic,
        );
        assert!(fresh.starts_with("version=1&"), "{fresh}");
        assert!(fresh.ends_with("&nocache=1"), "{fresh}");
        assert!(
            query.starts_with("version=2&dockerfile=docker%2FDockerfile&t=aloft%2Fweb%3Abuild-1"),
            "{query}"
        );
        assert!(
            query.contains("buildargs=%7B%22A%22%3A%221%202%22%7D"),
            "{query}"
        );
        assert!(query.ends_with("&target=prod"), "{query}");
    }
}
