//! Hosts that stop answering: a host whose agent missed its heartbeats for
//! `host_down_after` is declared down (written first, so a restart carries on), and each
//! of its machines without a volume is replaced by a machine of the same config on
//! another host (its region first, then the nearest region with room): the replacement
//! is created first, carrying the id of the machine it replaces (so a restart in between
//! does not make a second), then the lost machine is marked destroyed, with an event
//! naming the host and the replacement. A machine with a volume stays where its data is,
//! shown `lost` until its host comes back. A host that comes back runs none of the
//! moved machines: their records are destroyed, so its agent removes their containers as
//! orphans at its first sweep. A machine that others stand by for (their `standbys`) is
//! not replaced: its standbys are started instead, as Fly does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aloft_store::{Desired, HostRecord, MachineRecord};
use aloft_types::api::MachineRequest;
use aloft_types::{EventKind, HostState, MachineId, MachineState};
use serde_json::json;

use crate::{ApiError, Inner};

/// Metadata of a replacement: the id of the machine it replaces.
pub(crate) const METADATA_REPLACES: &str = "aloft_replaces";

/// How often the hosts are looked at.
const EVERY: Duration = Duration::from_secs(1);

/// Watches the hosts until the control plane stops. For `host_down_after` from its start
/// it declares no host down: heartbeats sent while the control plane was away (a restart,
/// a kill) were lost, not missed.
pub(crate) async fn watch(inner: Arc<Inner>) {
    let started = tokio::time::Instant::now();
    crate::periodic::every(inner, EVERY, "watching the hosts", |inner| async move {
        let judge = started.elapsed() >= inner.config.host_down_after;
        pass(&inner, judge).await
    })
    .await;
}

