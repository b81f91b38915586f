//! The API over HTTPS off loopback: `aloft` in another network namespace logs in by the
//! platform CA's fingerprint, then works (the SSH tunnel too), and refuses a server whose
//! certificate the pinned CA did not issue.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aloft_testkit::TestNetns;

use crate::platform::{Platform, aloftd_binary, echo_machine};
use crate::text;

/// This host's end of the test's link (in the benchmarking range, 198.18.0.0/15, which
/// `link_to_host` checks that the host does not use).
const HOST: &str = "198.18.177.1";

/// `aloft ARGS` inside `netns`, with the platform's saved login and `env`.
fn aloft_in(p: &Platform, netns: &TestNetns, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns.name(), env!("CARGO_BIN_EXE_aloft")])
        .args(args)
        .env("ALOFT_CONFIG_DIR", p.home.path())
        .env_remove("ALOFT_API_URL")
        .env_remove("ALOFT_API_TOKEN")
        .env_remove("ALOFT_API_CA")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .current_dir(p.home.path());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

/// `aloft auth login` of the platform's token at `url` inside `netns`, with `extra` flags.
fn login(p: &Platform, netns: &TestNetns, url: &str, extra: &[&str]) -> Output {
    let mut args = vec!["auth", "login", "--token", &p.token, "--api-url", url];
    args.extend_from_slice(extra);
    aloft_in(p, netns, &args, &[])
}

