//! `aloft auth login|logout|token|whoami`.

use clap::Subcommand;

use crate::Failure;
use crate::api::{Credentials, DEFAULT_API_URL, client, load_credentials, save_credentials};
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Save an API token (and the API's URL) for later commands.
    Login {
        /// The token (as printed by `aloftd server` on its first start, or `aloft tokens create`).
        #[arg(long)]
        token: String,
        /// The API's URL (default: http://127.0.0.1:4280).
        #[arg(long)]
        api_url: Option<String>,
        /// For an `https://` API with the platform's own CA: the CA's fingerprint
        /// (`sha256:...`, printed by aloftd with the login command); the CA is pinned.
        #[arg(long, value_name = "SHA256")]
        ca_fingerprint: Option<String>,
        /// For an `https://` API: the CA certificate (PEM) to pin, such as
        /// `<data_dir>/platform-ca/ca.crt` copied from the platform's host.
        #[arg(long, value_name = "PATH")]
        ca_cert: Option<std::path::PathBuf>,
    },
    /// Show the token in use: its kind, name and organization.
    Whoami,
    /// Forget the saved token (the API's URL is kept).
    Logout,
    /// Print the token in use (`ALOFT_API_TOKEN`, else the saved one).
    Token,
}

pub(crate) async fn run(command: AuthCommand, json: bool, out: &mut Output) -> Result<(), Failure> {
    match command {
        AuthCommand::Login {
            token,
            api_url,
            ca_fingerprint,
            ca_cert,
        } => {
            let previous = load_credentials()?;
            let given = api_url.is_some();
            let url = api_url
                .or_else(|| std::env::var(crate::api::ALOFT_API_URL).ok())
                .or(previous.api_url.clone())
                .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
            crate::api::check_url(&url).map_err(Failure::Usage)?;
            let token = token.trim();
            let pin = Pin {
                fingerprint: ca_fingerprint,
                file: ca_cert,
                // Logging in again to the same API keeps the CA pinned before.
                before: previous
                    .ca_cert
                    .clone()
                    .filter(|_| previous.api_url.as_deref() == Some(url.as_str())),
            };
            let ca = if url.starts_with("https://") {
                pinned_ca(&url, token, pin).await?
            } else if pin.fingerprint.is_some() || pin.file.is_some() {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--ca-fingerprint and --ca-cert are for an https:// API; {url} is plain HTTP"
                )));
            } else {
                None
            };
            let trust = ca
                .clone()
                .map_or(aloft_client::Trust::Public, aloft_client::Trust::Ca);
            let check = aloft_client::Client::with_trust(&url, token, &trust)
                .map_err(anyhow::Error::from)?;
            let current = match check.current_token().await {
                Ok(current) => current,
                Err(error @ aloft_client::ClientError::Unreachable { .. }) if !given => {
                    return Err(anyhow::anyhow!(
                        "{error}\nNo --api-url was given, so {url} was tried: pass the URL aloftd printed at its first start (also in <data_dir>/api-url)"
                    )
                    .into());
                }
                Err(error) => return Err(anyhow::Error::from(error).into()),
            };
            let credentials = Credentials {
                api_url: Some(url.clone()),
                token: Some(token.to_owned()),
                ca_cert: ca.clone(),
            };
            let path = save_credentials(&credentials)?;
            out.status(&format!(
                "Logged in to {url} with a {} token ({}){}; saved to {}",
                current.kind,
                current.name,
                if ca.is_some() {
                    ", the platform's CA pinned"
                } else {
                    ""
                },
                path.display()
            ));
            Ok(())
        }
        AuthCommand::Logout => {
            let mut saved = load_credentials()?;
            let had = saved.token.take().is_some();
            if had {
                let path = save_credentials(&saved)?;
                out.status(&format!(
                    "Logged out: the token is gone from {}",
                    path.display()
                ));
            } else {
                out.status("No token was saved");
            }
            if std::env::var_os(crate::api::ALOFT_API_TOKEN).is_some() {
                out.status(&format!(
                    "{} is set in the environment and is still used; unset it too",
                    crate::api::ALOFT_API_TOKEN
                ));
            }
            if json {
                out.json(&serde_json::json!({ "logged_out": had }))?;
            }
            Ok(())
        }
        AuthCommand::Token => {
            let token = std::env::var(crate::api::ALOFT_API_TOKEN)
                .ok()
                .or(load_credentials()?.token)
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no API token: run `aloft auth login --token TOKEN` or set {}",
                        crate::api::ALOFT_API_TOKEN
                    )
                })?;
            if json {
                out.json(&serde_json::json!({ "token": token.trim() }))?;
            } else {
                out.data(token.trim());
            }
            Ok(())
        }
        AuthCommand::Whoami => {
            let client = client()?;
            let token = client.current_token().await.map_err(anyhow::Error::from)?;
            let orgs = client.list_orgs().await.map_err(anyhow::Error::from)?;
            if json {
                out.json(&serde_json::json!({ "token": token, "organizations": orgs }))?;
            } else {
                let org = orgs.first().map_or("?", |o| o.slug.as_str());
                out.data(&format!(
                    "{} token `{}` of organization {org} at {}",
                    token.kind,
                    token.name,
                    client.base_url()
                ));
            }
            Ok(())
        }
    }
}

