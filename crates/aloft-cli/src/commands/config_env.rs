//! `aloft config env` and `config save`: an app's config as the platform has it (the
//! secrets and environment variables its machines run with; the fly.toml its release was
//! deployed from).

use std::collections::BTreeMap;

use anyhow::Context as _;

use crate::Failure;
use crate::output::Output;
use crate::table;

/// Prints the app's secrets (names, digests, when set), then the environment variables
/// of its machines' config by process group: the newest machine of each group says what
/// its group's release runs.
pub(crate) async fn env(app: &str, json: bool, out: &mut Output) -> Result<(), Failure> {
    let client = crate::api::client()?;
    let secrets = client
        .list_secrets(app)
        .await
        .with_context(|| format!("listing the secrets of {app}"))?;
    let mut machines: Vec<_> = client
        .list_machines(app)
        .await
        .with_context(|| format!("listing the machines of {app}"))?
        .into_iter()
        .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
        .collect();
    machines.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
    let mut env: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for machine in &machines {
        let group = machine.config.process_group().unwrap_or("app").to_owned();
        env.entry(group)
            .or_insert_with(|| machine.config.env.clone().into_iter().collect());
    }
    if json {
        out.json(&serde_json::json!({ "secrets": secrets, "env": env }))?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| vec![s.name.clone(), s.digest.clone(), s.created_at.clone()])
        .collect();
    out.data("Secrets");
    out.data(&table::render(&["NAME", "DIGEST", "CREATED AT"], &rows));
    out.data("Environment variables");
    let several = env.len() > 1;
    let rows: Vec<Vec<String>> = env
        .iter()
        .flat_map(|(group, vars)| {
            vars.iter().map(move |(name, value)| {
                let mut row = vec![name.clone(), value.clone()];
                if several {
                    row.push(group.clone());
                }
                row
            })
        })
        .collect();
    let headers: &[&str] = if several {
        &["NAME", "VALUE", "PROCESS GROUP"]
    } else {
        &["NAME", "VALUE"]
    };
    out.data(&table::render(headers, &rows));
    if machines.is_empty() {
        out.status(&format!(
            "app {app} has no machines yet: its config's variables show once it is deployed"
        ));
    }
    Ok(())
}

/// Writes the fly.toml the app's current release was deployed from to `path` (flyctl's
/// `config save`); an existing file is replaced only when confirmed (`yes`).
pub(crate) async fn save(
    app: &str,
    path: &std::path::Path,
    yes: bool,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = crate::api::client()?;
    let saved = client
        .app_config(app)
        .await
        .with_context(|| format!("reading the config of {app}"))?;
    if path.exists() {
        crate::confirm::confirm(
            &format!(
                "{} exists. Replace it with the config of {app}?",
                path.display()
            ),
            &format!("replacing {}", path.display()),
            yes,
        )?;
    }
    std::fs::write(path, &saved.fly_toml).with_context(|| format!("writing {}", path.display()))?;
    if json {
        out.json(&serde_json::json!({
            "path": path.display().to_string(),
            "release": saved.release,
        }))?;
    } else {
        out.status(&format!(
            "Wrote the config of {app} (release v{}) to {}",
            saved.release,
            path.display()
        ));
    }
    Ok(())
}
