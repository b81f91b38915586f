//! `aloft apps`.

use clap::Subcommand;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app.
    Create {
        name: String,
        /// The organization (default: the token's).
        #[arg(long)]
        org: Option<String>,
        /// A named private network of the organization (default: its default network).
        /// Apps in different networks cannot reach each other; it cannot change later.
        #[arg(long)]
        network: Option<String>,
    },
    /// List apps.
    List,
    /// Destroy an app with its machines, volumes and secrets.
    Destroy {
        name: String,
        /// Do not ask for confirmation (needed where there is no terminal to ask on).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Restart every started machine of an app, one at a time: each is started again
    /// (and passes its checks) before the next goes.
    Restart {
        name: String,
        /// Kill each old run at once (SIGKILL) instead of stopping it.
        #[arg(long)]
        force_stop: bool,
        /// Go on to the next machine once one is started, without its checks.
        #[arg(long)]
        skip_health_checks: bool,
    },
}

pub(crate) async fn run(command: AppsCommand, json: bool, out: &mut Output) -> Result<(), Failure> {
    let client = client()?;
    match command {
        AppsCommand::Create { name, org, network } => {
            let app = client
                .create_app_in_network(&name, org.as_deref(), network.as_deref())
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&app)?;
            } else {
                out.status(&format!(
                    "New app created: {} (network {})",
                    app.name, app.network
                ));
            }
        }
        AppsCommand::List => {
            let apps = client.list_apps().await.map_err(anyhow::Error::from)?;
            if json {
                out.json(&apps.apps)?;
            } else {
                let rows = apps
                    .apps
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.clone(),
                            a.organization.slug.clone(),
                            a.status.clone(),
                            a.machine_count.to_string(),
                            a.created_at.clone(),
                        ]
                    })
                    .collect::<Vec<_>>();
                out.data(&table::render(
                    &["NAME", "OWNER", "STATUS", "MACHINES", "CREATED"],
                    &rows,
                ));
            }
        }
        AppsCommand::Destroy { name, yes } => {
            crate::confirm::confirm(
                &format!(
                    "Destroy app {name} with its machines, volumes (and their data) and secrets? This cannot be undone"
                ),
                "destroying an app",
                yes,
            )?;
            client
                .delete_app(&name)
                .await
                .map_err(anyhow::Error::from)?;
            out.report(
                json,
                serde_json::json!({ "app": name, "destroyed": true }),
                &format!("Destroyed app {name}"),
            )?;
        }
        AppsCommand::Restart {
            name,
            force_stop,
            skip_health_checks,
        } => {
            let machines = client
                .list_machines(&name)
                .await
                .map_err(anyhow::Error::from)?;
            let started: Vec<String> = machines
                .into_iter()
                .filter(|m| m.state == "started")
                .map(|m| m.id)
                .collect();
            for id in &started {
                restart_one(&client, &name, id, force_stop, skip_health_checks).await?;
                if !json {
                    out.status(&format!("Machine {id} restarted"));
                }
            }
            out.report(
                json,
                serde_json::json!({ "app": name, "restarted": started }),
                &format!("Restarted {} machine(s) of app {name}", started.len()),
            )?;
        }
    }
    Ok(())
}

/// Restarts one machine and waits until it is started again and (unless `skip_checks`)
/// every check of it passes.
async fn restart_one(
    client: &aloft_client::Client,
    app: &str,
    id: &str,
    force_stop: bool,
    skip_checks: bool,
) -> anyhow::Result<()> {
    use crate::commands::machine::{START_TIMEOUT, Until, wait_until};
    client.restart_machine_forced(app, id, force_stop).await?;
    let until = Until {
        states: &[aloft_types::MachineState::Started],
        label: "started",
        checks_passing: !skip_checks,
    };
    wait_until(client, app, id, until, START_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("{e}; the machines after it were not restarted"))?;
    Ok(())
}

/// `aloft open [PATH]`: the app's URL (with `PATH`), printed, and opened in a browser when
/// there is one: `$BROWSER`, else `xdg-open` on a desktop session.
pub(crate) async fn open(
    app: &str,
    path: Option<&str>,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    let found = client
        .app(app)
        .await
        .map_err(|e| anyhow::anyhow!("reading app {app}: {e}"))?;
    let base = found
        .url
        .ok_or_else(|| anyhow::anyhow!("app {app} has no URL: this platform runs no edge proxy"))?;
    let url = match path {
        Some(path) => format!(
            "{}/{}",
            base.trim_end_matches('/'),
            path.trim_start_matches('/')
        ),
        None => base,
    };
    show_and_open(&url, json, out)
}

/// Which dashboard page `aloft dashboard` opens.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum DashboardPage {
    /// The app's graphs: requests, latency, CPU, memory and network.
    Metrics,
}

/// `aloft dashboard [metrics]` (flyctl's): the web dashboard's page of the app, served
/// by the API the CLI talks to, printed and opened in a browser when there is one.
pub(crate) async fn dashboard(
    app: &str,
    page: Option<DashboardPage>,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    // The app must be one the token sees: a page of another would only say not found.
    client
        .app(app)
        .await
        .map_err(|e| anyhow::anyhow!("reading app {app}: {e}"))?;
    let base = client.base_url().trim_end_matches('/');
    let url = match page {
        None => format!("{base}/apps/{app}"),
        Some(DashboardPage::Metrics) => format!("{base}/apps/{app}/metrics"),
    };
    show_and_open(&url, json, out)
}

/// Prints `url` (or `{url}` as JSON) and opens it in a browser when there is one.
fn show_and_open(url: &str, json: bool, out: &mut Output) -> Result<(), Failure> {
    if json {
        out.json(&serde_json::json!({ "url": url }))?;
    } else {
        out.data(url);
    }
    match browser() {
        Some(program) => {
            let status = std::process::Command::new(&program)
                .arg(url)
                .stdin(std::process::Stdio::null())
                .status()
                .map_err(|e| anyhow::anyhow!("running the browser {program:?}: {e}"))?;
            if !status.success() {
                return Err(anyhow::anyhow!("the browser {program:?} failed ({status})").into());
            }
        }
        None => out.status(
            "no browser to open it here (no desktop session); set BROWSER to a program that opens URLs",
        ),
    }
    Ok(())
}

/// The program that opens URLs: `$BROWSER`, else `xdg-open` on a desktop session.
fn browser() -> Option<String> {
    if let Some(program) = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
    {
        return Some(program);
    }
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("xdg-open").is_file()));
    (desktop && on_path).then(|| "xdg-open".to_owned())
}
