//! `aloft orgs` and `aloft tokens`.

use aloft_types::api::CreateTokenRequest;
use clap::Subcommand;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum OrgsCommand {
    /// Create an organization (the platform operator's token only); prints an org token
    /// for it (shown once).
    Create {
        slug: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List the organizations this token belongs to.
    List,
    /// Show an organization.
    Show { slug: String },
    /// Delete an organization that owns no apps.
    Delete { slug: String },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; prints the token alone on stdout (it is shown once).
    Create {
        /// org, deploy, readonly, ssh, or operator (only with an operator token).
        kind: String,
        /// The app a deploy or ssh token is for.
        #[arg(long, short = 'a')]
        app: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// The organization (a token acts in its own organization only, so this must be it).
        #[arg(long)]
        org: Option<String>,
        /// How long the token lives, e.g. 720h.
        #[arg(long)]
        expiry: Option<aloft_types::Duration>,
    },
    /// List the organization's tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

pub(crate) async fn orgs(
    command: OrgsCommand,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    match command {
        OrgsCommand::Create { slug, name } => {
            let created = client
                .create_org(&slug, name.as_deref())
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&created)?;
            } else {
                out.status(&format!(
                    "Created organization {}; its org token (shown once):",
                    created.org.slug
                ));
                out.data(&created.token);
            }
        }
        OrgsCommand::List => {
            let orgs = client.list_orgs().await.map_err(anyhow::Error::from)?;
            if json {
                out.json(&orgs)?;
            } else {
                let rows = orgs
                    .iter()
                    .map(|o| vec![o.slug.clone(), o.name.clone(), o.created_at.clone()])
                    .collect::<Vec<_>>();
                out.data(&table::render(&["SLUG", "NAME", "CREATED"], &rows));
            }
        }
        OrgsCommand::Show { slug } => {
            let org = client.org(&slug).await.map_err(anyhow::Error::from)?;
            if json {
                out.json(&org)?;
            } else {
                out.data(&format!(
                    "Slug    = {}\nName    = {}\nID      = {}\nCreated = {}",
                    org.slug, org.name, org.id, org.created_at
                ));
            }
        }
        OrgsCommand::Delete { slug } => {
            client
                .delete_org(&slug)
                .await
                .map_err(anyhow::Error::from)?;
            out.report(
                json,
                serde_json::json!({ "organization": slug, "deleted": true }),
                &format!("Deleted organization {slug}"),
            )?;
        }
    }
    Ok(())
}

pub(crate) async fn tokens(
    command: TokensCommand,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = client()?;
    match command {
        TokensCommand::Create {
            kind,
            app,
            name,
            org,
            expiry,
        } => {
            if let Some(org) = org {
                let own = client.list_orgs().await.map_err(anyhow::Error::from)?;
                if !own.iter().any(|o| o.slug == org) {
                    return Err(anyhow::anyhow!(
                        "this token belongs to organization {}; use a token of {org} to create tokens there",
                        own.first().map_or("?", |o| o.slug.as_str())
                    )
                    .into());
                }
            }
            let created = client
                .create_token(&CreateTokenRequest {
                    kind,
                    app,
                    name,
                    expiry,
                })
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&created)?;
            } else {
                out.data(&created.token);
            }
        }
        TokensCommand::List => {
            let tokens = client.list_tokens().await.map_err(anyhow::Error::from)?;
            if json {
                out.json(&tokens)?;
            } else {
                let rows = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.kind.clone(),
                            t.name.clone(),
                            t.app.clone().unwrap_or_default(),
                            t.expires_at.clone().unwrap_or_else(|| "never".into()),
                            if t.revoked_at.is_some() {
                                "revoked".into()
                            } else {
                                "active".into()
                            },
                        ]
                    })
                    .collect::<Vec<_>>();
                out.data(&table::render(
                    &["ID", "KIND", "NAME", "APP", "EXPIRES", "STATUS"],
                    &rows,
                ));
            }
        }
        TokensCommand::Revoke { id } => {
            client
                .revoke_token(&id)
                .await
                .map_err(anyhow::Error::from)?;
            out.report(
                json,
                serde_json::json!({ "token": id, "revoked": true }),
                &format!("Revoked token {id}"),
            )?;
        }
    }
    Ok(())
}
