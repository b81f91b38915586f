//! `aloft ips`: an app's public addresses.

use clap::Subcommand;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum IpsCommand {
    /// The app's public addresses (dedicated IPv4).
    List,
    /// Give the app a dedicated IPv4 address: its service ports other than 80 and 443
    /// listen there.
    #[command(name = "allocate-v4")]
    AllocateV4 {
        #[arg(long, short = 'r')]
        region: Option<String>,
    },
    /// Take one of the app's addresses back.
    Release {
        /// The address, as `aloft ips list` shows it.
        address: String,
    },
    /// The app's machines with their region and private (6PN) address.
    Private,
}

pub(crate) async fn ips(
    command: IpsCommand,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let ips_table = |ips: &[aloft_types::api::IpResponse]| {
        let rows: Vec<Vec<String>> = ips
            .iter()
            .map(|ip| {
                vec![
                    ip.kind.to_string(),
                    ip.address.clone(),
                    "public ingress (dedicated)".to_owned(),
                    ip.region.clone(),
                    ip.created_at.clone(),
                ]
            })
            .collect();
        table::render(&["VERSION", "IP", "TYPE", "REGION", "CREATED AT"], &rows)
    };
    match command {
        IpsCommand::List => {
            let ips = client()?.list_ips(app).await.map_err(anyhow::Error::from)?;
            if json {
                out.json(&ips)?;
            } else {
                out.data(&ips_table(&ips));
            }
            Ok(())
        }
        IpsCommand::AllocateV4 { region } => {
            let ip = client()?
                .allocate_ipv4(app, region.as_deref())
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&ip)?;
            } else {
                out.data(&ips_table(std::slice::from_ref(&ip)));
            }
            Ok(())
        }
        IpsCommand::Release { address } => {
            client()?
                .release_ip(app, &address)
                .await
                .map_err(anyhow::Error::from)?;
            out.report(
                json,
                serde_json::json!({ "address": address, "released": true }),
                &format!("Released {address} from {app}"),
            )?;
            Ok(())
        }
        IpsCommand::Private => {
            let machines = client()?
                .list_machines(app)
                .await
                .map_err(anyhow::Error::from)?;
            let rows: Vec<Vec<String>> = machines
                .iter()
                .filter(|m| !m.private_ip.is_empty())
                .map(|m| {
                    vec![
                        m.id.clone(),
                        m.region.clone(),
                        m.state.clone(),
                        m.private_ip.clone(),
                    ]
                })
                .collect();
            if json {
                let list: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({ "id": r[0], "region": r[1], "state": r[2], "private_ip": r[3] })
                    })
                    .collect();
                out.json(&list)?;
            } else {
                out.data(&table::render(&["ID", "REGION", "STATE", "IP"], &rows));
            }
            Ok(())
        }
    }
}
