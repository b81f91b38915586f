//! The apps list, an app's overview and what its forms change, and the platform page.

use std::collections::BTreeMap;

use aloft_types::api::{AppResponse, CertificateSummary, IpResponse, SecretInfo, VolumeResponse};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{Html, Redirect};
use serde::Deserialize;

use crate::view::{Chrome, DeploymentFragment, MachinesFragment, ReleaseRow};
use crate::{Signed, Web, WebError};

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    chrome: Chrome,
    apps: Vec<AppRow>,
}

/// An app in the list: its current release and where its machines run.
struct AppRow {
    app: AppResponse,
    release: Option<i64>,
    regions: Vec<(String, usize)>,
}

/// `GET /apps`.
pub(crate) async fn list(signed: Signed) -> Result<Html<String>, WebError> {
    use futures_util::StreamExt as _;
    let mut apps = signed.client.list_apps().await?.apps;
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    let client = &signed.client;
    // Each app's machines and releases, a few apps at a time.
    let rows: Vec<AppRow> = futures_util::stream::iter(apps)
        .map(|app| async move {
            let (machines, releases) =
                tokio::join!(client.list_machines(&app.name), client.releases(&app.name));
            let mut regions = BTreeMap::new();
            for machine in machines.unwrap_or_default() {
                if !matches!(machine.state.as_str(), "destroyed" | "destroying") {
                    *regions.entry(machine.region).or_insert(0) += 1;
                }
            }
            let release = releases.ok().and_then(|releases| {
                releases
                    .iter()
                    .find(|r| r.status == aloft_types::deploy::ReleaseStatus::Complete)
                    .map(|r| r.version)
            });
            AppRow {
                app,
                release,
                regions: regions.into_iter().collect(),
            }
        })
        .buffered(8)
        .collect()
        .await;
    Ok(Html(
        AppsPage {
            chrome: signed.chrome(),
            apps: rows,
        }
        .render()?,
    ))
}

#[derive(Template, Debug)]
#[template(path = "app.html")]
pub struct AppPage {
    pub chrome: Chrome,
    pub app: AppResponse,
    pub notice: Option<&'static str>,
    pub regions: Vec<(String, usize)>,
    pub groups: Vec<(String, usize)>,
    pub machines: MachinesFragment,
    pub services: Vec<crate::view::ServiceRow>,
    pub deployment: DeploymentFragment,
    pub releases: Vec<ReleaseRow>,
    pub secrets: Vec<SecretInfo>,
    pub volumes: Vec<VolumeResponse>,
    pub ips: Vec<IpResponse>,
    pub certificates: Vec<CertificateSummary>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Notice {
    pub(crate) done: Option<String>,
}

/// What a form's redirect says it did (a fixed set: nothing from the query is shown).
pub(crate) fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "secret-set" => {
            "Secret set. It is staged: the machines get it at the next deploy (`aloft secrets deploy` or `aloft deploy`)."
        }
        "secret-unset" => "Secret removed. Staged until the next deploy.",
        "rollback" => "Rollback started: its steps show below.",
        "scaled" => {
            "Scaled: new machines start (copies of the group's newest), extra ones are destroyed."
        }
        "started" => "Start asked.",
        "stopped" => "Stop asked.",
        "restarted" => "Restart asked.",
        "cordoned" => "Cordoned: the proxy sends it no new requests.",
        "uncordoned" => "Uncordoned: the proxy sends it requests again.",
        _ => return None,
    })
}

