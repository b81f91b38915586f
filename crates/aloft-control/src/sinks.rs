//! Log sinks (Aloft's own API): `POST/GET /v1/log_sinks`, `DELETE /v1/log_sinks/{id}`, for
//! the caller's organization; and the shippers that run them against this host's log
//! store ([`aloft_logs::ship`]), started, re-scoped and stopped as sinks and apps change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aloft_logs::{LogStore, ShipperStats, SinkKind, SinkSpec};
use aloft_store::SinkRecord;
use aloft_types::api::{CreateLogSinkRequest, ErrorBody, LogSinkResponse, OkResponse};
use aloft_types::time::rfc3339;
use axum::Json;
use axum::extract::{Path, State};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::app_for;
use crate::json::Body;
use crate::{ApiError, Inner, Principal};

/// How often the shippers are compared with the sinks and apps in the store.
const RESCAN: Duration = Duration::from_secs(2);

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(remove))
}

/// Shippers running in this process, by sink id.
pub(crate) type Shippers = std::sync::Mutex<HashMap<String, Arc<ShipperStats>>>;

fn check_url(kind: SinkKind, url: &str) -> Result<(), ApiError> {
    let host_port = |address: &str| {
        address
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    };
    let ok = match kind {
        SinkKind::Http | SinkKind::Loki => url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .is_some_and(|rest| !rest.is_empty()),
        SinkKind::Syslog => url
            .strip_prefix("tcp://")
            .or_else(|| url.strip_prefix("tls://"))
            .is_some_and(host_port),
    };
    if ok {
        return Ok(());
    }
    Err(ApiError::BadRequest(match kind {
        SinkKind::Http | SinkKind::Loki => {
            format!("url {url:?}: expected http://host:port/path or https://...")
        }
        SinkKind::Syslog => format!("url {url:?}: expected tcp://host:port or tls://host:port"),
    }))
}

/// Refuses a sink whose host is, or resolves to, an address sinks may not reach (the
/// host's own services, metadata, the private network): the shipper checks again at each
/// connection, so a name that changes later is refused then.
async fn check_reach(inner: &Inner, url: &str) -> Result<(), ApiError> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.parse::<u16>().is_ok() => {
            (host, port.parse::<u16>().unwrap_or(0))
        }
        _ => (authority, 0),
    };
    let refused =
        |error: aloft_logs::ReachError| ApiError::Unprocessable(format!("url {url:?}: {error}"));
    inner.sink_reach.check_literal(host).map_err(refused)?;
    match inner.sink_reach.resolve(host, port).await {
        Err(error @ aloft_logs::ReachError::Refused { .. }) => Err(refused(error)),
        // A collector whose name does not resolve yet is retried when shipping.
        Ok(_) | Err(aloft_logs::ReachError::Unresolved { .. }) => Ok(()),
    }
}

/// A sink's shipping counters here: (sent, dropped, failures, lag in lines).
pub(crate) fn counters(inner: &Inner, id: &str) -> (u64, u64, u64, u64) {
    let stats = inner
        .shippers
        .lock()
        .ok()
        .and_then(|s| s.get(id).cloned())
        .unwrap_or_default();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let lag = inner
        .logs
        .as_ref()
        .map_or(0, |s| s.durable_seq().saturating_sub(load(&stats.cursor)));
    (
        load(&stats.sent),
        load(&stats.dropped),
        load(&stats.failures),
        lag,
    )
}

async fn response(inner: &Inner, sink: &SinkRecord) -> LogSinkResponse {
    let app = match &sink.app_id {
        Some(id) => inner.store.app(id).await.ok().map(|a| a.name.to_string()),
        None => None,
    };
    let (sent, dropped, failures, lag) = counters(inner, &sink.id);
    LogSinkResponse {
        id: sink.id.clone(),
        kind: sink.kind,
        url: sink.url.clone(),
        app,
        created_at: rfc3339(sink.created_at),
        sent,
        dropped,
        failures,
        lag,
    }
}

#[utoipa::path(post, path = "/v1/log_sinks", tag = "logs", request_body = CreateLogSinkRequest, responses((status = 200, body = LogSinkResponse), (status = "4XX", description = "Bad input, missing or invalid token, no such app", body = ErrorBody)), operation_id = "LogSinks_create")]
async fn create(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Body(request): Body<CreateLogSinkRequest>,
) -> Result<Json<LogSinkResponse>, ApiError> {
    let kind: SinkKind = request.kind.parse().map_err(|_| {
        ApiError::BadRequest(format!("kind {:?}: use http, loki or syslog", request.kind))
    })?;
    check_url(kind, &request.url)?;
    check_reach(&inner, &request.url).await?;
    if let Some(pem) = &request.ca_pem
        && !pem.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(ApiError::BadRequest(
            "ca_pem: expected a PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    let app_id = match &request.app {
        Some(name) => Some(app_for(&inner, &principal, name, true).await?.id),
        None if principal.may_manage_org() => None,
        None => {
            return Err(ApiError::Forbidden(
                "a sink for every app of the organization needs an org token; name an app"
                    .to_owned(),
            ));
        }
    };
    let headers =
        serde_json::to_string(&request.headers).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let sink = inner
        .store
        .add_sink(SinkRecord {
            id: String::new(),
            org_id: principal.org_id().clone(),
            app_id,
            kind,
            url: request.url.clone(),
            headers_sealed: inner.secrets_key.encrypt(&headers)?,
            ca_pem: request.ca_pem.clone(),
            created_at: 0,
        })
        .await?;
    tracing::info!(sink = %sink.id, kind = %sink.kind, url = %sink.url, "log sink added");
    Ok(Json(response(&inner, &sink).await))
}

#[utoipa::path(get, path = "/v1/log_sinks", tag = "logs", responses((status = 200, description = "The organization's sinks with their shipping counters", body = Vec<LogSinkResponse>), (status = "4XX", description = "Missing or invalid token", body = ErrorBody)), operation_id = "LogSinks_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
) -> Result<Json<Vec<LogSinkResponse>>, ApiError> {
    let mut shown = Vec::new();
    for sink in inner.store.sinks_of(principal.org_id()).await? {
        let app = match &sink.app_id {
            Some(id) => Some(inner.store.app(id).await?.name.to_string()),
            None => None,
        };
        if app.as_deref().is_none_or(|a| principal.may_read_app(a)) {
            shown.push(response(&inner, &sink).await);
        }
    }
    Ok(Json(shown))
}

