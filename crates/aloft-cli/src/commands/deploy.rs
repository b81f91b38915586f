//! `aloft deploy` and `aloft releases`: roll out a release server-side and follow it, and
//! list an app's releases.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use aloft_types::api::{DeployRequest, DeploymentResponse, ReleaseResponse};
use anyhow::Context as _;
use clap::Args;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The image to run (default: fly.toml's `[build] image`, else an image built from the
    /// Dockerfile). It must be in the Docker Engine of the hosts or in a registry they can
    /// pull from.
    #[arg(long, short = 'i', value_name = "REF")]
    pub image: Option<String>,
    /// `rolling`, `immediate`, `canary` or `bluegreen` (default: `[deploy] strategy`, else
    /// rolling).
    #[arg(long)]
    pub strategy: Option<String>,
    /// How long each machine gets to start and pass its checks: `90s`, `5m`
    /// (default: `[deploy] wait_timeout`, else 5m).
    #[arg(long, value_name = "DURATION")]
    pub wait_timeout: Option<String>,
    /// Smoke checks (flyctl's, on by default): each new machine must keep running for a
    /// while after it starts; one that exits or crash loops fails the deploy at once.
    /// `--smoke-checks=false` turns them off.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub smoke_checks: bool,
    /// Start the deployment and return; it goes on in the server.
    #[arg(long)]
    pub detach: bool,
    /// Extra environment variables: `-e KEY=VALUE` (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// A Dockerfile `ARG` for the build: `--build-arg KEY=VALUE` (repeatable; over
    /// `[build] args`).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// The Dockerfile stage to build (default: `[build] build-target`, else the last).
    #[arg(long, value_name = "STAGE")]
    pub build_target: Option<String>,
    /// A secret for the build, read by `RUN --mount=type=secret,id=NAME` (at
    /// `/run/secrets/NAME`) and kept out of the image: `--build-secret NAME=VALUE`
    /// (repeatable, as flyctl's). Needs the server's BuildKit.
    #[arg(long = "build-secret", value_name = "NAME=VALUE")]
    pub build_secrets: Vec<String>,
    /// Refuse a fly.toml with keys Aloft does not know or settings it would ignore
    /// (warnings otherwise, as flyctl).
    #[arg(long)]
    pub strict: bool,
    /// The Dockerfile to build, relative to fly.toml's directory (over `[build]
    /// dockerfile`).
    #[arg(long, value_name = "PATH")]
    pub dockerfile: Option<String>,
    /// Build the image and print it; deploy nothing.
    #[arg(long)]
    pub build_only: bool,
    /// How many machines a rolling or canary deploy replaces at once: from 1 a count,
    /// below 1 a fraction (over `[deploy] max_unavailable`).
    #[arg(long, value_name = "N")]
    pub max_unavailable: Option<f64>,
    /// Deploy only these process groups (comma-separated).
    #[arg(long, value_name = "GROUPS", value_delimiter = ',')]
    pub process_groups: Vec<String>,
    /// The machines' size preset (`aloft platform vm-sizes`), for every group.
    #[arg(long, value_name = "NAME")]
    pub vm_size: Option<String>,
    /// On an app's first deploy, 2 machines per group with services (the default, as
    /// flyctl); `--ha=false` makes 1.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ha: bool,
    /// Do not run `[deploy] release_command` this time.
    #[arg(long)]
    pub skip_release_command: bool,
    /// How long the release command may run: `90s`, `10m` (over `[deploy]
    /// release_command_timeout`).
    #[arg(long, value_name = "DURATION")]
    pub release_command_timeout: Option<String>,
    /// Answer yes to every question (a deploy asks none; accepted as flyctl's).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Deploy only to these machines (ids, comma-separated), as flyctl's: the others keep
    /// their release. Rolling and immediate deploys only.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub only_machines: Vec<String>,
    /// Deploy only to the machines in these regions (comma-separated), as flyctl's.
    /// Rolling and immediate deploys only.
    #[arg(long, value_name = "REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Build every Dockerfile step again, none from the builder's cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl Default for DeployArgs {
    /// A plain `aloft deploy`: the flags' defaults (smoke checks on, `--ha`).
    fn default() -> Self {
        DeployArgs {
            image: None,
            strategy: None,
            wait_timeout: None,
            smoke_checks: true,
            detach: false,
            env: Vec::new(),
            build_args: Vec::new(),
            build_target: None,
            build_secrets: Vec::new(),
            strict: false,
            dockerfile: None,
            build_only: false,
            max_unavailable: None,
            process_groups: Vec::new(),
            vm_size: None,
            ha: true,
            skip_release_command: false,
            release_command_timeout: None,
            yes: false,
            only_machines: Vec::new(),
            regions: Vec::new(),
            no_cache: false,
        }
    }
}

