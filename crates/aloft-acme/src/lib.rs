//! Certificates by ACME (RFC 8555): an account on a directory (Let's Encrypt by default;
//! Pebble in the tests), orders for one hostname answered by TLS-ALPN-01 (RFC 8737) or
//! HTTP-01 through the edge, and the DNS lookups ([`dns`]) that show whether a hostname
//! points at an app before anything is ordered.
//!
//! This crate speaks ACME and DNS only: the control plane keeps the state (what is asked
//! for, what was issued, when to renew) and the edge answers the challenges it publishes
//! through a [`Presenter`].

pub mod dns;

use std::path::PathBuf;
use std::time::Duration;

use aloft_types::catalog::{AcmeChallenge, AcmeChallengeKind};
use instant_acme::{
    Account as AcmeAccount, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

/// Let's Encrypt's production directory: the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Where certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// The directory's URL.
    pub url: String,
    /// A PEM file with the one root certificate the directory's HTTPS is checked against
    /// (a test CA's, such as Pebble's); `None`: the usual public roots.
    pub root: Option<PathBuf>,
    /// `mailto:` addresses the directory may write to about the account.
    pub contact: Vec<String>,
}

/// Why an account could not be had or a certificate ordered.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("the ACME directory {url}: {source}")]
    Directory {
        url: String,
        #[source]
        source: instant_acme::Error,
    },
    #[error("the stored ACME account cannot be read: {0}")]
    Credentials(#[source] serde_json::Error),
    #[error("{0}")]
    Order(String),
    #[error("the edge could not present the challenge: {0}")]
    Present(String),
    #[error("the challenge for {hostname} failed: {detail}")]
    Validation { hostname: String, detail: String },
    #[error("making the certificate's key or request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the issued certificate cannot be read: {0}")]
    Issued(String),
}

/// Puts a challenge where the ACME directory will look for it (the edge), and takes it
/// away again.
pub trait Presenter: Sync {
    /// Returns once the edge answers `challenge`.
    fn present(&self, challenge: &AcmeChallenge)
    -> impl Future<Output = Result<(), String>> + Send;
    /// The order for `hostname` is over: its challenge need not be answered any more.
    fn withdraw(&self, hostname: &str) -> impl Future<Output = ()> + Send;
}

/// A certificate an order gave.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate and its intermediates, PEM.
    pub fullchain: String,
    /// Its private key (ECDSA P-256), PKCS#8 PEM.
    pub private_key: String,
    /// Its validity, ms since the epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// An account on a directory.
