//! HTTPS on the API. By default (`[api] tls = "auto"`) the API speaks plain HTTP only on a
//! loopback address; anywhere else it serves HTTPS with a certificate from the platform's
//! CA (made on the first start under `<data_dir>/platform-ca`, its fingerprint printed
//! with the login command so that `aloft auth login` can pin it), or with the certificate
//! the operator configures (`tls_cert`, `tls_key`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

#[cfg(test)]
use crate::config::ApiTlsMode;
use crate::config::{ApiConfig, Config};

/// The platform's CA (the API's certificates), under the data directory.
pub const PLATFORM_CA_DIR: &str = "platform-ca";
/// The CA's fingerprint (`sha256:...`), beside it: what `aloft auth login
/// --ca-fingerprint` takes.
pub const CA_FINGERPRINT_FILE: &str = "ca.fingerprint";
/// The longest a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections past this are closed at once.
const MAX_HANDSHAKES: usize = 512;

/// The API's TLS, when it serves HTTPS.
pub(crate) struct ApiTls {
    pub(crate) server: Arc<rustls::ServerConfig>,
    /// The platform CA's certificate (PEM) and its fingerprint, when the API's certificate
    /// is the CA's (not a configured one).
    pub(crate) ca: Option<(String, String)>,
    /// A name the certificate covers that clients can use in the API's URL.
    pub(crate) url_host: String,
    /// The certificate served (DER): the dashboard trusts exactly it when it calls the
    /// API on loopback.
    pub(crate) leaf: Vec<u8>,
}

/// The API's TLS settings from `config`, or `None` for plain HTTP.
pub(crate) fn setup(config: &Config) -> anyhow::Result<Option<ApiTls>> {
    let api = &config.api;
    if !api.serves_tls() {
        if !api.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %api.listen,
                "the API serves plain HTTP off loopback ([api] tls = \"off\"): tokens cross the network in the clear unless a proxy in front terminates TLS"
            );
        }
        return Ok(None);
    }
    let names = certificate_names(api);
    let url_host = api
        .tls_names
        .first()
        .cloned()
        .unwrap_or_else(|| local_host(api.listen));
    let (certified, ca) = match (&api.tls_cert, &api.tls_key) {
        (Some(cert), Some(key)) => (configured(cert, key)?, None),
        _ => {
            let dir = config.data_dir.join(PLATFORM_CA_DIR);
            let ca = aloft_proxy::tls::LocalCa::load_or_create(&dir)
                .with_context(|| format!("the platform's CA in {}", dir.display()))?;
            let certified = ca
                .issue_chained(&names)
                .with_context(|| format!("issuing the API's certificate for {names:?}"))?;
            let pem = ca.cert_pem().to_owned();
            let fingerprint = fingerprint_of_pem(&pem)?;
            // Beside the CA, for an operator who missed the first start's output.
            let file = dir.join(CA_FINGERPRINT_FILE);
            aloft_crash::write_file(&file, format!("{fingerprint}\n").as_bytes(), 0o644)
                .with_context(|| format!("writing {}", file.display()))?;
            (certified, Some((pem, fingerprint)))
        }
    };
    let leaf = certified
        .cert
        .first()
        .map(|cert| cert.as_ref().to_vec())
        .unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneCertificate(certified)));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tracing::info!(?names, "the API serves HTTPS");
    Ok(Some(ApiTls {
        server: Arc::new(server),
        ca,
        url_host,
        leaf,
    }))
}

/// The API's one certificate, whatever name the client asks for.
#[derive(Debug)]
struct OneCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCertificate {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A configured certificate chain and key (PEM files).
fn configured(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
    let chain = std::fs::read_to_string(cert)
        .with_context(|| format!("reading api.tls_cert {}", cert.display()))?;
    let private = std::fs::read_to_string(key)
        .with_context(|| format!("reading api.tls_key {}", key.display()))?;
    aloft_proxy::tls::from_pem(&chain, &private).with_context(|| {
        format!(
            "api.tls_cert {} with api.tls_key {}",
            cert.display(),
            key.display()
        )
    })
}

/// What the API's certificate from the platform CA covers: `tls_names`, the address it
/// listens on (every address of this host when that is `0.0.0.0` or `::`), loopback and
/// the host's name.
fn certificate_names(api: &ApiConfig) -> Vec<String> {
    let mut names: Vec<String> = api.tls_names.clone();
    let listen = api.listen.ip();
    if listen.is_unspecified() {
        names.extend(host_addresses().into_iter().map(|ip| ip.to_string()));
    } else {
        names.push(listen.to_string());
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(str::to_owned));
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str().filter(|h| crate::config::valid_name(h))
    {
        names.push(host.to_owned());
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|name| seen.insert(name.clone()));
    names
}

/// This host's addresses, but link-local ones (they need a scope a URL rarely carries).
fn host_addresses() -> Vec<IpAddr> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addresses
        .filter_map(|interface| {
            let address = interface.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            let v6 = address.as_sockaddr_in6()?.ip();
            ((v6.segments()[0] & 0xffc0) != 0xfe80).then_some(IpAddr::V6(v6))
        })
        .collect()
}

/// The host of the API's URL when no `tls_names` are given: the listening address, or
/// loopback for an unspecified one.
pub(crate) fn local_host(listen: SocketAddr) -> String {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// `sha256:<hex>` of a PEM certificate's DER bytes: what `aloft auth login
/// --ca-fingerprint` compares.
fn fingerprint_of_pem(pem: &str) -> anyhow::Result<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use sha2::Digest as _;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).context("the CA's certificate")?;
    let digest = sha2::Sha256::digest(der.as_ref());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// Where the CA's certificate is, to name in messages.
