//! `aloft doctor` (flyctl's): checks what the other commands need, one line each, and
//! says what to do about each that fails: a token, the API answering it, the fly.toml
//! here, and the app's machines.

use std::path::PathBuf;

use crate::Failure;
use crate::output::Output;

/// How one check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Passed,
    Warning,
    Failed,
    Skipped,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Passed => "PASSED",
            Outcome::Warning => "WARNING",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "SKIPPED",
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct Check {
    name: &'static str,
    outcome: Outcome,
    detail: String,
}

fn check(name: &'static str, outcome: Outcome, detail: impl Into<String>) -> Check {
    Check {
        name,
        outcome,
        detail: detail.into(),
    }
}

/// The fly.toml here (or `-c`), checked; the app it names.
fn config_check(config: &Option<PathBuf>) -> (Check, Option<String>) {
    const NAME: &str = "config file";
    let path = match config {
        Some(path) => path.clone(),
        None => match aloft_config::find_in(std::path::Path::new("")) {
            Ok(path) => path,
            Err(_) => {
                return (
                    check(NAME, Outcome::Skipped, "no fly.toml in this directory"),
                    None,
                );
            }
        },
    };
    let parsed = match aloft_config::load(&path) {
        Ok(parsed) => parsed,
        Err(error) => {
            return (
                check(
                    NAME,
                    Outcome::Failed,
                    format!("{}: {error}", path.display()),
                ),
                None,
            );
        }
    };
    let app = parsed
        .config()
        .and_then(|c| c.app.as_ref())
        .map(ToString::to_string);
    let (errors, warnings) = (parsed.errors().count(), parsed.warnings().count());
    let found = if errors > 0 {
        check(
            NAME,
            Outcome::Failed,
            format!(
                "{} has {errors} error(s); `aloft config validate` shows them",
                path.display()
            ),
        )
    } else if warnings > 0 {
        check(
            NAME,
            Outcome::Warning,
            format!(
                "{} is valid with {warnings} warning(s); `aloft config validate` shows them",
                path.display()
            ),
        )
    } else {
        check(
            NAME,
            Outcome::Passed,
            format!("{} is valid", path.display()),
        )
    };
    (found, app)
}

/// Runs every check; fails (exit 3, a failed command) when one failed.
pub(crate) async fn doctor(
    config: &Option<PathBuf>,
    app_flag: Option<&str>,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let mut checks = Vec::new();
    let client = match crate::api::client() {
        Ok(client) => {
            checks.push(check(
                "API token",
                Outcome::Passed,
                format!("set, for {}", client.base_url()),
            ));
            Some(client)
        }
        Err(error) => {
            checks.push(check("API token", Outcome::Failed, error.to_string()));
            None
        }
    };
    let answering = match &client {
        None => {
            checks.push(check("API", Outcome::Skipped, "no token to ask it with"));
            None
        }
        Some(client) => match client.current_token().await {
            Ok(token) => {
                checks.push(check(
                    "API",
                    Outcome::Passed,
                    format!(
                        "{} accepts the token {} ({})",
                        client.base_url(),
                        token.name,
                        token.kind
                    ),
                ));
                Some(client)
            }
            Err(error) => {
                let detail = match error.status() {
                    Some(401) => format!(
                        "{} refuses the token: log in again with `aloft auth login --token TOKEN`",
                        client.base_url()
                    ),
                    Some(status) => format!("{} answered {status}: {error}", client.base_url()),
                    None => format!(
                        "{} cannot be reached ({error}); is aloftd running there?",
                        client.base_url()
                    ),
                };
                checks.push(check("API", Outcome::Failed, detail));
                None
            }
        },
    };
    let (config_found, config_app) = config_check(config);
    checks.push(config_found);
    let app = app_flag.map(str::to_owned).or(config_app);
    match (answering, app) {
        (Some(client), Some(app)) => checks.push(app_check(client, &app).await),
        (None, Some(_)) => checks.push(check("app", Outcome::Skipped, "the API did not answer")),
        (_, None) => checks.push(check(
            "app",
            Outcome::Skipped,
            "no app: pass -a APP or run where a fly.toml names one",
        )),
    }

    let failed = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Failed)
        .count();
    if json {
        out.json(&serde_json::json!({ "checks": checks, "ok": failed == 0 }))?;
    } else {
        for c in &checks {
            out.data(&format!(
                "Testing {}... {} ({})",
                c.name,
                c.outcome.word(),
                c.detail
            ));
        }
    }
    if failed > 0 {
        return Err(anyhow::anyhow!("{failed} check(s) failed").into());
    }
    Ok(())
}

/// The app exists, and none of its machines is failed or failing its checks.
async fn app_check(client: &aloft_client::Client, app: &str) -> Check {
    const NAME: &str = "app";
    if let Err(error) = client.app(app).await {
        return check(NAME, Outcome::Failed, format!("reading app {app}: {error}"));
    }
    let machines = match client.list_machines(app).await {
        Ok(machines) => machines,
        Err(error) => {
            return check(
                NAME,
                Outcome::Failed,
                format!("listing the machines of {app}: {error}"),
            );
        }
    };
    let failed: Vec<&str> = machines
        .iter()
        .filter(|m| m.state == "failed")
        .map(|m| m.id.as_str())
        .collect();
    let failing: Vec<&str> = machines
        .iter()
        .filter(|m| m.state == "started")
        .filter(|m| {
            m.checks
                .iter()
                .any(|c| c.status != aloft_types::CheckStatus::Passing)
        })
        .map(|m| m.id.as_str())
        .collect();
    let started = machines.iter().filter(|m| m.state == "started").count();
    if !failed.is_empty() {
        check(
            NAME,
            Outcome::Failed,
            format!(
                "{app}: machine(s) {} failed; `aloft machine status ID` says why",
                failed.join(", ")
            ),
        )
    } else if !failing.is_empty() {
        check(
            NAME,
            Outcome::Warning,
            format!(
                "{app}: machine(s) {} do not pass their checks; `aloft checks list` shows them",
                failing.join(", ")
            ),
        )
    } else {
        check(
            NAME,
            Outcome::Passed,
            format!("{app}: {started} of {} machine(s) started", machines.len()),
        )
    }
}
