//! Fault injection: `aloftd server` killed with `SIGKILL` at the step boundaries of its
//! first start, of a machine's create with a new volume, and of deployments of every
//! strategy with a release command (the failpoints of `aloft_crash`, compiled into the
//! tests' build only), then started again, converges: the operator's token works, no
//! machine is made twice, no container or volume is left without its machine, the release
//! command runs once, and every deployment ends `succeeded`.
//!
//! Each scenario first runs once with `ALOFT_FAILPOINT_TRACE`, which lists the points it
//! passes and how often; then it is run again killed at each of them in turn. In
//! `cargo xtask test`: the first, middle and last time a deployment reaches its own
//! boundaries (`deploy.step`, `deploy.move`), and the middle time of every other point;
//! `cargo xtask soak crashes` (`ALOFT_CRASH_ALL=1`) kills at every time every point is
//! reached. A kill that does not happen fails the test: the trace said the point is on
//! the way.

#![allow(
    clippy::print_stderr,
    reason = "each scenario reports how many kill points it tried, for the closing note"
)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aloft_client::Client;
use aloft_crash::{FAILPOINT_VARIABLE, Point, TRACE_VARIABLE};
use aloft_testkit::{BUSYBOX_IMAGE, eventually};
use aloft_types::api::{DeployRequest, DeploymentResponse, MachineRequest};
use aloft_types::machine::MachineMount;

use crate::{Host, Server};

/// Where a run kills the server: the `nth` time it reaches `point`.
#[derive(Debug, Clone, Copy)]
struct Kill {
    point: Point,
    nth: usize,
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.point, self.nth)
    }
}

/// How many times the run traced to `trace` reached each point.
fn reached(trace: &Path) -> BTreeMap<&'static str, (Point, usize)> {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let point: Point = line.parse().unwrap();
        counts.entry(point.as_str()).or_insert((point, 0)).1 += 1;
    }
    counts
}

/// The kills a test tries from a trace's counts (see the module's documentation).
fn chosen(counts: &BTreeMap<&'static str, (Point, usize)>) -> Vec<Kill> {
    let all = std::env::var("ALOFT_CRASH_ALL").is_ok_and(|v| v == "1");
    let mut kills = Vec::new();
    for &(point, times) in counts.values() {
        let mut nths: Vec<usize> = if all {
            (1..=times).collect()
        } else if matches!(point, Point::DeployStep | Point::DeployMove) {
            vec![1, times.div_ceil(2), times]
        } else {
            vec![times.div_ceil(2)]
        };
        nths.dedup();
        kills.extend(nths.into_iter().map(|nth| Kill { point, nth }));
    }
    kills
}

/// The environment of a server that traces to `trace` and, with `kill`, dies there.
fn armed(kill: Option<Kill>, trace: &Path) -> Vec<(&'static str, OsString)> {
    let _ = std::fs::remove_file(trace);
    let mut env = vec![(TRACE_VARIABLE, trace.as_os_str().to_owned())];
    if let Some(kill) = kill {
        env.push((FAILPOINT_VARIABLE, kill.to_string().into()));
    }
    env
}