#[utoipa::path(delete, path = "/v1/log_sinks/{id}", tag = "logs", params(("id" = String, Path, description = "The sink's id")), responses((status = 200, body = OkResponse), (status = "4XX", description = "Missing or invalid token, no such sink", body = ErrorBody)), operation_id = "LogSinks_delete")]
async fn remove(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<OkResponse>, ApiError> {
    let sink = inner
        .store
        .sinks_of(principal.org_id())
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::not_found(format!("log sink {id}")))?;
    let allowed = match &sink.app_id {
        Some(app) => principal.may_write_app(inner.store.app(app).await?.name.as_str()),
        None => principal.may_manage_org(),
    };
    if !allowed {
        return Err(ApiError::Forbidden(format!(
            "this token may not remove log sink {id}"
        )));
    }
    inner.store.remove_sink(principal.org_id(), &id).await?;
    Ok(Json(OkResponse {
        ok: true,
        previous_state: None,
    }))
}

/// The apps a sink ships (its app, or every app of its organization), each from when its
/// name was last freed by a deleted app (see [`aloft_logs::Apps`]).
async fn apps_of(inner: &Inner, sink: &SinkRecord) -> Option<aloft_logs::Apps> {
    let names: Vec<String> = match &sink.app_id {
        Some(id) => vec![inner.store.app(id).await.ok()?.name.to_string()],
        None => inner
            .store
            .list_apps(&sink.org_id)
            .await
            .ok()?
            .into_iter()
            .map(|a| a.name.to_string())
            .collect(),
    };
    let mut apps = aloft_logs::Apps::new();
    for name in names {
        let freed = inner.store.app_name_freed_at(&name).await.ok()?;
        let from = freed.map_or(0, |ms| ms.saturating_add(1).saturating_mul(1_000_000));
        apps.insert(name, from);
    }
    Some(apps)
}

/// Runs a shipper per sink until `stop`, following changes to the sinks and apps.
pub(crate) async fn manage(
    inner: Arc<Inner>,
    store: LogStore,
    host: String,
    dir: PathBuf,
    stop: CancellationToken,
) {
    type Running = (
        CancellationToken,
        tokio::sync::watch::Sender<aloft_logs::Apps>,
    );
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        match inner.store.all_sinks().await {
            Ok(sinks) => {
                for sink in &sinks {
                    let Some(apps) = apps_of(&inner, sink).await else {
                        continue;
                    };
                    if let Some((_, scope)) = running.get(&sink.id) {
                        scope.send_if_modified(|current| {
                            let changed = *current != apps;
                            *current = apps.clone();
                            changed
                        });
                        continue;
                    }
                    let kind = sink.kind;
                    let headers: BTreeMap<String, String> = inner
                        .secrets_key
                        .decrypt(&sink.headers_sealed)
                        .ok()
                        .and_then(|text| serde_json::from_str(&text).ok())
                        .unwrap_or_default();
                    let spec = SinkSpec {
                        id: sink.id.clone(),
                        kind,
                        url: sink.url.clone(),
                        headers,
                        apps: apps.clone(),
                        host: host.clone(),
                        since_ns: sink.created_at.saturating_mul(1_000_000),
                        ca_pem: sink.ca_pem.clone(),
                        reach: inner.sink_reach.clone(),
                    };
                    let (scope, scoped) = tokio::sync::watch::channel(apps);
                    let token = stop.child_token();
                    let stats = Arc::new(ShipperStats::default());
                    if let Ok(mut shippers) = inner.shippers.lock() {
                        shippers.insert(sink.id.clone(), stats.clone());
                    }
                    tokio::spawn(aloft_logs::ship(
                        store.clone(),
                        spec,
                        scoped,
                        dir.clone(),
                        stats,
                        token.clone(),
                    ));
                    running.insert(sink.id.clone(), (token, scope));
                }
                let live: BTreeSet<&str> = sinks.iter().map(|s| s.id.as_str()).collect();
                running.retain(|id, (token, _)| {
                    if live.contains(id.as_str()) {
                        return true;
                    }
                    token.cancel();
                    if let Ok(mut shippers) = inner.shippers.lock() {
                        shippers.remove(id);
                    }
                    let _ = std::fs::remove_file(dir.join(format!("{id}.cursor")));
                    tracing::info!(sink = %id, "log sink removed; its shipper stops");
                    false
                });
            }
            Err(error) => tracing::warn!(%error, "reading the log sinks failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(RESCAN) => {}
            () = stop.cancelled() => break,
            () = inner.stopping.cancelled() => break,
        }
    }
    // The shippers stop with it (each keeps its cursor, and carries on at the next start).
    for (token, _) in running.values() {
        token.cancel();
    }
}
