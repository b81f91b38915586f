//! `aloft dig` and `aloft ips`: the private network seen from outside.

use clap::Subcommand;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Print the edge's local certificate authority (PEM), for `curl --cacert`.
    Ca,
    /// The app's own hostnames and where their certificates come from.
    List,
    /// Make the app answer at HOSTNAME (`*.example.com` allowed), with a certificate from
    /// the edge's local CA.
    #[command(visible_alias = "create")]
    Add { hostname: String },
    /// Make the app answer at HOSTNAME with your own certificate.
    Import {
        hostname: String,
        /// PEM file: the certificate, then its intermediates.
        #[arg(long)]
        fullchain: std::path::PathBuf,
        /// PEM file: its private key.
        #[arg(long)]
        private_key: std::path::PathBuf,
    },
    /// Stop answering at HOSTNAME.
    #[command(visible_alias = "delete")]
    Remove { hostname: String },
}

/// Whether the command needs an app (all but `ca`).
pub(crate) fn certs_need_app(command: &CertsCommand) -> bool {
    !matches!(command, CertsCommand::Ca)
}

pub(crate) async fn certs(
    command: CertsCommand,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let show = |certificates: &[aloft_types::api::CertificateResponse], out: &mut Output| {
        let rows: Vec<Vec<String>> = certificates
            .iter()
            .map(|c| vec![c.hostname.clone(), c.source.clone(), c.created_at.clone()])
            .collect();
        out.data(&table::render(&["HOST NAME", "SOURCE", "ADDED AT"], &rows));
    };
    match command {
        CertsCommand::Ca => {
            let pem = client()?.local_ca().await.map_err(anyhow::Error::from)?;
            out.raw_stdout(&pem);
        }
        CertsCommand::List => {
            let certificates = client()?
                .list_certificates(app)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&certificates)?;
            } else {
                show(&certificates, out);
            }
        }
        CertsCommand::Add { hostname } => {
            let added = client()?
                .add_certificate(app, &hostname)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&added)?;
            } else {
                out.status(&format!(
                    "Certificate created for {} (issued by the edge's local CA: `aloft certs ca` prints it)",
                    added.hostname
                ));
            }
        }
        CertsCommand::Import {
            hostname,
            fullchain,
            private_key,
        } => {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
            };
            let request = aloft_types::api::ImportCertificateRequest {
                hostname,
                fullchain: read(&fullchain)?,
                private_key: read(&private_key)?,
            };
            let added = client()?
                .import_certificate(app, &request)
                .await
                .map_err(anyhow::Error::from)?;
            if json {
                out.json(&added)?;
            } else {
                out.status(&format!("Certificate imported for {}", added.hostname));
            }
        }
        CertsCommand::Remove { hostname } => {
            client()?
                .remove_certificate(app, &hostname)
                .await
                .map_err(anyhow::Error::from)?;
            out.report(
                json,
                serde_json::json!({ "hostname": hostname, "removed": true }),
                &format!("Removed {hostname} from {app}"),
            )?;
        }
    }
    Ok(())
}

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

/// `aloft dig [TYPE] NAME`: one or two words, the type first when there are two.
pub(crate) fn type_and_name(words: &[String]) -> anyhow::Result<(String, String)> {
    match words {
        [name] => Ok(("AAAA".to_owned(), name.clone())),
        [kind, name] => Ok((kind.to_ascii_uppercase(), name.clone())),
        _ => anyhow::bail!("give a NAME, or a TYPE and a NAME (aloft dig TXT vms.my-app.internal)"),
    }
}

pub(crate) async fn dig(
    words: &[String],
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let (kind, name) = type_and_name(words)?;
    let answer = client()?
        .dig(app, &name, &kind)
        .await
        .map_err(anyhow::Error::from)?;
    if json {
        out.json(&answer)?;
        return Ok(());
    }
    let mut text = format!(
        ";; {kind} {name} as a machine of {app} asks: status {}\n",
        answer.status
    );
    for (title, records) in [
        ("ANSWER", &answer.answers),
        ("AUTHORITY", &answer.authority),
    ] {
        if !records.is_empty() {
            text.push_str(&format!("\n;; {title} SECTION:\n"));
        }
        for record in records {
            text.push_str(&format!(
                "{}\t{}\tIN\t{}\t{}\n",
                record.name, record.ttl, record.record_type, record.data
            ));
        }
    }
    out.data(text.trim_end());
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_comes_first_and_defaults_to_aaaa() {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            type_and_name(&words(&["web.internal"])).unwrap(),
            ("AAAA".to_owned(), "web.internal".to_owned())
        );
        assert_eq!(
            type_and_name(&words(&["txt", "vms.web.internal"])).unwrap(),
            ("TXT".to_owned(), "vms.web.internal".to_owned())
        );
        assert!(type_and_name(&words(&["a", "b", "c"])).is_err());
    }
}
