//! `aloft config validate|show`.

use std::path::{Path, PathBuf};

use aloft_config::{AppConfig, Format, Parsed};
use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::Failure;
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the config file; errors and warnings go to stderr with their positions.
    ///
    /// Exits 0 when the file is valid (warnings allowed), 1 when it has errors. As
    /// flyctl, keys it does not know (and a few settings it cannot honour) are warnings
    /// saying what is ignored; `--strict` makes them errors.
    Validate {
        /// Refuse unknown keys and ignored settings (`fly config validate --strict`).
        #[arg(long)]
        strict: bool,
    },
    /// Print the config after legacy forms are rewritten, or the Machines API config of a
    /// process group with --machine-config.
    Show(ShowArgs),
    /// The app's runtime environment, as its machines run it (flyctl's `config env`): its
    /// secrets (names and digests, never values), then the environment variables of its
    /// config (fly.toml's `[env]`, `-e` at deploy) per process group.
    Env,
    /// Write the fly.toml the app's current release was deployed from (flyctl's `config
    /// save`), to `-c PATH` or `./fly.toml`; replacing a file asks first.
    Save {
        /// Replace an existing file without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Print as TOML (the default).
    #[arg(long, conflicts_with_all = ["yaml", "machine_config"])]
    toml: bool,
    /// Print as YAML.
    #[arg(long, conflicts_with_all = ["toml", "machine_config"])]
    yaml: bool,
    /// Print the MachineConfig (JSON) that machines of a process group run with.
    #[arg(long)]
    machine_config: bool,
    /// The process group for --machine-config (default: `app`, or the first group).
    #[arg(long, short = 'g', value_name = "NAME", requires = "machine_config")]
    process_group: Option<String>,
}

pub(crate) fn config_path(explicit: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match explicit {
        Some(path) => Ok(path.clone()),
        // Found in the current directory, the file is named as the user would name it:
        // `fly.toml`, not an absolute path.
        None => aloft_config::find_in(Path::new("")).or_else(|_| {
            let dir = std::env::current_dir().context("finding the current directory")?;
            Err(aloft_config::ConfigError::NotFound { dir }.into())
        }),
    }
}

/// Reads the config and prints its findings; fails when it has errors.
pub(crate) fn read(path: &Path, out: &mut Output) -> Result<Parsed, Failure> {
    read_with(path, aloft_config::Strictness::Lenient, out)
}

/// [`read`] as strictly as asked.
pub(crate) fn read_with(
    path: &Path,
    strictness: aloft_config::Strictness,
    out: &mut Output,
) -> Result<Parsed, Failure> {
    let parsed = aloft_config::load_with(path, strictness).map_err(anyhow::Error::from)?;
    let report = parsed.render();
    if !report.is_empty() {
        out.diagnostics(&report);
    }
    if parsed.has_errors() {
        let errors = parsed.errors().count();
        out.status(&format!(
            "{} is not valid: {errors} error{}",
            path.display(),
            if errors == 1 { "" } else { "s" }
        ));
        return Err(Failure::InvalidConfig);
    }
    Ok(parsed)
}

pub(crate) fn with_app(parsed: &Parsed, app: Option<&str>) -> Result<AppConfig, Failure> {
    let mut config = parsed.config().cloned().ok_or(Failure::InvalidConfig)?;
    if let Some(app) = app {
        config.app = Some(
            app.parse()
                .with_context(|| format!("--app {app:?}"))
                .map_err(Failure::Usage)?,
        );
    }
    Ok(config)
}

pub(crate) fn run(
    command: ConfigCommand,
    config: &Option<PathBuf>,
    app: Option<&str>,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    match command {
        ConfigCommand::Env => {
            // The app's, from the API: `-a` alone will do, with no fly.toml at hand.
            let app = crate::api::app_name(app, config).map_err(Failure::Usage)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(super::config_env::env(&app, json, out))
        }
        ConfigCommand::Save { yes } => {
            let app = crate::api::app_name(app, config).map_err(Failure::Usage)?;
            let path = match config {
                Some(path) if path.is_dir() => path.join("fly.toml"),
                Some(path) => path.clone(),
                None => PathBuf::from("fly.toml"),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(super::config_env::save(&app, &path, yes, json, out))
        }
        ConfigCommand::Validate { strict } => {
            validate(&config_path(config)?, strictness(strict), json, out)
        }
        ConfigCommand::Show(args) => {
            let path = config_path(config)?;
            let parsed = read(&path, out)?;
            let config = with_app(&parsed, app)?;
            if args.machine_config {
                let group = args
                    .process_group
                    .unwrap_or_else(|| config.default_process_group());
                let base = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let machine = config
                    .to_machine_config(&group, base, None)
                    .with_context(|| {
                        format!("lowering {} for process group `{group}`", path.display())
                    })?;
                let text =
                    serde_json::to_string_pretty(&machine).context("writing the machine config")?;
                out.data(&text);
            } else {
                let format = if json {
                    Format::Json
                } else if args.yaml {
                    Format::Yaml
                } else {
                    Format::Toml
                };
                let text =
                    aloft_config::show::to_string(&config, format).map_err(anyhow::Error::from)?;
                out.data(&text);
            }
            Ok(())
        }
    }
}

/// `--strict` as a [`aloft_config::Strictness`].
pub(crate) fn strictness(strict: bool) -> aloft_config::Strictness {
    if strict {
        aloft_config::Strictness::Strict
    } else {
        aloft_config::Strictness::Lenient
    }
}

fn validate(
    path: &Path,
    strictness: aloft_config::Strictness,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    if !json {
        read_with(path, strictness, out)?;
        out.status(&format!("{} is valid", path.display()));
        return Ok(());
    }
    let parsed = aloft_config::load_with(path, strictness).map_err(anyhow::Error::from)?;
    let findings: Vec<serde_json::Value> = parsed
        .diagnostics()
        .iter()
        .map(|d| {
            let position = d.span.map(|span| parsed.source().position(span.start));
            serde_json::json!({
                "severity": d.severity.to_string(),
                "path": d.path.to_string(),
                "message": d.message,
                "help": d.help,
                "file": parsed.source().name(),
                "line": position.map(|p| p.line),
                "column": position.map(|p| p.column),
            })
        })
        .collect();
    let report = serde_json::json!({ "valid": !parsed.has_errors(), "diagnostics": findings });
    out.data(&serde_json::to_string_pretty(&report).context("writing the report")?);
    if parsed.has_errors() {
        Err(Failure::InvalidConfig)
    } else {
        Ok(())
    }
}
