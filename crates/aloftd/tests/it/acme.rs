//! Certificates by ACME end to end, against Pebble (Let's Encrypt's test directory, Debian's
//! `pebble`) with its challenge test server as the DNS both Pebble and aloftd ask: a
//! hostname that resolves to the app is validated through the edge (TLS-ALPN-01 or
//! HTTP-01), issued and served; one that resolves elsewhere is never ordered nor served;
//! renewals replace the served certificate with no failed request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aloft_client::Client;
use aloft_testkit::eventually;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::proxy::{https_address, proxy_address, serve, service};
use crate::{Host, Server};

/// A child process killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pebble, its challenge test server (as DNS only) and the CA Pebble's HTTPS uses.
struct Pebble {
    dir: tempfile::TempDir,
    directory: String,
    management: SocketAddr,
    dns_management: SocketAddr,
    _daemons: Vec<Daemon>,
}

impl Pebble {
    /// The CA file aloftd checks Pebble's HTTPS against.
    fn https_ca(dir: &Path) -> PathBuf {
        dir.join("pebble-https-ca.pem")
    }

    /// Writes the CA of Pebble's own HTTPS and a certificate for 127.0.0.1 under it.
    fn make_https_certificate(dir: &Path) -> (PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Pebble HTTPS test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let issuer = rcgen::Issuer::new(ca, &ca_key);
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        std::fs::write(Pebble::https_ca(dir), ca_cert.pem()).unwrap();
        let (cert_path, key_path) = (dir.join("pebble.crt"), dir.join("pebble.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// Pebble on `ports`, validating on the edge's ports (`http` for HTTP-01, `https`
    /// for TLS-ALPN-01), its DNS answering only what a test sets.
    async fn start(dir: tempfile::TempDir, ports: Ports, http: u16, https: u16) -> Pebble {
        assert!(
            Path::new("/usr/bin/pebble").exists()
                && Path::new("/usr/bin/pebble-challtestsrv").exists(),
            "Pebble is missing: `cargo xtask test` installs Debian's pebble package"
        );
        let (cert, key) = Pebble::make_https_certificate(dir.path());
        let Ports {
            listen,
            management,
            dns,
            dns_management,
        } = ports;
        let config = dir.path().join("pebble.json");
        std::fs::write(
            &config,
            serde_json::json!({"pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http,
                "tlsPort": https,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }})
            .to_string(),
        )
        .unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-dns01", &dns.to_string()])
            .args(["-management", &dns_management.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &dns.to_string()])
            // Validate at once, never refuse a nonce at random, validate every order anew.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Pebble {
            directory: format!("https://{listen}/dir"),
            management,
            dns_management,
            _daemons: vec![Daemon(dns_server), Daemon(pebble)],
            dir,
        };
        let http = started.https_client();
        let url = started.directory.clone();
        eventually(
            "Pebble's directory to answer",
            Duration::from_secs(30),
            || {
                let http = http.clone();
                let url = url.clone();
                async move {
                    http.get(&url)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                }
            },
        )
        .await;
        started
    }

    fn https_client(&self) -> reqwest::Client {
        let ca = std::fs::read(Pebble::https_ca(self.dir.path())).unwrap();
        aloft_testkit::http_builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .build()
            .unwrap()
    }

    /// The root Pebble issues under (it changes with every start).
    async fn issuing_root(&self) -> String {
        self.https_client()
            .get(format!("https://{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Makes `host`'s A record `address` in the DNS Pebble and aloftd ask.
    async fn set_a(&self, host: &str, address: &str) {
        let response = aloft_testkit::http()
            .post(format!("http://{}/add-a", self.dns_management))
            .json(&serde_json::json!({"host": host, "addresses": [address]}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
    }
}

/// The addresses Pebble and its DNS take, chosen before aloftd (which is told them)
/// starts.
struct Ports {
    listen: SocketAddr,
    management: SocketAddr,
    dns: SocketAddr,
    dns_management: SocketAddr,
}

impl Ports {
    fn new() -> Ports {
        let any = || SocketAddr::from(([127, 0, 0, 1], aloft_testkit::free_port()));
        Ports {
            listen: any(),
            management: any(),
            dns: any(),
            dns_management: any(),
        }
    }
}

/// One HTTPS request to the edge for `host`, trusting `root`: the status line and the
/// served certificate (DER), or why the connection failed.
async fn https_get(edge: SocketAddr, host: &str, root: &str) -> Result<(String, Vec<u8>), String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(root.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(edge)
        .await
        .map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let mut stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let served = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    Ok((text.lines().next().unwrap_or_default().to_owned(), served))
}

/// aloftd (the edge's shared address on loopback, ACME from Pebble, `renew_before_days`
/// as given) and Pebble.
async fn platform(challenges: &str, renew_before_days: u32) -> (Host, Server, Pebble) {
    let pebble_dir = tempfile::tempdir().unwrap();
    // Pebble's HTTPS certificate first: aloftd checks the directory against its CA.
    let ports = Ports::new();
    let host = Host::with_proxy(&format!(
        "public_addresses = [\"127.0.0.1\"]\n[acme]\ndirectory = \"https://{}/dir\"\nca_file = \"{}\"\nresolvers = [\"{}\"]\nchallenges = {challenges}\nrenew_before_days = {renew_before_days}\n",
        ports.listen,
        Pebble::https_ca(pebble_dir.path()).display(),
        ports.dns,
    ));
    // The CA file must exist when aloftd reads its configuration.
    std::fs::write(Pebble::https_ca(pebble_dir.path()), "").unwrap();
    let server = Server::start(&host).await;
    let pebble = Pebble::start(
        pebble_dir,
        ports,
        proxy_address(&host).port(),
        https_address(&host).port(),
    )
    .await;
    (host, server, pebble)
}

/// The edge's plain-HTTP answer status for `host`.
async fn http_status(host: &Host, name: &str) -> u16 {
    let http = aloft_testkit::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    crate::proxy::get(&http, proxy_address(host), name, "/")
        .await
        .status()
        .as_u16()
}

/// Waits until `hostname` of `app` is active.
async fn issued(client: &Client, app: &str, hostname: &str) -> aloft_types::api::CertificateDetail {
    eventually(
        "the certificate to be issued",
        Duration::from_secs(120),
        || async {
            let detail = client.certificate(app, hostname).await.ok()?;
            (detail.status == "active").then_some(detail)
        },
    )
    .await
}

#[tokio::test]
async fn a_name_pointing_at_the_app_is_certified_by_tls_alpn_others_never_and_renewals_drop_nothing()
 {
    let (host, server, pebble) = platform("[\"tls-alpn-01\"]", 3650).await;
    let client = &server.client;
    client.create_app("site", None).await.unwrap();
    client.create_app("other", None).await.unwrap();
    serve(client, "site", crate::proxy::ECHO, service(false)).await;
    pebble.set_a("good.example.test", "127.0.0.1").await;
    // TEST-NET-2: nothing is ever sent there (nothing is ordered for the name).
    pebble.set_a("bad.example.test", "198.51.100.77").await;

    let added = client
        .add_acme_certificate("site", "good.example.test")
        .await
        .unwrap();
    assert!(added.acme_requested);
    assert!(!added.configured, "{added:?}");
    assert_eq!(added.dns_requirements.a, ["127.0.0.1"]);
    assert_eq!(added.dns_requirements.cname, "site.aloft.localhost");
    client
        .add_acme_certificate("site", "bad.example.test")
        .await
        .unwrap();

    let good = issued(client, "site", "good.example.test").await;
    assert!(
        good.validation.dns_configured && good.validation.alpn_configured,
        "{good:?}"
    );
    let fly = good
        .certificates
        .iter()
        .find(|c| c.source == "fly")
        .unwrap();
    assert_eq!(fly.issued.len(), 1);
    assert_eq!(fly.issued[0].certificate_authority, pebble.directory);
    let root = pebble.issuing_root().await;
    let https = https_address(&host);
    // The positive control: the name resolving to the app is served, with Pebble's
    // certificate, by the app's machine.
    let (status, first) = eventually(
        "the certificate to be served",
        Duration::from_secs(30),
        || async { https_get(https, "good.example.test", &root).await.ok() },
    )
    .await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(http_status(&host, "good.example.test").await, 200);

    // The name resolving elsewhere: looked at, never ordered, served or routed.
    let bad = client
        .check_certificate("site", "bad.example.test")
        .await
        .unwrap();
    assert_eq!(bad.status, "pending_ownership", "{bad:?}");
    assert!(!bad.configured && !bad.validation.dns_configured);
    assert_eq!(bad.dns_records.as_ref().unwrap().a, ["198.51.100.77"]);
    let error = eventually(
        "the refusal to be recorded",
        Duration::from_secs(30),
        || async {
            let detail = client.certificate("site", "bad.example.test").await.ok()?;
            detail.validation_errors.last().map(|e| e.message.clone())
        },
    )
    .await;
    assert!(error.contains("198.51.100.77"), "{error}");
    let refused = https_get(https, "bad.example.test", &root).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(http_status(&host, "bad.example.test").await, 404);
    let log = std::fs::read_to_string(pebble.dir.path().join("pebble.log")).unwrap();
    assert!(
        log.contains("good.example.test"),
        "Pebble logs the names it validates"
    );
    assert!(!log.contains("bad.example.test"), "{log}");

    // Names under the apps domain and other apps' names are refused.
    for name in [
        "*.aloft.localhost",
        "other.aloft.localhost",
        "aloft.localhost",
    ] {
        let error = client
            .add_acme_certificate("site", name)
            .await
            .expect_err(name)
            .to_string();
        assert!(error.contains("apps domain"), "{name}: {error}");
    }
    let taken = client
        .add_acme_certificate("other", "good.example.test")
        .await
        .expect_err("another app's name")
        .to_string();
    assert!(taken.contains("another app"), "{taken}");

    // Renewals (every pass here: the window is past the certificates' lifetime) replace
    // the served certificate while a client keeps asking, and no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (requests, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = tokio::spawn({
        let (stop, requests, failures, root) = (
            stop.clone(),
            requests.clone(),
            failures.clone(),
            root.clone(),
        );
        async move {
            let mut seen = std::collections::HashSet::new();
            while !stop.load(Ordering::Relaxed) {
                match https_get(https, "good.example.test", &root).await {
                    Ok((status, served)) if status.contains("200") => {
                        seen.insert(served);
                    }
                    other => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        eprintln!("a request failed during renewal: {other:?}");
                    }
                }
                requests.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        }
    });
    eventually(
        "a renewed certificate to be served",
        Duration::from_secs(90),
        || async {
            let (_, served) = https_get(https, "good.example.test", &root).await.ok()?;
            (served != first).then_some(())
        },
    )
    .await;
    // And the one after it: a renewal while the load runs from before it began.
    let renewed = https_get(https, "good.example.test", &root)
        .await
        .unwrap()
        .1;
    eventually(
        "a second renewal to be served",
        Duration::from_secs(90),
        || async {
            let (_, served) = https_get(https, "good.example.test", &root).await.ok()?;
            (served != renewed && served != first).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let seen = load.await.unwrap();
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(requests.load(Ordering::Relaxed) > 10);
    assert!(
        seen.len() >= 2,
        "the client saw {} certificates",
        seen.len()
    );
}

#[tokio::test]
async fn http_01_certifies_a_name_through_the_plain_listener() {
    let (host, server, pebble) = platform("[\"http-01\"]", 30).await;
    let client = &server.client;
    client.create_app("plain", None).await.unwrap();
    serve(client, "plain", crate::proxy::ECHO, service(true)).await;
    pebble.set_a("www.plain.test", "127.0.0.1").await;
    client
        .add_acme_certificate("plain", "www.plain.test")
        .await
        .unwrap();
    let detail = issued(client, "plain", "www.plain.test").await;
    assert!(
        detail.validation.http_configured && !detail.validation.alpn_configured,
        "{detail:?}"
    );
    let root = pebble.issuing_root().await;
    let (status, _) = eventually(
        "the certificate to be served",
        Duration::from_secs(30),
        || async {
            https_get(https_address(&host), "www.plain.test", &root)
                .await
                .ok()
        },
    )
    .await;
    assert!(status.contains("200"), "{status}");
    // `force_https` redirects the plain listener's requests; the challenge path answered
    // before it (Pebble's validation passed through it).
    assert_eq!(http_status(&host, "www.plain.test").await, 301);
    let expires = detail
        .certificates
        .iter()
        .find_map(|c| c.expires_at.clone());
    assert!(expires.is_some(), "{detail:?}");
}
