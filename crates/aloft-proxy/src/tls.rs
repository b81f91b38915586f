//! TLS at the edge: a local certificate authority made on the first start (so HTTPS works
//! with no setup: `curl --cacert <data_dir>/tls/ca.crt`), certificates it issues, and the
//! store that picks one by SNI. ACME certificates will go into the same store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The CA's certificate, under the TLS directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA's private key (mode 0600), under the TLS directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making a certificate")]
    Certificate(#[from] rcgen::Error),
    #[error("setting up rustls")]
    Key(#[source] rustls::Error),
    #[error("reading PEM: {0}")]
    Pem(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The CA's fixed identity: leaves signed with its key and this name verify against the
/// certificate made on the first start.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Aloft local CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Aloft");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

fn this_year() -> i32 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + i32::try_from(seconds / 31_556_952).unwrap_or(0)
}

/// The local certificate authority.
#[derive(Debug)]
pub struct LocalCa {
    cert_pem: String,
    key: KeyPair,
}

impl LocalCa {
    /// Loads the CA from `dir`, creating it (key mode 0600) on the first call.
    pub fn load_or_create(dir: &Path) -> Result<LocalCa, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if cert_path.exists() && key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            return Ok(LocalCa {
                cert_pem,
                key: KeyPair::from_pem(&key_pem)?,
            });
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        write_private(&key_path, &key.serialize_pem())?;
        aloft_crash::write_file(&cert_path, cert.pem().as_bytes(), 0o644)
            .map_err(io(&cert_path))?;
        Ok(LocalCa {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// The CA's certificate, PEM (what clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `names` (wildcards allowed), valid until the end of next year.
    pub fn issue(&self, names: &[String]) -> Result<Arc<CertifiedKey>, TlsError> {
        self.issue_leaf(names, false)
    }

    /// As [`LocalCa::issue`], with the CA's own certificate after the leaf in the chain:
    /// a client that pins the CA by its fingerprint finds it in the handshake.
    pub fn issue_chained(&self, names: &[String]) -> Result<Arc<CertifiedKey>, TlsError> {
        self.issue_leaf(names, true)
    }

    fn issue_leaf(&self, names: &[String], chained: bool) -> Result<Arc<CertifiedKey>, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(this_year() + 2, 1, 1);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = false;
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing =
            rustls::crypto::ring::sign::any_supported_type(&private).map_err(TlsError::Key)?;
        let mut chain = vec![CertificateDer::from(cert.der().to_vec())];
        if chained {
            use rustls::pki_types::pem::PemObject as _;
            chain.push(
                CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
                    .map_err(|e| TlsError::Pem(format!("the CA's certificate: {e}")))?,
            );
        }
        Ok(Arc::new(CertifiedKey::new(chain, signing)))
    }
}

/// The CA's files, each whole or not at all (a crash between the two leaves no
/// certificate, so the next start makes both again).
fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    aloft_crash::write_file(path, text.as_bytes(), 0o600).map_err(io(path))
}

/// A certificate and key given in PEM (an imported certificate).
pub fn from_pem(fullchain: &str, private_key: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(fullchain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("the certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Pem("the certificate chain is empty".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(private_key.as_bytes())
        .map_err(|e| TlsError::Pem(format!("the private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(TlsError::Key)?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Certificates by hostname (`*.example.com` covers one label), chosen by SNI.
#[derive(Debug, Default)]
pub struct Certificates {
    by_name: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// For clients that send no server name (those that connect by IP address).
    fallback: RwLock<Option<Arc<CertifiedKey>>>,
}

impl Certificates {
    /// Serves `cert` for `name` (lowercase; `*.` for a wildcard) from now on.
    pub fn insert(&self, name: &str, cert: Arc<CertifiedKey>) {
        if let Ok(mut by_name) = self.by_name.write() {
            by_name.insert(name.to_ascii_lowercase(), cert);
        }
    }

    /// Stops serving a certificate for `name`.
    pub fn remove(&self, name: &str) {
        if let Ok(mut by_name) = self.by_name.write() {
            by_name.remove(&name.to_ascii_lowercase());
        }
    }

    /// Serves `cert` to clients that name no server (SNI is never sent for an IP address).
    pub fn set_fallback(&self, cert: Arc<CertifiedKey>) {
        if let Ok(mut fallback) = self.fallback.write() {
            *fallback = Some(cert);
        }
    }

    /// The certificate for a server name, if any covers it.
    pub fn find(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.to_ascii_lowercase();
        let by_name = self.by_name.read().ok()?;
        if let Some(cert) = by_name.get(&name) {
            return Some(cert.clone());
        }
        let (_, parent) = name.split_once('.')?;
        by_name.get(&format!("*.{parent}")).cloned()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(name) => self.find(name),
            None => self.fallback.read().ok()?.clone(),
        }
    }
}

/// A rustls server config that picks certificates from `certificates` by SNI and offers
/// HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(certificates: Arc<Certificates>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Key)?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A server config like [`server_config`]'s, with a port's `tls_options`: its ALPN
/// protocols (none: `h2`, `http/1.1`) and TLS versions (none: 1.2 and 1.3).
pub fn server_config_with(
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: &[String],
    versions: &[aloft_types::machine::TlsVersion],
) -> Result<rustls::ServerConfig, TlsError> {
    use aloft_types::machine::TlsVersion;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut chosen: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    for version in versions {
        chosen.push(match version {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        });
    }
    let builder = rustls::ServerConfig::builder_with_provider(provider);
    let builder = if chosen.is_empty() {
        builder.with_safe_default_protocol_versions()
    } else {
        builder.with_protocol_versions(&chosen)
    }
    .map_err(TlsError::Key)?;
    let mut config = builder.with_no_client_auth().with_cert_resolver(resolver);
    config.alpn_protocols = if alpn.is_empty() {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_survives_a_restart_and_issues_wildcards() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalCa::load_or_create(dir.path()).unwrap();
        let again = LocalCa::load_or_create(dir.path()).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem());
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap();
        assert_eq!(mode, 0o600);
        let store = Certificates::default();
        store.insert(
            "*.aloft.localhost",
            again.issue(&["*.aloft.localhost".to_owned()]).unwrap(),
        );
        assert!(store.find("web.ALOFT.localhost").is_some());
        assert!(store.find("a.b.aloft.localhost").is_none());
        assert!(store.find("example.com").is_none());
    }
}
