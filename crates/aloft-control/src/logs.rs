//! Logs (Aloft's own API): `GET /v1/apps/{app}/logs` pages through the app's lines by time
//! range, machine, region and text; `GET /v1/apps/{app}/logs/stream` follows them as
//! NDJSON. The lines come from the host's log store ([`aloft_logs::LogStore`]), which the
//! agent fills with the machines' output and the control plane with platform events
//! (machine events, deployment steps).

use std::sync::Arc;
use std::time::Duration;

use aloft_logs::{Entry, LogStore, NewEntry, Query, Stream};
use aloft_store::Store;
use aloft_types::MachineId;
use aloft_types::api::{ErrorBody, LogEntryResponse, LogsResponse, StreamEnd};
use aloft_types::time::{parse_rfc3339_ns, rfc3339_nanos};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query as QueryString, State};
use axum::http::header;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::ReadApp;
use crate::{ApiError, Inner};

/// Lines per page unless asked otherwise, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(stream))
}

/// Filters of both endpoints.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsQuery {
    /// From this time: RFC 3339, or an age such as `10m`, `1h`, `7d`.
    since: Option<String>,
    /// Before this time (same forms).
    until: Option<String>,
    /// Only this machine's lines.
    machine: Option<String>,
    region: Option<String>,
    /// Lines containing this text (case-sensitive).
    text: Option<String>,
    /// Lines per page (default 100, at most 10000).
    limit: Option<usize>,
    /// Continue after a previous page (its `next_cursor`).
    cursor: Option<String>,
    /// `true`: the newest matching lines (the default without `since` or `cursor`);
    /// `false`: the oldest from `since`.
    newest: Option<bool>,
}

fn now_ns() -> i64 {
    aloft_store::now_ms().saturating_mul(1_000_000)
}

/// `since`/`until`: an RFC 3339 time or an age (`90s`, `10m`, `2h`, `7d`).
fn instant(text: &str, what: &str) -> Result<i64, ApiError> {
    if let Some(at) = parse_rfc3339_ns(text) {
        return Ok(at);
    }
    let age = text
        .strip_suffix('d')
        .and_then(|days| days.parse::<u64>().ok())
        .map(|days| Duration::from_secs(days * 86_400))
        .or_else(|| {
            text.parse::<aloft_types::Duration>()
                .ok()
                .map(|d| Duration::from_secs_f64(d.as_secs_f64()))
        })
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{what} {text:?}: expected an RFC 3339 time or an age such as 10m, 1h or 7d"
            ))
        })?;
    Ok(now_ns().saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX)))
}

fn cursor_of(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("cursor {text:?} is not one this API gave")))
}

impl LogsQuery {
    fn to_query(&self, app: &str) -> Result<Query, ApiError> {
        let since_ns = self
            .since
            .as_deref()
            .map(|t| instant(t, "since"))
            .transpose()?;
        let until_ns = self
            .until
            .as_deref()
            .map(|t| instant(t, "until"))
            .transpose()?;
        let after_seq = self.cursor.as_deref().map(cursor_of).transpose()?;
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::BadRequest(format!(
                "limit {limit}: between 1 and {MAX_LIMIT}"
            )));
        }
        let newest = self
            .newest
            .unwrap_or(since_ns.is_none() && after_seq.is_none());
        Ok(Query {
            app: Some(app.to_owned()),
            machine: self.machine.clone().filter(|m| !m.is_empty()),
            region: self.region.clone().filter(|r| !r.is_empty()),
            text: self.text.clone().filter(|t| !t.is_empty()),
            output_only: false,
            since_ns,
            until_ns,
            after_seq,
            limit,
            newest,
        })
    }
}

fn response(host: &str, entry: Entry) -> LogEntryResponse {
    LogEntryResponse {
        id: format!("{host}-{}", entry.seq),
        timestamp: rfc3339_nanos(entry.timestamp_ns),
        timestamp_ns: entry.timestamp_ns,
        app: entry.app,
        machine: entry.machine,
        region: entry.region,
        instance: entry.instance,
        stream: entry.stream.as_str().to_owned(),
        message: entry.text,
    }
}

