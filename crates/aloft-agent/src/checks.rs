//! Health checks: the agent runs every check of a machine's current run against the
//! machine's 6PN address, from the private network's namespace, and reports each result
//! to the control plane. Routing follows service checks; top-level `checks` are only
//! reported (Fly's rule). No check restarts a machine.
//!
//! A run starts with every check at `warning` ("waiting for the first check"), waits the
//! check's grace period, then checks every interval. A status change republishes the
//! catalog (the proxy follows within moments); an output change is stored without one.
//! When the run ends, its checks turn `critical`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aloft_agent_api::{CheckRecord, ControlPlane};
use aloft_types::machine::{CheckProtocol, CheckType, MachineCheck, MachineConfig};
use aloft_types::{CheckStatus, MachineId, service_check_name};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

/// Fly's defaults for a check that names none (fly.toml's documented example values).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(1);
/// Check durations are kept within these bounds (Fly clamps service checks the same way).
const MIN_DURATION: Duration = Duration::from_secs(1);
const MAX_DURATION: Duration = Duration::from_secs(60);
/// How much of a response body an HTTP check keeps as its output.
const OUTPUT_BODY_LIMIT: usize = 256;
/// The output of a check whose run has not been checked yet.
pub const WAITING_OUTPUT: &str = "waiting for the first check";
/// The output of a check whose machine's run ended.
pub const STOPPED_OUTPUT: &str = "the machine is not running";

/// How a check reaches its machine.
#[derive(Clone)]
pub enum Route {
    /// Over the private network, from this namespace (the host's own when `None`).
    Network(Option<PathBuf>),
    /// Through the runtime, which serves its containers' ports itself (the simulated
    /// one): a connection to a port, or why there is none.
    Direct(aloft_runtime::DirectPorts),
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Network(namespace) => f.debug_tuple("Network").field(namespace).finish(),
            Route::Direct(_) => f.write_str("Direct"),
        }
    }
}

/// A connection a check speaks over (TCP, or the runtime's own).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One check to run, resolved from the machine's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    /// Index of the check's service in the config's `services`; `None` for a top-level one.
    pub service: Option<usize>,
    pub kind: CheckType,
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub grace_period: Duration,
    pub method: String,
    pub path: String,
    pub https: bool,
    pub tls_skip_verify: bool,
    pub tls_server_name: Option<String>,
    pub headers: Vec<(String, String)>,
}

fn bounded(value: Option<aloft_types::Duration>, default: Duration) -> Duration {
    value
        .map_or(default, |d| d.as_std())
        .clamp(MIN_DURATION, MAX_DURATION)
}

fn plan(name: String, service: Option<usize>, port: u16, check: &MachineCheck) -> Plan {
    let kind = check.kind.unwrap_or(if check.path.is_some() {
        CheckType::Http
    } else {
        CheckType::Tcp
    });
    Plan {
        name,
        service,
        kind,
        port: check.port.unwrap_or(port),
        interval: bounded(check.interval, DEFAULT_INTERVAL),
        timeout: bounded(check.timeout, DEFAULT_TIMEOUT),
        grace_period: check
            .grace_period
            .map_or(DEFAULT_GRACE_PERIOD, |d| d.as_std())
            .min(MAX_DURATION),
        method: check
            .method
            .clone()
            .unwrap_or_else(|| "GET".to_owned())
            .to_ascii_uppercase(),
        path: check.path.clone().unwrap_or_else(|| "/".to_owned()),
        https: check.protocol == Some(CheckProtocol::Https),
        tls_skip_verify: check.tls_skip_verify.unwrap_or(false),
        tls_server_name: check.tls_server_name.clone(),
        headers: check
            .headers
            .iter()
            .flat_map(|h| h.values.iter().map(|v| (h.name.clone(), v.clone())))
            .collect(),
    }
}

/// Every check of a machine: its services' checks (named `servicecheck-NN-TYPE-PORT`,
/// numbered across services) and its named top-level checks.
pub fn plans(config: &MachineConfig) -> Vec<Plan> {
    let mut plans = Vec::new();
    let mut number = 0;
    for (index, service) in config.services.iter().enumerate() {
        for check in &service.checks {
            let port = check.port.unwrap_or(service.internal_port);
            let mut planned = plan(String::new(), Some(index), port, check);
            let kind = match planned.kind {
                CheckType::Http => "http",
                CheckType::Tcp => "tcp",
            };
            planned.name = service_check_name(number, kind, port);
            number += 1;
            plans.push(planned);
        }
    }
    for (name, check) in &config.checks {
        // A top-level check without a port has nothing to check (the API requires one).
        if let Some(port) = check.port {
            plans.push(plan(name.clone(), None, port, check));
        }
    }
    plans
}