/// Splits `KEY=VALUE` (`flag` names the option in the error).
fn pair(text: &str, flag: &str) -> anyhow::Result<(String, String)> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| anyhow::anyhow!("{flag} {text:?}: expected KEY=VALUE"))
}

/// The directory fly.toml is in (the build context and the base of relative paths).
fn base_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Builds the image from the app's Dockerfile on the server, streaming the builder's
/// output; returns the image's id and a name for it (its tag).
async fn build(
    client: &aloft_client::Client,
    app: &str,
    path: &Path,
    config: &aloft_config::AppConfig,
    args: &DeployArgs,
    out: &mut Output,
) -> Result<(String, String), Failure> {
    let settings = config.build.clone().unwrap_or_default();
    let base = base_of(path);
    let wanted = args
        .dockerfile
        .as_deref()
        .or(settings.dockerfile.as_deref());
    if let Some(named) = args.dockerfile.as_deref()
        && !base.join(named).is_file()
    {
        return Err(
            anyhow::anyhow!("--dockerfile {named}: no such file in {}", base.display()).into(),
        );
    }
    let dockerfile = crate::context::dockerfile(base, wanted)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no image to deploy: pass --image REF, set [build] image in {}, or add a Dockerfile next to it",
                path.display()
            )
        })?;
    let ignore_file = settings.ignorefile.as_deref().map(|f| base.join(f));
    let context = crate::context::pack(base, &dockerfile, ignore_file.as_deref())
        .with_context(|| format!("packing the build context {}", base.display()))?;
    let mut build_args = settings.args.clone();
    for text in &args.build_args {
        let (key, value) = pair(text, "--build-arg")?;
        build_args.insert(key, value);
    }
    let mut secrets = std::collections::BTreeMap::new();
    for text in &args.build_secrets {
        let (name, value) = pair(text, "--build-secret")?;
        secrets.insert(name, value);
    }
    let request = aloft_client::BuildRequest {
        dockerfile: context.dockerfile.clone(),
        target: args.build_target.clone().or(settings.build_target.clone()),
        args: build_args,
        secrets,
        no_cache: args.no_cache,
    };
    out.status(&format!(
        "building {} with {} ({} file(s), {} KiB of context)",
        app,
        dockerfile.display(),
        context.files,
        context.archive.len().div_ceil(1024)
    ));
    let built = client
        .build(app, context.archive, &request, |text| {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let _ = writeln!(std::io::stderr().lock(), "  {line}");
            }
        })
        .await
        .map_err(anyhow::Error::from)?;
    let image = built.image.unwrap_or_default();
    let tag = built.tag.unwrap_or_default();
    out.status(&format!("built image {image} (tagged {tag})"));
    Ok((image, format!("build {tag}")))
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
    image: &str,
    label: &str,
) -> Result<Vec<(String, DeployRequest)>, Failure> {
    let image = image.to_owned();
    let deploy = config.deploy.clone().unwrap_or_default();
    let strategy = args
        .strategy
        .clone()
        .or_else(|| deploy.strategy.map(|s| s.as_str().to_owned()));
    let wait_timeout = match &args.wait_timeout {
        Some(text) => Some(seconds(text, "--wait-timeout")?),
        None => deploy.wait_timeout.map(|d| d.as_secs_f64().ceil() as u64),
    };
    let env = args
        .env
        .iter()
        .map(|text| pair(text, "-e"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let base = base_of(path);
    let release_command = if args.skip_release_command {
        None
    } else {
        config
            .release_command()
            .with_context(|| format!("reading {}", path.display()))?
    };
    let release_command_timeout = match &args.release_command_timeout {
        Some(text) => Some(seconds(text, "--release-command-timeout")?),
        None => deploy
            .release_command_timeout
            .map(|d| d.as_secs_f64().ceil() as u64),
    };
    let max_unavailable = args.max_unavailable.or(deploy.max_unavailable);
    let guest = match &args.vm_size {
        Some(size) => Some(
            aloft_types::machine::MachineGuest::preset(size).ok_or_else(|| {
                anyhow::anyhow!("--vm-size {size:?} is not a size: see `aloft platform vm-sizes`")
            })?,
        ),
        None => None,
    };
    let groups = config.process_groups();
    if let Some(unknown) = args.process_groups.iter().find(|g| !groups.contains(g)) {
        return Err(anyhow::anyhow!(
            "--process-groups: {} has no process group {unknown:?} (it has {})",
            path.display(),
            groups.join(", ")
        )
        .into());
    }
    let release_command_guest = config
        .release_command_guest()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut requests = Vec::new();
    let chosen = groups
        .into_iter()
        .filter(|g| args.process_groups.is_empty() || args.process_groups.contains(g));
    for (index, group) in chosen.enumerate() {
        let mut machine = config
            .to_machine_config(&group, base, Some(&image))
            .with_context(|| format!("lowering {} for process group `{group}`", path.display()))?;
        for (key, value) in &env {
            machine.env.insert(key.clone(), value.clone());
        }
        if let Some(guest) = &guest {
            machine.guest = Some(guest.clone());
        }
        requests.push((
            group.clone(),
            DeployRequest {
                image: image.clone(),
                config: machine,
                strategy: strategy.clone(),
                max_unavailable,
                wait_timeout,
                // flyctl's --ha=false: one machine per group on the first deploy.
                initial_count: (!args.ha).then_some(1),
                description: Some(format!("deploy {label} (process group {group})")),
                // Once per deploy, with the first group's deployment (Fly runs it once).
                release_command: if index == 0 {
                    release_command.clone()
                } else {
                    None
                },
                release_command_timeout,
                release_command_guest: if index == 0 {
                    release_command_guest.clone()
                } else {
                    None
                },
                smoke_checks: (!args.smoke_checks).then_some(false),
                smoke_check_seconds: None,
                only_machines: None,
                regions: None,
                fly_toml: None,
            },
        ));
    }
    // Refused by the server per group; refused here before any group is deployed.
    if let Some(strategy @ ("canary" | "bluegreen")) = strategy.as_deref()
        && let Some((group, _)) = requests.iter().find(|(_, r)| !r.config.mounts.is_empty())
    {
        return Err(anyhow::anyhow!(
            "strategy {strategy} cannot be used with volumes: process group {group} mounts one ([[mounts]] in {}); use rolling or immediate",
            path.display()
        )
        .into());
    }
    Ok(requests)
}

/// Prints the steps not printed yet.
fn progress(deployment: &DeploymentResponse, shown: &mut usize, out: &mut Output) {
    for line in progress_lines(deployment, shown) {
        out.status(&line);
    }
}

/// The lines of the steps not shown yet (`shown` of them were), one per step.
fn progress_lines(deployment: &DeploymentResponse, shown: &mut usize) -> Vec<String> {
    let lines = deployment
        .steps
        .iter()
        .skip(*shown)
        .map(|step| {
            let machine = step.machine_id.as_deref().unwrap_or("-");
            // A message's further lines (a crash's last log lines) stay in its column.
            let message = step.message.replace('\n', &format!("\n{:26}", ""));
            format!("  {machine:<14} {:<8} {message}", step.kind.as_str())
        })
        .collect();
    *shown = deployment.steps.len();
    lines
}

/// Follows a deployment to its end, printing each step as it is logged.
pub(crate) async fn follow(
    client: &aloft_client::Client,
    app: &str,
    started: DeploymentResponse,
    out: &mut Output,
) -> Result<DeploymentResponse, Failure> {
    let mut shown = 0;
    progress(&started, &mut shown, out);
    let finished = loop {
        let current = client
            .deployment(app, &started.id)
            .await
            .with_context(|| format!("following deployment {}", started.id))?;
        progress(&current, &mut shown, out);
        if !matches!(current.status.as_str(), "running" | "rolling_back") {
            break current;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if finished.status == "succeeded" {
        out.status(&format!(
            "release v{} of {app} is live",
            finished.release.version
        ));
    }
    Ok(finished)
}

/// Why a deployment did not succeed, as an error.
pub(crate) fn failure_of(app: &str, deployment: &DeploymentResponse) -> anyhow::Error {
    let error = deployment.error.clone().unwrap_or_default();
    let version = deployment.release.version;
    match deployment.status.as_str() {
        "rolled_back" => anyhow::anyhow!(
            "release v{version} of {app} failed and was rolled back: every machine it changed runs the previous release again ({error})\nSee `aloft logs -a {app}` for what the machines printed; fix the release and deploy again"
        ),
        "failed" => anyhow::anyhow!(
            "release v{version} of {app} failed: {error}\nSee `aloft status -a {app}` for the machines' states and `aloft logs -a {app}` for what they printed"
        ),
        other => anyhow::anyhow!("release v{version} of {app} was not deployed ({other}): {error}"),
    }
}

pub(crate) async fn deploy(
    args: DeployArgs,
    config_file: &Option<std::path::PathBuf>,
    app_flag: Option<&str>,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let path = crate::commands::config::config_path(config_file)?;
    let parsed = crate::commands::config::read_with(
        &path,
        crate::commands::config::strictness(args.strict),
        out,
    )?;
    let config = crate::commands::config::with_app(&parsed, app_flag)?;
    let app = config
        .app
        .as_ref()
        .map(ToString::to_string)
        .ok_or_else(|| anyhow::anyhow!("no app: pass -a APP or set `app` in {}", path.display()))?;
    let client = client()?;
    // The token and the app first: a refused token then shows as such, not as a broken
    // pipe halfway through uploading a build context.
    if let Err(error) = client.app(&app).await {
        return Err(match error.status() {
            Some(404) => anyhow::anyhow!(
                "app {app} does not exist: create it with `aloft apps create {app}` (or `aloft launch`), then deploy again"
            ),
            _ => anyhow::Error::from(error).context(format!("reading app {app}")),
        }
        .into());
    }
    let configured = args
        .image
        .clone()
        .or_else(|| config.build.as_ref().and_then(|b| b.image.clone()));
    if configured.is_some() && !args.build_secrets.is_empty() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--build-secret is for builds, and this deploy runs an image ({}) without building",
            configured.as_deref().unwrap_or_default()
        )));
    }
    if args.build_only && configured.is_some() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--build-only builds the Dockerfile, and this deploy runs an image ({}) without building",
            configured.as_deref().unwrap_or_default()
        )));
    }
    let (image, label) = match configured {
        Some(image) => (image.clone(), image),
        None => build(&client, &app, &path, &config, &args, out).await?,
    };
    if args.build_only {
        if json {
            out.json(
                &serde_json::json!({ "image": image, "tag": label.trim_start_matches("build ") }),
            )?;
        } else {
            out.data(&image);
        }
        return Ok(());
    }
    let mut results = Vec::new();
    let requests = requests(&path, &config, &args, &image, &label)?;
    let requests = super::deploy_scope::narrow(
        &client,
        &app,
        requests,
        (&args.only_machines, &args.regions),
        out,
    )
    .await?;
    let serves_https = requests
        .iter()
        .any(|(_, request)| serves_https(&request.config));
    // The file itself goes with each release, so `aloft config save` can write it back.
    let fly_toml =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for (group, mut request) in requests {
        request.fly_toml = Some(fly_toml.clone());
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
        let finished = follow(&client, &app, started, out).await?;
        let succeeded = finished.status == "succeeded";
        let failure = failure_of(&app, &finished);
        results.push(finished);
        if !succeeded {
            if json {
                out.json(&results)?;
            }
            return Err(failure.into());
        }
    }
    if json {
        out.json(&results)?;
    }
    if serves_https {
        print_url(&client, &app, args.detach, out).await;
    }
    Ok(())
}

