//! ACME challenges the edge answers while the control plane's orders wait (the catalog's
//! `acme_challenges`): HTTP-01 on the plain-HTTP listener (`GET
//! /.well-known/acme-challenge/<token>` for the hostname, answered before any routing or
//! `force_https` redirect), and TLS-ALPN-01 on the HTTPS listener (a client that asks only
//! for `acme-tls/1` with the hostname's SNI gets a certificate carrying the key
//! authorization's digest, RFC 8737, and nothing else). Other clients never see either.

use std::collections::HashMap;
use std::sync::Arc;

use aloft_types::catalog::{AcmeChallenge, AcmeChallengeKind};
use http::{Request, Response, StatusCode, header};
use rustls::sign::CertifiedKey;

use super::Proxy;
use crate::body::{ProxyBody, text};

/// The ALPN protocol of TLS-ALPN-01.
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Where HTTP-01 answers live.
const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// The challenges being answered, by hostname, each with its TLS-ALPN-01 settings.
#[derive(Debug, Default)]
pub(crate) struct Challenges {
    by_host: HashMap<String, (AcmeChallenge, Option<Arc<rustls::ServerConfig>>)>,
}

impl Challenges {
    /// The challenges of `wanted`, keeping the TLS settings already made for unchanged ones.
    pub(crate) fn follow(&self, wanted: &[AcmeChallenge]) -> Challenges {
        let mut by_host = HashMap::new();
        for challenge in wanted {
            let host = challenge.hostname.to_ascii_lowercase();
            let tls = match self.by_host.get(&host) {
                Some((known, tls)) if known == challenge => tls.clone(),
                _ if challenge.kind == AcmeChallengeKind::TlsAlpn01 => {
                    match alpn_config(challenge) {
                        Ok(config) => Some(config),
                        Err(error) => {
                            tracing::warn!(hostname = %host, %error, "no TLS-ALPN-01 answer");
                            None
                        }
                    }
                }
                _ => None,
            };
            by_host.insert(host, (challenge.clone(), tls));
        }
        Challenges { by_host }
    }

    fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }
}

/// A server config whose one certificate is `challenge`'s validation certificate and whose
/// one protocol is `acme-tls/1`.
fn alpn_config(challenge: &AcmeChallenge) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let digest = sha256(challenge.key_authorization.as_bytes());
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(vec![challenge.hostname.clone()])
        .map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&private).map_err(|e| e.to_string())?;
    let certified = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(One(certified)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Resolves every handshake to one certificate.
#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for One {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).to_vec()
}

impl Proxy {
    /// The key authorization for an HTTP-01 request to the plain listener, if `request`
    /// is one for a challenge being answered.
    pub(super) fn acme_http<B>(&self, request: &Request<B>) -> Option<Response<ProxyBody>> {
        let token = request.uri().path().strip_prefix(CHALLENGE_PATH)?;
        let challenges = self.acme.read().ok()?;
        if challenges.is_empty() {
            return None;
        }
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().host())?;
        let host = host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        });
        let (challenge, _) = challenges.by_host.get(&host.to_ascii_lowercase())?;
        if challenge.kind != AcmeChallengeKind::Http01 || challenge.token != token {
            return None;
        }
        tracing::info!(hostname = %challenge.hostname, "answered an HTTP-01 challenge");
        let mut response = text(StatusCode::OK, challenge.key_authorization.clone());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/octet-stream"),
        );
        Some(response)
    }

    /// The TLS settings that answer a TLS-ALPN-01 validation, if `hello` is one (it asks
    /// for `acme-tls/1` alone, for a hostname whose challenge is being answered).
    pub(super) fn acme_tls(
        &self,
        hello: &rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::ServerConfig>> {
        let mut protocols = hello.alpn()?;
        if protocols.next()? != ACME_TLS_ALPN || protocols.next().is_some() {
            return None;
        }
        let name = hello.server_name()?.to_ascii_lowercase();
        let challenges = self.acme.read().ok()?;
        let (challenge, tls) = challenges.by_host.get(&name)?;
        tracing::info!(hostname = %challenge.hostname, "answered a TLS-ALPN-01 challenge");
        tls.clone()
    }

    /// Follows the catalog's challenges.
    pub(super) fn follow_challenges(&self, wanted: &[AcmeChallenge]) {
        if let Ok(mut challenges) = self.acme.write() {
            if wanted.is_empty() && challenges.is_empty() {
                return;
            }
            *challenges = challenges.follow(wanted);
        }
    }
}