/// Runs `plans` for one run of a machine until `run_ended` or the agent's `stopping`.
pub async fn run(
    gateway: Arc<dyn ControlPlane>,
    machine: MachineId,
    plans: Vec<Plan>,
    address: Ipv6Addr,
    route: Route,
    run_ended: CancellationToken,
    stopping: CancellationToken,
) {
    let record = |plan: &Plan, status, output: &str| CheckRecord {
        machine_id: machine.clone(),
        name: plan.name.clone(),
        service: plan.service,
        status,
        output: output.to_owned(),
        updated_at: crate::now_ms(),
    };
    let initial: Vec<CheckRecord> = plans
        .iter()
        .map(|p| record(p, CheckStatus::Warning, WAITING_OUTPUT))
        .collect();
    if let Err(error) = gateway.reset_checks(&machine, &initial).await {
        tracing::warn!(%machine, error = %error, "recording the run's checks failed");
    }
    let loops = plans
        .iter()
        .map(|plan| check_loop(gateway.as_ref(), &machine, plan, address, &route));
    tokio::select! {
        _ = futures_util::future::join_all(loops) => {}
        () = run_ended.cancelled() => {}
        // The agent waits for its tasks when it stops, and the machine runs on.
        () = stopping.cancelled() => {}
    }
    if stopping.is_cancelled() {
        // The agent is stopping, not the machine: its checks stand as they are.
        return;
    }
    for plan in &plans {
        let ended = record(plan, CheckStatus::Critical, STOPPED_OUTPUT);
        if let Err(error) = gateway.report_check(&ended, true).await {
            tracing::warn!(%machine, check = %plan.name, error = %error, "recording a check failed");
        }
    }
}

async fn check_loop(
    gateway: &dyn ControlPlane,
    machine: &MachineId,
    plan: &Plan,
    address: Ipv6Addr,
    route: &Route,
) {
    tokio::time::sleep(plan.grace_period).await;
    let mut last = (CheckStatus::Warning, WAITING_OUTPUT.to_owned());
    let mut ticks = tokio::time::interval(plan.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (status, output) = probe(plan, address, route).await;
        if (status, &output) == (last.0, &last.1) {
            continue;
        }
        let status_changed = status != last.0;
        if status_changed {
            tracing::info!(%machine, check = %plan.name, %status, %output, "check changed");
        }
        let result = CheckRecord {
            machine_id: machine.clone(),
            name: plan.name.clone(),
            service: plan.service,
            status,
            output: output.clone(),
            updated_at: crate::now_ms(),
        };
        match gateway.report_check(&result, status_changed).await {
            Ok(()) => last = (status, output),
            Err(error) => {
                tracing::warn!(%machine, check = %plan.name, error = %error, "recording a check failed; will retry")
            }
        }
    }
}

/// Runs one check once: `passing` or `critical`, with what was seen.
pub async fn probe(plan: &Plan, address: Ipv6Addr, route: &Route) -> (CheckStatus, String) {
    let target = SocketAddr::new(IpAddr::V6(address), plan.port);
    let outcome = tokio::time::timeout(plan.timeout, async {
        let stream: Box<dyn Stream> = match route {
            Route::Network(namespace) => Box::new(
                aloft_net::netns::connect_tcp(namespace.as_deref(), target, plan.timeout)
                    .await
                    .map_err(|e| format!("connecting to {target}: {e}"))?,
            ),
            Route::Direct(connect) => {
                Box::new(connect(plan.port).map_err(|e| format!("connecting to {target}: {e}"))?)
            }
        };
        match plan.kind {
            CheckType::Tcp => Ok(format!("connected to {target}")),
            CheckType::Http if plan.https => {
                let stream = tls_connect(plan, address, stream).await?;
                http_check(plan, target, stream).await
            }
            CheckType::Http => http_check(plan, target, stream).await,
        }
    })
    .await;
    match outcome {
        Ok(Ok(output)) => (CheckStatus::Passing, output),
        Ok(Err(output)) => (CheckStatus::Critical, output),
        Err(_) => (
            CheckStatus::Critical,
            format!("timed out after {:?} checking {target}", plan.timeout),
        ),
    }
}

/// The longest app metrics page read.
const METRICS_BODY_LIMIT: usize = 4 << 20;

