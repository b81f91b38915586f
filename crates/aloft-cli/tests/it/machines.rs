//! flyctl's machine commands (`aloft machine run|kill|suspend|wait|leases|clone|update`),
//! deploy's flags, `apps restart`, `auth token|logout` and the top-level `sftp`; the
//! platform ones on a platform of simulated hosts (`SimPlatform`, in real time: no Docker).

use std::process::{Command, Output};
use std::time::Duration;

use aloft_testkit::eventually;
use aloft_testplatform::SimPlatform;
use aloft_types::MachineState;
use aloft_types::api::MachineRequest;
use aloft_types::machine::MachineConfig;

use crate::text;

const APP: &str = "machines";

fn run(url: &str, token: &str, home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(args)
        .args(["-a", APP])
        .env("ALOFT_CONFIG_DIR", home)
        .env("ALOFT_API_URL", url)
        .env("ALOFT_API_TOKEN", token)
        .env("NO_COLOR", "1")
        .current_dir(home)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// A started machine of the app.
async fn started(platform: &SimPlatform) -> String {
    let mut config = MachineConfig {
        image: "sim/app:1".to_owned(),
        ..MachineConfig::default()
    };
    config.env.insert("KEEP".to_owned(), "1".to_owned());
    let machine = platform
        .client
        .create_machine(APP, &MachineRequest::new(config))
        .await
        .unwrap();
    platform
        .client
        .wait(APP, &machine.id, MachineState::Started, 30)
        .await
        .unwrap();
    machine.id
}

/// A platform of one simulated host with the app, and the CLI pointed at it.
struct Cli {
    platform: SimPlatform,
    url: String,
    token: String,
    home: tempfile::TempDir,
}

impl Cli {
    async fn start() -> Cli {
        Cli::start_in(&["sim"]).await
    }

    /// One simulated host in each of `regions` (the first is the default one).
    async fn start_in(regions: &[&str]) -> Cli {
        let platform = SimPlatform::start_in(regions).await;
        let (url, token) = platform.api();
        platform.client.create_app(APP, None).await.unwrap();
        Cli {
            platform,
            url,
            token,
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `aloft ARGS -a APP` (on a blocking thread: the platform runs on this runtime).
    fn aloft(&self, args: &[&str]) -> Output {
        tokio::task::block_in_place(|| run(&self.url, &self.token, self.home.path(), args))
    }

    /// `aloft BASE ARGS` fails for each `(ARGS, message)` of `cases`, saying `message`.
    fn refuses(&self, base: &[&str], cases: &[(Vec<&str>, &str)]) {
        for (args, says) in cases {
            let mut full = base.to_vec();
            full.extend(args);
            let refused = self.aloft(&full);
            assert!(!refused.status.success(), "{full:?} was taken");
            assert!(
                text(&refused.stderr).contains(says),
                "{says}: {}",
                text(&refused.stderr)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flyctls_machine_commands_do_what_they_say() {
    let cli = Cli::start().await;
    let (platform, aloft) = (&cli.platform, |args: &[&str]| cli.aloft(args));
    let client = &platform.client;
    let id = started(platform).await;

    // wait: settled at once for a started machine; a state it is not in times out.
    let settled = aloft(&["machine", "wait", &id]);
    assert!(settled.status.success(), "{}", text(&settled.stderr));
    assert!(text(&settled.stderr).contains(&format!("Machine {id} is started")));
    let waited = aloft(&["machine", "wait", &id, "--state", "stopped", "-w", "1s"]);
    assert!(!waited.status.success());
    assert!(
        text(&waited.stderr).contains("is started and did not become stopped within 1s"),
        "{}",
        text(&waited.stderr)
    );
    let bad = aloft(&["machine", "wait", &id, "--state", "asleep"]);
    assert!(text(&bad.stderr).contains("--state \"asleep\" is not a machine state"));

    // leases: none, then the one taken, then none once cleared.
    let none = aloft(&["machine", "leases", "view"]);
    assert!(none.status.success(), "{}", text(&none.stderr));
    assert!(
        text(&none.stdout).contains("(no lease)"),
        "{}",
        text(&none.stdout)
    );
    let lease = client
        .acquire_lease(APP, &id, 600, "held by the test")
        .await
        .unwrap();
    let view = aloft(&["machine", "leases", "view", &id]);
    let shown = text(&view.stdout);
    assert!(shown.contains("held by the test"), "{shown}");
    assert!(shown.contains(&lease.data.nonce), "{shown}");
    let cleared = aloft(&["machine", "leases", "clear"]);
    assert!(cleared.status.success(), "{}", text(&cleared.stderr));
    assert!(text(&cleared.stderr).contains(&format!("Released the lease on machine {id}")));
    assert_eq!(
        client.machine_lease(APP, &id).await.unwrap_err().status(),
        Some(404)
    );

    // update: refused without --yes where nobody can be asked, then done with it.
    let asked = aloft(&["machine", "update", &id, "-i", "sim/app:2", "-e", "NEW=2"]);
    assert!(!asked.status.success());
    assert!(
        text(&asked.stderr).contains("pass --yes"),
        "{}",
        text(&asked.stderr)
    );
    assert_eq!(
        client.machine(APP, &id).await.unwrap().config.image,
        "sim/app:1"
    );
    let before = client.machine(APP, &id).await.unwrap().version;
    let updated = aloft(&[
        "machine",
        "update",
        &id,
        "-i",
        "sim/app:2",
        "-e",
        "NEW=2",
        "--yes",
    ]);
    assert!(updated.status.success(), "{}", text(&updated.stderr));
    let machine = client.machine(APP, &id).await.unwrap();
    assert_eq!(machine.config.image, "sim/app:2");
    assert_eq!(machine.config.env.get("NEW").map(String::as_str), Some("2"));
    assert_eq!(
        machine.config.env.get("KEEP").map(String::as_str),
        Some("1")
    );
    assert_ne!(machine.version, before);
    assert_eq!(machine.state, "started");
    let nothing = aloft(&["machine", "update", &id, "--yes"]);
    assert!(
        text(&nothing.stderr).contains("changes nothing"),
        "{}",
        text(&nothing.stderr)
    );

    // clone: another machine with the same config.
    let cloned = aloft(&[
        "machine", "clone", &id, "--name", "copy", "--detach", "--json",
    ]);
    assert!(cloned.status.success(), "{}", text(&cloned.stderr));
    let copy: serde_json::Value = serde_json::from_slice(&cloned.stdout).unwrap();
    let copy_id = copy["id"].as_str().unwrap().to_owned();
    assert_ne!(copy_id, id);
    let copy = client.machine(APP, &copy_id).await.unwrap();
    assert_eq!(copy.name, "copy");
    assert_eq!(copy.config.image, "sim/app:2");
    assert_eq!(copy.config.env.get("NEW").map(String::as_str), Some("2"));

    // kill: SIGKILL ends the run (exit code 137).
    let killed = aloft(&["machine", "kill", &copy_id]);
    assert!(killed.status.success(), "{}", text(&killed.stderr));
    eventually(
        "the killed run's exit event",
        Duration::from_secs(30),
        || async {
            let events = client.events(APP, &copy_id).await.ok()?;
            events
                .iter()
                .any(|e| {
                    e.kind == "exit"
                        && e.request.pointer("/exit_event/exit_code") == Some(&137.into())
                })
                .then_some(())
        },
    )
    .await;

    // suspend: a container is stopped instead, and says so.
    let suspended = aloft(&["machine", "suspend", &id]);
    assert!(suspended.status.success(), "{}", text(&suspended.stderr));
    assert!(
        text(&suspended.stderr).contains("a container is stopped: stopped"),
        "{}",
        text(&suspended.stderr)
    );
    assert_eq!(client.machine(APP, &id).await.unwrap().state, "stopped");
    cli.platform.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn machine_run_takes_flyctls_flags() {
    let cli = Cli::start().await;
    let (platform, aloft) = (&cli.platform, |args: &[&str]| cli.aloft(args));
    let client = &platform.client;
    let ran = aloft(&[
        "machine",
        "run",
        "sim/app:1",
        "--detach",
        "--json",
        "-p",
        "80:8080/tcp:http",
        "-p",
        "443:8080/tcp:tls:http",
        "-p",
        "53/udp",
        "--autostop",
        "--autostart=false",
        "--metadata",
        "role=worker",
        "-m",
        "tier=2",
        "--entrypoint",
        "/bin/tini --",
        "--rm",
        "--vm-size",
        "shared-cpu-2x",
        "--memory",
        "1024",
        "--schedule",
        "daily",
    ]);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let made: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    let config = client.machine(APP, &id).await.unwrap().config;
    assert_eq!(config.services.len(), 2, "{:?}", config.services);
    let web = &config.services[0];
    assert_eq!(web.internal_port, 8080);
    assert_eq!(
        web.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
        [Some(80), Some(443)]
    );
    assert_eq!(web.autostop.map(|a| a.as_str()), Some("stop"));
    assert_eq!(web.autostart, Some(false));
    assert_eq!(config.services[1].internal_port, 53);
    assert_eq!(config.metadata["role"], "worker");
    assert_eq!(config.metadata["tier"], "2");
    assert_eq!(config.init.entrypoint, ["/bin/tini", "--"]);
    assert!(config.auto_destroy);
    let guest = config.guest.unwrap();
    assert_eq!((guest.cpus, guest.memory_mb), (2, 1024));
    assert_eq!(config.schedule.as_deref(), Some("daily"));

    // A standby is made stopped, standing by for the machines named.
    let standby = aloft(&[
        "machine",
        "run",
        "sim/app:1",
        "--standby-for",
        &id,
        "--json",
    ]);
    assert!(standby.status.success(), "{}", text(&standby.stderr));
    let made: serde_json::Value = serde_json::from_slice(&standby.stdout).unwrap();
    let standby = client
        .machine(APP, made["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(standby.config.standbys, [id]);
    assert!(
        matches!(standby.state.as_str(), "created" | "stopped"),
        "{standby:?}"
    );

    // Flags that cannot be read say which and why.
    cli.refuses(
        &["machine", "run", "sim/app:1", "--detach"],
        &[
            (
                vec!["-p", "80/tcp:h3"],
                "--port \"80/tcp:h3\": unknown handler \"h3\"",
            ),
            (
                vec!["--vm-size", "huge"],
                "--vm-size \"huge\" is not a size",
            ),
            (
                vec!["--autostop=sometimes", "-p", "80"],
                "--autostop \"sometimes\"",
            ),
            (
                vec!["--autostop"],
                "--autostop and --autostart apply to services",
            ),
            (
                vec!["--metadata", "novalue"],
                "--metadata \"novalue\" is not KEY=VALUE",
            ),
        ],
    );
    cli.platform.stop().await;
}

/// Two process groups, `web` with the HTTP service; a release command.
const GROUPS_TOML: &str = r#"app = "machines"
[processes]
web = "serve"
worker = "work"
[deploy]
release_command = "migrate"
[http_service]
internal_port = 8080
processes = ["web"]
"#;

/// `config env`, as flyctl's: the app's secrets by name and digest (never their values),
/// then its config's variables as its machines run them.
#[tokio::test(flavor = "multi_thread")]
async fn config_env_shows_secret_names_and_the_configs_variables() {
    let cli = Cli::start().await;
    let aloft = |args: &[&str]| cli.aloft(args);
    std::fs::write(
        cli.home.path().join("fly.toml"),
        format!("app = \"{APP}\"\n\n[env]\n  GREETING = \"hello\"\n\n[http_service]\n  internal_port = 8080\n"),
    )
    .unwrap();
    let set = aloft(&["secrets", "set", "API_KEY=s3cr3t-value", "--stage"]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    let deployed = aloft(&["deploy", "-i", "sim/app:1", "--smoke-checks=false"]);
    assert!(deployed.status.success(), "{}", text(&deployed.stderr));

    let shown = aloft(&["config", "env"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("Secrets") && shown.contains("API_KEY"),
        "{shown}"
    );
    assert!(
        shown.contains("GREETING") && shown.contains("hello"),
        "{shown}"
    );
    assert!(
        !shown.contains("s3cr3t-value"),
        "a secret's value is never shown: {shown}"
    );

    let json = aloft(&["config", "env", "--json"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["secrets"][0]["name"], "API_KEY");
    assert_eq!(json["env"]["app"]["GREETING"], "hello");
    cli.platform.stop().await;
}

/// flyctl's `--only-machines` and `--regions`: only those machines get the release, the
/// others keep theirs; names that match nothing, and strategies that create machines, are
/// refused with what is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn deploy_only_machines_and_regions_change_only_those() {
    let cli = Cli::start_in(&["ams", "fra"]).await;
    let (platform, aloft) = (&cli.platform, |args: &[&str]| cli.aloft(args));
    let client = &platform.client;
    std::fs::write(
        cli.home.path().join("fly.toml"),
        format!("app = \"{APP}\"\n\n[http_service]\n  internal_port = 8080\n"),
    )
    .unwrap();
    let deploy = |image: &str, extra: &[&str]| {
        let mut args = vec!["deploy", "-i", image, "--smoke-checks=false", "--json"];
        args.extend(extra);
        aloft(&args)
    };
    let first = deploy("sim/app:1", &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let ams = client.list_machines(APP).await.unwrap();
    assert_eq!(ams.len(), 2, "the first deploy's two machines, in ams");
    // A third machine of the group, in fra, on the same release.
    let mut request = MachineRequest::new(ams[0].config.clone());
    request.region = Some("fra".to_owned());
    let fra = client.create_machine(APP, &request).await.unwrap();
    client
        .wait(APP, &fra.id, MachineState::Started, 30)
        .await
        .unwrap();
    let images = || async {
        let mut images: Vec<(String, String)> = client
            .list_machines(APP)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.id, m.config.image))
            .collect();
        images.sort();
        images
    };
    let image_of = |images: &[(String, String)], id: &str| {
        images.iter().find(|(m, _)| m == id).unwrap().1.clone()
    };

    let only = deploy("sim/app:2", &["--only-machines", &ams[0].id]);
    assert!(only.status.success(), "{}", text(&only.stderr));
    let results: Vec<aloft_types::api::DeploymentResponse> =
        serde_json::from_slice(&only.stdout).unwrap();
    let scope = results[0].scope.clone().unwrap();
    assert_eq!(scope.machines, [ams[0].id.clone()]);
    let now = images().await;
    assert_eq!(image_of(&now, &ams[0].id), "sim/app:2");
    assert_eq!(image_of(&now, &ams[1].id), "sim/app:1", "not named: kept");
    assert_eq!(image_of(&now, &fra.id), "sim/app:1");

    let region = deploy("sim/app:3", &["--regions", "fra"]);
    assert!(region.status.success(), "{}", text(&region.stderr));
    let now = images().await;
    assert_eq!(image_of(&now, &fra.id), "sim/app:3");
    assert_eq!(image_of(&now, &ams[0].id), "sim/app:2", "not in fra: kept");
    assert_eq!(now.len(), 3, "a scoped deploy creates no machine");

    cli.refuses(
        &["deploy", "-i", "sim/app:4", "--smoke-checks=false"],
        &[
            (
                vec!["--only-machines", "148e21ea7d2e89"],
                "--only-machines: app machines has no machine 148e21ea7d2e89",
            ),
            (
                vec!["--regions", "syd"],
                "nothing to deploy: no machine of app machines is in --only-machines/--regions",
            ),
            (
                vec!["--regions", "fra", "--strategy", "canary"],
                "only_machines and regions apply to rolling and immediate deployments",
            ),
        ],
    );
    assert_eq!(images().await, now, "nothing refused changed a machine");
    cli.platform.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_takes_flyctls_flags() {
    let cli = Cli::start().await;
    let (platform, aloft) = (&cli.platform, |args: &[&str]| cli.aloft(args));
    let client = &platform.client;
    std::fs::write(cli.home.path().join("fly.toml"), GROUPS_TOML).unwrap();
    let deployed = aloft(&[
        "deploy",
        "-i",
        "sim/app:1",
        "--process-groups",
        "web",
        "--ha=false",
        "--skip-release-command",
        "--vm-size",
        "shared-cpu-2x",
        "--max-unavailable",
        "2",
        "--smoke-checks=false",
        "-y",
        "--json",
    ]);
    assert!(deployed.status.success(), "{}", text(&deployed.stderr));
    let results: Vec<aloft_types::api::DeploymentResponse> =
        serde_json::from_slice(&deployed.stdout).unwrap();
    assert_eq!(results.len(), 1, "only the web group");
    assert_eq!(results[0].max_unavailable, 2.0);
    let kinds: Vec<&str> = results[0].steps.iter().map(|s| s.kind.as_str()).collect();
    assert!(!kinds.contains(&"release_command"), "{kinds:?}");
    let machines = client.list_machines(APP).await.unwrap();
    assert_eq!(machines.len(), 1, "--ha=false: one web machine, no worker");
    let machine = &machines[0];
    assert_eq!(machine.config.metadata["fly_process_group"], "web");
    assert_eq!(machine.config.guest.as_ref().map(|g| g.cpus), Some(2));

    // The release command runs when not skipped, for as long as --release-command-timeout
    // lets it (a simulated one never ends).
    let timed = aloft(&[
        "deploy",
        "-i",
        "sim/app:1",
        "--process-groups",
        "web",
        "--release-command-timeout",
        "1s",
        "--smoke-checks=false",
    ]);
    assert!(!timed.status.success());
    assert!(
        text(&timed.stderr).contains("did not finish within 1s (release_command_timeout)"),
        "{}",
        text(&timed.stderr)
    );

    cli.refuses(
        &["deploy", "-i", "sim/app:1"],
        &[
            (
                vec!["--process-groups", "nope"],
                "has no process group \"nope\" (it has web, worker)",
            ),
            (
                vec!["--vm-size", "huge"],
                "--vm-size \"huge\" is not a size",
            ),
            (vec!["--build-only"], "--build-only builds the Dockerfile"),
        ],
    );
    cli.platform.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_restart_restarts_each_started_machine_and_leaves_stopped_ones() {
    let cli = Cli::start().await;
    let (platform, aloft) = (&cli.platform, |args: &[&str]| cli.aloft(args));
    let client = &platform.client;
    let first = started(platform).await;
    let second = started(platform).await;
    let stopped = started(platform).await;
    client
        .stop_machine(APP, &stopped, None, None)
        .await
        .unwrap();
    client
        .wait(APP, &stopped, MachineState::Stopped, 30)
        .await
        .unwrap();
    let restarts = |id: String| async move {
        client
            .events(APP, &id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "restart")
            .map(|e| e.request)
            .collect::<Vec<_>>()
    };
    assert!(restarts(first.clone()).await.is_empty());

    let restarted = aloft(&["apps", "restart", APP, "--force-stop", "--json"]);
    assert!(restarted.status.success(), "{}", text(&restarted.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&restarted.stdout).unwrap();
    let mut ids: Vec<&str> = answer["restarted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut wanted = [first.as_str(), second.as_str()];
    wanted.sort_unstable();
    assert_eq!(ids, wanted);
    for id in [&first, &second] {
        assert_eq!(
            restarts(id.clone()).await,
            [serde_json::json!({ "force_stop": true })],
            "{id}"
        );
        assert_eq!(client.machine(APP, id).await.unwrap().state, "started");
    }
    assert!(restarts(stopped.clone()).await.is_empty());
    assert_eq!(
        client.machine(APP, &stopped).await.unwrap().state,
        "stopped"
    );
    cli.platform.stop().await;
}

#[test]
fn auth_token_prints_the_token_in_use_and_logout_forgets_it() {
    let home = tempfile::tempdir().unwrap();
    let aloft = |args: &[&str], env_token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_aloft"));
        command
            .args(args)
            .env("ALOFT_CONFIG_DIR", home.path())
            .env_remove("ALOFT_API_TOKEN")
            .env("NO_COLOR", "1");
        if let Some(token) = env_token {
            command.env("ALOFT_API_TOKEN", token);
        }
        command.output().unwrap()
    };
    std::fs::write(
        home.path().join("credentials.toml"),
        "api_url = \"http://127.0.0.1:4280\"\ntoken = \"aloft_saved\"\n",
    )
    .unwrap();
    let saved = aloft(&["auth", "token"], None);
    assert!(saved.status.success(), "{}", text(&saved.stderr));
    assert_eq!(text(&saved.stdout).trim(), "aloft_saved");
    // The environment's token wins, as for every other command.
    let from_env = aloft(&["auth", "token"], Some("aloft_env"));
    assert_eq!(text(&from_env.stdout).trim(), "aloft_env");

    let out = aloft(&["auth", "logout"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Logged out"),
        "{}",
        text(&out.stderr)
    );
    let kept = std::fs::read_to_string(home.path().join("credentials.toml")).unwrap();
    assert!(
        kept.contains("http://127.0.0.1:4280") && !kept.contains("aloft_saved"),
        "{kept}"
    );
    let gone = aloft(&["auth", "token"], None);
    assert!(!gone.status.success());
    assert!(
        text(&gone.stderr).contains("no API token"),
        "{}",
        text(&gone.stderr)
    );
    let again = aloft(&["auth", "logout"], Some("aloft_env"));
    assert!(text(&again.stderr).contains("No token was saved"));
    assert!(text(&again.stderr).contains("ALOFT_API_TOKEN is set in the environment"));
}

#[test]
fn sftp_is_a_top_level_command_too() {
    let home = tempfile::tempdir().unwrap();
    let help = Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(["sftp", "--help"])
        .env("ALOFT_CONFIG_DIR", home.path())
        .output()
        .unwrap();
    assert!(help.status.success(), "{}", text(&help.stderr));
    let shown = text(&help.stdout);
    for sub in ["get", "put", "shell"] {
        assert!(shown.contains(sub), "{shown}");
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(["--json", "sftp", "shell", "-a", "web"])
        .env("ALOFT_CONFIG_DIR", home.path())
        .output()
        .unwrap();
    assert!(
        text(&refused.stderr).contains("--json does not apply to `aloft sftp (files)`"),
        "{}",
        text(&refused.stderr)
    );
}