fn borrowed<'a>(env: &'a [(&'static str, OsString)]) -> Vec<(&'static str, &'a OsStr)> {
    env.iter().map(|(k, v)| (*k, v.as_os_str())).collect()
}

/// Waits until `child` ends by itself, at most `within`; how it ended.
async fn ended(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that a failpoint killed the server: `SIGKILL`, and the trace's last point is
/// the kill's (the positive control: the point is where the process died).
fn killed_there(status: Option<std::process::ExitStatus>, kill: Kill, trace: &Path) {
    let status = status.unwrap_or_else(|| {
        panic!("the server was not killed at {kill}: the point was not reached")
    });
    assert_eq!(
        status.signal(),
        Some(9),
        "killed at {kill} by SIGKILL: {status:?}"
    );
    let text = std::fs::read_to_string(trace).unwrap();
    assert_eq!(
        text.lines().filter(|l| *l == kill.point.as_str()).count(),
        kill.nth,
        "the server died the {}th time it reached {}",
        kill.nth,
        kill.point
    );
}

impl Server {
    /// `kill -9`, then a server with `env` in this one's place (see
    /// [`Server::restart_after_kill`]).
    async fn restart_with(&mut self, host: &Host, env: &[(&'static str, OsString)]) {
        self.kill();
        let restarted = Server::start_with(host, &borrowed(env)).await;
        let mut killed = std::mem::replace(self, restarted);
        killed.data_dir = PathBuf::new();
    }

    /// Waits until the server's process ends by itself, at most `within`.
    async fn ended(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("the server runs");
        let status = ended(child, within).await;
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// The containers this server's agent made, by the machine they run.
    fn containers_by_machine(&self) -> BTreeMap<String, usize> {
        let output = std::process::Command::new("docker")
            .args([
                "ps",
                "-a",
                "--format",
                "{{.Label \"dev.aloft.machine\"}}",
                "--filter",
            ])
            .arg(format!("label=dev.aloft.host={}", self.host_id()))
            .output()
            .unwrap();
        let mut counts = BTreeMap::new();
        for machine in String::from_utf8(output.stdout).unwrap().split_whitespace() {
            *counts.entry(machine.to_owned()).or_insert(0) += 1;
        }
        counts
    }

    /// The app's machines, destroyed ones included (Fly's `include_deleted`).
    async fn every_machine(&self, app: &str) -> Vec<aloft_types::api::MachineResponse> {
        let token = std::fs::read_to_string(self.data_dir.join("admin-token")).unwrap();
        aloft_testkit::http()
            .get(format!(
                "{}/v1/apps/{app}/machines?include_deleted=true",
                self.client.base_url()
            ))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Waits until `check` holds, naming what was last wrong when it does not.
async fn settles<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut check = check;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let last = match check().await {
            Ok(()) => return,
            Err(why) => why,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not settle within 90 s: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_first_start_killed_at_each_step_starts_again_with_a_working_operator_token() {
    let host = Host::new();
    let trace = host.data().with_extension("trace");
    let env = armed(None, &trace);
    let server = Server::start_with(&host, &borrowed(&env)).await;
    drop(server);
    let counts = reached(&trace);
    for point in [
        Point::BootstrapTokenWritten,
        Point::BootstrapStored,
        Point::FileSynced,
    ] {
        assert!(
            counts.contains_key(point.as_str()),
            "a first start reaches {point}: {counts:?}"
        );
    }
    let kills = chosen(&counts);
    for &kill in &kills {
        let host = Host::new();
        let trace = host.data().with_extension("trace");
        let env = armed(Some(kill), &trace);
        let mut child = Server::spawn(&host, &borrowed(&env));
        killed_there(
            ended(&mut child, Duration::from_secs(60)).await,
            kill,
            &trace,
        );
        // The token in the file is the operator's: the API answers it (`start` waits for
        // that) and it may create organizations.
        let server = Server::start(&host).await;
        server
            .client
            .create_org("after-crash", None)
            .await
            .unwrap_or_else(|e| {
                panic!("killed at {kill}: the operator token creates an organization: {e}")
            });
    }
    eprintln!(
        "first start: killed at {} points ({counts:?}); every restart converged",
        kills.len()
    );
}

const VOLUMES_APP: &str = "crash-volumes";

/// Asks for machine `m<index>` mounting a new 1 GB volume `v<index>` at /data.
async fn create_with_volume(
    client: &Client,
    index: usize,
) -> Result<(), aloft_client::ClientError> {
    let mut config = crate::sleeper();
    config.mounts.push(MachineMount {
        name: format!("v{index}"),
        path: "/data".into(),
        size_gb: 1,
        ..MachineMount::default()
    });
    let request = MachineRequest {
        name: Some(format!("m{index}")),
        ..MachineRequest::new(config)
    };
    client.create_machine(VOLUMES_APP, &request).await.map(drop)
}

/// Machines `m0` to `m<last>`, each once, started, with one container and its own
/// volume, attached and mounted; no other volume, machine or container.
async fn volumes_converged(server: &Server, last: usize) -> Result<(), String> {
    let client = &server.client;
    let machines = client
        .list_machines(VOLUMES_APP)
        .await
        .map_err(|e| e.to_string())?;
    let mut names: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    let mut wanted: Vec<String> = (0..=last).map(|i| format!("m{i}")).collect();
    wanted.sort_unstable();
    if names != wanted {
        return Err(format!("machines {names:?}, not {wanted:?}"));
    }
    let volumes = client
        .list_volumes(VOLUMES_APP)
        .await
        .map_err(|e| e.to_string())?;
    if volumes.len() != machines.len() {
        return Err(format!(
            "{} volumes for {} machines: {volumes:?}",
            volumes.len(),
            machines.len()
        ));
    }
    let containers = server.containers_by_machine();
    for machine in &machines {
        if machine.state != "started" {
            return Err(format!("machine {} is {}", machine.name, machine.state));
        }
        let Some(volume) = volumes
            .iter()
            .find(|v| v.attached_machine_id.as_deref() == Some(machine.id.as_str()))
        else {
            return Err(format!("machine {} has no volume attached", machine.name));
        };
        let data = server
            .data_dir
            .join("volumes")
            .join(&volume.id)
            .join("data");
        if !crate::volumes::mounted(&data) {
            return Err(format!(
                "volume {} of {} is not mounted",
                volume.id, machine.name
            ));
        }
        // Encrypted (the default), its encrypted directory made and bound.
        if !volume.encrypted || !data.join("files").is_dir() {
            return Err(format!(
                "volume {} of {} is not encrypted and unlocked: {volume:?}",
                volume.id, machine.name
            ));
        }
        if containers.get(&machine.id) != Some(&1) {
            return Err(format!(
                "machine {} has {:?} containers",
                machine.name,
                containers.get(&machine.id)
            ));
        }
    }
    if containers.len() != machines.len() {
        return Err(format!(
            "containers of machines that are not there: {containers:?}"
        ));
    }
    Ok(())
}

#[tokio::test]
async fn a_machine_create_killed_at_each_step_converges_to_one_machine_with_its_volume() {
    let host = Host::new();
    let mut server = Server::start(&host).await;
    server.client.create_app(VOLUMES_APP, None).await.unwrap();
    let trace = host.data().with_extension("trace");
    server.restart_with(&host, &armed(None, &trace)).await;
    create_with_volume(&server.client, 0).await.unwrap();
    settles("the first machine", || volumes_converged(&server, 0)).await;
    let counts = reached(&trace);
    for point in [
        Point::VolumeStored,
        Point::MachineStored,
        Point::VolumeMade,
        Point::VolumeCommitted,
        Point::ContainerCreated,
        Point::ContainerStarted,
    ] {
        assert!(
            counts.contains_key(point.as_str()),
            "a create reaches {point}: {counts:?}"
        );
    }
    let kills = chosen(&counts);
    for (index, &kill) in kills.iter().enumerate() {
        let index = index + 1;
        server.restart_with(&host, &armed(Some(kill), &trace)).await;
        // Killed in the middle of the request, or after it answered.
        let _ = create_with_volume(&server.client, index).await;
        killed_there(server.ended(Duration::from_secs(60)).await, kill, &trace);
        server.restart_after_kill(&host).await;
        // A client whose request was cut asks again for what it does not see.
        let name = format!("m{index}");
        let machines = server.client.list_machines(VOLUMES_APP).await.unwrap();
        if !machines.iter().any(|m| m.name == name) {
            create_with_volume(&server.client, index).await.unwrap();
        }
        settles(&format!("the create killed at {kill}"), || {
            volumes_converged(&server, index)
        })
        .await;
    }
    eprintln!(
        "machine create with a volume: killed at {} points ({counts:?}); every restart converged",
        kills.len()
    );
}

const DEPLOY_APP: &str = "crash-deploys";

/// The release command: it fails if it ever runs twice in its machine.
const RELEASE_COMMAND: &str =
    "if [ -e /ran ]; then echo ran twice; exit 3; fi; touch /ran; echo release ran";

fn release(strategy: &str, version: usize) -> DeployRequest {
    let mut config = crate::sleeper();
    config.env.insert("VERSION".to_owned(), version.to_string());
    DeployRequest {
        image: BUSYBOX_IMAGE.to_owned(),
        config,
        strategy: Some(strategy.to_owned()),
        max_unavailable: Some(1.0),
        wait_timeout: Some(60),
        initial_count: Some(2),
        description: Some(format!("version {version}")),
        release_command: Some(vec!["sh".into(), "-c".into(), RELEASE_COMMAND.into()]),
        release_command_timeout: None,
        release_command_guest: None,
        smoke_checks: None,
        smoke_check_seconds: Some(1),
        only_machines: None,
        regions: None,
        fly_toml: None,
    }
}

/// Follows the deployment of `version` to its end: the one the request started, or,
/// when the request was cut, the newest one of that version; none when it was never
/// stored (the client then asks again).
async fn deployment_of(
    client: &Client,
    version: usize,
    started: Option<&DeploymentResponse>,
) -> Option<DeploymentResponse> {
    let description = format!("version {version}");
    let id = match started {
        Some(deployment) => deployment.id.clone(),
        None => {
            client
                .deployments(DEPLOY_APP)
                .await
                .unwrap()
                .into_iter()
                .find(|d| d.release.description == description)?
                .id
        }
    };
    Some(
        eventually(
            "the deployment to end",
            Duration::from_secs(240),
            || async {
                let deployment = client.deployment(DEPLOY_APP, &id).await.ok()?;
                (!matches!(deployment.status.as_str(), "running" | "rolling_back"))
                    .then_some(deployment)
            },
        )
        .await,
    )
}

/// After the deployment of `version`: two live machines run it, each with one container,
/// no container of any other machine, and the release command ran in exactly one machine.
async fn deploy_converged(
    server: &Server,
    deployment: &DeploymentResponse,
    version: usize,
) -> Result<(), String> {
    let machines = server.every_machine(DEPLOY_APP).await;
    let live: Vec<_> = machines
        .iter()
        .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
        .collect();
    if live.len() != 2 {
        return Err(format!(
            "{} live machines: {:?}",
            live.len(),
            live.iter().map(|m| (&m.id, &m.state)).collect::<Vec<_>>()
        ));
    }
    let containers = server.containers_by_machine();
    for machine in &live {
        let runs = machine.config.env.get("VERSION").map(String::as_str);
        if runs != Some(version.to_string().as_str()) || machine.state != "started" {
            return Err(format!(
                "machine {} is {} with version {runs:?}",
                machine.id, machine.state
            ));
        }
        if containers.get(&machine.id) != Some(&1) {
            return Err(format!(
                "machine {} has {:?} containers",
                machine.id,
                containers.get(&machine.id)
            ));
        }
    }
    if containers.len() != live.len() {
        return Err(format!(
            "containers of machines that are gone: {containers:?}"
        ));
    }
    let release_machines = machines
        .iter()
        .filter(|m| {
            m.config.metadata.get("aloft_deployment") == Some(&deployment.id)
                && m.config
                    .metadata
                    .get("fly_process_group")
                    .map(String::as_str)
                    == Some("fly_app_release_command")
        })
        .count();
    if release_machines != 1 {
        return Err(format!(
            "the release command ran in {release_machines} machines"
        ));
    }
    Ok(())
}

async fn deploys_killed_at_each_step_converge(strategy: &str) {
    let host = Host::new();
    let mut server = Server::start(&host).await;
    server.client.create_app(DEPLOY_APP, None).await.unwrap();
    let first = server
        .client
        .deploy(DEPLOY_APP, &release(strategy, 1))
        .await
        .unwrap();
    let first = deployment_of(&server.client, 1, Some(&first))
        .await
        .unwrap();
    assert_eq!(first.status, "succeeded", "{first:?}");

    let trace = host.data().with_extension("trace");
    server.restart_with(&host, &armed(None, &trace)).await;
    let second = server
        .client
        .deploy(DEPLOY_APP, &release(strategy, 2))
        .await
        .unwrap();
    let second = deployment_of(&server.client, 2, Some(&second))
        .await
        .unwrap();
    assert_eq!(second.status, "succeeded", "{second:?}");
    settles("the traced deployment", || {
        deploy_converged(&server, &second, 2)
    })
    .await;
    let counts = reached(&trace);
    for point in [
        Point::DeployStep,
        Point::DeployMove,
        Point::ReleaseCommandExited,
        Point::MachineStored,
    ] {
        assert!(
            counts.contains_key(point.as_str()),
            "a {strategy} deployment reaches {point}: {counts:?}"
        );
    }
    let kills = chosen(&counts);
    for (index, &kill) in kills.iter().enumerate() {
        let version = index + 3;
        server.restart_with(&host, &armed(Some(kill), &trace)).await;
        let started = server
            .client
            .deploy(DEPLOY_APP, &release(strategy, version))
            .await
            .ok();
        killed_there(server.ended(Duration::from_secs(120)).await, kill, &trace);
        server.restart_after_kill(&host).await;
        let deployment = match deployment_of(&server.client, version, started.as_ref()).await {
            Some(deployment) => deployment,
            None => {
                let again = server
                    .client
                    .deploy(DEPLOY_APP, &release(strategy, version))
                    .await
                    .unwrap();
                deployment_of(&server.client, version, Some(&again))
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            deployment.status,
            "succeeded",
            "the {strategy} deployment killed at {kill} ends succeeded: {:?}",
            deployment
                .steps
                .iter()
                .map(|s| format!("{} {}", s.kind, s.message))
                .collect::<Vec<_>>()
        );
        let released = deployment
            .steps
            .iter()
            .filter(|s| s.kind == "released")
            .count();
        assert_eq!(
            released, 1,
            "killed at {kill}: the release command's outcome is logged once"
        );
        settles(
            &format!("the {strategy} deployment killed at {kill}"),
            || deploy_converged(&server, &deployment, version),
        )
        .await;
    }
    eprintln!(
        "{strategy} deployments: killed at {} points ({counts:?}); every restart converged",
        kills.len()
    );
}

#[tokio::test]
async fn rolling_deployments_killed_at_each_step_converge() {
    deploys_killed_at_each_step_converge("rolling").await;
}

#[tokio::test]
async fn immediate_deployments_killed_at_each_step_converge() {
    deploys_killed_at_each_step_converge("immediate").await;
}

#[tokio::test]
async fn canary_deployments_killed_at_each_step_converge() {
    deploys_killed_at_each_step_converge("canary").await;
}

#[tokio::test]
async fn bluegreen_deployments_killed_at_each_step_converge() {
    deploys_killed_at_each_step_converge("bluegreen").await;
}