/// `GET http://[address]:port/path` from the private network (an app's `[metrics]`
/// endpoint): the body of a 2xx answer.
pub async fn fetch_metrics(
    address: Ipv6Addr,
    port: u16,
    path: &str,
    route: &Route,
    timeout: Duration,
) -> Result<String, String> {
    let target = SocketAddr::new(IpAddr::V6(address), port);
    let shown = format!("http://{target}{path}");
    let exchange = async {
        let stream: Box<dyn Stream> = match route {
            Route::Network(namespace) => Box::new(
                aloft_net::netns::connect_tcp(namespace.as_deref(), target, timeout)
                    .await
                    .map_err(|e| format!("connecting to {target}: {e}"))?,
            ),
            Route::Direct(connect) => {
                Box::new(connect(port).map_err(|e| format!("connecting to {target}: {e}"))?)
            }
        };
        let request = http::Request::builder()
            .uri(path)
            .header(http::header::HOST, target.to_string())
            .header(http::header::USER_AGENT, "aloft-metrics")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("{shown}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{shown}: {e}"))?;
        let driven = tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{shown}: {e}"))?;
        let status = response.status();
        let mut body = Vec::new();
        let mut frames = response.into_body();
        while let Some(frame) = frames.frame().await {
            let frame = frame.map_err(|e| format!("{shown}: {e}"))?;
            if let Some(data) = frame.data_ref() {
                body.extend_from_slice(data);
            }
            if body.len() > METRICS_BODY_LIMIT {
                return Err(format!("{shown}: more than {METRICS_BODY_LIMIT} bytes"));
            }
        }
        driven.abort();
        if !status.is_success() {
            return Err(format!("{shown}: {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{shown}: timed out after {timeout:?}"))?
}

/// An HTTP exchange: 2xx passes; redirects are not followed (Fly's rule).
async fn http_check<S>(plan: &Plan, target: SocketAddr, stream: S) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let scheme = if plan.https { "https" } else { "http" };
    let shown = format!("{} {scheme}://{target}{}", plan.method, plan.path);
    let method = http::Method::from_bytes(plan.method.as_bytes())
        .map_err(|_| format!("{shown}: {:?} is not an HTTP method", plan.method))?;
    let host = plan
        .tls_server_name
        .clone()
        .unwrap_or_else(|| target.to_string());
    let mut request = http::Request::builder()
        .method(method)
        .uri(&plan.path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "aloft-health-check");
    for (name, value) in &plan.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{shown}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{shown}: {e}"))?;
        let status = response.status();
        let mut body = Vec::new();
        let mut frames = response.into_body();
        while body.len() < OUTPUT_BODY_LIMIT {
            match frames.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        body.extend_from_slice(data);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        body.truncate(OUTPUT_BODY_LIMIT);
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        let output = if text.is_empty() {
            format!("{shown}: {status}")
        } else {
            format!("{shown}: {status}: {text}")
        };
        if status.is_success() {
            Ok(output)
        } else {
            Err(output)
        }
    };
    // The connection is driven alongside the exchange and ends when the exchange drops
    // its sender.
    let (result, _) = tokio::join!(exchange, connection);
    result
}

async fn tls_connect(
    plan: &Plan,
    address: Ipv6Addr,
    stream: Box<dyn Stream>,
) -> Result<tokio_rustls::client::TlsStream<Box<dyn Stream>>, String> {
    let name = match &plan.tls_server_name {
        Some(name) => rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| format!("tls_server_name {name:?}: {e}"))?,
        None => rustls::pki_types::ServerName::IpAddress(IpAddr::V6(address).into()),
    };
    let config = if plan.tls_skip_verify {
        insecure_config()?
    } else {
        verifying_config()?
    };
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with [{address}]:{}: {e}", plan.port))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

type ClientConfig = Result<Arc<rustls::ClientConfig>, String>;

