//! `aloft status`: the app, its current release and its machines.

use std::io::IsTerminal as _;
use std::time::Duration;

use aloft_types::CheckStatus;
use aloft_types::api::{MachineResponse, ReleaseResponse};
use aloft_types::machine::METADATA_RELEASE_VERSION;
use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Refresh every 2 seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
}

/// One machine as `aloft status` shows it.
#[derive(Debug, Serialize)]
struct MachineRow {
    id: String,
    name: String,
    process_group: String,
    /// The release the machine runs (`None` for machines no deploy made).
    release: Option<i64>,
    region: String,
    state: String,
    checks_passing: usize,
    checks_total: usize,
    image: String,
    updated_at: String,
}

#[derive(Debug, Serialize)]
struct Status {
    app: String,
    organization: String,
    status: String,
    /// Where the edge serves the app.
    url: Option<String>,
    /// The newest release that deployed completely.
    release: Option<ReleaseResponse>,
    /// A deployment still running, if any (its release).
    deploying: Option<ReleaseResponse>,
    machines: Vec<MachineRow>,
}

pub(crate) use aloft_client::scale::group_of;

fn live(machine: &MachineResponse) -> bool {
    !matches!(machine.state.as_str(), "destroyed" | "destroying")
}

async fn gather(client: &aloft_client::Client, app: &str) -> anyhow::Result<Status> {
    let found = client.app(app).await?;
    let releases = client.releases(app).await?;
    let machines = client.list_machines(app).await?;
    let mut rows: Vec<MachineRow> = machines
        .iter()
        .filter(|m| live(m))
        .map(|m| MachineRow {
            id: m.id.clone(),
            name: m.name.clone(),
            process_group: group_of(m),
            release: m
                .config
                .metadata
                .get(METADATA_RELEASE_VERSION)
                .and_then(|v| v.parse().ok()),
            region: m.region.clone(),
            state: m.state.clone(),
            checks_passing: m
                .checks
                .iter()
                .filter(|c| c.status == CheckStatus::Passing)
                .count(),
            checks_total: m.checks.len(),
            image: m.config.image.clone(),
            updated_at: m.updated_at.clone(),
        })
        .collect();
    rows.sort_by(|a, b| (&a.process_group, &a.id).cmp(&(&b.process_group, &b.id)));
    Ok(Status {
        app: found.name,
        organization: found.organization.slug,
        status: found.status,
        url: found.url,
        release: releases.iter().find(|r| r.status == "complete").cloned(),
        deploying: releases.iter().find(|r| r.status == "running").cloned(),
        machines: rows,
    })
}

fn render(status: &Status) -> String {
    let mut text = format!(
        "App:     {} (organization {}, {})\n",
        status.app, status.organization, status.status
    );
    if let Some(url) = &status.url {
        text.push_str(&format!("URL:     {url}\n"));
    }
    match &status.release {
        Some(release) => text.push_str(&format!(
            "Release: v{} {} ({}, {})\n",
            release.version, release.description, release.user, release.created_at
        )),
        None => text.push_str("Release: none yet (aloft deploy makes one)\n"),
    }
    if let Some(release) = &status.deploying {
        text.push_str(&format!(
            "Deploying: v{} {}\n",
            release.version, release.description
        ));
    }
    text.push('\n');
    let rows: Vec<Vec<String>> = status
        .machines
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.process_group.clone(),
                m.release
                    .map_or_else(|| "-".to_owned(), |v| format!("v{v}")),
                m.region.clone(),
                m.state.clone(),
                if m.checks_total == 0 {
                    "-".to_owned()
                } else {
                    format!("{}/{} passing", m.checks_passing, m.checks_total)
                },
                m.updated_at.clone(),
            ]
        })
        .collect();
    text.push_str(&table::render(
        &[
            "ID", "PROCESS", "VERSION", "REGION", "STATE", "CHECKS", "UPDATED",
        ],
        &rows,
    ));
    text
}

pub(crate) async fn status(
    args: StatusArgs,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    let clear = args.watch && !json && std::io::stdout().is_terminal();
    loop {
        let status = gather(&client, app)
            .await
            .with_context(|| format!("reading the status of app {app}"))?;
        if clear {
            out.data("\x1b[2J\x1b[H");
        }
        if json {
            // One object per refresh with --watch (NDJSON).
            out.data(&serde_json::to_string(&status).map_err(anyhow::Error::from)?);
        } else {
            out.data(&render(&status));
        }
        if !args.watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The app's machines that are not destroyed.
pub(crate) async fn live_machines(
    client: &aloft_client::Client,
    app: &str,
) -> anyhow::Result<Vec<MachineResponse>> {
    Ok(client
        .list_machines(app)
        .await?
        .into_iter()
        .filter(live)
        .collect())
}

#[cfg(test)]
mod tests {
    use aloft_types::deploy::ReleaseStatus;

    use super::*;

    fn release(version: i64, status: ReleaseStatus, description: &str) -> ReleaseResponse {
        ReleaseResponse {
            id: format!("r{version}"),
            version,
            image: format!("registry.local/aloft/web:deployment-{version}"),
            status,
            process_group: "app".to_owned(),
            description: description.to_owned(),
            user: "admin".to_owned(),
            created_at: "2026-12-06T10:00:00Z".to_owned(),
        }
    }

    fn row(id: &str, group: &str, release: Option<i64>, state: &str, passing: usize) -> MachineRow {
        MachineRow {
            id: id.to_owned(),
            name: format!("{group}-{id}"),
            process_group: group.to_owned(),
            release,
            region: "ams".to_owned(),
            state: state.to_owned(),
            checks_passing: passing,
            checks_total: if group == "web" { 2 } else { 0 },
            image: "registry.local/aloft/web:deployment-3".to_owned(),
            updated_at: "2026-12-06T10:01:02Z".to_owned(),
        }
    }

    /// `aloft status` as a person reads it: a deployed app mid-deploy, and a new one.
    #[test]
    fn status_shows_the_release_the_deploy_and_every_machine() {
        let status = Status {
            app: "web".to_owned(),
            organization: "personal".to_owned(),
            status: "deployed".to_owned(),
            url: Some("https://web.aloft.localhost:8443/".to_owned()),
            release: Some(release(3, ReleaseStatus::Complete, "deploy image web:3")),
            deploying: Some(release(4, ReleaseStatus::Running, "deploy image web:4")),
            machines: vec![
                row("148e21ea7d2e89", "web", Some(3), "started", 2),
                row("3d8d9e4b1c2a70", "web", Some(4), "updating", 1),
                row("9080e6f1a2b3c4", "worker", None, "stopped", 0),
            ],
        };
        insta::assert_snapshot!(render(&status));
        let new = Status {
            app: "fresh".to_owned(),
            organization: "personal".to_owned(),
            status: "pending".to_owned(),
            url: None,
            release: None,
            deploying: None,
            machines: Vec::new(),
        };
        insta::assert_snapshot!("status_of_a_new_app", render(&new));
    }
}