impl Inner {
    /// Keeps a query within the retention of the app's organization and the app's own
    /// lifetime.
    async fn limit_to_retention(
        &self,
        app: &aloft_store::App,
        query: &mut Query,
    ) -> Result<(), ApiError> {
        let crate::LogRetention { default, by_org } = &self.log_retention;
        let default = *default;
        let keep = if by_org.is_empty() {
            default
        } else {
            let slug = self.store.org(&app.org_id).await?.slug;
            by_org.get(&slug).copied().or(default)
        };
        // Lines are kept by app name, which is free again once an app is deleted: an app
        // of the same name created later (perhaps by another organization) reads only the
        // lines from after that deletion.
        let freed = self.store.app_name_freed_at(app.name.as_str()).await?;
        let mut floor = freed.map(|ms| ms.saturating_add(1).saturating_mul(1_000_000));
        if let Some(keep) = keep {
            let kept = now_ns().saturating_sub(i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX));
            floor = Some(floor.map_or(kept, |f| f.max(kept)));
        }
        if let Some(floor) = floor {
            query.since_ns = Some(query.since_ns.map_or(floor, |since| since.max(floor)));
        }
        Ok(())
    }

    fn host_tag(&self) -> String {
        self.log_host.clone()
    }

    fn log_store(&self) -> Result<LogStore, ApiError> {
        self.logs.clone().ok_or_else(|| {
            ApiError::Unavailable("this server keeps no logs (no log store attached)".to_owned())
        })
    }
}

/// Runs a query off the async threads (it reads files).
async fn run(store: LogStore, query: Query) -> Result<aloft_logs::QueryResult, ApiError> {
    tokio::task::spawn_blocking(move || store.query(&query))
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .map_err(|e| ApiError::Internal(Box::new(e)))
}

#[utoipa::path(get, path = "/v1/apps/{app}/logs", tag = "logs", params(("app" = String, Path, description = "The app's name"), LogsQuery), responses((status = 200, description = "A page of the app's lines, oldest first", body = LogsResponse), (status = "4XX", description = "Bad filter, missing or invalid token, no such app", body = ErrorBody)), operation_id = "Logs_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
    QueryString(filters): QueryString<LogsQuery>,
) -> Result<Json<LogsResponse>, ApiError> {
    let store = inner.log_store()?;
    let mut query = filters.to_query(app.name.as_str())?;
    inner.limit_to_retention(&app, &mut query).await?;
    let found = run(store, query).await?;
    let host = inner.host_tag();
    Ok(Json(LogsResponse {
        next_cursor: found.next_after.to_string(),
        entries: found
            .entries
            .into_iter()
            .map(|e| response(&host, e))
            .collect(),
    }))
}