/// Certificates checked against the Mozilla roots.
fn verifying_config() -> ClientConfig {
    static CONFIG: OnceLock<ClientConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("setting up TLS: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// `tls_skip_verify`: any certificate is accepted (handshake signatures still are checked).
fn insecure_config() -> ClientConfig {
    static CONFIG: OnceLock<ClientConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let verifier = Arc::new(AnyCertificate(provider.clone()));
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("setting up TLS: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use aloft_types::machine::{MachineHttpHeader, MachineService, Protocol};

    use super::*;

    fn duration(text: &str) -> Option<aloft_types::Duration> {
        text.parse().ok()
    }

    #[test]
    fn service_checks_are_numbered_across_services_and_top_level_ones_keep_their_names() {
        let http = MachineCheck {
            kind: Some(CheckType::Http),
            path: Some("/health".to_owned()),
            interval: duration("10s"),
            timeout: duration("500ms"),
            headers: vec![MachineHttpHeader {
                name: "X-Probe".to_owned(),
                values: vec!["a".to_owned(), "b".to_owned()],
            }],
            ..MachineCheck::default()
        };
        let tcp = MachineCheck {
            kind: Some(CheckType::Tcp),
            interval: duration("5m"),
            ..MachineCheck::default()
        };
        let service = |port, checks| MachineService {
            protocol: Protocol::Tcp,
            internal_port: port,
            autostop: None,
            autostart: None,
            min_machines_running: None,
            ports: vec![],
            checks,
            concurrency: None,
            force_instance_key: None,
            force_instance_description: None,
        };
        let mut config = MachineConfig {
            services: vec![service(8080, vec![http]), service(5432, vec![tcp])],
            ..MachineConfig::default()
        };
        config.checks.insert(
            "pg".to_owned(),
            MachineCheck {
                port: Some(5500),
                kind: Some(CheckType::Http),
                path: Some("/flycheck/pg".to_owned()),
                ..MachineCheck::default()
            },
        );
        config
            .checks
            .insert("portless".to_owned(), MachineCheck::default());
        let plans = plans(&config);
        let names: Vec<_> = plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "servicecheck-00-http-8080",
                "servicecheck-01-tcp-5432",
                "pg"
            ]
        );
        let first = &plans[0];
        assert_eq!(first.service, Some(0));
        assert_eq!(first.interval, Duration::from_secs(10));
        // Below the floor: raised to one second.
        assert_eq!(first.timeout, Duration::from_secs(1));
        assert_eq!(first.grace_period, DEFAULT_GRACE_PERIOD);
        assert_eq!(first.method, "GET");
        assert_eq!(
            first.headers,
            [
                ("X-Probe".to_owned(), "a".to_owned()),
                ("X-Probe".to_owned(), "b".to_owned())
            ]
        );
        // Above the ceiling: lowered to a minute.
        assert_eq!(plans[1].interval, Duration::from_secs(60));
        assert_eq!(plans[1].service, Some(1));
        assert_eq!(plans[2].service, None);
        assert_eq!(plans[2].port, 5500);
    }

    async fn serve_once(listener: tokio::net::TcpListener, response: &'static str) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 1024];
            let _ = socket.read(&mut buffer).await;
            let _ = socket.write_all(response.as_bytes()).await;
        }
    }

    fn loopback_plan(kind: CheckType, port: u16) -> Plan {
        let mut planned = plan(
            "c".to_owned(),
            Some(0),
            port,
            &MachineCheck {
                kind: Some(kind),
                path: Some("/health".to_owned()),
                ..MachineCheck::default()
            },
        );
        planned.timeout = Duration::from_secs(5);
        planned
    }

    #[tokio::test]
    async fn http_checks_pass_on_2xx_only_and_show_the_status_and_body() {
        for (response, expected) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                CheckStatus::Passing,
            ),
            (
                "HTTP/1.1 301 Moved Permanently\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n",
                CheckStatus::Critical,
            ),
            (
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown",
                CheckStatus::Critical,
            ),
        ] {
            let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = tokio::spawn(serve_once(listener, response));
            let (status, output) = probe(
                &loopback_plan(CheckType::Http, port),
                Ipv6Addr::LOCALHOST,
                &Route::Network(None),
            )
            .await;
            assert_eq!(status, expected, "{output}");
            assert!(
                output.starts_with(&format!("GET http://[::1]:{port}/health: ")),
                "{output}"
            );
            let _ = server.await;
        }
    }

    #[tokio::test]
    async fn tcp_checks_pass_when_something_listens_and_fail_when_nothing_does() {
        let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (status, _) = probe(
            &loopback_plan(CheckType::Tcp, port),
            Ipv6Addr::LOCALHOST,
            &Route::Network(None),
        )
        .await;
        assert_eq!(status, CheckStatus::Passing);
        drop(listener);
        let (status, output) = probe(
            &loopback_plan(CheckType::Tcp, port),
            Ipv6Addr::LOCALHOST,
            &Route::Network(None),
        )
        .await;
        assert_eq!(status, CheckStatus::Critical);
        assert!(output.contains("connecting to [::1]"), "{output}");
    }
}
