//! Certificates (`/v1/apps/{app}/certificates`), with the shapes of Fly's Certificates
//! resource: a hostname's status, its certificates, how far validation got, the DNS
//! records it needs and the errors seen. `source` says how the hostname was added
//! (Aloft's: `acme`, `custom`, or `local` for the edge's own CA).

use serde::{Deserialize, Serialize};

/// `POST /v1/apps/{app}/certificates/acme` and `/local`: the hostname to add.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddCertificateRequest {
    pub hostname: String,
}

/// `POST /v1/apps/{app}/certificates/custom`: a hostname with an imported certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportCertificateRequest {
    pub hostname: String,
    /// PEM: the certificate, then its intermediates.
    pub fullchain: String,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: String,
}

/// `GET /v1/apps/{app}/certificates`: one page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateList {
    pub certificates: Vec<CertificateSummary>,
    /// How many hostnames match the filter, over all pages.
    pub total_count: u64,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One hostname in a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateSummary {
    pub hostname: String,
    /// `active` (a certificate is served), `pending_ownership` (its DNS does not point at
    /// the app yet) or `pending_validation` (an ACME order is in flight or retrying).
    pub status: String,
    /// Whether the hostname is served.
    pub configured: bool,
    pub acme_requested: bool,
    pub acme_dns_configured: bool,
    pub acme_alpn_configured: bool,
    pub acme_http_configured: bool,
    pub ownership_txt_configured: bool,
    pub has_custom_certificate: bool,
    pub has_fly_certificate: bool,
    /// How the hostname was added: `acme`, `custom` or `local` (Aloft's).
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
}

/// One hostname, whole (`GET`, the adds, `check`, and the partial deletes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateDetail {
    pub hostname: String,
    pub configured: bool,
    pub acme_requested: bool,
    pub status: String,
    /// The next ACME attempt is not before this (RFC 3339), after failures.
    pub rate_limited_until: Option<String>,
    pub certificates: Vec<HostCertificate>,
    pub validation: CertificateValidation,
    pub dns_requirements: DnsRequirements,
    pub validation_errors: Vec<ValidationError>,
    /// What the hostname's DNS said just now (`check` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_records: Option<DnsRecords>,
    /// How the hostname was added: `acme`, `custom` or `local` (Aloft's).
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A certificate a hostname has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostCertificate {
    /// `fly` (from the ACME directory), `custom` (imported) or `local` (the edge's CA).
    pub source: String,
    /// `active` or `pending_validation`.
    pub status: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// The issuer's name, for an imported certificate.
    pub issuer: Option<String>,
    pub issued: Vec<IssuedKey>,
}

/// One key an ACME certificate was issued for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedKey {
    /// `ecdsa`.
    #[serde(rename = "type")]
    pub kind: String,
    pub expires_at: String,
    /// The directory's URL.
    pub certificate_authority: String,
}

/// How far validation got.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateValidation {
    /// The hostname's DNS points at the app (A/AAAA to its addresses, or a CNAME).
    pub dns_configured: bool,
    /// A TLS-ALPN-01 challenge passed.
    pub alpn_configured: bool,
    /// An HTTP-01 challenge passed.
    pub http_configured: bool,
    /// Always false: Aloft does not take `_fly-ownership` TXT records as proof.
    pub ownership_txt_configured: bool,
}

/// The DNS records that point a hostname at the app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DnsRequirements {
    /// A records to set: the app's dedicated IPv4 addresses, or the edge's shared ones.
    pub a: Vec<String>,
    /// AAAA records to set.
    pub aaaa: Vec<String>,
    /// Or one CNAME to this name.
    pub cname: String,
}

/// A failed look or order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationError {
    pub message: String,
    pub timestamp: String,
}

/// What the hostname's DNS says.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DnsRecords {
    pub a: Vec<String>,
    pub aaaa: Vec<String>,
    pub cname: Vec<String>,
    pub resolved_addresses: Vec<String>,
}
