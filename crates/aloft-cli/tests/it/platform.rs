//! The CLI against a real platform: `aloftd server` in this process (real API on port 0,
//! SQLite, Docker Engine), driven through the `aloft` binary.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use aloft_testkit::{BUSYBOX_IMAGE, busybox_image, eventually};
use aloft_testplatform::ServerPlatform;

use crate::text;

/// `aloftd server` ([`ServerPlatform`]: its `url`, `token` and `data` through `Deref`)
/// and a home directory for the CLI's saved login.
pub(crate) struct Platform {
    server: ServerPlatform,
    pub(crate) home: tempfile::TempDir,
}

impl std::ops::Deref for Platform {
    type Target = ServerPlatform;

    fn deref(&self) -> &ServerPlatform {
        &self.server
    }
}

impl Platform {
    pub(crate) async fn start() -> Platform {
        Platform::start_with(|_| {}).await
    }

    /// Starts the platform with `adjust` applied to its configuration. Deploys watch each
    /// machine they start for 3 s, not the default 10 (`[deploys] smoke_check_seconds`):
    /// a crash at start still shows within it, and the suite's deploys take minutes less.
    pub(crate) async fn start_with(adjust: impl FnOnce(&mut aloftd::Config)) -> Platform {
        busybox_image();
        let adjust = |config: &mut aloftd::Config| {
            config.deploys.smoke_check_seconds = 3;
            adjust(config);
        };
        Platform {
            server: ServerPlatform::start("cli", adjust).await,
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `aloft ARGS` in `dir`, with no credentials in the environment but those
    /// `auth login` saved.
    pub(crate) fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_aloft"));
        command
            .args(args)
            .env("ALOFT_CONFIG_DIR", self.home.path())
            .env_remove("ALOFT_API_URL")
            .env_remove("ALOFT_API_TOKEN")
            .env("NO_COLOR", "1")
            .current_dir(dir);
        command
    }

    /// Runs `aloft` in the home directory.
    pub(crate) fn aloft(&self, args: &[&str]) -> Output {
        self.command(self.home.path(), args).output().unwrap()
    }

    /// Runs `aloft` in `dir`.
    pub(crate) fn aloft_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.command(dir, args).output().unwrap()
    }

