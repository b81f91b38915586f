//! `aloft deploy` and `aloft releases`: roll out a release server-side and follow it, and
//! list an app's releases.

use std::path::Path;
use std::time::Duration;

use aloft_types::api::{DeployRequest, DeploymentResponse};
use anyhow::Context as _;
use clap::Args;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The image to run (default: fly.toml's `[build] image`). It must be in the Docker
    /// Engine of the hosts or in a registry they can pull from.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// `rolling`, `immediate`, `canary` or `bluegreen` (default: `[deploy] strategy`, else
    /// rolling).
    #[arg(long)]
    pub strategy: Option<String>,
    /// How long each machine gets to start and pass its checks: `90s`, `5m`
    /// (default: `[deploy] wait_timeout`, else 5m).
    #[arg(long, value_name = "DURATION")]
    pub wait_timeout: Option<String>,
    /// Start the deployment and return; it goes on in the server.
    #[arg(long)]
    pub detach: bool,
    /// Extra environment variables: `-e KEY=VALUE` (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

fn seconds(text: &str, what: &str) -> anyhow::Result<u64> {
    let duration: aloft_types::Duration = text
        .parse()
        .with_context(|| format!("{what} {text:?}: expected a duration such as 90s or 5m"))?;
    Ok(duration.as_secs_f64().ceil() as u64)
}

/// One deployment request per process group of the fly.toml, in the file's order.
fn requests(
    path: &Path,
    config: &aloft_config::AppConfig,
    args: &DeployArgs,
) -> Result<Vec<(String, DeployRequest)>, Failure> {
    let image = args
        .image
        .clone()
        .or_else(|| config.build.as_ref().and_then(|b| b.image.clone()))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no image to deploy: pass --image REF or set [build] image in {} (building from a Dockerfile is not available yet)",
                path.display()
            )
        })?;
    let deploy = config.deploy.clone().unwrap_or_default();
    let strategy = args
        .strategy
        .clone()
        .or_else(|| deploy.strategy.map(|s| s.as_str().to_owned()));
    let wait_timeout = match &args.wait_timeout {
        Some(text) => Some(seconds(text, "--wait-timeout")?),
        None => deploy.wait_timeout.map(|d| d.as_secs_f64().ceil() as u64),
    };
    let mut env = Vec::new();
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| anyhow::anyhow!("-e {pair:?}: expected KEY=VALUE"))?;
        env.push((key.to_owned(), value.to_owned()));
    }
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let release_command = config
        .release_command()
        .with_context(|| format!("reading {}", path.display()))?;
    let release_command_timeout = deploy
        .release_command_timeout
        .map(|d| d.as_secs_f64().ceil() as u64);
    let mut requests = Vec::new();
    for (index, group) in config.process_groups().into_iter().enumerate() {
        let mut machine = config
            .to_machine_config(&group, base, Some(&image))
            .with_context(|| format!("lowering {} for process group `{group}`", path.display()))?;
        for (key, value) in &env {
            machine.env.insert(key.clone(), value.clone());
        }
        requests.push((
            group.clone(),
            DeployRequest {
                image: image.clone(),
                config: machine,
                strategy: strategy.clone(),
                max_unavailable: deploy.max_unavailable,
                wait_timeout,
                initial_count: None,
                description: Some(format!("deploy {image} (process group {group})")),
                // Once per deploy, with the first group's deployment (Fly runs it once).
                release_command: if index == 0 {
                    release_command.clone()
                } else {
                    None
                },
                release_command_timeout,
            },
        ));
    }
    Ok(requests)
}

/// Prints the steps not printed yet.
fn progress(deployment: &DeploymentResponse, shown: &mut usize, out: &mut Output) {
    for step in deployment.steps.iter().skip(*shown) {
        let machine = step.machine_id.as_deref().unwrap_or("-");
        out.status(&format!(
            "  {machine:<14} {:<8} {}",
            step.kind, step.message
        ));
    }
    *shown = deployment.steps.len();
}

pub(crate) async fn deploy(
    args: DeployArgs,
    config_file: &Option<std::path::PathBuf>,
    app_flag: Option<&str>,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let path = crate::commands::config::config_path(config_file)?;
    let parsed = crate::commands::config::read(&path, out)?;
    let config = crate::commands::config::with_app(&parsed, app_flag)?;
    let app = config
        .app
        .as_ref()
        .map(ToString::to_string)
        .ok_or_else(|| anyhow::anyhow!("no app: pass -a APP or set `app` in {}", path.display()))?;
    let client = client()?;
    let mut results = Vec::new();
    for (group, request) in requests(&path, &config, &args)? {
        let started = client
            .deploy(&app, &request)
            .await
            .with_context(|| format!("starting the deployment of process group {group}"))?;
        out.status(&format!(
            "deploying release v{} of {app} (process group {group}, {} strategy): deployment {}",
            started.release.version, started.strategy, started.id
        ));
        if args.detach {
            results.push(started);
            continue;
        }
        let mut shown = 0;
        progress(&started, &mut shown, out);
        let finished = loop {
            let current = client
                .deployment(&app, &started.id)
                .await
                .with_context(|| format!("following deployment {}", started.id))?;
            progress(&current, &mut shown, out);
            if !matches!(current.status.as_str(), "running" | "rolling_back") {
                break current;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let succeeded = finished.status == "succeeded";
        let error = finished.error.clone().unwrap_or_default();
        let version = finished.release.version;
        let status = finished.status.clone();
        results.push(finished);
        if !succeeded {
            if json {
                out.json(&results)?;
            }
            return Err(anyhow::anyhow!(
                "release v{version} of {app} was not deployed ({status}): {error}"
            )
            .into());
        }
        out.status(&format!("release v{version} of {app} is live"));
    }
    if json {
        out.json(&results)?;
    }
    Ok(())
}

pub(crate) async fn releases(app: &str, json: bool, out: &mut Output) -> Result<(), Failure> {
    let releases = client()?.releases(app).await.map_err(anyhow::Error::from)?;
    if json {
        out.json(&releases)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            vec![
                format!("v{}", r.version),
                r.status.clone(),
                r.image.clone(),
                r.description.clone(),
                r.user.clone(),
                r.created_at.clone(),
            ]
        })
        .collect();
    out.data(&table::render(
        &["VERSION", "STATUS", "IMAGE", "DESCRIPTION", "USER", "DATE"],
        &rows,
    ));
    Ok(())
}
