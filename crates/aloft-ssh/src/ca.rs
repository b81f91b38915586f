//! Certificate authorities and the user certificates they sign.
//!
//! Each organization has one ed25519 CA. A certificate it signs names, as principals,
//! what it opens: `org:<slug>` (every app of the organization) or `app:<slug>/<app>` (one
//! app). The agent's SSH server accepts a certificate only if it is a user certificate
//! signed by the machine's organization's CA, valid now, naming the machine's org or app,
//! with no critical option it does not know.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{self, HashAlg, LineEnding};
use russh::keys::{Certificate, PrivateKey, PublicKey};

/// Why a key, CA or certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what} is not valid: {source}")]
    Invalid {
        what: &'static str,
        #[source]
        source: ssh_key::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

fn invalid(what: &'static str) -> impl FnOnce(ssh_key::Error) -> KeyError {
    move |source| KeyError::Invalid { what, source }
}

/// A new ed25519 key from 32 random bytes (the caller's CSPRNG).
pub fn ed25519_from_seed(seed: &[u8; 32]) -> PrivateKey {
    PrivateKey::from(Ed25519Keypair::from_seed(seed))
}

/// A private key in OpenSSH's PEM format.
pub fn private_to_openssh(key: &PrivateKey) -> Result<String, KeyError> {
    Ok(key
        .to_openssh(LineEnding::LF)
        .map_err(invalid("the private key"))?
        .to_string())
}

/// Reads a private key in OpenSSH's PEM format.
pub fn private_from_openssh(text: &str) -> Result<PrivateKey, KeyError> {
    PrivateKey::from_openssh(text).map_err(invalid("the private key"))
}

/// Reads a public key in `authorized_keys` format (`ssh-ed25519 AAAA… [comment]`).
pub fn public_from_openssh(text: &str) -> Result<PublicKey, KeyError> {
    PublicKey::from_openssh(text.trim()).map_err(invalid("the public key"))
}

/// A public key in `authorized_keys` format.
pub fn public_to_openssh(key: &PublicKey) -> Result<String, KeyError> {
    key.to_openssh().map_err(invalid("the public key"))
}

/// Reads a certificate in OpenSSH's one-line format.
pub fn certificate_from_openssh(text: &str) -> Result<Certificate, KeyError> {
    Certificate::from_openssh(text.trim()).map_err(invalid("the certificate"))
}

/// A certificate in OpenSSH's one-line format.
pub fn certificate_to_openssh(certificate: &Certificate) -> Result<String, KeyError> {
    certificate.to_openssh().map_err(invalid("the certificate"))
}

/// The principal that opens every app of an organization.
pub fn org_principal(org_slug: &str) -> String {
    format!("org:{org_slug}")
}

/// The principal that opens one app.
pub fn app_principal(org_slug: &str, app: &str) -> String {
    format!("app:{org_slug}/{app}")
}

/// What a certificate to sign says.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// Who it is for (shown in audit events): the token's name and id, say.
    pub key_id: String,
    pub principals: Vec<String>,
    /// When it stops being valid.
    pub valid_for: Duration,
    pub serial: u64,
    /// 32 random bytes.
    pub nonce: [u8; 32],
    /// Non-critical extensions beyond `permit-pty` and `permit-port-forwarding`.
    pub extensions: Vec<(String, String)>,
}

/// Signs a user certificate for `subject` with `ca`. It is valid from a minute ago (clocks
/// of hosts differ) for `request.valid_for`.
pub fn sign_user_certificate(
    ca: &PrivateKey,
    subject: &PublicKey,
    request: &CertificateRequest,
) -> Result<Certificate, KeyError> {
    let now = unix_now();
    let after = now.saturating_sub(60);
    let before = now.saturating_add(request.valid_for.as_secs());
    let field = invalid("the certificate request");
    let mut builder = Builder::new(
        request.nonce.to_vec(),
        subject.key_data().clone(),
        after,
        before,
    )
    .map_err(invalid("the validity window"))?;
    builder
        .serial(request.serial)
        .map_err(invalid("the serial"))?;
    builder
        .cert_type(CertType::User)
        .map_err(invalid("the certificate type"))?;
    builder
        .key_id(request.key_id.clone())
        .map_err(invalid("the key id"))?;
    for principal in &request.principals {
        builder
            .valid_principal(principal.clone())
            .map_err(invalid("a principal"))?;
    }
    // OpenSSH wants extensions sorted by name, each once.
    let extensions: std::collections::BTreeMap<&str, &str> =
        ["permit-pty", "permit-port-forwarding"]
            .into_iter()
            .map(|name| (name, ""))
            .chain(
                request
                    .extensions
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .collect();
    for (name, value) in extensions {
        builder
            .extension(name, value)
            .map_err(invalid("an extension"))?;
    }
    builder.sign(ca).map_err(field)
}

/// Why a certificate was refused (what the audit log says).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the certificate is not signed by this organization's CA")]
    UnknownAuthority,
    #[error("the certificate's signature does not verify")]
    BadSignature,
    #[error("the certificate expired at {0} (Unix time)")]
    Expired(u64),
    #[error("the certificate is not valid before {0} (Unix time)")]
    NotYetValid(u64),
    #[error("the certificate is a host certificate, not a user certificate")]
    NotUser,
    #[error("the certificate names none of the principals {wanted:?} (it names {named:?})")]
    Principal {
        wanted: Vec<String>,
        named: Vec<String>,
    },
    #[error("the certificate has critical option {0:?}, which this server does not enforce")]
    CriticalOption(String),
}

