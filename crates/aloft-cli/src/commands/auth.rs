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
        AuthCommand::Login { token, api_url } => {
            let previous = load_credentials()?;
            let given = api_url.is_some();
            let url = api_url
                .or_else(|| std::env::var(crate::api::ALOFT_API_URL).ok())
                .or(previous.api_url)
                .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
            crate::api::check_url(&url).map_err(Failure::Usage)?;
            let credentials = Credentials {
                api_url: Some(url.clone()),
                token: Some(token.trim().to_owned()),
            };
            let check = aloft_client::Client::new(&url, token.trim());
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
            let path = save_credentials(&credentials)?;
            out.status(&format!(
                "Logged in to {url} with a {} token ({}); saved to {}",
                current.kind,
                current.name,
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
