//! `/v1/orgs/{slug}/machines` and `/v1/orgs/{slug}/volumes` (Fly's): every machine or
//! volume of the organization's apps, oldest change first (then by id), filtered by
//! region, state and `updated_after`, a page of at most `limit` (1,000) at a time with a
//! cursor: `<updated_at ms>:<id>` of the page's last item, so that a change made while a
//! client pages moves the item to a later page instead of losing it.

use std::collections::HashMap;
use std::sync::Arc;

use aloft_store::{App, MachineFilter, Org};
use aloft_types::api::{
    ErrorBody, OrgMachine, OrgMachineConfig, OrgMachinesResponse, OrgVolume, OrgVolumesResponse,
};
use aloft_types::time::{parse_rfc3339_ns, rfc3339};
use axum::Json;
use axum::extract::{Path, Query, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiError, Inner, Principal};

/// The most items one page holds (Fly's limit).
const MOST: usize = 1000;

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(machines))
        .routes(routes!(volumes))
}

/// What both lists read from the query string.
struct Paging {
    include_deleted: bool,
    region: Option<String>,
    states: Option<Vec<String>>,
    summary: bool,
    /// Items changed at or before this (ms) are left out.
    after: Option<(i64, String)>,
    limit: usize,
}

fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{name} is {other:?}; say true or false"
        ))),
    }
}

fn paging(query: &HashMap<String, String>) -> Result<Paging, ApiError> {
    let after = match (query.get("cursor"), query.get("updated_after")) {
        (Some(cursor), _) if !cursor.is_empty() => {
            let parsed = cursor
                .split_once(':')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_owned())));
            Some(parsed.ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "cursor {cursor:?} is not one this API gave (next_cursor of a page)"
                ))
            })?)
        }
        (_, Some(at)) if !at.is_empty() => {
            let ns = parse_rfc3339_ns(at).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "updated_after {at:?} is not an RFC 3339 time (2026-12-07T10:00:00Z)"
                ))
            })?;
            // Changed after that time: the id bound sorts after every id of that ms.
            Some((ns.div_euclid(1_000_000), "\u{10ffff}".to_owned()))
        }
        _ => None,
    };
    let limit = match query.get("limit").filter(|l| !l.is_empty()) {
        None => MOST,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(MOST),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit is {text:?}; ask for 1 to {MOST}"
                )));
            }
        },
    };
    Ok(Paging {
        include_deleted: flag(query, "include_deleted")?,
        region: query.get("region").filter(|r| !r.is_empty()).cloned(),
        states: query.get("state").filter(|s| !s.is_empty()).map(|s| {
            s.split(',')
                .map(|state| state.trim().to_owned())
                .filter(|state| !state.is_empty())
                .collect()
        }),
        summary: flag(query, "summary")?,
        after,
        limit,
    })
}

/// The organization the path names, for a token that may read all of it: its own
/// (`personal` and the empty slug name it, as Fly's clients send them), or any for the
/// operator; another is a 404, an app's token a 403.
async fn readable_org(inner: &Inner, principal: &Principal, slug: &str) -> Result<Org, ApiError> {
    let own = inner.store.org(principal.org_id()).await?;
    let org = if slug == own.slug || slug == "personal" || slug.is_empty() {
        own
    } else if principal.is_operator() {
        inner.store.org_by_slug(slug).await?
    } else {
        return Err(ApiError::not_found(format!("organization {slug}")));
    };
    if !principal.may_read_org() {
        return Err(ApiError::Forbidden(format!(
            "listing the organization's {slug} needs an org, readonly or operator token; a deploy or ssh token lists its own app's (GET /v1/apps/{{app}}/...)"
        )));
    }
    Ok(org)
}

/// Sorts `items` by (change time, id), keeps those after the cursor, and cuts a page;
/// returns the page and the next cursor when more remain.
fn page<T>(
    mut items: Vec<(i64, String, T)>,
    paging: &Paging,
) -> (Vec<(i64, String, T)>, Option<String>) {
    items.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    if let Some((at, id)) = &paging.after {
        items.retain(|(t, i, _)| (*t, i) > (*at, id));
    }
    let more = items.len() > paging.limit;
    items.truncate(paging.limit);
    let next = more
        .then(|| items.last().map(|(t, i, _)| format!("{t}:{i}")))
        .flatten();
    (items, next)
}

async fn apps_of(inner: &Inner, org: &Org) -> Result<Vec<App>, ApiError> {
    Ok(inner.store.list_apps(&org.id).await?)
}

