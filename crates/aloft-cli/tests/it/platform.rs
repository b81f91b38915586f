//! The CLI against a real platform: `aloftd server` in this process (real API on port 0,
//! SQLite, Docker Engine), driven through the `aloft` binary.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use aloft_testkit::{BUSYBOX_IMAGE, busybox_image, eventually};
use tokio_util::sync::CancellationToken;

use crate::text;

struct Platform {
    url: String,
    token: String,
    home: tempfile::TempDir,
    data: tempfile::TempDir,
    /// The private network's namespace; dropped after the server stops.
    _netns: aloft_testkit::TestNetns,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Platform {
    async fn start() -> Platform {
        busybox_image();
        let data = tempfile::tempdir().unwrap();
        let mut config = aloftd::Config {
            data_dir: data.path().to_owned(),
            ..aloftd::Config::default()
        };
        config.api.listen = "127.0.0.1:0".parse().unwrap();
        let netns = aloft_testkit::TestNetns::create("cli");
        config.network.namespace = Some(netns.path());
        config.network.dns_listen = "127.0.0.1:0".parse().unwrap();
        config.network.dns_upstream = Some(Vec::new());
        config.proxy.http_listen = "127.0.0.1:0".parse().unwrap();
        config.proxy.https_listen = "127.0.0.1:0".parse().unwrap();
        let stop = CancellationToken::new();
        let options = aloftd::ServerOptions {
            shutdown: Some(stop.clone()),
        };
        let server = tokio::spawn(aloftd::run_server(config, options));
        let url_file = data.path().join(aloftd::API_URL_FILE);
        let url = eventually("the server to listen", Duration::from_secs(30), || async {
            std::fs::read_to_string(&url_file)
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .await;
        let token = std::fs::read_to_string(data.path().join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        Platform {
            url,
            token,
            home: tempfile::tempdir().unwrap(),
            data,
            _netns: netns,
            stop,
            server: Some(server),
        }
    }

    /// Runs `aloft` with no credentials in the environment but those `auth login` saved.
    fn aloft(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_aloft"))
            .args(args)
            .env("ALOFT_CONFIG_DIR", self.home.path())
            .env_remove("ALOFT_API_URL")
            .env_remove("ALOFT_API_TOKEN")
            .env("NO_COLOR", "1")
            .current_dir(self.home.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.aloft(args);
        assert!(
            output.status.success(),
            "aloft {args:?} failed: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
        }
        remove_host_containers(self.data.path());
    }
}

fn remove_host_containers(data: &Path) {
    if let Ok(host) = std::fs::read_to_string(data.join(aloftd::HOST_ID_FILE)) {
        aloft_testkit::remove_containers_labelled("dev.aloft.host", host.trim());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_runs_machines_secrets_volumes_and_tokens() {
    let platform = Platform::start().await;
    let p = &platform;
    let login = p.aloft(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    assert!(login.status.success(), "{}", text(&login.stderr));
    assert!(p.ok(&["auth", "whoami"]).contains("org token"));

    p.ok(&["apps", "create", "demo"]);
    assert!(p.ok(&["apps", "list"]).contains("demo"));

    p.ok(&[
        "secrets",
        "set",
        "-a",
        "demo",
        "GREETING=hello from a secret",
    ]);
    let secrets: serde_json::Value =
        serde_json::from_str(&p.ok(&["secrets", "list", "-a", "demo", "--json"])).unwrap();
    assert_eq!(secrets[0]["name"], "GREETING");
    assert!(
        !secrets.to_string().contains("hello from a secret"),
        "values are never shown"
    );

    let volume = p.ok(&["volumes", "create", "data", "--size", "1", "-a", "demo"]);
    assert!(volume.contains("Name       = data"), "{volume}");

    let id = p.ok(&[
        "machine",
        "run",
        BUSYBOX_IMAGE,
        "-a",
        "demo",
        "--name",
        "web",
        "--env",
        "MODE=test",
        "--volume",
        "data:/data",
        "--restart",
        "on-failure",
        "--",
        "sh",
        "-c",
        "while true; do sleep 1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 14, "machine run prints the id: {id:?}");
    assert_eq!(
        p.ok(&["machine", "exec", id, "echo hi", "-a", "demo"]),
        "hi\n"
    );
    assert_eq!(
        p.ok(&[
            "machine",
            "exec",
            id,
            "sh -c 'echo $MODE $GREETING'",
            "-a",
            "demo"
        ]),
        "test hello from a secret\n"
    );
    p.ok(&[
        "machine",
        "exec",
        id,
        "sh -c 'echo persisted > /data/file'",
        "-a",
        "demo",
    ]);
    let failed = p.aloft(&[
        "machine",
        "exec",
        id,
        "sh -c 'echo oops >&2; exit 3'",
        "-a",
        "demo",
    ]);
    assert_eq!(
        failed.status.code(),
        Some(3),
        "exec exits with the command's code"
    );
    assert_eq!(text(&failed.stderr), "oops\n");

    let machines: serde_json::Value =
        serde_json::from_str(&p.ok(&["machine", "list", "-a", "demo", "--json"])).unwrap();
    assert_eq!(machines[0]["id"], id);
    assert_eq!(machines[0]["state"], "started");
    assert!(p.ok(&["machine", "list", "-a", "demo"]).contains("started"));

    // The private network: the machine's address, and DNS as the app's machines see it.
    let ip = machines[0]["private_ip"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("fdaa:"), "{ip}");
    let ips = p.ok(&["ips", "private", "-a", "demo"]);
    assert!(
        ips.contains(id) && ips.contains(&ip) && ips.contains("REGION"),
        "{ips}"
    );
    // Public addresses: a dedicated IPv4 from the pool, listed, released.
    let allocated = p.ok(&["ips", "allocate-v4", "-a", "demo", "--json"]);
    let allocated: serde_json::Value = serde_json::from_str(&allocated).unwrap();
    let address = allocated["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("127.77."), "{allocated}");
    let list = p.ok(&["ips", "list", "-a", "demo"]);
    assert!(
        list.contains("VERSION") && list.contains(&address) && list.contains("v4"),
        "{list}"
    );
    p.ok(&["ips", "release", &address, "-a", "demo"]);
    assert!(!p.ok(&["ips", "list", "-a", "demo"]).contains(&address));
    let again = p.aloft(&["ips", "release", &address, "-a", "demo"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("not found"),
        "{}",
        text(&again.stderr)
    );

    // Own hostnames.
    let added = p.ok(&["certs", "add", "www.demo.test", "-a", "demo"]);
    assert!(added.is_empty(), "status goes to stderr: {added}");
    let certs = p.ok(&["certs", "list", "-a", "demo"]);
    assert!(
        certs.contains("HOST NAME") && certs.contains("www.demo.test") && certs.contains("local"),
        "{certs}"
    );
    p.ok(&["certs", "remove", "www.demo.test", "-a", "demo"]);
    assert!(
        !p.ok(&["certs", "list", "-a", "demo"])
            .contains("www.demo.test")
    );

    let dig = p.ok(&["dig", "demo.internal", "-a", "demo"]);
    assert!(
        dig.contains("status NOERROR") && dig.contains(&format!("AAAA\t{ip}")),
        "{dig}"
    );
    let dig = p.ok(&["dig", "txt", "vms.demo.internal", "-a", "demo"]);
    assert!(dig.contains(&format!("{id} local")), "{dig}");
    let ca = p.ok(&["certs", "ca"]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(
        ca,
        std::fs::read_to_string(p.data.path().join("tls").join("ca.crt")).unwrap()
    );
    let dig: serde_json::Value =
        serde_json::from_str(&p.ok(&["dig", "nope.internal", "-a", "demo", "--json"])).unwrap();
    assert_eq!(dig["status"], "NXDOMAIN");
    assert_eq!(dig["authority"][0]["type"], "SOA");

    p.ok(&["machine", "stop", id, "-a", "demo"]);
    assert!(
        p.ok(&["machine", "status", id, "-a", "demo"])
            .contains("State      = stopped")
    );
    p.ok(&["machine", "start", id, "-a", "demo"]);
    assert_eq!(
        p.ok(&["machine", "exec", id, "cat /data/file", "-a", "demo"]),
        "persisted\n"
    );
    p.ok(&["machine", "cordon", id, "-a", "demo"]);
    assert!(
        p.ok(&["machine", "status", id, "-a", "demo"])
            .contains("Cordoned   = true")
    );

    let refused = p.aloft(&["machine", "destroy", id, "-a", "demo"]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(
        text(&refused.stderr).contains("force=true"),
        "{}",
        text(&refused.stderr)
    );
    p.ok(&["machine", "destroy", id, "--force", "-a", "demo"]);

    let token = p.ok(&["tokens", "create", "readonly", "--name", "ci"]);
    assert!(
        token.starts_with("aloft_") && token.trim().lines().count() == 1,
        "the token alone on stdout: {token:?}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&p.ok(&["tokens", "list", "--json"])).unwrap();
    let ci = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap();
    p.ok(&["tokens", "revoke", ci["id"].as_str().unwrap()]);
    assert!(p.ok(&["orgs", "list"]).contains("personal"));

    let missing = p.aloft(&["machine", "list"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(
        text(&missing.stderr).contains("which app?"),
        "{}",
        text(&missing.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_lists_health_checks() {
    use aloft_types::machine::{
        CheckType, MachineCheck, MachineConfig, MachineInit, MachineService, Protocol,
    };

    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    p.ok(&["apps", "create", "probed"]);
    let client = aloft_client::Client::new(&p.url, &p.token);
    let config = MachineConfig {
        image: BUSYBOX_IMAGE.to_owned(),
        init: MachineInit {
            cmd: vec![
                "nc".into(),
                "-ll".into(),
                "-p".into(),
                "8080".into(),
                "-e".into(),
                "cat".into(),
            ],
            ..MachineInit::default()
        },
        services: vec![MachineService {
            protocol: Protocol::Tcp,
            internal_port: 8080,
            autostop: None,
            autostart: None,
            min_machines_running: None,
            ports: vec![],
            checks: vec![MachineCheck {
                kind: Some(CheckType::Tcp),
                interval: "1s".parse().ok(),
                ..MachineCheck::default()
            }],
            concurrency: None,
            force_instance_key: None,
            force_instance_description: None,
        }],
        ..MachineConfig::default()
    };
    let machine = client
        .create_machine("probed", &aloft_types::api::MachineRequest::new(config))
        .await
        .unwrap();

    let table = eventually("the check to pass", Duration::from_secs(60), || async {
        let table = p.ok(&["checks", "list", "-a", "probed"]);
        table.contains("passing").then_some(table)
    })
    .await;
    assert!(table.starts_with("Health Checks for probed"), "{table}");
    for expected in [
        "NAME",
        "STATUS",
        "MACHINE",
        "LAST UPDATED",
        "OUTPUT",
        "servicecheck-00-tcp-8080",
        &machine.id,
        "connected to [",
    ] {
        assert!(table.contains(expected), "{expected:?} in {table}");
    }
    // The machine list counts them; the machine's status lists them.
    let machines = p.ok(&["machine", "list", "-a", "probed"]);
    assert!(
        machines.contains("CHECKS") && machines.contains("1/1"),
        "{machines}"
    );
    let status = p.ok(&["machine", "status", &machine.id, "-a", "probed"]);
    assert!(
        status.contains("Checks") && status.contains("servicecheck-00-tcp-8080"),
        "{status}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&p.ok(&["checks", "list", "-a", "probed", "--json"])).unwrap();
    assert_eq!(listed[0]["machine"], machine.id.as_str());
    assert_eq!(listed[0]["name"], "servicecheck-00-tcp-8080");
    assert_eq!(listed[0]["status"], "passing");

    let unknown = p.aloft(&[
        "checks",
        "list",
        "-a",
        "probed",
        "--machine",
        "0123456789abcd",
    ]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("app probed has no machine 0123456789abcd"),
        "{}",
        text(&unknown.stderr)
    );
}

/// The seed's staging fly.toml, unchanged, deployed with `--image` of the test app: the
/// release goes live and serves HTTPS through the proxy; a release that fails its health
/// check makes `aloft deploy` exit non-zero with the check's output, and is rolled back.
#[tokio::test(flavor = "multi_thread")]
async fn the_seed_deploys_unchanged_and_a_failing_release_is_rolled_back() {
    let image = aloft_testkit::testapp_image();
    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../aloft-config/tests/data/valid/01-seed-terrateam-staging.toml"
    );
    std::fs::copy(seed, p.home.path().join("fly.toml")).unwrap();
    p.ok(&["apps", "create", "terrateam-app-staging"]);

    let deployed = p.aloft(&["deploy", "--image", &image]);
    let said = format!("{}{}", text(&deployed.stdout), text(&deployed.stderr));
    assert!(deployed.status.success(), "{said}");
    assert!(
        said.contains("release v1 of terrateam-app-staging is live"),
        "{said}"
    );
    assert!(said.contains("healthy"), "progress lines: {said}");

    // HTTPS through the proxy, with the local CA.
    let ca = p.home.path().join("ca.pem");
    std::fs::write(&ca, p.ok(&["certs", "ca"])).unwrap();
    let https: std::net::SocketAddr =
        std::fs::read_to_string(p.data.path().join(aloftd::HTTPS_ADDR_FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let name = "terrateam-app-staging.aloft.localhost";
    let curl = |path: &str| {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .arg("--resolve")
            .arg(format!("{name}:{}:127.0.0.1", https.port()))
            .arg(format!("https://{name}:{}{path}", https.port()))
            .output()
            .unwrap();
        text(&output.stdout)
    };
    let body = curl("/");
    assert!(body.contains("hello from machine"), "{body}");

    let failed = p.aloft(&[
        "deploy",
        "--image",
        &image,
        "-e",
        "TESTAPP_HEALTH=fail",
        "--wait-timeout",
        "25s",
    ]);
    let said = format!("{}{}", text(&failed.stdout), text(&failed.stderr));
    assert!(!failed.status.success(), "{said}");
    assert!(said.contains("rolled_back"), "{said}");
    assert!(
        said.contains("failing on purpose (TESTAPP_HEALTH=fail)"),
        "the failing check's output: {said}"
    );
    let body = curl("/");
    assert!(
        body.contains("hello from machine"),
        "the old release serves: {body}"
    );

    let releases: serde_json::Value = serde_json::from_str(&p.ok(&["releases", "--json"])).unwrap();
    let statuses: Vec<(i64, String)> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [(2, "failed".to_owned()), (1, "complete".to_owned())]
    );
    let table = p.ok(&["releases"]);
    assert!(table.contains("VERSION") && table.contains("v2"), "{table}");
}