pub(crate) fn ca_file(data_dir: &Path) -> PathBuf {
    data_dir
        .join(PLATFORM_CA_DIR)
        .join(aloft_proxy::tls::CA_CERT_FILE)
}

/// The API's listener: plain TCP, or TLS with handshakes done off the accept loop (a
/// client that stalls its handshake holds one of [`MAX_HANDSHAKES`] slots for at most
/// [`HANDSHAKE_TIMEOUT`], never the listener).
pub(crate) struct ApiListener {
    local: SocketAddr,
    inner: Inner,
}

enum Inner {
    Plain(TcpListener),
    Tls(mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>),
}

impl ApiListener {
    pub(crate) fn new(
        tcp: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<ApiListener> {
        let local = tcp.local_addr()?;
        let inner = match tls {
            None => Inner::Plain(tcp),
            Some(config) => {
                let (sender, receiver) = mpsc::channel(64);
                tokio::spawn(handshakes(
                    tcp,
                    tokio_rustls::TlsAcceptor::from(config),
                    sender,
                ));
                Inner::Tls(receiver)
            }
        };
        Ok(ApiListener { local, inner })
    }
}

/// Accepts connections and runs their handshakes until the listener is dropped.
async fn handshakes(
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            () = ready.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: give others a moment to close.
                tracing::warn!(%error, "accepting an API connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many TLS handshakes in progress: closed");
            continue;
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "API TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for ApiListener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match &mut self.inner {
            Inner::Plain(tcp) => {
                // axum's own accept loop for TCP (it waits out errors such as EMFILE).
                let (stream, peer) = axum::serve::Listener::accept(tcp).await;
                (Either::Left(stream), peer)
            }
            Inner::Tls(ready) => match ready.recv().await {
                Some((stream, peer)) => (Either::Right(stream), peer),
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(listen: &str, tls: ApiTlsMode) -> ApiConfig {
        ApiConfig {
            listen: listen.parse().unwrap(),
            tls,
            ..ApiConfig::default()
        }
    }

    #[test]
    fn plain_http_only_on_loopback_unless_turned_off() {
        assert!(!api("127.0.0.1:4280", ApiTlsMode::Auto).serves_tls());
        assert!(!api("[::1]:4280", ApiTlsMode::Auto).serves_tls());
        assert!(api("0.0.0.0:4280", ApiTlsMode::Auto).serves_tls());
        assert!(api("192.0.2.1:4280", ApiTlsMode::Auto).serves_tls());
        assert!(api("127.0.0.1:4280", ApiTlsMode::On).serves_tls());
        assert!(!api("0.0.0.0:4280", ApiTlsMode::Off).serves_tls());
    }

    #[test]
    fn names_cover_the_listening_address_loopback_and_the_configured_ones() {
        let mut config = api("192.0.2.1:4280", ApiTlsMode::Auto);
        config.tls_names = vec!["api.example.com".to_owned()];
        let names = certificate_names(&config);
        for name in [
            "api.example.com",
            "192.0.2.1",
            "localhost",
            "127.0.0.1",
            "::1",
        ] {
            assert!(names.contains(&name.to_owned()), "{name} in {names:?}");
        }
        // Every address of the host when it listens on all of them.
        let all = certificate_names(&api("0.0.0.0:4280", ApiTlsMode::Auto));
        for address in host_addresses() {
            assert!(all.contains(&address.to_string()), "{address} in {all:?}");
        }
        assert_eq!(local_host("0.0.0.0:1".parse().unwrap()), "127.0.0.1");
        assert_eq!(local_host("[::]:1".parse().unwrap()), "[::1]");
        assert_eq!(
            local_host("[2001:db8::1]:1".parse().unwrap()),
            "[2001:db8::1]"
        );
    }

    #[test]
    fn bad_tls_settings_name_their_key() {
        let mut config = api("0.0.0.0:4280", ApiTlsMode::Auto);
        assert_eq!(config.check_tls(), Ok(()));
        config.tls_cert = Some("/etc/api.crt".into());
        assert_eq!(config.check_tls().unwrap_err().0, "api.tls_key");
        config.tls_key = Some("/etc/api.key".into());
        assert_eq!(config.check_tls(), Ok(()));
        config.tls = ApiTlsMode::Off;
        assert_eq!(config.check_tls().unwrap_err().0, "api.tls");
        let mut config = api("0.0.0.0:4280", ApiTlsMode::Auto);
        config.tls_names = vec!["api.example.com".to_owned(), "bad name".to_owned()];
        let (key, message) = config.check_tls().unwrap_err();
        assert_eq!(key, "api.tls_names");
        assert!(message.contains("bad name"), "{message}");
        config.tls_names = vec!["2001:db8::1".to_owned(), "*.example.com".to_owned()];
        assert_eq!(config.check_tls(), Ok(()));
    }

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = aloft_proxy::tls::LocalCa::load_or_create(dir.path()).unwrap();
        let fingerprint = fingerprint_of_pem(ca.cert_pem()).unwrap();
        assert!(fingerprint.starts_with("sha256:"), "{fingerprint}");
        assert_eq!(fingerprint.len(), "sha256:".len() + 64);
        let other = aloft_proxy::tls::LocalCa::load_or_create(&dir.path().join("b")).unwrap();
        assert_ne!(fingerprint_of_pem(other.cert_pem()).unwrap(), fingerprint);
    }
}