/// One look at every host; `judge`: whether a host may be declared down.
async fn pass(inner: &Arc<Inner>, judge: bool) -> Result<(), ApiError> {
    let now = aloft_store::now_ms();
    let after = i64::try_from(inner.config.host_down_after.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now.saturating_sub(after);
    for record in inner.store.host_records().await? {
        let id = &record.host.id;
        if judge && record.down_at.is_none() && record.host.last_heartbeat < cutoff {
            if !inner.store.mark_host_down(id, cutoff, now).await? {
                continue;
            }
            tracing::warn!(host = %id, region = %record.host.region, last_heartbeat = record.host.last_heartbeat, "a host missed its heartbeats; it is down and its machines without volumes move");
            // Its machines leave the routes and DNS at once.
            inner.catalog_dirty.notify_one();
            let standbys = standbys_of(inner, &record).await?;
            note_lost(inner, &record, &standbys).await?;
            wake_standbys(inner, &record, &standbys).await?;
            evacuate(inner, &record, &standbys).await?;
        } else if record.down_at.is_some() {
            let standbys = standbys_of(inner, &record).await?;
            wake_standbys(inner, &record, &standbys).await?;
            evacuate(inner, &record, &standbys).await?;
        } else if record.host.last_heartbeat < cutoff {
            // Not judged yet (the control plane just started): neither down nor drained.
        } else if record.set == HostState::Draining {
            drain_step(inner, &record).await?;
        }
    }
    Ok(())
}

/// Says why each machine with a volume or a standby on a host just declared down is
/// `lost` (an event, once, when the host is declared down).
async fn note_lost(
    inner: &Arc<Inner>,
    host: &HostRecord,
    standbys: &HashMap<MachineId, Vec<MachineRecord>>,
) -> Result<(), ApiError> {
    for machine in inner.store.machines_on_host(&host.host.id).await? {
        let standing_by = standbys.get(&machine.id);
        if machine.desired == Desired::Destroyed
            || machine.state.is_terminal()
            || (machine.config.mounts.is_empty() && standing_by.is_none())
        {
            continue;
        }
        let reason = match standing_by {
            Some(standing) => format!(
                "host {} missed its heartbeats; the machine stays there, lost, until the host returns, and its standby {} starts",
                host.host.id,
                standing
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!(
                "host {} missed its heartbeats; the machine's volume is on it, so it stays there, lost, until the host returns",
                host.host.id
            ),
        };
        inner
            .store
            .append_event(
                &machine.id,
                EventKind::Exit,
                "lost",
                "flyd",
                &json!({ "reason": reason, "host": host.host.id.to_string() }),
            )
            .await?;
        crate::logs::platform_line(inner.logs.as_ref(), &inner.store, &machine.id, reason).await;
    }
    Ok(())
}

/// The machines of `host` that others stand by for (config `standbys`), each with its
/// standbys elsewhere.
async fn standbys_of(
    inner: &Arc<Inner>,
    host: &HostRecord,
) -> Result<HashMap<MachineId, Vec<MachineRecord>>, ApiError> {
    let on_host: Vec<MachineId> = inner
        .store
        .machines_on_host(&host.host.id)
        .await?
        .into_iter()
        .filter(|m| m.desired != Desired::Destroyed && !m.state.is_terminal())
        .map(|m| m.id)
        .collect();
    let mut standbys: HashMap<MachineId, Vec<MachineRecord>> = HashMap::new();
    if on_host.is_empty() {
        return Ok(standbys);
    }
    for machine in inner.store.live_machines().await? {
        if machine.host_id.as_ref() == Some(&host.host.id) || machine.desired == Desired::Destroyed
        {
            continue;
        }
        for watched in &on_host {
            if machine
                .config
                .standbys
                .iter()
                .any(|id| id == watched.as_str())
            {
                standbys
                    .entry(watched.clone())
                    .or_default()
                    .push(machine.clone());
            }
        }
    }
    Ok(standbys)
}

/// Starts the standbys of a down host's machines (Fly's `standbys`: started when the
/// host of the machine they stand by for fails); each once, as the platform.
async fn wake_standbys(
    inner: &Arc<Inner>,
    host: &HostRecord,
    standbys: &HashMap<MachineId, Vec<MachineRecord>>,
) -> Result<(), ApiError> {
    for (watched, standing) in standbys {
        for standby in standing {
            if standby.desired == Desired::Started {
                continue;
            }
            let text = format!(
                "host {} of machine {watched} is down: its standby {} starts",
                host.host.id, standby.id
            );
            tracing::warn!("{text}");
            crate::machines::platform_power(
                inner,
                &standby.id,
                true,
                crate::machines::PlatformReason::Standby,
            )
            .await?;
            crate::logs::platform_line(inner.logs.as_ref(), &inner.store, &standby.id, text).await;
        }
    }
    Ok(())
}

/// Replaces every machine of a down host that has no volume and no standby (again after
/// a restart: each step is idempotent).
async fn evacuate(
    inner: &Arc<Inner>,
    host: &HostRecord,
    standbys: &HashMap<MachineId, Vec<MachineRecord>>,
) -> Result<(), ApiError> {
    for machine in inner.store.machines_on_host(&host.host.id).await? {
        if machine.desired == Desired::Destroyed
            || machine.state.is_terminal()
            || !machine.config.mounts.is_empty()
            || standbys.contains_key(&machine.id)
        {
            continue;
        }
        if let Err(error) = replace(inner, host, &machine).await {
            // The next pass tries again (another host may have joined or come back).
            tracing::warn!(machine = %machine.id, host = %host.host.id, %error, "a machine of a down host could not be moved");
        }
    }
    Ok(())
}

/// One step of draining a host, one machine at a time: its first machine without a
/// volume gets a replacement; once that one is started with every check passing, the
/// machine is stopped and destroyed, and the next pass takes the next machine.
async fn drain_step(inner: &Arc<Inner>, host: &HostRecord) -> Result<(), ApiError> {
    let Some(machine) = inner
        .store
        .machines_on_host(&host.host.id)
        .await?
        .into_iter()
        .find(|m| {
            m.desired != Desired::Destroyed
                && !m.state.is_terminal()
                && m.state != MachineState::Destroying
                && m.config.mounts.is_empty()
        })
    else {
        return Ok(());
    };
    let app = inner.store.app(&machine.app_id).await?;
    let replacement = match replacement_for(inner, &app, &machine).await {
        Ok(replacement) => replacement,
        Err(error) => {
            tracing::warn!(host = %host.host.id, machine = %machine.id, %error, "draining: no host can take the machine yet");
            return Ok(());
        }
    };
    let ready = if machine.desired == Desired::Stopped {
        true
    } else {
        let expected: usize = replacement
            .config
            .services
            .iter()
            .map(|s| s.checks.len())
            .sum::<usize>()
            + replacement.config.checks.len();
        let checks = inner.store.checks_of(&replacement.id).await?;
        let passing = checks
            .iter()
            .filter(|c| c.status == aloft_types::CheckStatus::Passing)
            .count();
        replacement.state == MachineState::Started && passing >= expected
    };
    if !ready {
        return Ok(());
    }
    inner
        .store
        .append_event(
            &machine.id,
            EventKind::Destroy,
            "drained",
            "flyd",
            &json!({
                "host": host.host.id.to_string(),
                "replaced_by": replacement.id.to_string(),
            }),
        )
        .await?;
    let text = format!(
        "host {} drains: machine {} replaced by machine {}",
        host.host.id, machine.id, replacement.id
    );
    tracing::info!(app = %app.name, "{text}");
    crate::logs::platform_line(inner.logs.as_ref(), &inner.store, &replacement.id, text).await;
    crate::machines::destroy_forcibly(inner, &machine, false).await?;
    inner.catalog_dirty.notify_one();
    Ok(())
}

/// The machine that replaces `machine` (made now unless a previous pass made it): the
/// same config on another up host, its region first, then the nearest with room.
async fn replacement_for(
    inner: &Arc<Inner>,
    app: &aloft_store::App,
    machine: &MachineRecord,
) -> Result<MachineRecord, ApiError> {
    let existing = inner
        .store
        .list_machines(&app.id, &aloft_store::MachineFilter::default())
        .await?
        .into_iter()
        .find(|m| {
            !m.state.is_terminal()
                && m.config.metadata.get(METADATA_REPLACES).map(String::as_str)
                    == Some(machine.id.as_str())
        });
    if let Some(found) = existing {
        return Ok(found);
    }
    let mut config = machine.config.clone();
    config
        .metadata
        .insert(METADATA_REPLACES.to_owned(), machine.id.to_string());
    let mut last = None;
    for region in regions_by_distance(inner, &machine.region).await? {
        let mut request = MachineRequest::new(config.clone());
        request.region = Some(region);
        request.skip_launch = machine.desired == Desired::Stopped;
        match crate::machines::create_machine_as(inner, app, request, "platform", machine.cordoned)
            .await
        {
            Ok(made) => {
                inner
                    .store
                    .append_event(
                        &made.id,
                        EventKind::Launch,
                        "replacement",
                        "flyd",
                        &json!({
                            "replaces": machine.id.to_string(),
                            "host": machine.host_id.as_ref().map(ToString::to_string),
                        }),
                    )
                    .await?;
                return Ok(made);
            }
            Err(ApiError::PreconditionFailed(why)) => last = Some(why),
            Err(error) => return Err(error),
        }
    }
    Err(ApiError::PreconditionFailed(
        last.unwrap_or_else(|| "no other host is up".to_owned()),
    ))
}

/// The machine's replacement on another host, then the machine itself marked destroyed.
async fn replace(
    inner: &Arc<Inner>,
    host: &HostRecord,
    lost: &MachineRecord,
) -> Result<(), ApiError> {
    let app = inner.store.app(&lost.app_id).await?;
    let replacement = replacement_for(inner, &app, lost).await?;
    let why = json!({
        "reason": "host_down",
        "host": host.host.id.to_string(),
        "replaced_by": replacement.id.to_string(),
        "replacement_host": replacement.host_id.as_ref().map(ToString::to_string),
    });
    inner
        .store
        .set_desired(&lost.id, Desired::Destroyed)
        .await?;
    if lost.state != MachineState::Destroyed {
        inner
            .store
            .set_machine_state(&lost.id, MachineState::Destroyed)
            .await?;
    }
    inner
        .store
        .append_event(&lost.id, EventKind::Destroy, "host_down", "flyd", &why)
        .await?;
    let text = format!(
        "host {} is down: machine {} moved to machine {} on host {}",
        host.host.id,
        lost.id,
        replacement.id,
        replacement
            .host_id
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    );
    tracing::warn!(app = %app.name, "{text}");
    crate::logs::platform_line(inner.logs.as_ref(), &inner.store, &replacement.id, text).await;
    inner.catalog_dirty.notify_one();
    Ok(())
}

/// The regions with an up host: `region` first, then the others nearest first (Fly's
/// coordinates for its codes; codes it does not know come last, by name).
async fn regions_by_distance(inner: &Inner, region: &str) -> Result<Vec<String>, ApiError> {
    let mut regions: Vec<String> = inner
        .store
        .host_records()
        .await?
        .into_iter()
        .filter(|h| h.state() == HostState::Up)
        .map(|h| h.host.region)
        .collect();
    regions.sort();
    regions.dedup();
    let from = aloft_types::regions::fly_region(region);
    let distance = |code: &str| -> f64 {
        if code == region {
            return -1.0;
        }
        match (from, aloft_types::regions::fly_region(code)) {
            (Some(a), Some(b)) => aloft_types::regions::distance_km(a, b),
            _ => f64::MAX,
        }
    };
    regions.sort_by(|a, b| distance(a).total_cmp(&distance(b)).then_with(|| a.cmp(b)));
    Ok(regions)
}