/// Whether a machine config answers on the edge's shared HTTPS listener (public port 443).
pub(crate) fn serves_https(config: &aloft_types::machine::MachineConfig) -> bool {
    config
        .services
        .iter()
        .flat_map(|s| &s.ports)
        .any(|p| p.port == Some(443))
}

/// Prints where the app answers (flyctl's "Visit your newly deployed app at ...").
async fn print_url(client: &aloft_client::Client, app: &str, detached: bool, out: &mut Output) {
    match client.app(app).await {
        Ok(found) => {
            if let Some(url) = found.url {
                let when = if detached { "once it is live" } else { "now" };
                out.status(&format!(
                    "visit your app at {url} ({when}; `aloft open` opens it)"
                ));
            }
        }
        Err(error) => out.status(&format!("warning: reading the URL of {app}: {error}")),
    }
}

/// `aloft releases` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ReleasesCommand {
    /// Deploy an earlier release's image and config again, as a new release (default:
    /// the complete release before the current one of the same process group).
    Rollback {
        /// The release to go back to: `3` or `v3`.
        version: Option<String>,
        /// Start the deployment and return.
        #[arg(long)]
        detach: bool,
    },
}

pub(crate) async fn releases_command(
    command: Option<ReleasesCommand>,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    match command {
        None => releases(app, json, out).await,
        Some(ReleasesCommand::Rollback { version, detach }) => {
            rollback(app, version.as_deref(), detach, json, out).await
        }
    }
}