#[utoipa::path(get, path = "/v1/orgs/{slug}/machines", tag = "orgs", params(("slug" = String, Path, description = "The organization's slug (`personal`: the token's)"), ("include_deleted" = Option<bool>, Query), ("region" = Option<String>, Query), ("state" = Option<String>, Query, description = "Comma-separated states"), ("summary" = Option<bool>, Query, description = "Leave out each machine's config"), ("updated_after" = Option<String>, Query, description = "RFC 3339"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, description = "At most 1,000")), responses((status = 200, body = OrgMachinesResponse), (status = "4XX", description = "Bad query, missing or invalid token, another organization", body = ErrorBody)), operation_id = "Machines_org_list")]
async fn machines(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(slug): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<OrgMachinesResponse>, ApiError> {
    let org = readable_org(&inner, &principal, &slug).await?;
    let paging = paging(&query)?;
    let filter = MachineFilter {
        region: paging.region.clone(),
        metadata: Vec::new(),
        include_deleted: paging.include_deleted,
    };
    let mut items = Vec::new();
    for app in apps_of(&inner, &org).await? {
        for machine in inner.store.list_machines(&app.id, &filter).await? {
            let state = machine.state.to_string();
            if paging.states.as_ref().is_some_and(|s| !s.contains(&state)) {
                continue;
            }
            let shown = OrgMachine {
                id: machine.id.to_string(),
                name: machine.name.clone(),
                app_name: app.name.to_string(),
                state,
                region: machine.region.clone(),
                private_ip: machine.private_ip.clone().unwrap_or_default(),
                version: machine.version.to_string(),
                created_at: rfc3339(machine.created_at),
                updated_at: rfc3339(machine.updated_at),
                config: (!paging.summary).then(|| OrgMachineConfig {
                    guest: machine.config.guest.clone(),
                    image: machine.config.image.clone(),
                    metadata: machine.config.metadata.clone(),
                }),
            };
            items.push((machine.updated_at, machine.id.to_string(), shown));
        }
    }
    let (items, next_cursor) = page(items, &paging);
    let last = items.last().map(|(at, id, _)| (id.clone(), rfc3339(*at)));
    Ok(Json(OrgMachinesResponse {
        machines: items.into_iter().map(|(_, _, m)| m).collect(),
        next_cursor,
        last_machine_id: last.as_ref().map(|(id, _)| id.clone()),
        last_updated_at: last.map(|(_, at)| at),
        error_regions: Vec::new(),
    }))
}

#[utoipa::path(get, path = "/v1/orgs/{slug}/volumes", tag = "orgs", params(("slug" = String, Path, description = "The organization's slug (`personal`: the token's)"), ("include_deleted" = Option<bool>, Query), ("region" = Option<String>, Query), ("state" = Option<String>, Query, description = "Comma-separated states"), ("summary" = Option<bool>, Query), ("updated_after" = Option<String>, Query, description = "RFC 3339"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, description = "At most 1,000")), responses((status = 200, body = OrgVolumesResponse), (status = "4XX", description = "Bad query, missing or invalid token, another organization", body = ErrorBody)), operation_id = "Volumes_org_list")]
async fn volumes(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(slug): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<OrgVolumesResponse>, ApiError> {
    let org = readable_org(&inner, &principal, &slug).await?;
    let paging = paging(&query)?;
    let mut items = Vec::new();
    for app in apps_of(&inner, &org).await? {
        let volumes = if paging.include_deleted {
            inner.store.list_volumes_with_destroyed(&app.id).await?
        } else {
            inner.store.list_volumes(&app.id).await?
        };
        for volume in volumes {
            let state = volume.state.as_str();
            if paging.region.as_ref().is_some_and(|r| *r != volume.region)
                || paging
                    .states
                    .as_ref()
                    .is_some_and(|s| !s.iter().any(|wanted| wanted == state))
            {
                continue;
            }
            let shown = OrgVolume {
                volume: crate::volumes::response(&volume),
                app_name: app.name.to_string(),
                updated_at: rfc3339(volume.updated_at),
            };
            items.push((volume.updated_at, volume.id.to_string(), shown));
        }
    }
    let (items, next_cursor) = page(items, &paging);
    let last = items.last().map(|(at, id, _)| (id.clone(), rfc3339(*at)));
    Ok(Json(OrgVolumesResponse {
        volumes: items.into_iter().map(|(_, _, v)| v).collect(),
        next_cursor,
        last_volume_id: last.as_ref().map(|(id, _)| id.clone()),
        last_updated_at: last.map(|(_, at)| at),
    }))
}