/// `GET /apps/{app}`.
pub(crate) async fn overview(
    signed: Signed,
    Path(name): Path<String>,
    Query(query): Query<Notice>,
) -> Result<Html<String>, WebError> {
    let client = &signed.client;
    let (app, machines, deployments, releases, secrets, volumes, ips, certificates) = tokio::join!(
        client.app(&name),
        client.list_machines(&name),
        client.deployments(&name),
        client.releases(&name),
        client.list_secrets(&name),
        client.list_volumes(&name),
        client.list_ips(&name),
        client.list_certificates(&name),
    );
    let app = app?;
    let machines = machines?;
    let page = AppPage::new(
        signed.chrome(),
        app,
        notice(query.done.as_deref()),
        &machines,
        &deployments?,
        &releases?,
        secrets.unwrap_or_default(),
        volumes.unwrap_or_default(),
        ips.unwrap_or_default(),
        certificates.unwrap_or_default(),
    );
    Ok(Html(page.render()?))
}

impl AppPage {
    /// The page from the API's answers (also what the render benchmark builds).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chrome: Chrome,
        app: AppResponse,
        notice: Option<&'static str>,
        machines: &[aloft_types::api::MachineResponse],
        deployments: &[aloft_types::api::DeploymentResponse],
        releases: &[aloft_types::api::ReleaseResponse],
        secrets: Vec<SecretInfo>,
        volumes: Vec<VolumeResponse>,
        ips: Vec<IpResponse>,
        certificates: Vec<CertificateSummary>,
    ) -> AppPage {
        let services = crate::view::ServiceRow::all(machines);
        let machines = MachinesFragment::of(&app.name, machines);
        let mut regions = BTreeMap::new();
        let mut groups = BTreeMap::new();
        for row in &machines.rows {
            *regions.entry(row.region.clone()).or_insert(0) += 1;
            *groups.entry(row.group.clone()).or_insert(0) += 1;
        }
        AppPage {
            chrome,
            notice,
            regions: regions.into_iter().collect(),
            groups: groups.into_iter().collect(),
            machines,
            services,
            deployment: DeploymentFragment::of(deployments.first()),
            releases: ReleaseRow::all(releases),
            secrets,
            volumes,
            ips,
            certificates,
            app,
        }
    }

    /// The page's HTML.
    pub fn html(&self) -> Result<String, askama::Error> {
        self.render()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct SecretForm {
    #[serde(default)]
    csrf: String,
    name: String,
    /// Absent when removing.
    value: Option<String>,
}

/// `POST /apps/{app}/secrets`: sets one secret (staged, as Fly's dashboard does).
pub(crate) async fn set_secret(
    State(web): State<Web>,
    signed: Signed,
    Path(app): Path<String>,
    axum::Form(form): axum::Form<SecretForm>,
) -> Result<Redirect, WebError> {
    let value = Some(form.value.clone().unwrap_or_default());
    change_secret(&web, &signed, &app, form, value, "secret-set").await
}

/// `POST /apps/{app}/secrets/unset`.
pub(crate) async fn unset_secret(
    State(web): State<Web>,
    signed: Signed,
    Path(app): Path<String>,
    axum::Form(form): axum::Form<SecretForm>,
) -> Result<Redirect, WebError> {
    change_secret(&web, &signed, &app, form, None, "secret-unset").await
}

async fn change_secret(
    web: &Web,
    signed: &Signed,
    app: &str,
    form: SecretForm,
    value: Option<String>,
    done: &str,
) -> Result<Redirect, WebError> {
    signed.check(web, &form.csrf)?;
    let name = form.name.trim();
    if name.is_empty() {
        return Err(WebError::BadInput("a secret needs a name".to_owned()));
    }
    signed
        .client
        .update_secrets(app, BTreeMap::from([(name.to_owned(), value)]))
        .await?;
    Ok(Redirect::to(&format!("/apps/{app}?done={done}#secrets")))
}

#[derive(Debug, Deserialize)]
pub(crate) struct Csrf {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// `POST /apps/{app}/releases/{version}/rollback`: a deployment of that release's image,
/// whose steps the page then follows.
pub(crate) async fn rollback(
    State(web): State<Web>,
    signed: Signed,
    Path((app, version)): Path<(String, i64)>,
    axum::Form(form): axum::Form<Csrf>,
) -> Result<Redirect, WebError> {
    signed.check(&web, &form.csrf)?;
    signed.client.rollback(&app, version).await?;
    Ok(Redirect::to(&format!(
        "/apps/{app}?done=rollback#deployment"
    )))
}

/// The most machines one form asks a group for (the API's `[limits]` may allow fewer).
const MAX_SCALE: usize = 100;

#[derive(Debug, Deserialize)]
pub(crate) struct Scale {
    #[serde(default)]
    csrf: String,
    group: String,
    count: String,
}

/// `POST /apps/{app}/scale`: a process group to a count, as `aloft scale count` does it
/// (copies of the group's newest machine, spread over the regions it runs in; stopped
/// machines, then the newest, go first).
pub(crate) async fn scale(
    State(web): State<Web>,
    signed: Signed,
    Path(app): Path<String>,
    axum::Form(form): axum::Form<Scale>,
) -> Result<Redirect, WebError> {
    use aloft_client::scale::{
        converge, copy_request, group_of, group_regions, newest, removal_order,
    };
    signed.check(&web, &form.csrf)?;
    let count: usize =
        form.count.trim().parse().map_err(|_| {
            WebError::BadInput(format!("count {:?} is not a whole number", form.count))
        })?;
    if count > MAX_SCALE {
        return Err(WebError::BadInput(format!(
            "count {count}: at most {MAX_SCALE} from here (`aloft scale count` takes more)"
        )));
    }
    let client = &signed.client;
    let machines = client.list_machines(&app).await?;
    let of_group: Vec<&aloft_types::api::MachineResponse> = machines
        .iter()
        .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
        .filter(|m| group_of(m) == form.group)
        .collect();
    if of_group.is_empty() {
        return Err(WebError::BadInput(format!(
            "process group {} of app {app} has no machine to copy: deploy it first",
            form.group
        )));
    }
    let regions = group_regions(&of_group);
    let mut current = BTreeMap::new();
    for machine in &of_group {
        *current.entry(machine.region.clone()).or_insert(0) += 1;
    }
    let plan = converge(count, &current, &regions, None).map_err(WebError::BadInput)?;
    for (region, delta) in plan.iter().filter(|(_, d)| *d > 0) {
        let in_region: Vec<&aloft_types::api::MachineResponse> = of_group
            .iter()
            .copied()
            .filter(|m| &m.region == region)
            .collect();
        let Some(template) = newest(&in_region).or_else(|| newest(&of_group)) else {
            continue;
        };
        for _ in 0..*delta {
            client
                .create_machine(&app, &copy_request(template, region))
                .await?;
        }
    }
    for (region, delta) in plan.iter().filter(|(_, d)| *d < 0) {
        let take = usize::try_from(-delta).unwrap_or(0);
        for machine in removal_order(&of_group, region).into_iter().take(take) {
            client.destroy_machine(&app, &machine.id, true).await?;
        }
    }
    tracing::info!(%app, group = %form.group, count, "scaled from the dashboard");
    Ok(Redirect::to(&format!("/apps/{app}?done=scaled#scale")))
}

#[derive(Template)]
#[template(path = "platform.html")]
struct PlatformPage {
    chrome: Chrome,
    hosts: Vec<aloft_types::api::PlatformHost>,
    regions: aloft_types::api::PlatformRegions,
}

/// `GET /platform`: the hosts and regions (the operator's token only; the API says so to
/// anyone else).
pub(crate) async fn platform(signed: Signed) -> Result<Html<String>, WebError> {
    let (hosts, regions) = tokio::join!(
        signed.client.platform_hosts(),
        signed.client.platform_regions()
    );
    Ok(Html(
        PlatformPage {
            chrome: signed.chrome(),
            hosts: hosts?.hosts,
            regions: regions?,
        }
        .render()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_notices_are_shown() {
        assert!(notice(Some("secret-set")).is_some());
        assert_eq!(notice(Some("<script>alert(1)</script>")), None);
        assert_eq!(notice(None), None);
    }
}
