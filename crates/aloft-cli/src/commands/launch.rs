//! `aloft launch`: turns the current directory into an app. It looks for a Dockerfile (or
//! takes `--image`), creates the app, writes a fly.toml in Fly's shape and, unless
//! `--no-deploy`, deploys it. It never prompts: every choice has a flag and a default.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::Failure;
use crate::api::client;
use crate::output::Output;

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Run this image instead of building the directory's Dockerfile.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// The app's name (default: the directory's name, made valid).
    #[arg(long)]
    pub name: Option<String>,
    /// The app's primary region (`primary_region`).
    #[arg(long, short = 'r')]
    pub region: Option<String>,
    /// The port the app listens on (default: the Dockerfile's first `EXPOSE`, else 8080).
    #[arg(long, value_name = "PORT")]
    pub internal_port: Option<u16>,
    /// The organization (default: the token's).
    #[arg(long)]
    pub org: Option<String>,
    /// Write fly.toml and create the app, but do not deploy.
    #[arg(long)]
    pub no_deploy: bool,
}

/// An app name from a directory name: lowercase letters, digits and dashes, starting with
/// a letter, at most 63 characters; `None` when nothing usable is left.
fn name_from(dir: &str) -> Option<String> {
    let mut name = String::new();
    for c in dir.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name
        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '-')
        .trim_end_matches('-');
    let name: String = name.chars().take(63).collect();
    let name = name.trim_end_matches('-').to_owned();
    (!name.is_empty()).then_some(name)
}

/// The first port a Dockerfile `EXPOSE`s.
fn exposed_port(dockerfile: &str) -> Option<u16> {
    dockerfile.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let instruction = words.next()?;
        if !instruction.eq_ignore_ascii_case("EXPOSE") {
            return None;
        }
        words.find_map(|word| word.split('/').next()?.parse().ok())
    })
}

/// The fly.toml `aloft launch` writes (Fly's `fly launch` defaults).
fn fly_toml(name: &str, region: Option<&str>, build: &str, port: u16) -> String {
    let region = region.map_or_else(String::new, |r| format!("primary_region = {r:?}\n"));
    format!(
        "# fly.toml app configuration file generated for {name} by `aloft launch`.\n\
         # It is Fly.io's format: the same file deploys there unchanged.\n\
         \n\
         app = {name:?}\n\
         {region}\
         \n\
         [build]\n\
         {build}\n\
         \n\
         [http_service]\n\
         internal_port = {port}\n\
         force_https = true\n\
         auto_stop_machines = \"stop\"\n\
         auto_start_machines = true\n\
         min_machines_running = 0\n\
         processes = [\"app\"]\n\
         \n\
         [[vm]]\n\
         memory = \"1gb\"\n\
         cpu_kind = \"shared\"\n\
         cpus = 1\n"
    )
}

pub(crate) async fn launch(
    args: LaunchArgs,
    config_file: &Option<PathBuf>,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let path = config_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("fly.toml"));
    if path.exists() {
        return Err(anyhow::anyhow!(
            "{} already exists: this directory is an app already; run `aloft deploy`",
            path.display()
        )
        .into());
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dockerfile_path = dir.join("Dockerfile");
    let dockerfile = std::fs::read_to_string(&dockerfile_path).ok();
    let build = match (&args.image, &dockerfile) {
        (Some(image), _) => format!("image = {image:?}"),
        (None, Some(_)) => "dockerfile = \"Dockerfile\"".to_owned(),
        (None, None) => {
            return Err(anyhow::anyhow!(
                "no Dockerfile in {}: add one, or pass --image REF to run an existing image",
                dir.display()
            )
            .into());
        }
    };
    let name = match &args.name {
        Some(name) => name.clone(),
        None => {
            let absolute = std::fs::canonicalize(dir)
                .with_context(|| format!("finding the directory {}", dir.display()))?;
            let base = absolute
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name_from(&base).ok_or_else(|| {
                anyhow::anyhow!("cannot make an app name of directory {base:?}: pass --name NAME")
            })?
        }
    };
    let port = args
        .internal_port
        .or_else(|| dockerfile.as_deref().and_then(exposed_port))
        .unwrap_or(8080);
    let text = fly_toml(&name, args.region.as_deref(), &build, port);
    // What is written must read back without a finding.
    let parsed = aloft_config::parse(aloft_config::SourceFile::new(
        path.display().to_string(),
        text.clone(),
        aloft_config::Format::Toml,
    ));
    if parsed.has_errors() {
        return Err(anyhow::anyhow!(
            "the fly.toml for {name:?} would not be valid:\n{}",
            parsed.render()
        )
        .into());
    }
    let client = client()?;
    let app = client
        .create_app_in_network(&name, args.org.as_deref(), None)
        .await
        .with_context(|| format!("creating app {name}"))?;
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    out.status(&format!(
        "created app {} in organization {} and wrote {} (internal port {port})",
        app.name,
        app.organization.slug,
        path.display()
    ));
    if args.no_deploy {
        if json {
            out.json(&app)?;
        }
        match &app.url {
            Some(url) => out.status(&format!(
                "run `aloft deploy` to deploy it; it will answer at {url}"
            )),
            None => out.status("run `aloft deploy` to deploy it"),
        }
        return Ok(());
    }
    let deploy = crate::commands::deploy::DeployArgs::default();
    crate::commands::deploy::deploy(deploy, &Some(path), None, json, out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_directory() {
        assert_eq!(name_from("My_Cool App").as_deref(), Some("my-cool-app"));
        assert_eq!(name_from("2024-site").as_deref(), Some("site"));
        assert_eq!(name_from("___"), None);
    }

    #[test]
    fn the_port_comes_from_expose() {
        assert_eq!(exposed_port("FROM x\nexpose 3000/tcp 4000\n"), Some(3000));
        assert_eq!(exposed_port("FROM x\n"), None);
    }

    #[test]
    fn the_written_file_is_valid() {
        let text = fly_toml("web", Some("local"), "image = \"nginx\"", 80);
        let parsed = aloft_config::parse(aloft_config::SourceFile::new(
            "fly.toml",
            text,
            aloft_config::Format::Toml,
        ));
        assert!(!parsed.has_errors(), "{}", parsed.render());
        assert!(
            parsed.render().is_empty(),
            "no warning either: {}",
            parsed.render()
        );
    }
}