/// A TLS server on `HOST` with a certificate for it from another CA (a freshly made
/// one): it answers any request with an empty app list and counts the requests it read.
struct Impostor {
    port: u16,
    ca_pem: String,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Impostor {
    async fn start(dir: &std::path::Path) -> Impostor {
        let ca = aloft_proxy::tls::LocalCa::load_or_create(dir).unwrap();
        let certificates = Arc::new(aloft_proxy::tls::Certificates::default());
        certificates.set_fallback(ca.issue(&[HOST.to_owned()]).unwrap());
        let mut config = aloft_proxy::tls::server_config(certificates).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind((HOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buffer = vec![0; 8192];
                    if tls.read(&mut buffer).await.unwrap_or(0) > 0 {
                        counted.fetch_add(1, Ordering::SeqCst);
                        let body = r#"{"total_apps":0,"apps":[]}"#;
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tls.write_all(answer.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        Impostor {
            port,
            ca_pem: ca.cert_pem().to_owned(),
            requests,
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reaches_an_https_api_off_loopback_and_trusts_only_the_pinned_ca() {
    // The CLI's own network: a namespace linked to this host, as a laptop on a LAN.
    let laptop = TestNetns::create("laptop");
    laptop.link_to_host(&format!("{HOST}/30"), "198.18.177.2/30");
    let platform = Platform::start_with(|config| {
        config.api.listen = format!("{HOST}:0").parse().unwrap();
        config.agent.helper = Some(aloftd_binary());
    })
    .await;
    let p = &platform;
    assert!(
        p.url.starts_with(&format!("https://{HOST}:")),
        "off loopback the API serves HTTPS by default: {}",
        p.url
    );
    let fingerprint = std::fs::read_to_string(
        p.data
            .path()
            .join(aloftd::PLATFORM_CA_DIR)
            .join(aloftd::CA_FINGERPRINT_FILE),
    )
    .unwrap()
    .trim()
    .to_owned();

    // Plain HTTP gets no API there.
    let plain = p.url.replacen("https://", "http://", 1);
    let refused = login(p, &laptop, &plain, &[]);
    assert!(!refused.status.success(), "{}", text(&refused.stdout));

    // No fingerprint and no terminal to ask on: refused, saying what to pass.
    let unasked = login(p, &laptop, &p.url, &[]);
    assert_eq!(unasked.status.code(), Some(2), "{}", text(&unasked.stderr));
    let said = text(&unasked.stderr);
    assert!(
        said.contains("--ca-fingerprint") && said.contains(&fingerprint),
        "{said}"
    );
    // A fingerprint the API's chain does not have: refused, nothing saved.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let mistaken = login(p, &laptop, &p.url, &["--ca-fingerprint", &wrong]);
    assert!(!mistaken.status.success());
    assert!(
        text(&mistaken.stderr).contains("presented no certificate with fingerprint"),
        "{}",
        text(&mistaken.stderr)
    );
    assert!(!p.home.path().join("credentials.toml").exists());

    // The fingerprint aloftd printed: logged in, the CA pinned.
    let pinned = login(p, &laptop, &p.url, &["--ca-fingerprint", &fingerprint]);
    assert!(pinned.status.success(), "{}", text(&pinned.stderr));
    assert!(
        text(&pinned.stderr).contains("the platform's CA pinned"),
        "{}",
        text(&pinned.stderr)
    );
    let whoami = aloft_in(p, &laptop, &["auth", "whoami"], &[]);
    assert!(
        text(&whoami.stdout).contains("operator token"),
        "{}{}",
        text(&whoami.stdout),
        text(&whoami.stderr)
    );
    // Everyday commands, and SSH through the API's tunnel, over the pinned HTTPS.
    let created = aloft_in(p, &laptop, &["apps", "create", "overtls"], &[]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let id = echo_machine(p, "overtls");
    let echoed = aloft_in(
        p,
        &laptop,
        &["ssh", "console", "-a", "overtls", "-C", "cat /etc/hostname"],
        &[],
    );
    assert!(echoed.status.success(), "{}", text(&echoed.stderr));
    assert_eq!(text(&echoed.stdout).trim(), id);

    // The dashboard on the same listener: cookies are Secure, and its pages reach the API
    // over HTTPS too (the app list comes from the API with the signed-in token).
    let ca_pem =
        std::fs::read_to_string(p.data.path().join(aloftd::PLATFORM_CA_DIR).join("ca.crt"))
            .unwrap();
    let browser = aloft_testkit::http_builder()
        .tls_backend_preconfigured(
            aloft_client::tls::client_config(&aloft_client::Trust::Ca(ca_pem)).unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = browser
        .get(format!("{}/sign-in", p.url))
        .send()
        .await
        .unwrap();
    let nonce_cookie = form.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(nonce_cookie.contains("; Secure"), "{nonce_cookie}");
    let nonce = nonce_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("aloft_sign_in=")
        .to_owned();
    let signed_in = browser
        .post(format!("{}/sign-in", p.url))
        .header("cookie", format!("aloft_sign_in={nonce}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}&nonce={nonce}", p.token))
        .send()
        .await
        .unwrap();
    assert!(
        signed_in.status().is_redirection(),
        "{}",
        signed_in.text().await.unwrap()
    );
    let session = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(session.contains("; Secure"), "{session}");
    let apps = browser
        .get(format!("{}/apps", p.url))
        .header("cookie", session.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(apps.status(), 200);
    assert!(apps.text().await.unwrap().contains("overtls"));

    // A server at the same address with another CA's certificate for it.
    let other_ca = tempfile::tempdir().unwrap();
    let impostor = Impostor::start(other_ca.path()).await;
    let impostor_url = format!("https://{HOST}:{}", impostor.port);
    // Positive control: a client that trusts the impostor's CA gets its answer.
    let trusting = aloft_client::Client::with_trust(
        &impostor_url,
        "t",
        &aloft_client::Trust::Ca(impostor.ca_pem.clone()),
    )
    .unwrap();
    assert!(trusting.list_apps().await.is_ok());
    assert_eq!(impostor.requests.load(Ordering::SeqCst), 1);
    // The CLI, with the platform's CA pinned, refuses it before sending anything.
    let fooled = aloft_in(
        p,
        &laptop,
        &["apps", "list"],
        &[("ALOFT_API_URL", &impostor_url)],
    );
    assert!(!fooled.status.success(), "{}", text(&fooled.stdout));
    let said = text(&fooled.stderr);
    assert!(
        said.contains("refused the Aloft API")
            && said.contains("not signed by a CA this client trusts"),
        "{said}"
    );
    assert_eq!(
        impostor.requests.load(Ordering::SeqCst),
        1,
        "the token never reached the impostor"
    );
    // Nor does a fresh login to it without a fingerprint go through.
    let relogin = login(p, &laptop, &impostor_url, &[]);
    assert!(!relogin.status.success());
    assert_eq!(impostor.requests.load(Ordering::SeqCst), 1);
    impostor.task.abort();
}