    /// Runs `aloft ARGS` with `input` on its stdin, written while its output is read.
    pub(crate) fn aloft_with_input(&self, args: &[&str], input: Vec<u8>) -> Output {
        use std::io::Write as _;
        let mut child = self
            .command(self.home.path(), args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeding = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().unwrap();
        feeding.join().unwrap().unwrap();
        output
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
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

impl Platform {
    /// A started busybox machine of `app` that idles; returns its id.
    pub(crate) fn idle_machine(&self, app: &str) -> String {
        self.ok(&[
            "machine",
            "run",
            BUSYBOX_IMAGE,
            "-a",
            app,
            "--",
            "sh",
            "-c",
            "while true; do sleep 1; done",
        ])
        .trim()
        .to_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_runs_machines_secrets_volumes_and_tokens() {
    let platform = Platform::start().await;
    let p = &platform;
    let login = p.aloft(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    assert!(login.status.success(), "{}", text(&login.stderr));
    // The first start's token is the platform operator's.
    assert!(p.ok(&["auth", "whoami"]).contains("operator token"));

    // The platform: this one host's region, and Fly's sizes.
    let regions = p.ok(&["platform", "regions"]);
    assert!(
        regions.contains("NAME") && regions.contains("local *"),
        "{regions}"
    );
    let regions: serde_json::Value =
        serde_json::from_str(&p.ok(&["platform", "regions", "--json"])).unwrap();
    assert_eq!(regions["Nearest"], "local", "{regions}");
    assert!(
        regions["Regions"][0]["capacity"].as_i64().unwrap() > 0,
        "{regions}"
    );
    let hosts = p.ok(&["platform", "hosts"]);
    assert!(
        hosts.contains("LAST HEARTBEAT") && hosts.contains(" local "),
        "{hosts}"
    );
    // The operator cordons the host: nothing new is placed, and the refusal says why.
    let listed: serde_json::Value =
        serde_json::from_str(&p.ok(&["platform", "hosts", "list", "--json"])).unwrap();
    assert_eq!(listed["hosts"][0]["state"], "up", "{listed}");
    let host = listed["hosts"][0]["id"].as_str().unwrap().to_owned();
    let cordoned = p.ok(&["platform", "hosts", "cordon", &host]);
    assert!(
        cordoned.contains(&format!("host {host} is cordoned")),
        "{cordoned}"
    );
    p.ok(&["apps", "create", "fenced"]);
    let refused = p.aloft(&[
        "machine",
        "run",
        aloft_testkit::BUSYBOX_IMAGE,
        "-a",
        "fenced",
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains(&format!("none is up ({host} is cordoned)")),
        "{}",
        text(&refused.stderr)
    );
    let uncordoned = p.ok(&["platform", "hosts", "uncordon", &host]);
    assert!(
        uncordoned.contains(&format!("host {host} is up")),
        "{uncordoned}"
    );
    assert_eq!(p.ok(&["regions", "list"]), p.ok(&["platform", "regions"]));
    let sizes = p.ok(&["platform", "vm-sizes"]);
    assert!(
        sizes.contains("shared-cpu-1x") && sizes.contains("256 MB"),
        "{sizes}"
    );

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

    // A machine that crashes as it starts, or whose image cannot be had, is no success:
    // `machine run` fails at once with the reason (flyctl's smoke checks).
    let image = aloft_testkit::testapp_image();
    let crashed = p.aloft(&[
        "machine",
        "run",
        &image,
        "-a",
        "demo",
        "-e",
        "TESTAPP_CRASH=2",
    ]);
    let said = format!("{}{}", text(&crashed.stdout), text(&crashed.stderr));
    assert!(!crashed.status.success(), "{said}");
    assert!(said.contains("exited with code 2"), "{said}");
    assert!(
        said.contains("cannot open the database, exiting 2"),
        "{said}"
    );
    // A registry on a closed loopback port: the pull fails without leaving the machine.
    let missing = p.aloft(&["machine", "run", "127.0.0.1:9/nosuch/image:1", "-a", "demo"]);
    let said = format!("{}{}", text(&missing.stdout), text(&missing.stderr));
    assert!(!missing.status.success(), "{said}");
    assert!(said.contains("failed to launch"), "{said}");
    assert!(
        said.contains("nosuch/image"),
        "the pull error names the image: {said}"
    );
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

    // Own hostnames: ACME needs a directory (none on this loopback platform), the
    // edge's local CA answers at once.
    let acme = p.aloft(&["certs", "add", "www.demo.test", "-a", "demo"]);
    assert!(!acme.status.success());
    assert!(
        text(&acme.stderr).contains("no ACME directory is configured"),
        "{}",
        text(&acme.stderr)
    );
    let added = p.ok(&["certs", "add", "www.demo.test", "--local", "-a", "demo"]);
    assert!(
        added.contains("Status                = active") && added.contains("local"),
        "{added}"
    );
    let shown = p.ok(&["certs", "show", "www.demo.test", "-a", "demo"]);
    assert!(
        shown.contains("Hostname              = www.demo.test"),
        "{shown}"
    );
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
    assert_eq!(missing.status.code(), Some(2), "a usage error");
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
    assert!(said.contains("failed and was rolled back"), "{said}");
    assert!(
        said.contains("failing on purpose (TESTAPP_HEALTH=fail)"),
        "the failing check's output: {said}"
    );
    // Its first line only: the error page after it is not dumped into the terminal.
    assert!(!said.contains("the rest of a long error page"), "{said}");
    let body = curl("/");
    assert!(
        body.contains("hello from machine"),
        "the old release serves: {body}"
    );

    // An image that crashes as it starts fails the deploy at once (smoke checks), long
    // before the 5-minute wait timeout, with the exit code and what the machine printed;
    // the old release keeps serving.
    let started = std::time::Instant::now();
    let crashed = p.aloft(&["deploy", "--image", &image, "-e", "TESTAPP_CRASH=3"]);
    let took = started.elapsed();
    let said = format!("{}{}", text(&crashed.stdout), text(&crashed.stderr));
    assert!(!crashed.status.success(), "{said}");
    assert!(said.contains("exited with code 3"), "the exit code: {said}");
    assert!(
        said.contains("cannot open the database, exiting 3"),
        "the crash's log lines: {said}"
    );
    assert!(said.contains("failed and was rolled back"), "{said}");
    assert!(
        took < std::time::Duration::from_secs(120),
        "failed fast, not at the wait timeout: {took:?}"
    );
    eprintln!("a crashing release failed its deploy in {took:?}");
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
        [
            (3, "failed".to_owned()),
            (2, "failed".to_owned()),
            (1, "complete".to_owned())
        ]
    );
    let table = p.ok(&["releases"]);
    assert!(table.contains("VERSION") && table.contains("v2"), "{table}");
}

/// The releases of the app in the current directory's fly.toml, newest first:
/// (version, status, description).
fn releases_of(p: &Platform) -> Vec<(i64, String, String)> {
    let releases: serde_json::Value = serde_json::from_str(&p.ok(&["releases", "--json"])).unwrap();
    releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
                r["description"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `aloft status --json`.
fn status_of(p: &Platform) -> serde_json::Value {
    serde_json::from_str(&p.ok(&["status", "--json"])).unwrap()
}

/// An app with a Dockerfile and no image: `aloft deploy` sends the context (without what
/// `.dockerignore` leaves out), the server builds it with `[build]` args, target and
/// `--build-arg`, streaming the builder's output, and the release runs the image by id.
/// Then: `status`, `releases rollback`, `scale count|show|memory`, `secrets set --stage` and
/// `secrets deploy`, and a deploy whose CLI is killed goes on to the end.
#[tokio::test(flavor = "multi_thread")]
async fn a_dockerfile_app_builds_deploys_scales_rolls_back_and_survives_a_killed_cli() {
    let testapp = aloft_testkit::testapp_image();
    let busybox = busybox_image();
    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    let dir = p.home.path();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {busybox} AS check\nCOPY . /context\n\
             RUN --mount=type=cache,target=/root/.cache test -e /context/page.txt && test ! -e /context/secret.txt && test ! -e /context/build/junk \
             && touch /checked\n\
             FROM {testapp} AS app\nCOPY --from=check /checked /checked\n\
             ARG VERSION=0\nENV TESTAPP_VERSION=$VERSION\n\
             FROM scratch AS unused\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join(".dockerignore"), "secret.txt\nbuild\n").unwrap();
    std::fs::write(dir.join("page.txt"), "in the context").unwrap();
    std::fs::write(dir.join("secret.txt"), "left out").unwrap();
    std::fs::create_dir_all(dir.join("build")).unwrap();
    std::fs::write(dir.join("build/junk"), "left out").unwrap();
    std::fs::write(
        dir.join("fly.toml"),
        "app = \"built\"\n\n[build]\nbuild-target = \"app\"\n\n[build.args]\nVERSION = \"5\"\n\n\
         [http_service]\ninternal_port = 8080\n\n[[http_service.checks]]\ninterval = \"1s\"\n\
         grace_period = \"1s\"\ntimeout = \"1s\"\nmethod = \"GET\"\npath = \"/health\"\n",
    )
    .unwrap();
    p.ok(&["apps", "create", "built"]);
    let http: std::net::SocketAddr =
        std::fs::read_to_string(p.data.path().join(aloftd::HTTP_ADDR_FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let served = || async move {
        let output = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-H",
                "host: built.aloft.localhost",
            ])
            .arg(format!("http://{http}/"))
            .output()
            .unwrap();
        text(&output.stdout)
    };
    let serving = |version: &'static str| async move {
        eventually(
            &format!("version {version} to serve"),
            Duration::from_secs(30),
            || async move {
                served()
                    .await
                    .contains(&format!("(version {version})"))
                    .then_some(())
            },
        )
        .await
    };

    let deployed = p.aloft(&["deploy", "--build-arg", "VERSION=7"]);
    let said = format!("{}{}", text(&deployed.stdout), text(&deployed.stderr));
    assert!(deployed.status.success(), "{said}");
    // BuildKit's steps (it builds only the stages the target needs: app copies from
    // check, so the context check runs).
    assert!(
        said.contains("RUN --mount=type=cache,target=/root/.cache test -e /context/page.txt")
            && said.contains(" DONE"),
        "the builder's output: {said}"
    );
    assert!(said.contains("built image sha256:"), "{said}");
    serving("7").await;
    let releases: serde_json::Value = serde_json::from_str(&p.ok(&["releases", "--json"])).unwrap();
    assert!(
        releases[0]["image"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "the release names the image by id: {releases}"
    );
    // Tables show the id's first 12 digits, as docker does, not all 71 characters.
    let id = releases[0]["image"].as_str().unwrap();
    let table = p.ok(&["releases"]);
    assert!(
        table.contains(&id["sha256:".len().."sha256:".len() + 12]) && !table.contains(id),
        "{table}"
    );
    let listed = p.ok(&["machine", "list"]);
    assert!(!listed.contains("sha256:"), "{listed}");
    // An empty listing says so instead of printing headers alone.
    assert_eq!(p.ok(&["secrets", "list"]), "(none)\n");
    let status = status_of(p);
    assert_eq!(status["release"]["version"], 1, "{status}");
    let machines = status["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 2, "{status}");
    for machine in machines {
        assert_eq!(machine["release"], 1, "{status}");
        assert_eq!(machine["state"], "started", "{status}");
    }
    assert!(p.ok(&["status"]).contains("VERSION"));

    // A failing build says why and deploys nothing.
    let broken = p.aloft(&["deploy", "--build-target", "nosuchstage"]);
    let said = format!("{}{}", text(&broken.stdout), text(&broken.stderr));
    assert!(!broken.status.success(), "{said}");
    assert!(said.contains("the build failed"), "{said}");
    assert_eq!(releases_of(p).len(), 1);

    p.ok(&["deploy", "--build-arg", "VERSION=8"]);
    serving("8").await;
    let rolled = p.aloft(&["releases", "rollback"]);
    let said = format!("{}{}", text(&rolled.stdout), text(&rolled.stderr));
    assert!(rolled.status.success(), "{said}");
    serving("7").await;
    let releases = releases_of(p);
    assert_eq!(releases[0].0, 3);
    assert_eq!(releases[0].2, "rollback to v1");

    // Scale: count up and down, show, memory (a rolling deploy).
    p.ok(&["scale", "count", "3"]);
    assert_eq!(status_of(p)["machines"].as_array().unwrap().len(), 3);
    let shown: serde_json::Value =
        serde_json::from_str(&p.ok(&["scale", "show", "--json"])).unwrap();
    assert_eq!(shown[0]["count"], 3, "{shown}");
    p.ok(&["scale", "count", "1"]);
    let live = eventually("one machine left", Duration::from_secs(60), || async {
        let status = status_of(p);
        let machines = status["machines"].as_array().unwrap().clone();
        (machines.len() == 1).then_some(machines)
    })
    .await;
    let id = live[0]["id"].as_str().unwrap().to_owned();
    p.ok(&["scale", "memory", "512"]);
    let machine: serde_json::Value =
        serde_json::from_str(&p.ok(&["machine", "status", &id, "--json"])).unwrap();
    assert_eq!(machine["config"]["guest"]["memory_mb"], 512, "{machine}");
    serving("7").await;

    // Secrets: staged ones change nothing until `secrets deploy`.
    let before = releases_of(p).len();
    p.ok(&["secrets", "set", "--stage", "API_KEY=one"]);
    assert_eq!(releases_of(p).len(), before, "staged: no release");
    p.ok(&["secrets", "deploy"]);
    let releases = releases_of(p);
    assert_eq!(releases.len(), before + 1);
    assert!(releases[0].2.contains("apply secrets"), "{releases:?}");
    assert_eq!(releases[0].1, "complete");
    p.ok(&["secrets", "set", "API_KEY=two"]);
    assert_eq!(
        releases_of(p).len(),
        before + 2,
        "set without --stage restarts"
    );

    // The CLI killed in the middle of a deploy: the deployment goes on without it.
    let mut child = p
        .command(p.home.path(), &["deploy", "--build-arg", "VERSION=9"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let started = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut seen = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("deploying release") {
                return Ok(seen);
            }
        }
        Err(seen)
    });
    let seen = tokio::task::spawn_blocking(move || started.join().unwrap())
        .await
        .unwrap();
    if let Err(seen) = seen {
        panic!("the deploy never started: {seen}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let version = before as i64 + 3;
    eventually(
        "the orphaned deployment to complete",
        Duration::from_secs(120),
        || async {
            releases_of(p)
                .into_iter()
                .find(|r| r.0 == version && r.1 == "complete")
        },
    )
    .await;
    serving("9").await;

    // Destroying the app removes the images its deploys built.
    let images = || {
        let output = Command::new("docker")
            .args(["images", "-q", "aloft/built"])
            .output()
            .unwrap();
        text(&output.stdout)
    };
    assert!(!images().trim().is_empty(), "the builds are there first");
    p.ok(&["apps", "destroy", "built", "--yes"]);
    assert_eq!(images().trim(), "", "the app's builds are gone");
}

/// `[processes]` groups get machines of their own: 2 for a group with services, 1 for a
/// group with a `[[mounts]]` volume, which the first deploy creates (`initial_size`) and
/// later deploys keep; `scale count` gives a new machine a volume of its own.
#[tokio::test(flavor = "multi_thread")]
async fn process_groups_get_their_own_machines_and_mounts_their_volumes() {
    let image = aloft_testkit::testapp_image();
    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    std::fs::write(
        p.home.path().join("fly.toml"),
        "app = \"groups\"\n\n[processes]\nweb = \"/aloft-testapp\"\nworker = \"/aloft-testapp\"\n\n\
         [[mounts]]\nsource = \"data\"\ndestination = \"/data\"\ninitial_size = \"2gb\"\nsnapshot_retention = 10\nscheduled_snapshots = false\nprocesses = [\"worker\"]\n\n\
         [http_service]\ninternal_port = 8080\nprocesses = [\"web\"]\n\n[[http_service.checks]]\n\
         interval = \"1s\"\ngrace_period = \"1s\"\ntimeout = \"1s\"\nmethod = \"GET\"\npath = \"/health\"\n",
    )
    .unwrap();
    p.ok(&["apps", "create", "groups"]);
    let deployed = p.aloft(&["deploy", "--image", &image]);
    let said = format!("{}{}", text(&deployed.stdout), text(&deployed.stderr));
    assert!(deployed.status.success(), "{said}");
    let groups = |p: &Platform| {
        let status = status_of(p);
        let mut seen: Vec<(String, String)> = status["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["process_group"].as_str().unwrap().to_owned(),
                    m["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        seen.sort();
        seen
    };
    let first = groups(p);
    let kinds: Vec<&str> = first.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(kinds, ["web", "web", "worker"], "{first:?}");
    let volumes = || -> serde_json::Value {
        serde_json::from_str(&p.ok(&["volumes", "list", "--json"])).unwrap()
    };
    let listed = volumes();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "data");
    assert_eq!(listed[0]["size_gb"], 2, "initial_size: {listed:?}");
    assert_eq!(
        (
            &listed[0]["snapshot_retention"],
            &listed[0]["auto_backup_enabled"]
        ),
        (&serde_json::json!(10), &serde_json::json!(false)),
        "[mounts] snapshot_retention and scheduled_snapshots: {listed:?}"
    );
    let worker = &first[2].1;
    assert_eq!(listed[0]["attached_machine_id"], worker.as_str());

    // A second deploy updates the worker in place: same machine, same volume.
    p.ok(&["deploy", "--image", &image, "-e", "SECOND=1"]);
    assert_eq!(groups(p), first);
    let again = volumes();
    assert_eq!(again.as_array().unwrap().len(), 1, "{again}");
    assert_eq!(again[0]["id"], listed[0]["id"]);
    let machine: serde_json::Value =
        serde_json::from_str(&p.ok(&["machine", "status", worker, "--json"])).unwrap();
    assert_eq!(machine["config"]["env"]["SECOND"], "1", "{machine}");

    // New machines next to old ones would need volumes of their own: refused.
    let canary = p.aloft(&["deploy", "--image", &image, "--strategy", "canary"]);
    let said = format!("{}{}", text(&canary.stdout), text(&canary.stderr));
    assert!(!canary.status.success(), "{said}");
    assert!(said.contains("cannot be used with volumes"), "{said}");

    // A second worker gets a second volume.
    p.ok(&["scale", "count", "2", "--process-group", "worker"]);
    let after = volumes();
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after
            .iter()
            .all(|v| v["name"] == "data" && !v["attached_machine_id"].is_null())
    );
    assert_eq!(groups(p).iter().filter(|(g, _)| g == "worker").count(), 2);
}

/// `aloft launch` in a directory with a Dockerfile creates the app named after the
/// directory, writes a valid fly.toml with the `EXPOSE`d port and deploys it; in a
/// directory that has a fly.toml it refuses; without a Dockerfile it asks for `--image`.
#[tokio::test(flavor = "multi_thread")]
async fn launch_makes_an_app_of_a_directory() {
    let image = aloft_testkit::testapp_image();
    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    let dir = p.home.path().join("My Site");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {image}\nENV PORT=9000 TESTAPP_VERSION=launched\nEXPOSE 9000\n"),
    )
    .unwrap();
    let launched = p.aloft_in(&dir, &["launch", "--region", "local"]);
    let said = format!("{}{}", text(&launched.stdout), text(&launched.stderr));
    assert!(launched.status.success(), "{said}");
    assert!(said.contains("release v1 of my-site is live"), "{said}");
    let written = std::fs::read_to_string(dir.join("fly.toml")).unwrap();
    assert!(written.contains("app = \"my-site\""), "{written}");
    assert!(written.contains("internal_port = 9000"), "{written}");
    let valid = p.aloft_in(&dir, &["config", "validate"]);
    assert!(valid.status.success(), "{}", text(&valid.stderr));
    let http: std::net::SocketAddr =
        std::fs::read_to_string(p.data.path().join(aloftd::HTTP_ADDR_FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    // force_https: the HTTPS listener answers; plain HTTP redirects.
    let redirect = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(["-H", "host: my-site.aloft.localhost"])
        .arg(format!("http://{http}/"))
        .output()
        .unwrap();
    assert_eq!(text(&redirect.stdout), "301");
    let https: std::net::SocketAddr =
        std::fs::read_to_string(p.data.path().join(aloftd::HTTPS_ADDR_FILE))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let body = Command::new("curl")
        .args(["-sSk", "--max-time", "10", "--resolve"])
        .arg(format!(
            "my-site.aloft.localhost:{}:127.0.0.1",
            https.port()
        ))
        .arg(format!("https://my-site.aloft.localhost:{}/", https.port()))
        .output()
        .unwrap();
    assert!(
        text(&body.stdout).contains("(version launched)"),
        "{}{}",
        text(&body.stdout),
        text(&body.stderr)
    );
    // The URL launch printed answers, and `curl -L` from the HTTP listener follows the
    // redirect to it with the HTTPS listener's port kept (neither port is 80 or 443).
    let url = format!("https://my-site.aloft.localhost:{}/", https.port());
    assert!(said.contains(&format!("visit your app at {url}")), "{said}");
    let ca = p.data.path().join(aloftd::TLS_DIR).join("ca.crt");
    let followed = Command::new("curl")
        .args(["-sSL", "--max-time", "10", "--cacert"])
        .arg(&ca)
        .args(["-w", "\n%{http_code} %{url_effective}"])
        .args(["--resolve"])
        .arg(format!("my-site.aloft.localhost:{}:127.0.0.1", http.port()))
        .args(["--resolve"])
        .arg(format!(
            "my-site.aloft.localhost:{}:127.0.0.1",
            https.port()
        ))
        .arg(format!("http://my-site.aloft.localhost:{}/", http.port()))
        .output()
        .unwrap();
    let answer = text(&followed.stdout);
    assert!(
        answer.contains("(version launched)") && answer.ends_with(&format!("200 {url}")),
        "{answer}{}",
        text(&followed.stderr)
    );
    // `status` shows it; `open` prints it and hands it to $BROWSER.
    let status = p.aloft_in(&dir, &["status"]);
    assert!(
        text(&status.stdout).contains(&format!("URL:     {url}")),
        "{}",
        text(&status.stdout)
    );
    let opened_file = p.home.path().join("opened");
    let browser = p.home.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\necho \"$1\" > {}\n", opened_file.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        &browser,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let opened = p
        .command(&dir, &["open", "/admin"])
        .env("BROWSER", &browser)
        .output()
        .unwrap();
    assert!(opened.status.success(), "{}", text(&opened.stderr));
    assert_eq!(text(&opened.stdout), format!("{url}admin\n"));
    assert_eq!(
        std::fs::read_to_string(&opened_file).unwrap(),
        format!("{url}admin\n")
    );
    // Without a browser it says how to get one, and still prints the URL.
    let printed = p
        .command(&dir, &["open"])
        .env_remove("BROWSER")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    assert_eq!(text(&printed.stdout), format!("{url}\n"));
    assert!(
        text(&printed.stderr).contains("set BROWSER"),
        "{}",
        text(&printed.stderr)
    );
    // `dashboard` (and `dashboard metrics`): the web dashboard's page of the app, at the
    // API's address; without a session the page sends the browser to sign in.
    for (args, path) in [
        (&["dashboard"][..], "/apps/my-site"),
        (&["dashboard", "metrics"][..], "/apps/my-site/metrics"),
    ] {
        let opened = p
            .command(&dir, args)
            .env("BROWSER", &browser)
            .output()
            .unwrap();
        assert!(opened.status.success(), "{}", text(&opened.stderr));
        let page = format!("{}{path}", p.url.trim_end_matches('/'));
        assert_eq!(text(&opened.stdout), format!("{page}\n"));
        assert_eq!(
            std::fs::read_to_string(&opened_file).unwrap(),
            format!("{page}\n")
        );
        let answer = aloft_testkit::http_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(&page)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 303, "{page}");
        assert_eq!(answer.headers()["location"], "/sign-in", "{page}");
    }
    let unknown = p.aloft_in(&dir, &["dashboard", "-a", "no-such-app"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("no-such-app"),
        "{}",
        text(&unknown.stderr)
    );

    // A release command that fails stops the deploy with its output, before any machine.
    let mut config = written.clone();
    config.push_str("\n[deploy]\nrelease_command = \"/aloft-testapp release 1\"\n");
    std::fs::write(dir.join("fly.toml"), config).unwrap();
    let failed = p.aloft_in(&dir, &["deploy"]);
    let said = format!("{}{}", text(&failed.stdout), text(&failed.stderr));
    assert!(!failed.status.success(), "{said}");
    assert!(
        said.contains("exited with code 1") && said.contains("migration 3 failed"),
        "the command's exit code and output: {said}"
    );
    std::fs::write(dir.join("fly.toml"), &written).unwrap();

    // `config save`: the fly.toml of the app's running release (v1's, not the failed
    // deploy's), written where there is none; an existing file is replaced only with -y.
    let elsewhere = p.home.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let saved = p.aloft_in(&elsewhere, &["config", "save", "-a", "my-site"]);
    assert!(saved.status.success(), "{}", text(&saved.stderr));
    assert!(
        text(&saved.stderr).contains("release v1"),
        "{}",
        text(&saved.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("fly.toml")).unwrap(),
        written
    );
    std::fs::write(elsewhere.join("fly.toml"), "# mine\n").unwrap();
    let kept = p.aloft_in(&elsewhere, &["config", "save", "-a", "my-site"]);
    assert_eq!(kept.status.code(), Some(2), "{}", text(&kept.stderr));
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("fly.toml")).unwrap(),
        "# mine\n"
    );
    let replaced = p.aloft_in(&elsewhere, &["config", "save", "-a", "my-site", "-y"]);
    assert!(replaced.status.success(), "{}", text(&replaced.stderr));
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("fly.toml")).unwrap(),
        written
    );

    // `doctor`: every check passes here; a refused token and an API that is not there
    // fail it, each saying so.
    let healthy = p.aloft_in(&dir, &["doctor"]);
    let said = text(&healthy.stdout);
    assert!(healthy.status.success(), "{said}{}", text(&healthy.stderr));
    for line in [
        "Testing API token... PASSED",
        "Testing API... PASSED",
        "Testing config file... PASSED",
        "Testing app... PASSED (my-site:",
    ] {
        assert!(said.contains(line), "{line:?} in:\n{said}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&p.ok(&["doctor", "--json", "-a", "my-site"])).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let refused = p
        .command(&dir, &["doctor"])
        .env("ALOFT_API_TOKEN", "aloft_not_a_token")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(3));
    assert!(
        text(&refused.stdout).contains("Testing API... FAILED")
            && text(&refused.stdout).contains("refuses the token"),
        "{}",
        text(&refused.stdout)
    );
    let absent = p
        .command(&dir, &["doctor"])
        .env("ALOFT_API_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(absent.status.code(), Some(3));
    assert!(
        text(&absent.stdout).contains("cannot be reached"),
        "{}",
        text(&absent.stdout)
    );

    let again = p.aloft_in(&dir, &["launch"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    let empty = p.home.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let bare = p.aloft_in(&empty, &["launch", "--no-deploy"]);
    assert!(!bare.status.success());
    assert!(
        text(&bare.stderr).contains("--image"),
        "{}",
        text(&bare.stderr)
    );
    let with_image = p.aloft_in(&empty, &["launch", "--image", &image, "--no-deploy"]);
    assert!(with_image.status.success(), "{}", text(&with_image.stderr));
    assert!(p.ok(&["apps", "list"]).contains("empty"));
}

/// `aloft logs`: the recent lines in Fly's format, `--grep` and `--json`, and following
/// new lines as the machine writes them.
#[tokio::test(flavor = "multi_thread")]
async fn logs_are_shown_searched_and_followed() {
    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    p.ok(&["apps", "create", "ticker"]);
    // Detached: the first ticks and the start event are still among the newest lines when
    // the logs are first read.
    let id = p
        .ok(&[
            "machine",
            "run",
            BUSYBOX_IMAGE,
            "-a",
            "ticker",
            "--detach",
            "--",
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.1; done",
        ])
        .trim()
        .to_owned();
    let recent = eventually("ten ticks in the logs", Duration::from_secs(30), || async {
        let shown = p.ok(&["logs", "-a", "ticker", "--no-tail"]);
        shown.contains("tick 10\n").then_some(shown)
    })
    .await;
    let line = recent
        .lines()
        .find(|l| l.ends_with(" tick 1"))
        .unwrap_or_else(|| panic!("{recent}"));
    assert!(
        line.contains(&format!(" app[{id}] local [info] tick 1")),
        "Fly's format: {line}"
    );
    assert!(recent.contains("runner["), "platform events: {recent}");

    let found = p.ok(&[
        "logs",
        "-a",
        "ticker",
        "--since",
        "10m",
        "--grep",
        "tick 7",
        "--no-tail",
        "--json",
    ]);
    let messages: Vec<String> = found
        .lines()
        .map(|l| {
            let entry: serde_json::Value = serde_json::from_str(l).unwrap();
            entry["message"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(messages.starts_with(&["tick 7".to_owned()]), "{messages:?}");
    assert!(
        messages.iter().all(|m| m.contains("tick 7")),
        "{messages:?}"
    );

    // Following: lines written after the command started arrive.
    let mut child = p
        .command(p.home.path(), &["logs", "-a", "ticker"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let newest: u64 = recent
        .lines()
        .filter_map(|l| l.rsplit("tick ").next()?.parse().ok())
        .max()
        .unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return None };
            let number: Option<u64> = line.rsplit("tick ").next().and_then(|n| n.parse().ok());
            if number.is_some_and(|n| n > newest + 20) {
                return Some(line);
            }
        }
        None
    });
    // A deadline, not a sleep: killing the CLI ends the reader if nothing came.
    let followed = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || reader.join().unwrap()),
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        matches!(followed, Ok(Ok(Some(_)))),
        "a new line arrived while following: {followed:?}"
    );

    // A follower of an app that is destroyed ends, saying so, rather than waiting on.
    let child = p
        .command(p.home.path(), &["logs", "-a", "ticker"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    p.ok(&["apps", "destroy", "ticker", "--yes"]);
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("the follower ends once its app is destroyed")
    .unwrap();
    assert_eq!(ended.status.code(), Some(3));
    assert!(
        text(&ended.stderr).contains("app ticker was destroyed"),
        "{}",
        text(&ended.stderr)
    );
}

/// Where `aloftd` (the SFTP helper) is: beside the `aloft` binary.
pub(crate) fn aloftd_binary() -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_aloft")).with_file_name("aloftd");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (`cargo build --workspace`) first",
        path.display()
    );
    path
}

/// A machine of `app` running a TCP echo server on port 5432 (busybox `nc`, which logs
/// `tcp echo: open` and `tcp echo: closed` on stderr).
pub(crate) fn echo_machine(p: &Platform, app: &str) -> String {
    p.ok(&[
        "machine",
        "run",
        BUSYBOX_IMAGE,
        "-a",
        app,
        "--",
        "nc",
        "-ll",
        "-p",
        "5432",
        "-e",
        "sh",
        "-c",
        "echo 'tcp echo: open' >&2; cat; echo 'tcp echo: closed' >&2",
    ])
    .trim()
    .to_owned()
}

/// A certificate for `public` from `org`'s CA, asked with `client`'s token.
async fn certificate_of(
    client: &aloft_client::Client,
    org: &str,
    public: &str,
) -> aloft_types::api::SshCertificate {
    client
        .ssh_certificate(
            org,
            &aloft_types::api::SshCertificateRequest {
                public_key: public.to_owned(),
                hours: None,
                app: None,
            },
        )
        .await
        .unwrap()
}

fn ssh_events(p: &Platform, app: &str, id: &str) -> Vec<serde_json::Value> {
    let shown: serde_json::Value =
        serde_json::from_str(&p.ok(&["machine", "status", id, "-a", app, "--json"])).unwrap();
    shown["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["type"] == "ssh")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_runs_commands_copies_files_forwards_ports_and_refuses_strangers() {
    let mut platform =
        Platform::start_with(|config| config.agent.helper = Some(aloftd_binary())).await;
    let p = &mut platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    p.ok(&["apps", "create", "shell"]);
    let id = echo_machine(p, "shell");
    // One command: its output, and its exit code as the CLI's.
    let hostname = p.ok(&["ssh", "console", "-a", "shell", "-C", "cat /etc/hostname"]);
    assert_eq!(hostname.trim(), id, "the machine's hostname is its id");
    let failed = p.aloft(&[
        "ssh",
        "console",
        "-a",
        "shell",
        "-C",
        "echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed.stderr));
    assert!(
        text(&failed.stderr).contains("to-stderr"),
        "stderr stays stderr"
    );
    // Ctrl-C (SIGINT to the CLI) reaches the command, whose end by signal is the exit code.
    let mut interrupted = p
        .command(
            p.home.path(),
            &[
                "ssh",
                "console",
                "-a",
                "shell",
                "-C",
                "echo sleeping; sleep 60",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead as _;
        let mut stdout = std::io::BufReader::new(interrupted.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "sleeping\n");
    }
    // Busybox's sh catches SIGINT and then execs its last command (`sleep 60`): an INT
    // that lands between the echo and the exec is lost inside the shell (OpenSSH's sshd
    // would lose it the same way), so Ctrl-C is pressed again until the session ends.
    let started = std::time::Instant::now();
    let status = loop {
        let killed = Command::new("kill")
            .args(["-INT", &interrupted.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let pressed = std::time::Instant::now();
        while pressed.elapsed() < Duration::from_millis(500) {
            if interrupted.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(status) = interrupted.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "it did not wait for sleep 60"
        );
    };
    assert_eq!(status.code(), Some(130), "128 + SIGINT");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it did not wait for sleep 60"
    );
    // -s without a terminal says how to name a machine instead.
    let unpicked = p.aloft(&["ssh", "console", "-s", "-a", "shell", "-C", "true"]);
    assert_eq!(unpicked.status.code(), Some(3));
    assert!(
        text(&unpicked.stderr).contains("--machine"),
        "{}",
        text(&unpicked.stderr)
    );
    // stdin reaches the command and its end closes the command's stdin.
    let counted = p.aloft_with_input(
        &["ssh", "console", "-a", "shell", "-C", "wc -c"],
        vec![b'x'; 100_000],
    );
    assert_eq!(text(&counted.stdout).trim(), "100000");
    // A command that answers while its input still arrives: 8 MiB through `cat`.
    let bulk: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let echoed = p.aloft_with_input(
        &["ssh", "console", "-a", "shell", "-C", "cat"],
        bulk.clone(),
    );
    assert!(echoed.status.success(), "{}", text(&echoed.stderr));
    assert!(
        echoed.stdout == bulk,
        "`cat` through SSH changed 8 MiB ({} bytes back)",
        echoed.stdout.len()
    );
    // Every session is an audit event: who, the command.
    let events = ssh_events(p, "shell", &id);
    assert!(
        events.iter().any(|e| e["status"] == "started"
            && e["request"]["command"] == "cat /etc/hostname"
            && e["request"]["who"]
                .as_str()
                .is_some_and(|w| w.contains("operator token"))),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["status"] == "ended" && e["request"]["exit_code"] == 3),
        "{events:#?}"
    );

    // SFTP: 10 MiB up and down, byte for byte.
    let files = tempfile::tempdir().unwrap();
    let sent: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(files.path().join("big.bin"), &sent).unwrap();
    let up = files.path().join("big.bin");
    let down = files.path().join("back.bin");
    let timer = std::time::Instant::now();
    p.ok(&[
        "ssh",
        "sftp",
        "put",
        up.to_str().unwrap(),
        "/big.bin",
        "-a",
        "shell",
    ]);
    let put_time = timer.elapsed();
    assert_eq!(
        p.ok(&["ssh", "console", "-a", "shell", "-C", "wc -c < /big.bin"])
            .trim(),
        "10485760"
    );
    let timer = std::time::Instant::now();
    p.ok(&[
        "ssh",
        "sftp",
        "get",
        "/big.bin",
        down.to_str().unwrap(),
        "-a",
        "shell",
    ]);
    let get_time = timer.elapsed();
    assert!(
        std::fs::read(&down).unwrap() == sent,
        "the file came back changed"
    );
    println!("sftp of 10 MiB (whole CLI runs): put {put_time:?}, get {get_time:?}");

    // A port forward reaches the echo server; closing the client closes its connection.
    let mut proxy = p
        .command(p.home.path(), &["proxy", "0:5432", "-a", "shell"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let address = {
        use std::io::BufRead as _;
        let mut stderr = std::io::BufReader::new(proxy.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let address = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("proxy said {line:?}"))
            .to_owned();
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        address
    };
    {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"ping through the proxy\n").unwrap();
        let mut echoed = [0u8; 23];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"ping through the proxy\n");
        // Bulk traffic both ways at once: the echo sends back while we still send.
        let bulk: Vec<u8> = (0..8 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut writer = stream.try_clone().unwrap();
        let to_send = bulk.clone();
        let sending = std::thread::spawn(move || writer.write_all(&to_send));
        let mut back = vec![0u8; bulk.len()];
        stream.read_exact(&mut back).unwrap();
        sending.join().unwrap().unwrap();
        assert!(back == bulk, "8 MiB came back changed through the proxy");
    }
    eventually(
        "the echo server to see the close",
        Duration::from_secs(20),
        || async {
            let logs = p.ok(&["logs", "-a", "shell", "--no-tail"]);
            logs.contains("tcp echo: closed").then_some(())
        },
    )
    .await;
    let _ = proxy.kill();
    let _ = proxy.wait();

    // Refused: a read-only token (at the API), a forged certificate, another
    // organization's, an expired one. Each refusal is logged as an event.
    let readonly = p.ok(&["tokens", "create", "readonly"]).trim().to_owned();
    let denied = p
        .command(
            p.home.path(),
            &["ssh", "console", "-a", "shell", "-C", "true"],
        )
        .env("ALOFT_API_TOKEN", &readonly)
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(3));
    assert!(
        text(&denied.stderr).contains("no SSH rights"),
        "{}",
        text(&denied.stderr)
    );

    let client = aloft_client::Client::new(&p.url, &p.token);
    let seed = |n: u8| [n; 32];
    let key = aloft_ssh::ca::ed25519_from_seed(&seed(7));
    let public = aloft_ssh::ca::public_to_openssh(key.public_key()).unwrap();
    let try_login = |certificate: aloft_ssh::russh::keys::Certificate| {
        let client = client.clone();
        let key = key.clone();
        let id = id.clone();
        async move {
            let tunnel = client.ssh_tunnel("shell", &id).await.unwrap();
            let credentials = aloft_ssh::client::Credentials { key, certificate };
            aloft_ssh::client::connect(tunnel, "", &credentials).await
        }
    };
    let personal = certificate_of(&client, "personal", &public).await;
    let good = aloft_ssh::ca::certificate_from_openssh(&personal.certificate).unwrap();
    assert!(
        try_login(good.clone()).await.is_ok(),
        "the organization's own certificate works"
    );

    let forger = aloft_ssh::ca::ed25519_from_seed(&seed(9));
    let forged = aloft_ssh::ca::sign_user_certificate(
        &forger,
        key.public_key(),
        &aloft_ssh::ca::CertificateRequest {
            key_id: good.key_id().to_owned(),
            principals: good.valid_principals().to_vec(),
            valid_for: Duration::from_secs(3600),
            serial: 1,
            nonce: seed(1),
            extensions: good
                .extensions()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
    )
    .unwrap();
    assert!(matches!(
        try_login(forged).await,
        Err(aloft_ssh::client::ClientError::Refused)
    ));

    let other_token = p.ok(&["orgs", "create", "globex"]).trim().to_owned();
    let other = aloft_client::Client::new(&p.url, &other_token);
    let theirs = certificate_of(&other, "globex", &public).await;
    let theirs = aloft_ssh::ca::certificate_from_openssh(&theirs.certificate).unwrap();
    assert!(matches!(
        try_login(theirs).await,
        Err(aloft_ssh::client::ClientError::Refused)
    ));

    // A certificate never outlives its token: one of a token that lives 2 s expires with it.
    let brief = p
        .ok(&["tokens", "create", "ssh", "-a", "shell", "--expiry", "2s"])
        .trim()
        .to_owned();
    let brief = aloft_client::Client::new(&p.url, &brief);
    let short = certificate_of(&brief, "personal", &public).await;
    let short = aloft_ssh::ca::certificate_from_openssh(&short.certificate).unwrap();
    assert!(
        short.valid_before() <= aloft_ssh::ca::unix_now() + 2,
        "capped at the token's expiry"
    );
    eventually(
        "the certificate to expire",
        Duration::from_secs(10),
        || async { (aloft_ssh::ca::unix_now() >= short.valid_before()).then_some(()) },
    )
    .await;
    assert!(matches!(
        try_login(short).await,
        Err(aloft_ssh::client::ClientError::Refused)
    ));

    // The server records a refusal as it closes the connection, so the last one may land
    // a moment after the client has seen the door shut.
    let refused = || {
        ssh_events(p, "shell", &id)
            .iter()
            .filter(|e| e["status"] == "refused")
            .map(|e| {
                e["request"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<String>>()
    };
    let wanted = ["not signed by this organization's CA", "expired"];
    let found = |refusals: &[String]| {
        wanted
            .iter()
            .all(|expected| refusals.iter().any(|r| r.contains(expected)))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut refusals = refused();
    while !found(&refusals) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        refusals = refused();
    }
    for expected in wanted {
        assert!(
            refusals.iter().any(|r| r.contains(expected)),
            "{expected}: {refusals:#?}"
        );
    }
    assert!(
        refusals
            .iter()
            .filter(|r| r.contains("not signed by this organization's CA"))
            .count()
            >= 2,
        "the forged and the other organization's: {refusals:#?}"
    );

    // `aloft console`: a machine of its own for console_command, gone afterwards.
    let app_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        app_dir.path().join("fly.toml"),
        "app = \"shell\"\nconsole_command = \"sh -c 'echo console ran in $FLY_PROCESS_GROUP'\"\n",
    )
    .unwrap();
    let before = p.ok(&["machine", "list", "-a", "shell", "--json"]);
    let ran = p.aloft_in(app_dir.path(), &["console"]);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    assert!(
        text(&ran.stdout).contains("console ran in fly_app_console"),
        "{}",
        text(&ran.stdout)
    );
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    let ids = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] != "destroyed")
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    eventually(
        "the console machine to be gone",
        Duration::from_secs(30),
        || async {
            let after: serde_json::Value =
                serde_json::from_str(&p.ok(&["machine", "list", "-a", "shell", "--json"])).unwrap();
            (ids(&after) == ids(&before)).then_some(())
        },
    )
    .await;
    let host = std::fs::read_to_string(p.data.path().join(aloftd::HOST_ID_FILE)).unwrap();
    eventually(
        "its container to be removed",
        Duration::from_secs(30),
        || async {
            let listed = std::process::Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=dev.aloft.host={}", host.trim()),
                ])
                .output()
                .unwrap();
            (text(&listed.stdout).lines().count() == 1).then_some(())
        },
    )
    .await;
}

/// A tmux server of its own (its socket in a temp dir), killed when dropped.
struct Tmux {
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn new() -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        Tmux {
            socket: dir.path().join("tmux.sock"),
            _dir: dir,
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (cargo xtask test installs it)");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "s", "-S", "-200"])
    }

    /// Polls the screen until `seen` holds; fails showing the last screen.
    async fn wait_for(&self, what: &str, seen: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if seen(&screen) {
                return screen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interactive_session_gets_a_terminal_that_resizes_and_sees_the_private_network() {
    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    p.ok(&["apps", "create", "peers"]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(p.idle_machine("peers"));
    }
    let addresses = eventually("both machines started", Duration::from_secs(30), || async {
        let list: serde_json::Value =
            serde_json::from_str(&p.ok(&["machine", "list", "-a", "peers", "--json"])).unwrap();
        let machines = list.as_array().unwrap();
        machines
            .iter()
            .all(|m| m["state"] == "started")
            .then(|| {
                machines
                    .iter()
                    .map(|m| m["private_ip"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|a| a.len() == 2)
    })
    .await;

    let tmux = Tmux::new();
    let done = tempfile::tempdir().unwrap();
    let exit_file = done.path().join("exit");
    let line = format!(
        "{} ssh console -a peers --machine {}; echo $? > {}",
        env!("CARGO_BIN_EXE_aloft"),
        ids[0],
        exit_file.display()
    );
    let config_dir = format!("ALOFT_CONFIG_DIR={}", p.home.path().display());
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "s",
        "-x",
        "120",
        "-y",
        "40",
        "-e",
        &config_dir,
        "-e",
        "TERM=xterm-256color",
        "sh",
        "-c",
        &line,
    ]);
    tmux.wait_for("a shell prompt", |s| s.contains(" #")).await;

    tmux.run(&[
        "send-keys",
        "-t",
        "s",
        "stty size; echo size-$((6*7))",
        "Enter",
    ]);
    tmux.wait_for("the terminal's size", |s| {
        s.contains("40 120") && s.contains("size-42")
    })
    .await;
    tmux.run(&["resize-window", "-t", "s", "-x", "100", "-y", "30"]);
    tmux.run(&["send-keys", "-t", "s", "clear; stty size", "Enter"]);
    tmux.wait_for("the new size", |s| s.contains("30 100"))
        .await;

    tmux.run(&[
        "send-keys",
        "-t",
        "s",
        "nslookup peers.internal fdaa::3",
        "Enter",
    ]);
    let screen = tmux
        .wait_for("both machines' addresses", |s| {
            addresses.iter().all(|a| s.contains(a.as_str()))
        })
        .await;
    assert!(screen.contains("fdaa:"), "{screen}");

    tmux.run(&["send-keys", "-t", "s", "exit", "Enter"]);
    let code = eventually("the CLI to exit", Duration::from_secs(30), || async {
        std::fs::read_to_string(&exit_file)
            .ok()
            .filter(|s| !s.is_empty())
    })
    .await;
    assert_eq!(code.trim(), "0", "a clean exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn openssh_uses_an_issued_certificate_on_the_private_network() {
    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    p.ok(&["apps", "create", "plain"]);
    let id = p.idle_machine("plain");

    // `ssh issue` writes a key and its certificate; OpenSSH reads both.
    let keys = tempfile::tempdir().unwrap();
    let issued: serde_json::Value = serde_json::from_str(&p.ok(&[
        "ssh",
        "issue",
        "--hours",
        "2",
        "--output",
        keys.path().to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(issued["principals"][0], "org:personal");
    let key = keys.path().join("id_aloft");
    let certificate = keys.path().join("id_aloft-cert.pub");
    let described = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&certificate)
        .output()
        .expect("ssh-keygen runs (cargo xtask test installs openssh-client)");
    let described = text(&described.stdout);
    assert!(described.contains("user certificate"), "{described}");
    assert!(described.contains("org:personal"), "{described}");
    assert!(described.contains("aloft-token@aloft.dev"), "{described}");

    // OpenSSH's own client, from the private network's side, logs in as the machine
    // with `identity` (a key file and the options that go with it).
    let openssh = |identity: &Path, options: &str, command: &str| {
        p.netns().exec(&[
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            identity.to_str().unwrap(),
            "-o",
            options,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-l",
            &id,
            "fdaa::3",
            command,
        ])
    };
    let with_certificate = format!("CertificateFile={}", certificate.display());
    let ssh = |command: &str| openssh(&key, &with_certificate, command);
    let output = ssh("cat /etc/hostname; exit 7");
    assert_eq!(output.status.code(), Some(7), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), id);
    // The session is in the machine's events (the probe below can see events)...
    assert!(
        ssh_events(p, "plain", &id)
            .iter()
            .any(|e| e["status"] == "started")
    );
    // ...and a stranger's refused key is not: on the private network anyone can knock,
    // and a knock must not write into a machine's events (it is logged instead).
    let stranger = keys.path().join("stranger");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let knocked = openssh(&stranger, "IdentitiesOnly=yes", "true");
    assert!(!knocked.status.success());
    assert!(
        text(&knocked.stderr).contains("Permission denied"),
        "{}",
        text(&knocked.stderr)
    );
    assert!(
        !ssh_events(p, "plain", &id)
            .iter()
            .any(|e| e["status"] == "refused"),
        "{:#?}",
        ssh_events(p, "plain", &id)
    );

    // `--agent` hands the key and certificate to a running ssh-agent.
    let agent_dir = tempfile::tempdir().unwrap();
    let socket = agent_dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("ssh-agent to listen", Duration::from_secs(10), || async {
        socket.exists().then_some(())
    })
    .await;
    let added = p
        .command(
            p.home.path(),
            &[
                "ssh",
                "issue",
                "--agent",
                "--output",
                keys.path().to_str().unwrap(),
            ],
        )
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    let listed = Command::new("ssh-add")
        .arg("-L")
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert!(
        text(&listed.stdout).contains("ssh-ed25519-cert-v01@openssh.com"),
        "{}",
        text(&listed.stdout)
    );
}
