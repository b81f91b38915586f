//! Which certificates the client trusts for an `https://` API: the public CAs (a platform
//! with a certificate from Let's Encrypt, say), the platform's own CA pinned at `aloft auth
//! login`, or exactly one certificate (the dashboard calling its own API).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Whose certificates an `https://` API may present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// The public CAs (Mozilla's list).
    #[default]
    Public,
    /// Only certificates issued by this CA (PEM), for the API's name.
    Ca(String),
    /// Only this certificate (DER), whatever its names.
    Exactly(Vec<u8>),
}

/// Why a trust setting could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("the CA certificate is not PEM: {0}")]
    Pem(String),
    #[error("the CA certificate cannot be a trust anchor: {0}")]
    Anchor(String),
    #[error("setting up TLS: {0}")]
    Tls(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client TLS configuration for `trust` (HTTP/1.1 by ALPN, as the client speaks).
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, TrustError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::Tls(e.to_string()))?;
    let mut config = match trust {
        Trust::Public => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Ca(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| TrustError::Pem(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| TrustError::Anchor(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(TrustError::Pem("no certificate in it".to_owned()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Exactly(der) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Exactly {
                der: der.clone(),
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `sha256:<hex>` of a certificate's DER bytes, as `aloftd` prints its CA's.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(der);
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

/// The first certificate of a PEM text, as DER.
pub fn first_certificate(pem: &str) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|cert| cert.as_ref().to_vec())
}

/// A certificate in PEM.
pub fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The certificates the API at `url` (`https://HOST:PORT`) presents, leaf first, read
/// without trusting them: `aloft auth login` picks the CA to pin from them by its
/// fingerprint (or the person's yes), and then checks the API with it.
pub async fn presented_chain(url: &str) -> Result<Vec<Vec<u8>>, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url:?} names no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host:?}: {e}"))?;
    let seen = Arc::new(Recorder::default());
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(seen.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), connect)
        .await
        .map_err(|_| "no TLS handshake within 10 s".to_owned())??;
    let chain = seen
        .chain
        .lock()
        .map_err(|_| "the handshake's record is poisoned".to_owned())?
        .clone();
    Ok(chain)
}

/// Accepts any certificate and remembers the chain (reading it, never trusting it).
#[derive(Debug, Default)]
struct Recorder {
    chain: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            *chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|cert| cert.as_ref().to_vec())
                .collect();
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Accepts exactly one certificate, with its key's signatures checked.
#[derive(Debug)]
struct Exactly {
    der: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Exactly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether `error` (of a request) failed on the server's certificate; its reason if so.
pub(crate) fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(rustls::Error::InvalidCertificate(problem)) =
            error.downcast_ref::<rustls::Error>()
        {
            return Some(match problem {
                // A CA of the same name but another key fails on the signature.
                rustls::CertificateError::UnknownIssuer
                | rustls::CertificateError::BadSignature => {
                    "its certificate is not signed by a CA this client trusts".to_owned()
                }
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    "its certificate does not name the host in the URL".to_owned()
                }
                other => format!("its certificate is not valid: {other:?}"),
            });
        }
        // An I/O error's `source` skips the error it wraps: look inside it first.
        current = match error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_fingerprints_differ() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let pem = pem_of(&der);
        let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
        assert_eq!(fingerprint(&der).len(), "sha256:".len() + 64);
        assert_ne!(fingerprint(&der), fingerprint(&[0x30, 0x00]));
    }

    #[test]
    fn a_ca_that_is_not_pem_is_refused() {
        let error = client_config(&Trust::Ca("not a certificate".to_owned())).unwrap_err();
        assert!(error.to_string().contains("no certificate"), "{error}");
        assert!(client_config(&Trust::Public).is_ok());
    }
}
