//! `aloft certs`: an app's own hostnames and their certificates.

use aloft_types::api::CertificateDetail;
use clap::Subcommand;

use crate::Failure;
use crate::api::client;
use crate::output::Output;
use crate::table;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Print the edge's local certificate authority (PEM), for `curl --cacert`.
    Ca,
    /// The app's own hostnames and the state of their certificates.
    List,
    /// Make the app answer at HOSTNAME: a certificate from the platform's ACME directory
    /// (Let's Encrypt unless the operator chose another) once HOSTNAME's DNS points at
    /// the app; with `--local`, at once with one from the edge's local CA.
    #[command(visible_alias = "create")]
    Add {
        hostname: String,
        /// Use the edge's local CA (names no public CA certifies, wildcards).
        #[arg(long)]
        local: bool,
    },
    /// HOSTNAME's certificates, validation and the DNS records it needs.
    Show { hostname: String },
    /// Look at HOSTNAME's DNS now (and order its certificate at once if it points at the
    /// app).
    Check { hostname: String },
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
    /// Stop answering at HOSTNAME (`--acme` or `--custom`: remove that certificate only).
    #[command(visible_alias = "delete")]
    Remove {
        hostname: String,
        /// Only stop ACME issuance (an imported certificate stays).
        #[arg(long, conflicts_with = "custom")]
        acme: bool,
        /// Only remove the imported certificate (an ACME one stays).
        #[arg(long)]
        custom: bool,
    },
}

/// Whether the command needs an app (all but `ca`).
pub(crate) fn certs_need_app(command: &CertsCommand) -> bool {
    !matches!(command, CertsCommand::Ca)
}

/// The hostname's state in words, with the DNS records to set while it waits.
fn describe(detail: &CertificateDetail, out: &mut Output) {
    let mut lines = vec![
        format!("Hostname              = {}", detail.hostname),
        format!("Status                = {}", detail.status),
        format!("Source                = {}", detail.source),
        format!(
            "DNS points at the app = {}",
            if detail.validation.dns_configured {
                "yes"
            } else {
                "no"
            }
        ),
    ];
    for certificate in &detail.certificates {
        lines.push(format!(
            "Certificate           = {} ({}{})",
            certificate.source,
            certificate.status,
            certificate
                .expires_at
                .as_ref()
                .map(|e| format!(", expires {e}"))
                .unwrap_or_default()
        ));
    }
    if let Some(until) = &detail.rate_limited_until {
        lines.push(format!("Next attempt          = {until}"));
    }
    if let Some(records) = &detail.dns_records {
        let resolved = if records.resolved_addresses.is_empty() {
            "nothing".to_owned()
        } else {
            records.resolved_addresses.join(", ")
        };
        lines.push(format!("Resolves to           = {resolved}"));
        if !records.cname.is_empty() {
            lines.push(format!(
                "CNAME                 = {}",
                records.cname.join(" -> ")
            ));
        }
    }
    if !detail.configured {
        lines.push(String::new());
        lines.push("Point the hostname at the app with these records:".to_owned());
        for a in &detail.dns_requirements.a {
            lines.push(format!("  A     {} -> {a}", detail.hostname));
        }
        for aaaa in &detail.dns_requirements.aaaa {
            lines.push(format!("  AAAA  {} -> {aaaa}", detail.hostname));
        }
        lines.push(format!(
            "  or CNAME {} -> {}",
            detail.hostname, detail.dns_requirements.cname
        ));
        lines.push(format!(
            "Then run `aloft certs check {}`; the certificate is ordered as soon as the records resolve.",
            detail.hostname
        ));
    }
    if let Some(last) = detail.validation_errors.last() {
        lines.push(format!("Last error ({}): {}", last.timestamp, last.message));
    }
    out.data(&lines.join("\n"));
}

pub(crate) async fn certs(
    command: CertsCommand,
    app: &str,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let shown = |detail: &CertificateDetail, out: &mut Output| -> Result<(), Failure> {
        if json {
            out.json(detail)?;
        } else {
            describe(detail, out);
        }
        Ok(())
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
                let rows: Vec<Vec<String>> = certificates
                    .iter()
                    .map(|c| {
                        vec![
                            c.hostname.clone(),
                            c.source.clone(),
                            c.status.clone(),
                            c.created_at.clone(),
                        ]
                    })
                    .collect();
                out.data(&table::render(
                    &["HOST NAME", "SOURCE", "STATUS", "ADDED AT"],
                    &rows,
                ));
            }
        }
        CertsCommand::Add { hostname, local } => {
            let client = client()?;
            let added = if local {
                client.add_certificate(app, &hostname).await
            } else {
                client.add_acme_certificate(app, &hostname).await
            }
            .map_err(anyhow::Error::from)?;
            if !json {
                out.status(&format!(
                    "Certificate created for {}{}",
                    added.hostname,
                    if local {
                        " (issued by the edge's local CA: `aloft certs ca` prints it)"
                    } else {
                        ""
                    }
                ));
            }
            shown(&added, out)?;
        }
        CertsCommand::Show { hostname } => {
            let detail = client()?
                .certificate(app, &hostname)
                .await
                .map_err(anyhow::Error::from)?;
            shown(&detail, out)?;
        }
        CertsCommand::Check { hostname } => {
            let detail = client()?
                .check_certificate(app, &hostname)
                .await
                .map_err(anyhow::Error::from)?;
            shown(&detail, out)?;
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
        CertsCommand::Remove {
            hostname,
            acme,
            custom,
        } => {
            let client = client()?;
            let kind = if acme {
                Some("acme")
            } else if custom {
                Some("custom")
            } else {
                None
            };
            match kind {
                Some(kind) => {
                    client
                        .remove_certificate_kind(app, &hostname, kind)
                        .await
                        .map_err(anyhow::Error::from)?;
                }
                None => client
                    .remove_certificate(app, &hostname)
                    .await
                    .map_err(anyhow::Error::from)?,
            }
            let what = kind.map_or_else(String::new, |k| format!("{k} certificate of "));
            out.report(
                json,
                serde_json::json!({ "hostname": hostname, "removed": kind.unwrap_or("hostname") }),
                &format!("Removed the {what}{hostname} from {app}"),
            )?;
        }
    }
    Ok(())
}
