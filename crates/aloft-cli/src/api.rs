//! Reaching the API: where it is, which token to use, and which app a command is about.

use std::path::PathBuf;

use aloft_client::Client;
use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The API's URL, overriding what `aloft auth login` saved.
pub(crate) const ALOFT_API_URL: &str = "ALOFT_API_URL";
/// The API token, overriding what `aloft auth login` saved.
pub(crate) const ALOFT_API_TOKEN: &str = "ALOFT_API_TOKEN";
/// A PEM file of the CA to trust for an `https://` API, overriding the one `aloft auth
/// login` pinned.
pub(crate) const ALOFT_API_CA: &str = "ALOFT_API_CA";
/// Where the CLI keeps its settings (default: `$XDG_CONFIG_HOME/aloft` or `~/.config/aloft`).
pub(crate) const ALOFT_CONFIG_DIR: &str = "ALOFT_CONFIG_DIR";
/// The API URL when nothing else says: `aloftd server`'s default.
pub(crate) const DEFAULT_API_URL: &str = "http://127.0.0.1:4280";

/// What `aloft auth login` saves.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Credentials {
    pub(crate) api_url: Option<String>,
    pub(crate) token: Option<String>,
    /// The platform's CA (PEM), pinned at login for an `https://` API whose certificate
    /// no public CA signed: then only certificates it issued are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_cert: Option<String>,
}

impl Credentials {
    /// Whose certificates an `https://` API may present: `ALOFT_API_CA`'s file, else the
    /// CA pinned at login, else the public CAs.
    pub(crate) fn trust(&self) -> anyhow::Result<aloft_client::Trust> {
        if let Some(path) = std::env::var_os(ALOFT_API_CA) {
            let pem = std::fs::read_to_string(&path).with_context(|| {
                format!("reading {ALOFT_API_CA}={}", PathBuf::from(&path).display())
            })?;
            return Ok(aloft_client::Trust::Ca(pem));
        }
        Ok(match &self.ca_cert {
            Some(pem) => aloft_client::Trust::Ca(pem.clone()),
            None => aloft_client::Trust::Public,
        })
    }
}

pub(crate) fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(ALOFT_CONFIG_DIR) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("aloft"));
    }
    let home = std::env::var_os("HOME")
        .context("neither ALOFT_CONFIG_DIR, XDG_CONFIG_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".config").join("aloft"))
}

fn credentials_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("credentials.toml"))
}

pub(crate) fn load_credentials() -> anyhow::Result<Credentials> {
    let path = credentials_path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

pub(crate) fn save_credentials(credentials: &Credentials) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = credentials_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string(credentials).context("writing the credentials")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A client for the API the environment or the saved credentials name.
pub(crate) fn client() -> anyhow::Result<Client> {
    let saved = load_credentials()?;
    let url = std::env::var(ALOFT_API_URL)
        .ok()
        .or(saved.api_url.clone())
        .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
    let token = std::env::var(ALOFT_API_TOKEN).ok().or(saved.token.clone());
    let Some(token) = token.filter(|t| !t.trim().is_empty()) else {
        bail!("no API token: run `aloft auth login --token TOKEN` or set {ALOFT_API_TOKEN}");
    };
    check_url(&url)?;
    let trust = saved.trust()?;
    Client::with_trust(&url, token.trim(), &trust).context("the API's TLS settings")
}

/// Refuses an API URL that is not `http://...` or `https://...` with a host.
pub(crate) fn check_url(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        Some(_) => bail!("the API URL {url:?} names no host: use http://HOST:PORT"),
        None => bail!(
            "the API URL {url:?} has no scheme: use http://{} (or https://...)",
            url.split("://").last().unwrap_or(url)
        ),
    }
}

/// The app a command is about: `-a`, else `app` in the config file, else an error.
pub(crate) fn app_name(flag: Option<&str>, config: &Option<PathBuf>) -> anyhow::Result<String> {
    if let Some(app) = flag {
        app.parse::<aloft_types::AppName>()
            .with_context(|| format!("--app {app:?}"))?;
        return Ok(app.to_owned());
    }
    let path = match config {
        Some(path) => Some(path.clone()),
        None => aloft_config::find_in(std::path::Path::new("")).ok(),
    };
    if let Some(path) = path {
        let parsed = aloft_config::load(&path)?;
        if let Some(app) = parsed.config().and_then(|c| c.app.clone()) {
            return Ok(app.to_string());
        }
    }
    bail!("which app? give -a APP, or run where a fly.toml names one")
}
