//! Log capture: every line a machine's container writes goes into the host's log store,
//! with the engine's timestamp, the app, machine, region and instance.
//!
//! One task per run follows the container's output from the engine (which keeps it on
//! disk), so lines written while `aloftd` was down are captured when it adopts the
//! container again: the task starts after the newest line already stored for the machine.

use std::sync::Arc;
use std::time::Duration;

use aloft_agent_api::MachineRecord;
use aloft_logs::{LogStore, NewEntry, Query, Stream};
use aloft_runtime::{ContainerInfo, LogStream, Runtime};
use aloft_types::time::parse_rfc3339_ns;
use futures_util::StreamExt as _;

use crate::Shared;

/// Lines handed to the store at once, at most.
const BATCH: usize = 2048;
/// How long a line may wait for more to share its batch.
const LINGER: Duration = Duration::from_millis(20);
/// How long to wait before following a running container's output again after the
/// engine's stream ended.
const REFOLLOW: Duration = Duration::from_millis(200);

/// The newest line already stored for `machine` (Unix ns), so a resumed capture does not
/// store it twice.
fn resume_after(store: &LogStore, machine: &str) -> Option<i64> {
    let newest = store
        .query(&Query {
            machine: Some(machine.to_owned()),
            output_only: true,
            limit: 1,
            newest: true,
            ..Query::default()
        })
        .ok()?;
    newest.entries.last().map(|e| e.timestamp_ns)
}

pub(crate) async fn capture<R: Runtime + 'static>(
    shared: Arc<Shared<R>>,
    store: LogStore,
    machine: MachineRecord,
    container: ContainerInfo,
) {
    let app = match shared.gateway.app_name(&machine).await {
        Ok(name) => name.to_string(),
        Err(error) => {
            tracing::warn!(machine = %machine.id, %error, "not capturing logs: the app is unknown");
            return;
        }
    };
    // Every line of the container not stored yet. (Not "since the run started": the
    // engine records a start time after the process may already have written.)
    let mut from = resume_after(&store, machine.id.as_str()).map_or(i64::MIN, |stored| stored + 1);
    let template = NewEntry {
        timestamp_ns: 0,
        stream: Stream::Stdout,
        app,
        machine: machine.id.to_string(),
        region: machine.region.clone(),
        instance: machine.instance_id.clone(),
        text: String::new(),
    };
    let mut batch: Vec<NewEntry> = Vec::with_capacity(BATCH);
    // The engine's follow stream can end while the container still runs (an engine
    // that drops the connection, say): it is opened again after the newest line seen,
    // until the container stops or the agent does.
    loop {
        let since_seconds = (from > 0).then(|| from.div_euclid(1_000_000_000));
        let mut lines = shared
            .runtime
            .logs(&container.id, true, None, since_seconds);
        loop {
            let next = if batch.is_empty() {
                tokio::select! {
                    next = lines.next() => next,
                    () = shared.stopping.cancelled() => None,
                }
            } else {
                match tokio::time::timeout(LINGER, lines.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // Quiet for a moment: store what there is.
                        if let Err(error) = store.append(std::mem::take(&mut batch)).await {
                            tracing::warn!(machine = %machine.id, %error, "storing log lines failed; capture stops");
                            return;
                        }
                        continue;
                    }
                }
            };
            let Some(line) = next else { break };
            let line = match line {
                Ok(line) => line,
                Err(error) => {
                    tracing::debug!(machine = %machine.id, %error, "following a container's output ended");
                    break;
                }
            };
            let at = parse_rfc3339_ns(&line.timestamp).unwrap_or(0);
            if at < from {
                continue;
            }
            from = at + 1;
            batch.push(NewEntry {
                timestamp_ns: at,
                stream: match line.stream {
                    LogStream::Stderr => Stream::Stderr,
                    _ => Stream::Stdout,
                },
                text: line.text,
                ..template.clone()
            });
            if batch.len() >= BATCH
                && let Err(error) = store.append(std::mem::take(&mut batch)).await
            {
                tracing::warn!(machine = %machine.id, %error, "storing log lines failed; capture stops");
                return;
            }
        }
        if shared.stopping.is_cancelled() {
            break;
        }
        let running = matches!(
            shared.runtime.inspect(&container.id).await,
            Ok(Some(info)) if info.state == aloft_runtime::ContainerState::Running
                && info.started_at == container.started_at
        );
        if !running {
            break;
        }
        tracing::info!(machine = %machine.id, from, "following a running container's output again");
        tokio::time::sleep(REFOLLOW).await;
    }
    if !batch.is_empty() {
        let _ = store.append(batch).await;
    }
}