async fn rollback(
    app: &str,
    version: Option<&str>,
    detach: bool,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    let version = match version {
        Some(text) => text
            .trim_start_matches('v')
            .parse::<i64>()
            .map_err(|_| anyhow::anyhow!("release {text:?}: expected a version such as 3 or v3"))?,
        None => {
            let releases = client.releases(app).await.map_err(anyhow::Error::from)?;
            let mut complete = releases.iter().filter(|r| r.status == "complete");
            let current = complete
                .next()
                .ok_or_else(|| anyhow::anyhow!("app {app} has no complete release"))?;
            complete
                .find(|r| r.process_group == current.process_group)
                .map(|r| r.version)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "app {app} has no complete release before v{} to roll back to",
                        current.version
                    )
                })?
        }
    };
    let started = client
        .rollback(app, version)
        .await
        .with_context(|| format!("rolling {app} back to release v{version}"))?;
    out.status(&format!(
        "rolling {app} back to v{version} as release v{}: deployment {}",
        started.release.version, started.id
    ));
    let finished = if detach {
        started
    } else {
        follow(&client, app, started, out).await?
    };
    if json {
        out.json(&finished)?;
    }
    if !detach && finished.status != "succeeded" {
        return Err(failure_of(app, &finished).into());
    }
    Ok(())
}

