//! `aloft certs`: an app's own hostnames and their certificates.

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