#[derive(Clone)]
pub struct Account {
    inner: AcmeAccount,
    url: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("directory", &self.url)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// The account whose `credentials` (JSON, as this function returned them once) were
    /// kept, or a new one on `directory` with its credentials to keep.
    pub async fn open(
        directory: &Directory,
        credentials: Option<&str>,
    ) -> Result<(Account, Option<String>), AcmeError> {
        let failed = |source| AcmeError::Directory {
            url: directory.url.clone(),
            source,
        };
        let builder = match &directory.root {
            Some(root) => AcmeAccount::builder_with_root(root),
            None => AcmeAccount::builder(),
        }
        .map_err(failed)?;
        if let Some(text) = credentials {
            let kept: AccountCredentials =
                serde_json::from_str(text).map_err(AcmeError::Credentials)?;
            let inner = builder.from_credentials(kept).await.map_err(failed)?;
            return Ok((
                Account {
                    inner,
                    url: directory.url.clone(),
                },
                None,
            ));
        }
        let contact: Vec<&str> = directory.contact.iter().map(String::as_str).collect();
        let (inner, made) = builder
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.url.clone(),
                None,
            )
            .await
            .map_err(failed)?;
        let text = serde_json::to_string(&made).map_err(AcmeError::Credentials)?;
        tracing::info!(directory = %directory.url, account = %inner.id(), "made an ACME account");
        Ok((
            Account {
                inner,
                url: directory.url.clone(),
            },
            Some(text),
        ))
    }

    /// Orders a certificate for `hostname`, answering its authorization with the first
    /// of `kinds` the directory offers (through `presenter`), and waits up to `wait` for
    /// the directory to validate it and issue.
    pub async fn order(
        &self,
        hostname: &str,
        kinds: &[AcmeChallengeKind],
        presenter: &impl Presenter,
        wait: Duration,
    ) -> Result<Issued, AcmeError> {
        let result = self.order_inner(hostname, kinds, presenter, wait).await;
        presenter.withdraw(hostname).await;
        result
    }

    async fn order_inner(
        &self,
        hostname: &str,
        kinds: &[AcmeChallengeKind],
        presenter: &impl Presenter,
        wait: Duration,
    ) -> Result<Issued, AcmeError> {
        let failed = |source| AcmeError::Directory {
            url: self.url.clone(),
            source,
        };
        let identifiers = [Identifier::Dns(hostname.to_owned())];
        let mut order = self
            .inner
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(failed)?;
        let mut authorizations = order.authorizations();
        while let Some(next) = authorizations.next().await {
            let mut authorization = next.map_err(failed)?;
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::Order(format!(
                        "the directory's authorization for {hostname} is {other:?}"
                    )));
                }
            }
            let offered: Vec<ChallengeType> = authorization
                .challenges
                .iter()
                .map(|c| c.r#type.clone())
                .collect();
            let Some(kind) = kinds
                .iter()
                .copied()
                .find(|k| offered.contains(&challenge_type(*k)))
            else {
                return Err(AcmeError::Order(format!(
                    "the directory offers none of the challenges Aloft answers ({}) for {hostname}",
                    kinds
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            let Some(mut challenge) = authorization.challenge(challenge_type(kind)) else {
                continue;
            };
            let presented = AcmeChallenge {
                hostname: hostname.to_owned(),
                kind,
                token: challenge.token.clone(),
                key_authorization: challenge.key_authorization().as_str().to_owned(),
            };
            presenter
                .present(&presented)
                .await
                .map_err(AcmeError::Present)?;
            tracing::info!(%hostname, challenge = kind.as_str(), "the edge answers the ACME challenge");
            challenge.set_ready().await.map_err(failed)?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(wait);
        let status = match order.poll_ready(&retries).await {
            Ok(status) => status,
            Err(instant_acme::Error::Api(problem)) => {
                return Err(AcmeError::Validation {
                    hostname: hostname.to_owned(),
                    detail: problem.to_string(),
                });
            }
            Err(error) => return Err(failed(error)),
        };
        if status != OrderStatus::Ready {
            return Err(AcmeError::Validation {
                hostname: hostname.to_owned(),
                detail: self.why_invalid(&mut order).await,
            });
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![hostname.to_owned()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let request = params.serialize_request(&key)?;
        order.finalize_csr(request.der()).await.map_err(failed)?;
        let fullchain = order.poll_certificate(&retries).await.map_err(failed)?;
        let (not_before, not_after) = validity(&fullchain)?;
        Ok(Issued {
            fullchain,
            private_key: key.serialize_pem(),
            not_before,
            not_after,
        })
    }

    /// What the directory said of the failed challenges of an invalid order.
    async fn why_invalid(&self, order: &mut instant_acme::Order) -> String {
        let mut details = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authorization)) = authorizations.next().await {
            if let Ok(state) = authorization.refresh().await {
                details.extend(
                    state
                        .challenges
                        .iter()
                        .filter_map(|c| c.error.as_ref())
                        .map(ToString::to_string),
                );
            }
        }
        if details.is_empty() {
            "the directory found the order invalid and said no more".to_owned()
        } else {
            details.join("; ")
        }
    }
}

fn challenge_type(kind: AcmeChallengeKind) -> ChallengeType {
    match kind {
        AcmeChallengeKind::Http01 => ChallengeType::Http01,
        AcmeChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

/// What a chain's first certificate says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Validity, ms since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// The issuer's common name (or its whole name when it has none).
    pub issuer: String,
}

/// The first certificate of a PEM chain: its validity, ms since the epoch.
pub fn validity(fullchain: &str) -> Result<(i64, i64), AcmeError> {
    describe(fullchain).map(|facts| (facts.not_before, facts.not_after))
}

/// The first certificate of a PEM chain, described.
pub fn describe(fullchain: &str) -> Result<Facts, AcmeError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let first = CertificateDer::pem_slice_iter(fullchain.as_bytes())
        .next()
        .ok_or_else(|| AcmeError::Issued("no certificate in the chain".to_owned()))?
        .map_err(|e| AcmeError::Issued(format!("not PEM: {e}")))?;
    let (_, certificate) = x509_parser::parse_x509_certificate(&first)
        .map_err(|e| AcmeError::Issued(format!("not a certificate: {e}")))?;
    let validity = certificate.validity();
    let issuer = certificate
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .map_or_else(|| certificate.issuer().to_string(), str::to_owned);
    Ok(Facts {
        not_before: validity.not_before.timestamp().saturating_mul(1000),
        not_after: validity.not_after.timestamp().saturating_mul(1000),
        issuer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chains_validity_is_its_first_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2026, 4, 2);
        let leaf = params.self_signed(&key).unwrap();
        let mut other = rcgen::CertificateParams::new(vec!["b.example.com".into()]).unwrap();
        other.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let second = other.self_signed(&key).unwrap();
        let chain = format!("{}{}", leaf.pem(), second.pem());
        let (from, to) = validity(&chain).unwrap();
        assert_eq!(from, 1_767_312_000_000);
        assert_eq!(to, 1_775_088_000_000);
        assert!(matches!(validity("nothing"), Err(AcmeError::Issued(_))));
    }
}
