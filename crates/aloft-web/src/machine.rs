//! A machine's page and its buttons.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{Html, Redirect};

use crate::apps::{Csrf, Notice};
use crate::view::{Chrome, MachineStateFragment};
use crate::{Signed, Web, WebError};

#[derive(Template)]
#[template(path = "machine.html")]
struct MachinePage {
    chrome: Chrome,
    app: String,
    id: String,
    notice: Option<&'static str>,
    state: MachineStateFragment,
    private_ip: String,
    instance_id: String,
    region: String,
    host: String,
    created_at: String,
    config: String,
}

/// `GET /apps/{app}/machines/{id}`.
pub(crate) async fn page(
    signed: Signed,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<Notice>,
) -> Result<Html<String>, WebError> {
    let machine = signed.client.machine(&app, &id).await?;
    let config = serde_json::to_string_pretty(&machine.config).unwrap_or_default();
    Ok(Html(
        MachinePage {
            chrome: signed.chrome(),
            notice: crate::apps::notice(query.done.as_deref()),
            state: MachineStateFragment::of(&machine),
            private_ip: machine.private_ip,
            instance_id: machine.instance_id,
            region: machine.region,
            host: machine.host.unwrap_or_else(|| "not placed".to_owned()),
            created_at: machine.created_at,
            config,
            app,
            id,
        }
        .render()?,
    ))
}

/// `POST /apps/{app}/machines/{id}/{action}`: start, stop, restart, cordon or uncordon.
pub(crate) async fn act(
    State(web): State<Web>,
    signed: Signed,
    Path((app, id, action)): Path<(String, String, String)>,
    axum::Form(form): axum::Form<Csrf>,
) -> Result<Redirect, WebError> {
    signed.check(&web, &form.csrf)?;
    let client = &signed.client;
    let done = match action.as_str() {
        "start" => client.start_machine(&app, &id).await.map(|_| "started"),
        "stop" => client
            .stop_machine(&app, &id, None, None)
            .await
            .map(|_| "stopped"),
        "restart" => client.restart_machine(&app, &id).await.map(|_| "restarted"),
        "cordon" => client
            .cordon_machine(&app, &id, true)
            .await
            .map(|_| "cordoned"),
        "uncordon" => client
            .cordon_machine(&app, &id, false)
            .await
            .map(|_| "uncordoned"),
        other => {
            return Err(WebError::NotFound(format!(
                "no machine action {other:?} (start, stop, restart, cordon or uncordon)"
            )));
        }
    }?;
    Ok(Redirect::to(&format!(
        "/apps/{app}/machines/{id}?done={done}"
    )))
}
