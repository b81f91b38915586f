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
    Destroy { name: String },
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
        AppsCommand::Destroy { name } => {
            client
                .delete_app(&name)
                .await
                .map_err(anyhow::Error::from)?;
            out.status(&format!("Destroyed app {name}"));
        }
    }
    Ok(())
}
