//! A hostname's record as the API shows it (Fly's `CertificateDetail` and summary).

use std::net::IpAddr;

use aloft_acme::dns::Records;
use aloft_store::{AcmeStatus, CertificateRecord, now_ms};
use aloft_types::api::{
    CertificateDetail, CertificateSummary, CertificateValidation, DnsRecords, DnsRequirements,
    HostCertificate, IssuedKey, ValidationError,
};
use aloft_types::time::rfc3339;

use super::touched;
use crate::{ApiError, Inner};

/// Whether the hostname is served now, and its status word.
fn status(record: &CertificateRecord) -> (bool, &'static str) {
    let custom = record.fullchain.is_some();
    let acme_active = record
        .acme
        .as_ref()
        .is_some_and(|a| a.status == AcmeStatus::Active && a.fullchain.is_some());
    if custom || acme_active || record.source == "local" {
        return (true, "active");
    }
    match record.acme.as_ref().map(|a| a.status) {
        Some(AcmeStatus::PendingValidation) => (false, "pending_validation"),
        _ => (false, "pending_ownership"),
    }
}

fn validation(record: &CertificateRecord) -> CertificateValidation {
    record
        .acme
        .as_ref()
        .map(|a| CertificateValidation {
            dns_configured: a.dns_configured,
            alpn_configured: a.alpn_configured,
            http_configured: a.http_configured,
            ownership_txt_configured: false,
        })
        .unwrap_or_default()
}

pub(super) fn summary(record: &CertificateRecord) -> CertificateSummary {
    let (configured, status) = status(record);
    let validation = validation(record);
    CertificateSummary {
        hostname: record.hostname.clone(),
        status: status.to_owned(),
        configured,
        acme_requested: record.acme.is_some(),
        acme_dns_configured: validation.dns_configured,
        acme_alpn_configured: validation.alpn_configured,
        acme_http_configured: validation.http_configured,
        ownership_txt_configured: false,
        has_custom_certificate: record.fullchain.is_some(),
        has_fly_certificate: record.acme.as_ref().is_some_and(|a| a.fullchain.is_some()),
        source: record.source.clone(),
        created_at: rfc3339(record.created_at),
        updated_at: rfc3339(touched(record)),
    }
}

/// The certificates a hostname has.
fn certificates(inner: &Inner, record: &CertificateRecord) -> Vec<HostCertificate> {
    let mut certificates = Vec::new();
    if let Some(chain) = &record.fullchain {
        let facts = aloft_acme::describe(chain).ok();
        certificates.push(HostCertificate {
            source: "custom".to_owned(),
            status: "active".to_owned(),
            created_at: rfc3339(record.created_at),
            expires_at: facts.as_ref().map(|f| rfc3339(f.not_after)),
            issuer: facts.map(|f| f.issuer),
            issued: Vec::new(),
        });
    }
    if let Some(acme) = &record.acme {
        let authority = inner
            .acme
            .as_ref()
            .map(|issuer| issuer.settings.directory.url.clone())
            .unwrap_or_default();
        let issued = acme
            .fullchain
            .as_ref()
            .and_then(|c| aloft_acme::describe(c).ok());
        certificates.push(HostCertificate {
            source: "fly".to_owned(),
            status: if issued.is_some() {
                "active"
            } else if acme.status == AcmeStatus::PendingValidation {
                "pending_validation"
            } else {
                "pending_ownership"
            }
            .to_owned(),
            created_at: rfc3339(acme.issued_at.unwrap_or(record.created_at)),
            expires_at: acme.expires_at.map(rfc3339),
            issuer: issued.as_ref().map(|f| f.issuer.clone()),
            issued: issued
                .iter()
                .map(|facts| IssuedKey {
                    kind: "ecdsa".to_owned(),
                    expires_at: rfc3339(facts.not_after),
                    certificate_authority: authority.clone(),
                })
                .collect(),
        });
    }
    if record.source == "local" && record.fullchain.is_none() {
        certificates.push(HostCertificate {
            source: "local".to_owned(),
            status: "active".to_owned(),
            created_at: rfc3339(record.created_at),
            expires_at: None,
            issuer: Some("Aloft local CA".to_owned()),
            issued: Vec::new(),
        });
    }
    certificates
}

/// The whole view of a hostname; `looked` is what its DNS said just now (`check`).
pub(super) async fn detail(
    inner: &Inner,
    app: &aloft_store::App,
    record: &CertificateRecord,
    looked: Option<Records>,
) -> Result<CertificateDetail, ApiError> {
    let (configured, status) = status(record);
    let addresses = crate::acme::app_addresses(inner, &app.id).await?;
    let dedicated: Vec<String> = inner
        .store
        .ips_of_app(&app.id)
        .await?
        .into_iter()
        .map(|ip| ip.address)
        .collect();
    let shared = |v6: bool| {
        addresses
            .iter()
            .filter(|a| matches!(a, IpAddr::V6(_)) == v6)
            .map(ToString::to_string)
            .filter(|a| !dedicated.contains(a))
            .collect::<Vec<_>>()
    };
    let a = if dedicated.iter().any(|a| !a.contains(':')) {
        dedicated
            .iter()
            .filter(|a| !a.contains(':'))
            .cloned()
            .collect()
    } else {
        shared(false)
    };
    let cname = inner
        .config
        .edge
        .as_ref()
        .map(|edge| edge.hostname(app.name.as_str()))
        .unwrap_or_default();
    let now = now_ms();
    Ok(CertificateDetail {
        hostname: record.hostname.clone(),
        configured,
        acme_requested: record.acme.is_some(),
        status: status.to_owned(),
        rate_limited_until: record
            .acme
            .as_ref()
            .filter(|a| a.next_attempt_at > now)
            .map(|a| rfc3339(a.next_attempt_at)),
        certificates: certificates(inner, record),
        validation: validation(record),
        dns_requirements: DnsRequirements {
            a,
            aaaa: shared(true),
            cname,
        },
        validation_errors: record
            .acme
            .iter()
            .flat_map(|a| a.errors.iter())
            .map(|e| ValidationError {
                message: e.message.clone(),
                timestamp: rfc3339(e.at),
            })
            .collect(),
        dns_records: looked.map(|records| DnsRecords {
            a: records.a.iter().map(ToString::to_string).collect(),
            aaaa: records.aaaa.iter().map(ToString::to_string).collect(),
            cname: records.cname.clone(),
            resolved_addresses: records
                .addresses()
                .iter()
                .map(ToString::to_string)
                .collect(),
        }),
        source: record.source.clone(),
        created_at: rfc3339(record.created_at),
        updated_at: rfc3339(touched(record)),
    })
}
