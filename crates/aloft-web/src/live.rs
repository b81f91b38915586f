//! The live parts of the pages, as server-sent events whose data is the HTML to put in
//! place (`assets/live.js`): the app's machines, its newest deployment, a machine's state,
//! and log lines as they arrive.
//!
//! State is looked at once a second through the API and sent only when its HTML changed;
//! log lines come from the API's log stream, resumed from the browser's `Last-Event-ID`
//! after a reconnect (no line lost or repeated).

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::response::IntoResponse as _;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::view::{DeploymentFragment, LogLine, MachineStateFragment, MachinesFragment};
use crate::{Signed, WebError};

/// How often state is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

type Events = axum::response::Response;

/// The events of a task that ends when the browser goes away (the stream is dropped).
pub(crate) struct Guarded {
    events: ReceiverStream<Result<Event, Infallible>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for Guarded {
    type Item = Result<Event, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.events).poll_next(cx)
    }
}

fn events<F, Fut>(work: F) -> Events
where
    F: FnOnce(mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(64);
    let task = tokio::spawn(work(sender));
    Sse::new(Guarded {
        events: ReceiverStream::new(receiver),
        task,
    })
    .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
    .into_response()
}

/// Sends `look()`'s HTML each time it differs from the last sent; ends when the browser
/// goes or the API refuses (the page's own load then says why).
async fn follow<F, Fut>(sender: mpsc::Sender<Result<Event, Infallible>>, mut look: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, WebError>>,
{
    let mut last = String::new();
    let mut ticks = tokio::time::interval(LOOK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let html = match look().await {
            Ok(html) => html,
            Err(WebError::Api(error)) if error.status().is_none() => {
                tracing::debug!(%error, "a live view could not reach the API; trying again");
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "a live view ends");
                return;
            }
        };
        if html != last {
            if sender.send(Ok(Event::default().data(&html))).await.is_err() {
                return;
            }
            last = html;
        }
    }
}

/// `GET /apps/{app}/live/machines`: the machines table's body.
pub(crate) async fn machines(signed: Signed, Path(app): Path<String>) -> Events {
    events(move |sender| async move {
        follow(sender, || async {
            let machines = signed.client.list_machines(&app).await?;
            Ok(MachinesFragment::of(&app, &machines).render()?)
        })
        .await;
    })
}

/// `GET /apps/{app}/live/deployment`: the newest deployment and its steps.
pub(crate) async fn deployment(signed: Signed, Path(app): Path<String>) -> Events {
    events(move |sender| async move {
        follow(sender, || async {
            let deployments = signed.client.deployments(&app).await?;
            Ok(DeploymentFragment::of(deployments.first()).render()?)
        })
        .await;
    })
}

/// `GET /apps/{app}/machines/{id}/live`: a machine's state, checks and events.
pub(crate) async fn machine(signed: Signed, Path((app, id)): Path<(String, String)>) -> Events {
    events(move |sender| async move {
        follow(sender, || async {
            let machine = signed.client.machine(&app, &id).await?;
            Ok(MachineStateFragment::of(&machine).render()?)
        })
        .await;
    })
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogFilters {
    #[serde(default)]
    machine: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    text: String,
    /// Where the page's search ended: the follow starts right after it.
    #[serde(default)]
    cursor: String,
}

fn given(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// `GET /apps/{app}/live/logs`: each new line as a list item; the event's id is the line's
/// cursor, so a reconnecting browser resumes after the last line it got.
pub(crate) async fn logs(
    signed: Signed,
    Path(app): Path<String>,
    Query(filters): Query<LogFilters>,
    headers: HeaderMap,
) -> Events {
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(given);
    let request = aloft_client::LogsRequest {
        machine: given(&filters.machine),
        region: given(&filters.region),
        text: given(&filters.text),
        cursor: resume.or_else(|| given(&filters.cursor)),
        ..aloft_client::LogsRequest::default()
    };
    events(move |sender| async move {
        let followed = signed.client.follow_logs(&app, &request, |entry| {
            let Ok(html) = LogLine::of(&entry).render() else {
                return true;
            };
            let mut event = Event::default().data(html);
            if let Some((_, seq)) = entry.id.rsplit_once('-') {
                event = event.id(seq);
            }
            // The browser reads slower than lines come: it gets a gap, not a stalled API.
            match sender.try_send(Ok(event)) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if let Err(error) = followed.await {
            tracing::debug!(%error, "a live log view ends");
        }
    })
}