/// How often a follower looks whether its app still exists.
const APP_LOOK_INTERVAL: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/v1/apps/{app}/logs/stream", tag = "logs", params(("app" = String, Path, description = "The app's name"), LogsQuery), responses((status = 200, description = "The app's lines as they are stored, as NDJSON (one LogEntryResponse per line), after `cursor` (default: from now); it runs until the client goes, or until the server ends it with a last StreamEnd line (`shutting_down`, `app_destroyed`)", body = LogEntryResponse, content_type = "application/x-ndjson"), (status = "4XX", description = "Bad filter, missing or invalid token, no such app", body = ErrorBody)), operation_id = "Logs_stream")]
async fn stream(
    State(inner): State<Arc<Inner>>,
    ReadApp(app): ReadApp,
    QueryString(filters): QueryString<LogsQuery>,
) -> Result<Response, ApiError> {
    let store = inner.log_store()?;
    let mut query = filters.to_query(app.name.as_str())?;
    inner.limit_to_retention(&app, &mut query).await?;
    query.newest = false;
    query.limit = MAX_LIMIT;
    let mut after = query.after_seq.unwrap_or_else(|| store.durable_seq());
    let host = inner.host_tag();
    let mut durable = store.subscribe();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let draining = inner.draining.clone();
    let state = inner.store.clone();
    let (app_id, app_name) = (app.id.clone(), app.name.to_string());
    let mut looks = tokio::time::interval(APP_LOOK_INTERVAL);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::spawn(async move {
        // The stream's last line when the server ends it, saying why.
        let end = |end: &str, message: String| {
            let mut line = serde_json::to_vec(&StreamEnd {
                end: end.to_owned(),
                message,
            })
            .unwrap_or_default();
            line.push(b'\n');
            Ok(Bytes::from(line))
        };
        loop {
            query.after_seq = Some(after);
            let found = match run(store.clone(), query.clone()).await {
                Ok(found) => found,
                Err(error) => {
                    tracing::warn!(%error, "following logs failed");
                    return;
                }
            };
            after = found.next_after;
            if !found.entries.is_empty() {
                let mut chunk = Vec::new();
                for entry in found.entries {
                    let _ = serde_json::to_writer(&mut chunk, &response(&host, entry));
                    chunk.push(b'\n');
                }
                if sender.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return;
                }
                continue;
            }
            // Nothing new: wait for the next sync, or send a keep-alive now and then so a
            // client that went away is noticed.
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(15)) => {
                    if sender.send(Ok(Bytes::from_static(b"\n"))).await.is_err() {
                        return;
                    }
                }
                () = sender.closed() => return,
                () = draining.cancelled() => {
                    let _ = sender.send(end(
                        "shutting_down",
                        "aloftd is shutting down; run `aloft logs` again once it is back (no line is lost: they are stored)".to_owned(),
                    )).await;
                    return;
                }
                _ = looks.tick() => {
                    if let Err(aloft_store::StoreError::NotFound { .. }) = state.app(&app_id).await {
                        let _ = sender.send(end(
                            "app_destroyed",
                            format!("app {app_name} was destroyed"),
                        )).await;
                        return;
                    }
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream_of(receiver));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .map_err(|e| ApiError::Internal(Box::new(e)))
}

fn tokio_stream_of<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// Writes a platform line about a machine (its events, deployment steps) into the log
/// store, when there is one. Never fails the caller: a lost event line is logged.
pub(crate) async fn platform_line(
    logs: Option<&LogStore>,
    store: &Store,
    machine: &MachineId,
    text: String,
) {
    let Some(logs) = logs else { return };
    let Ok(record) = store.machine_by_id(machine).await else {
        return;
    };
    let Ok(app) = store.app(&record.app_id).await else {
        return;
    };
    let entry = NewEntry {
        timestamp_ns: now_ns(),
        stream: Stream::Platform,
        app: app.name.to_string(),
        machine: machine.to_string(),
        region: record.region.clone(),
        instance: record.instance_id.clone(),
        text,
    };
    if let Err(error) = logs.append(vec![entry]).await {
        tracing::warn!(%machine, %error, "recording a platform log line failed");
    }
}

/// The text of a machine event's log line: `event exit stopped (exit code 1)`.
pub(crate) fn event_text(
    kind: &str,
    status: &str,
    source: &str,
    request: &serde_json::Value,
) -> String {
    let mut text = format!("{source}: machine {kind} {status}");
    if let Some(exit) = request.get("exit_event") {
        let code = exit.get("exit_code").and_then(serde_json::Value::as_i64);
        let oom = exit.get("oom_killed").and_then(serde_json::Value::as_bool) == Some(true);
        if let Some(code) = code {
            text.push_str(&format!(
                " (exit code {code}{})",
                if oom { ", out of memory" } else { "" }
            ));
        }
    }
    if let Some(error) = request.get("error").and_then(serde_json::Value::as_str) {
        text.push_str(": ");
        text.push_str(error);
    }
    text
}