/// Checks `certificate` against the CA keys trusted for the machine, the time `now` (Unix
/// seconds) and the principals that open the machine (any one suffices).
pub fn check_certificate(
    certificate: &Certificate,
    authorities: &[PublicKey],
    principals: &[String],
    now: u64,
) -> Result<(), Refusal> {
    let signer = certificate.signature_key().fingerprint(HashAlg::Sha256);
    if !authorities
        .iter()
        .any(|ca| ca.fingerprint(HashAlg::Sha256) == signer)
    {
        return Err(Refusal::UnknownAuthority);
    }
    if certificate.verify_signature().is_err() {
        return Err(Refusal::BadSignature);
    }
    if now < certificate.valid_after() {
        return Err(Refusal::NotYetValid(certificate.valid_after()));
    }
    if now >= certificate.valid_before() {
        return Err(Refusal::Expired(certificate.valid_before()));
    }
    if certificate.cert_type() != CertType::User {
        return Err(Refusal::NotUser);
    }
    if let Some((name, _)) = certificate.critical_options().iter().next() {
        return Err(Refusal::CriticalOption(name.clone()));
    }
    if !certificate
        .valid_principals()
        .iter()
        .any(|p| principals.contains(p))
    {
        return Err(Refusal::Principal {
            wanted: principals.to_vec(),
            named: certificate.valid_principals().to_vec(),
        });
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn request(principals: &[&str], valid_for: Duration) -> CertificateRequest {
        CertificateRequest {
            key_id: "token tok_1 (ci)".to_owned(),
            principals: principals.iter().map(|p| (*p).to_owned()).collect(),
            valid_for,
            serial: 7,
            nonce: [9; 32],
            extensions: vec![("aloft-token@aloft.dev".to_owned(), "tok_1".to_owned())],
        }
    }

    #[test]
    fn a_certificate_opens_only_what_its_ca_and_principals_allow() {
        let ca = ed25519_from_seed(&[1; 32]);
        let other = ed25519_from_seed(&[2; 32]);
        let user = ed25519_from_seed(&[3; 32]);
        let hour = Duration::from_secs(3600);
        let cert =
            sign_user_certificate(&ca, user.public_key(), &request(&["org:acme"], hour)).unwrap();
        let text = certificate_to_openssh(&cert).unwrap();
        let cert = certificate_from_openssh(&text).unwrap();
        assert_eq!(cert.key_id(), "token tok_1 (ci)");
        let now = unix_now();
        let acme = ["org:acme".to_owned(), "app:acme/web".to_owned()];
        let trusted = [ca.public_key().clone()];
        assert_eq!(check_certificate(&cert, &trusted, &acme, now), Ok(()));
        assert_eq!(
            check_certificate(&cert, &[other.public_key().clone()], &acme, now),
            Err(Refusal::UnknownAuthority)
        );
        assert!(matches!(
            check_certificate(&cert, &trusted, &acme, now + 3600),
            Err(Refusal::Expired(_))
        ));
        assert!(matches!(
            check_certificate(&cert, &trusted, &acme, now - 120),
            Err(Refusal::NotYetValid(_))
        ));
        let other_org = ["org:globex".to_owned()];
        assert!(matches!(
            check_certificate(&cert, &trusted, &other_org, now),
            Err(Refusal::Principal { .. })
        ));
        // One app's certificate does not open another app.
        let web = sign_user_certificate(&ca, user.public_key(), &request(&["app:acme/web"], hour))
            .unwrap();
        assert_eq!(check_certificate(&web, &trusted, &acme, now), Ok(()));
        let api = ["org:acme".to_owned(), "app:acme/api".to_owned()];
        assert!(check_certificate(&web, &trusted, &api, now).is_err());
    }

    #[test]
    fn keys_round_trip_through_openssh_text() {
        let key = ed25519_from_seed(&[4; 32]);
        let text = private_to_openssh(&key).unwrap();
        let back = private_from_openssh(&text).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let public = public_to_openssh(key.public_key()).unwrap();
        assert!(public.starts_with("ssh-ed25519 "));
        assert_eq!(&public_from_openssh(&public).unwrap(), key.public_key());
        assert!(public_from_openssh("ssh-ed25519 nope").is_err());
    }
}