/// What the person gave (or saved before) to pin an `https://` API's CA.
struct Pin {
    fingerprint: Option<String>,
    file: Option<std::path::PathBuf>,
    before: Option<String>,
}

/// The CA (PEM) to pin for the `https://` API at `url`, or `None` when its certificate
/// is from a public CA: a given file, the certificate the API presents with the given
/// fingerprint, the one pinned before, or (on a terminal) one the person accepts.
async fn pinned_ca(url: &str, token: &str, pin: Pin) -> Result<Option<String>, Failure> {
    use aloft_client::tls::{fingerprint, pem_of, presented_chain};
    let wanted = pin
        .fingerprint
        .as_deref()
        .map(|f| f.trim().to_ascii_lowercase());
    if let Some(wanted) = &wanted
        && !(wanted.starts_with("sha256:") && wanted.len() == "sha256:".len() + 64)
    {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--ca-fingerprint {wanted:?} is not sha256: and 64 hex digits, as aloftd prints it"
        )));
    }
    if let Some(path) = &pin.file {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading --ca-cert {}: {e}", path.display()))?;
        if let Some(wanted) = &wanted {
            let der = aloft_client::tls::first_certificate(&pem).ok_or_else(|| {
                anyhow::anyhow!("--ca-cert {} holds no certificate", path.display())
            })?;
            if &fingerprint(&der) != wanted {
                return Err(anyhow::anyhow!(
                    "--ca-cert {} has fingerprint {}, not {wanted}",
                    path.display(),
                    fingerprint(&der)
                )
                .into());
            }
        }
        return Ok(Some(pem));
    }
    if wanted.is_none() {
        // A certificate from a public CA needs no pin; one pinned before is kept.
        let public = aloft_client::Client::new(url, token);
        match public.current_token().await {
            Err(aloft_client::ClientError::Untrusted { .. }) => {}
            _ => return Ok(None),
        }
        if pin.before.is_some() {
            return Ok(pin.before);
        }
    }
    let chain = presented_chain(url)
        .await
        .map_err(|cause| anyhow::anyhow!("cannot read the certificate of {url}: {cause}"))?;
    let presented: Vec<String> = chain.iter().map(|der| fingerprint(der)).collect();
    match wanted {
        Some(wanted) => {
            let Some(ca) = chain.iter().find(|der| fingerprint(der) == wanted) else {
                return Err(anyhow::anyhow!(
                    "the API at {url} presented no certificate with fingerprint {wanted} (it presented {}): it is not the platform that printed that fingerprint, or the fingerprint is mistyped",
                    presented.join(", ")
                )
                .into());
            };
            Ok(Some(pem_of(ca)))
        }
        None => {
            let ca = chain
                .last()
                .ok_or_else(|| anyhow::anyhow!("the API at {url} presented no certificate"))?;
            use std::io::IsTerminal as _;
            if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "the API at {url} has a certificate from a CA this computer does not know (fingerprint {}): pass --ca-fingerprint as aloftd printed it at its first start (also in <data_dir>/platform-ca/ca.fingerprint), or --ca-cert FILE; nothing was saved",
                    fingerprint(ca)
                )));
            }
            crate::confirm::confirm(
                &format!(
                    "The API at {url} has a certificate from a CA this computer does not know, with fingerprint\n  {}\nCompare it with the one aloftd printed at its first start. Pin this CA?",
                    fingerprint(ca)
                ),
                &format!(
                    "trusting the CA {} of {url} (pass --ca-fingerprint as aloftd printed it, or --ca-cert FILE)",
                    fingerprint(ca)
                ),
                false,
            )?;
            Ok(Some(pem_of(ca)))
        }
    }
}