pub(crate) async fn releases(app: &str, json: bool, out: &mut Output) -> Result<(), Failure> {
    let releases = client()?.releases(app).await.map_err(anyhow::Error::from)?;
    if json {
        out.json(&releases)?;
        return Ok(());
    }
    out.data(&releases_table(&releases));
    Ok(())
}

/// `aloft releases`: newest first.
fn releases_table(releases: &[ReleaseResponse]) -> String {
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            vec![
                format!("v{}", r.version),
                r.status.to_string(),
                table::short_image(&r.image),
                r.description.clone(),
                r.user.clone(),
                r.created_at.clone(),
            ]
        })
        .collect();
    table::render(
        &["VERSION", "STATUS", "IMAGE", "DESCRIPTION", "USER", "DATE"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use aloft_types::api::DeploymentStepResponse;
    use aloft_types::deploy::{DeploymentStatus, ReleaseStatus, StepKind, Strategy};

    use super::*;

    fn release(version: i64, status: ReleaseStatus) -> ReleaseResponse {
        ReleaseResponse {
            id: format!("r{version}"),
            version,
            image: format!("registry.local/aloft/web@sha256:{:0>64}", version),
            status,
            process_group: "app".to_owned(),
            description: format!("deploy image web:{version}"),
            user: "admin".to_owned(),
            created_at: format!("2026-12-0{version}T10:00:00Z"),
        }
    }

    fn step(
        number: i64,
        machine: Option<&str>,
        kind: StepKind,
        message: &str,
    ) -> DeploymentStepResponse {
        DeploymentStepResponse {
            number,
            machine_id: machine.map(str::to_owned),
            kind,
            message: message.to_owned(),
            at: "2026-12-06T10:00:00Z".to_owned(),
        }
    }

    fn deployment(
        status: DeploymentStatus,
        steps: Vec<DeploymentStepResponse>,
        error: Option<&str>,
    ) -> DeploymentResponse {
        DeploymentResponse {
            id: "d1".to_owned(),
            release: release(4, ReleaseStatus::Running),
            strategy: Strategy::Rolling,
            max_unavailable: 0.33,
            wait_timeout: 300,
            smoke_check_seconds: 10,
            scope: None,
            status,
            error: error.map(str::to_owned),
            steps,
            created_at: "2026-12-06T10:00:00Z".to_owned(),
            updated_at: "2026-12-06T10:00:30Z".to_owned(),
        }
    }

    /// `aloft deploy`'s progress: each step once, as the deployment is followed, then why
    /// a failed release failed.
    #[test]
    fn deploy_progress_shows_each_step_once_and_failures_say_what_to_do() {
        let machine = Some("148e21ea7d2e89");
        let steps = vec![
            step(
                1,
                None,
                StepKind::Note,
                "rolling strategy: 2 of 2 machine(s) to update, 1 at a time, to release v4",
            ),
            step(2, machine, StepKind::Update, "to release v4"),
            step(
                3,
                machine,
                StepKind::Waiting,
                "checks: http 0/1 passing: connection refused",
            ),
            step(
                4,
                machine,
                StepKind::Failed,
                "machine 148e21ea7d2e89 exited with code 1; the app appears to be crashing\nlast log lines of machine 148e21ea7d2e89:\n  cannot open the database, exiting 1",
            ),
            step(
                5,
                machine,
                StepKind::Rollback,
                "restored to its config before the deployment",
            ),
        ];
        let mut shown = 0;
        let mut lines = progress_lines(
            &deployment(DeploymentStatus::Running, steps[..2].to_vec(), None),
            &mut shown,
        );
        lines.push("(polled again)".to_owned());
        let failed = deployment(
            DeploymentStatus::RolledBack,
            steps,
            Some("machine 148e21ea7d2e89 exited with code 1; the app appears to be crashing"),
        );
        lines.extend(progress_lines(&failed, &mut shown));
        assert!(
            progress_lines(&failed, &mut shown).is_empty(),
            "every step once"
        );
        lines.push(String::new());
        lines.push(format!("{:#}", failure_of("web", &failed)));
        let mut aborted = failed.clone();
        aborted.status = DeploymentStatus::Failed;
        aborted.error = Some("the release command exited with code 2".to_owned());
        lines.push(format!("{:#}", failure_of("web", &aborted)));
        insta::assert_snapshot!(lines.join("\n"));
    }

    #[test]
    fn releases_are_listed_newest_first_with_short_images() {
        let releases = [
            release(3, ReleaseStatus::Running),
            release(2, ReleaseStatus::Complete),
            release(1, ReleaseStatus::Failed),
        ];
        insta::assert_snapshot!(releases_table(&releases));
        insta::assert_snapshot!("no_releases", releases_table(&[]));
    }
}
