//! Server-side deployments against real machines, with traffic through the proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aloft_client::Client;
use aloft_testkit::eventually;
use aloft_types::api::{DeployRequest, DeploymentResponse};
use aloft_types::machine::MachineConfig;

use crate::proxy::proxy_address;
use crate::{Host, Server};

const APP: &str = "rollout";

fn release(image: &str, version: &str, healthy: bool) -> DeployRequest {
    let mut config = MachineConfig {
        services: vec![crate::checks::checked_service()],
        ..MachineConfig::default()
    };
    config
        .env
        .insert("TESTAPP_VERSION".to_owned(), version.to_owned());
    if !healthy {
        config
            .env
            .insert("TESTAPP_HEALTH".to_owned(), "fail".to_owned());
    }
    DeployRequest {
        image: image.to_owned(),
        config,
        strategy: None,
        max_unavailable: None,
        wait_timeout: Some(if healthy { 60 } else { 15 }),
        initial_count: Some(3),
        description: Some(format!("version {version}")),
        release_command: None,
        release_command_timeout: None,
        release_command_guest: None,
        smoke_checks: None,
        // 3 s, not the 10 s default, per machine: a crash at start still shows within
        // it, and the tests' dozen of rolled machines take a minute less.
        smoke_check_seconds: Some(3),
        only_machines: None,
        regions: None,
        fly_toml: None,
    }
}

fn with_strategy(mut request: DeployRequest, strategy: &str) -> DeployRequest {
    request.strategy = Some(strategy.to_owned());
    request
}

/// The ids of the app's machines that are not destroyed, sorted.
async fn live_machines(client: &Client) -> Vec<String> {
    let mut ids: Vec<String> = client
        .list_machines(APP)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.state != "destroyed" && m.state != "destroying")
        .map(|m| m.id)
        .collect();
    ids.sort();
    ids
}

/// Waits until the app has `count` live machines (`why` names the wait); their ids.
async fn live_count(client: &Client, count: usize, why: &str) -> Vec<String> {
    eventually(why, Duration::from_secs(60), || async {
        let live = live_machines(client).await;
        (live.len() == count).then_some(live)
    })
    .await
}

/// Every live machine runs `version`.
async fn all_run(client: &Client, version: &str) {
    for machine in client.list_machines(APP).await.unwrap() {
        if machine.state == "destroyed" || machine.state == "destroying" {
            continue;
        }
        assert_eq!(
            machine
                .config
                .env
                .get("TESTAPP_VERSION")
                .map(String::as_str),
            Some(version),
            "machine {} runs release {version}",
            machine.id
        );
    }
}

/// How many machines each batch of a deployment updated before checking them: the runs of
/// consecutive `update` steps.
fn batches(deployment: &DeploymentResponse) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut run = 0;
    for kind in kinds(deployment) {
        if kind == "update" {
            run += 1;
        } else if run > 0 {
            sizes.push(run);
            run = 0;
        }
    }
    if run > 0 {
        sizes.push(run);
    }
    sizes
}

fn with_max_unavailable(mut request: DeployRequest, max_unavailable: f64) -> DeployRequest {
    request.max_unavailable = Some(max_unavailable);
    request
}

/// The kinds of a deployment's steps, without the progress lines of checks that change
/// while a machine is waited for (`waiting`).
fn kinds(deployment: &DeploymentResponse) -> Vec<&str> {
    deployment
        .steps
        .iter()
        .map(|s| s.kind.as_str())
        .filter(|kind| *kind != "waiting")
        .collect()
}

/// Follows a deployment to its end.
async fn finished(client: &Client, id: &str) -> DeploymentResponse {
    eventually(
        "the deployment to end",
        Duration::from_secs(240),
        || async {
            let deployment = client.deployment(APP, id).await.ok()?;
            (!matches!(deployment.status.as_str(), "running" | "rolling_back"))
                .then_some(deployment)
        },
    )
    .await
}

/// Requests through the proxy from a few loops until stopped: (answered, failed).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    /// When each version (`(version X)` in the greeting) first answered.
    first_seen: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let first_seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let http = aloft_testkit::http();
        let started = Instant::now();
        let tasks = (0..4)
            .map(|_| {
                let (stop, ok, failed, failures, http, first_seen) = (
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    failures.clone(),
                    http.clone(),
                    first_seen.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let answer = http
                            .get(format!("http://{proxy}/"))
                            .header("host", format!("{APP}.aloft.localhost"))
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await;
                        match answer {
                            Ok(response) if response.status() == 200 => {
                                let at = Instant::now();
                                ok.fetch_add(1, Ordering::SeqCst);
                                let body = response.text().await.unwrap_or_default();
                                if let Some(version) = body
                                    .split("(version ")
                                    .nth(1)
                                    .and_then(|rest| rest.split(')').next())
                                {
                                    first_seen
                                        .lock()
                                        .unwrap()
                                        .entry(version.to_owned())
                                        .or_insert(at);
                                }
                            }
                            other => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                let why = match other {
                                    Ok(response) => format!(
                                        "{} {}",
                                        response.status(),
                                        response.text().await.unwrap_or_default()
                                    ),
                                    // Every cause, and when: a transport error
                                    // ("error sending request") names nothing alone.
                                    Err(error) => {
                                        let mut why = error.to_string();
                                        let mut source = std::error::Error::source(&error);
                                        while let Some(cause) = source {
                                            why.push_str(&format!(": {cause}"));
                                            source = cause.source();
                                        }
                                        format!("{why} (at {:?})", started.elapsed())
                                    }
                                };
                                failures.lock().unwrap().push(why);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            failures,
            first_seen,
            tasks,
        }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        let failures = self.failures.lock().unwrap().clone();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            failures,
        )
    }
}

/// Waits until the proxy answers with `version`'s greeting.
async fn wait_serving(proxy: std::net::SocketAddr, version: &str) {
    let wanted = format!("version {version}");
    eventually(
        &format!("{wanted} to serve"),
        Duration::from_secs(30),
        || async { served_version(proxy).await.filter(|b| b.contains(&wanted)) },
    )
    .await;
}

/// Deploys `request` while requests flow through the proxy, and checks none failed:
/// the ended deployment, its wall time and how many requests were answered.
async fn deploy_under_load(
    client: &Client,
    proxy: std::net::SocketAddr,
    request: &DeployRequest,
) -> (DeploymentResponse, Duration, u64) {
    let load = Load::start(proxy);
    let started = Instant::now();
    let deployment = client.deploy(APP, request).await.unwrap();
    let deployment = finished(client, &deployment.id).await;
    let took = started.elapsed();
    let (ok, failed, failures) = load.finish().await;
    assert_eq!(
        failed, 0,
        "failed requests during deployment {} ({}): {failures:?}",
        deployment.id, deployment.status
    );
    assert!(ok > 0);
    (deployment, took, ok)
}

/// One slow request per blue machine at a time (`POST /slow`, forced to that machine:
/// the proxy cannot send it again elsewhere), from before a deploy until stopped.
struct SlowProbes {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<SlowProbe>>>,
}

/// One slow request: its machine, when it was sent and answered (Unix ms), and how.
#[derive(Debug)]
struct SlowProbe {
    machine: String,
    sent_ms: i64,
    done_ms: i64,
    outcome: Result<u16, String>,
}

fn unix_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

impl SlowProbes {
    fn start(proxy: std::net::SocketAddr, machines: &[String]) -> SlowProbes {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = machines
            .iter()
            .map(|machine| {
                let (stop, machine, http) = (stop.clone(), machine.clone(), aloft_testkit::http());
                tokio::spawn(async move {
                    let mut probes = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let sent_ms = unix_ms();
                        let outcome = http
                            .post(format!("http://{proxy}/slow?ms=3000"))
                            .header("host", format!("{APP}.aloft.localhost"))
                            .header("fly-force-instance-id", &machine)
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await;
                        let outcome = match outcome {
                            Ok(r) if matches!(r.status().as_u16(), 200 | 503) => {
                                Ok(r.status().as_u16())
                            }
                            Ok(r) => Err(format!(
                                "{} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            )),
                            Err(e) => Err(format!("{e:?}")),
                        };
                        let gone = outcome == Ok(503);
                        probes.push(SlowProbe {
                            machine: machine.clone(),
                            sent_ms,
                            done_ms: unix_ms(),
                            outcome,
                        });
                        if gone {
                            // Out of the rotation: nothing more to learn from this one.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    probes
                })
            })
            .collect();
        SlowProbes { stop, tasks }
    }

    async fn finish(self) -> Vec<SlowProbe> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.unwrap());
        }
        all
    }
}

/// Every slow request sent to a blue machine before it began to leave was answered (a
/// stopping machine finishes what it has, within its kill timeout, before it is
/// destroyed); those sent later may be refused (503, or 502 when the machine stopped
/// listening before the proxy heard of it), as a request forced to a stopping machine is.
/// Positive control: slow requests were in flight on blue machines as they began to leave.
async fn blue_finished_its_requests(
    client: &Client,
    blue: &[String],
    probes: &[SlowProbe],
) -> String {
    let mut leaving = std::collections::HashMap::new();
    let mut events = Vec::new();
    for machine in blue {
        let mut first = None;
        for e in client.events(APP, machine).await.unwrap() {
            if (e.kind == "stop" && e.status == "requested")
                || (e.kind == "destroy" && e.status == "destroying")
            {
                first = Some(first.map_or(e.timestamp, |f: i64| f.min(e.timestamp)));
            }
            events.push(format!(
                "{machine} {} {} {} {}",
                e.timestamp, e.kind, e.status, e.request
            ));
        }
        let first = first.unwrap_or_else(|| panic!("machine {machine} never left: {events:#?}"));
        leaving.insert(machine.clone(), first);
    }
    let bad: Vec<&SlowProbe> = probes
        .iter()
        .filter(|p| p.outcome.is_err() && p.sent_ms < leaving[&p.machine])
        .collect();
    assert!(
        bad.is_empty(),
        "slow requests lost by blue machines: {bad:#?}\ntheir events: {events:#?}"
    );
    let overlapping = probes
        .iter()
        .filter(|p| p.sent_ms < leaving[&p.machine] && p.done_ms > leaving[&p.machine])
        .count();
    assert!(
        overlapping >= 2,
        "too few slow requests were in flight as blue machines left ({overlapping}): the probe cannot tell"
    );
    format!(
        "{} slow requests to blue machines, {overlapping} in flight as their machine began to leave, none lost",
        probes.len()
    )
}

/// A bluegreen deploy under load, checked as [`deploy_under_load`] does, with slow
/// requests to each blue machine ([`blue_finished_its_requests`]), and also that no
/// request reached a green machine before the switch: the switch step is watched
/// every 20 ms, so a green answer well before it was seen (by more than the watch's
/// own delay) came before the switch.
async fn bluegreen_under_load(
    client: &Client,
    proxy: std::net::SocketAddr,
    request: &DeployRequest,
    version: &str,
) -> (DeploymentResponse, String) {
    let blue = live_machines(client).await;
    let slow = SlowProbes::start(proxy, &blue);
    let load = Load::start(proxy);
    let first_seen = load.first_seen.clone();
    let started = Instant::now();
    let deployment = client.deploy(APP, request).await.unwrap();
    let switch_seen = eventually("the switch to green", Duration::from_secs(240), || async {
        let current = client.deployment(APP, &deployment.id).await.ok()?;
        assert!(
            matches!(current.status.as_str(), "running" | "succeeded"),
            "{current:#?}"
        );
        current
            .steps
            .iter()
            .any(|s| s.kind == "switch")
            .then(Instant::now)
    })
    .await;
    let early = first_seen.lock().unwrap().get(version).copied();
    let deployment = finished(client, &deployment.id).await;
    let took = started.elapsed();
    let (ok, failed, failures) = load.finish().await;
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    assert!(ok > 0);
    let slow = blue_finished_its_requests(client, &blue, &slow.finish().await).await;
    if let Some(first) = early {
        assert!(
            first + Duration::from_millis(300) >= switch_seen,
            "green answered {:?} before the switch was seen",
            switch_seen - first
        );
    }
    // Positive control: the probe does see green, once it takes traffic.
    assert!(
        first_seen.lock().unwrap().contains_key(version),
        "no answer from green at all: the probe cannot tell"
    );
    (
        deployment,
        format!("{took:?}, {ok} requests, none failed; {slow}"),
    )
}

async fn served_version(proxy: std::net::SocketAddr) -> Option<String> {
    let body = aloft_testkit::http()
        .get(format!("http://{proxy}/"))
        .header("host", format!("{APP}.aloft.localhost"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(body)
}

/// The first deploy creates three machines; a rolling deploy replaces them one at a time
/// while requests flow, with none failing; a release whose health check fails is rolled
/// back within its wait timeout while the previous one keeps serving, again with no
/// failed request; an `immediate` deploy updates every machine at once.
#[tokio::test]
async fn rolling_deploys_lose_no_request_and_a_failing_release_rolls_back() {
    let host = Host::new();
    let image = aloft_testkit::testapp_image();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app(APP, None).await.unwrap();
    let proxy = proxy_address(&host);

    let first = client
        .deploy(APP, &release(&image, "1", true))
        .await
        .unwrap();
    assert_eq!(first.release.version, 1);
    let first = finished(client, &first.id).await;
    assert_eq!(first.status, "succeeded", "{first:#?}");
    let machines = client.list_machines(APP).await.unwrap();
    assert_eq!(
        machines.len(),
        3,
        "the first deploy creates the machines asked for"
    );
    wait_serving(proxy, "1").await;

    let (second, took, ok) = deploy_under_load(client, proxy, &release(&image, "2", true)).await;
    assert_eq!(second.status, "succeeded", "{second:#?}");
    eprintln!("rolling deploy of 3 machines: {took:?}, {ok} requests, none failed");
    assert_eq!(batches(&second), [1, 1, 1], "0.33 of 3 is one at a time");
    wait_serving(proxy, "2").await;

    // `max_unavailable = 1` is one machine at a time (Fly's count), not 100% of them.
    let one = with_max_unavailable(release(&image, "2a", true), 1.0);
    let (deployment, took, ok) = deploy_under_load(client, proxy, &one).await;
    assert_eq!(deployment.status, "succeeded", "{deployment:#?}");
    assert_eq!(batches(&deployment), [1, 1, 1], "{:?}", kinds(&deployment));
    eprintln!("rolling deploy, max_unavailable 1: {took:?}, {ok} requests, none failed");
    wait_serving(proxy, "2a").await;
    // A fraction is of the group, rounded up: 0.34 of 3 is 2 at once, one left serving.
    let fraction = with_max_unavailable(release(&image, "2", true), 0.34);
    let (deployment, took, ok) = deploy_under_load(client, proxy, &fraction).await;
    assert_eq!(deployment.status, "succeeded", "{deployment:#?}");
    assert_eq!(batches(&deployment), [2, 1], "{:?}", kinds(&deployment));
    eprintln!("rolling deploy, max_unavailable 0.34: {took:?}, {ok} requests, none failed");
    wait_serving(proxy, "2").await;

    let (third, took, ok) = deploy_under_load(client, proxy, &release(&image, "3", false)).await;
    assert_eq!(third.status, "rolled_back", "{third:#?}");
    let error = third.error.clone().unwrap_or_default();
    assert!(
        error.contains("servicecheck") && error.contains("TESTAPP_HEALTH=fail"),
        "the failing check and its output: {error}"
    );
    eprintln!("failed deploy rolled back in {took:?}, {ok} requests, none failed");
    let version = served_version(proxy).await.unwrap_or_default();
    assert!(version.contains("version 2"), "{version}");
    for machine in client.list_machines(APP).await.unwrap() {
        assert_eq!(
            machine
                .config
                .env
                .get("TESTAPP_VERSION")
                .map(String::as_str),
            Some("2"),
            "machine {} runs the previous release again",
            machine.id
        );
    }

    // `immediate`: every machine updated at once, then checked.
    let mut immediate = release(&image, "4", true);
    immediate.strategy = Some("immediate".to_owned());
    let fourth = client.deploy(APP, &immediate).await.unwrap();
    let fourth = finished(client, &fourth.id).await;
    assert_eq!(fourth.status, "succeeded", "{fourth:#?}");
    let kinds = kinds(&fourth);
    assert_eq!(
        kinds[..4],
        ["note", "update", "update", "update"],
        "all three updated before any is checked: {kinds:?}"
    );
    wait_serving(proxy, "4").await;

    let releases = client.releases(APP).await.unwrap();
    let statuses: Vec<(i64, &str)> = releases
        .iter()
        .map(|r| (r.version, r.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            (6, "complete"),
            (5, "failed"),
            (4, "complete"),
            (3, "complete"),
            (2, "complete"),
            (1, "complete")
        ]
    );
}

/// `aloftd` killed with -9 in the middle of a rolling deploy resumes it when it starts
/// again, and the deployment ends with every machine on the new release.
#[tokio::test]
async fn a_deployment_resumes_after_kill_9_of_the_daemon() {
    let host = Host::new();
    let image = aloft_testkit::testapp_image();
    let mut server = Server::start(&host).await;
    let client = server.client.clone();
    client.create_app(APP, None).await.unwrap();
    let first = client
        .deploy(APP, &release(&image, "1", true))
        .await
        .unwrap();
    assert_eq!(finished(&client, &first.id).await.status, "succeeded");

    let second = client
        .deploy(APP, &release(&image, "2", true))
        .await
        .unwrap();
    let steps_before = eventually(
        "the deployment to update its first machine",
        Duration::from_secs(60),
        || async {
            let deployment = client.deployment(APP, &second.id).await.ok()?;
            deployment
                .steps
                .iter()
                .any(|s| s.kind == "update")
                .then_some(deployment.steps.len())
        },
    )
    .await;
    server.kill();
    let killed = client.deployment(APP, &second.id).await;
    assert!(killed.is_err(), "the API is gone with the daemon");

    let server = Server::start(&host).await;
    let client = &server.client;
    let second = finished(client, &second.id).await;
    assert_eq!(second.status, "succeeded", "{second:#?}");
    let healthy_after = second.steps[steps_before..]
        .iter()
        .filter(|s| s.kind == "healthy")
        .count();
    assert!(
        healthy_after >= 1,
        "the restarted daemon carried the deployment on: {second:#?}"
    );
    let machines = client.list_machines(APP).await.unwrap();
    assert_eq!(machines.len(), 3);
    for machine in machines {
        assert_eq!(
            machine
                .config
                .env
                .get("TESTAPP_VERSION")
                .map(String::as_str),
            Some("2"),
            "machine {} runs the new release",
            machine.id
        );
        assert_eq!(machine.state, "started");
    }
    let proxy = proxy_address(&host);
    wait_serving(proxy, "2").await;
}

/// `canary` checks one new machine first, destroys it and updates the others in place;
/// `bluegreen` brings up a full new set, then destroys the old one; both with requests
/// flowing and none failing. A canary that fails its checks is destroyed and nothing else
/// is touched.
#[tokio::test]
async fn canary_and_bluegreen_deploys_lose_no_request_and_a_failing_canary_changes_nothing() {
    let host = Host::new();
    let image = aloft_testkit::testapp_image();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app(APP, None).await.unwrap();
    let proxy = proxy_address(&host);
    let first = client
        .deploy(APP, &release(&image, "1", true))
        .await
        .unwrap();
    assert_eq!(finished(client, &first.id).await.status, "succeeded");
    wait_serving(proxy, "1").await;
    let original = live_machines(client).await;
    assert_eq!(original.len(), 3);

    // The canary's rolling part honours `max_unavailable` as a count: 1 is one machine.
    let canary = with_max_unavailable(with_strategy(release(&image, "2", true), "canary"), 1.0);
    let (second, took, ok) = deploy_under_load(client, proxy, &canary).await;
    assert_eq!(second.status, "succeeded", "{second:#?}");
    eprintln!("canary deploy of 3 machines: {took:?}, {ok} requests, none failed");
    let steps = kinds(&second);
    assert_eq!(
        steps[..4],
        ["note", "canary", "healthy", "retire"],
        "the canary first: {steps:?}"
    );
    assert_eq!(batches(&second), [1, 1, 1], "one at a time: {steps:?}");
    assert_eq!(
        live_machines(client).await,
        original,
        "updated in place, the canary gone"
    );
    all_run(client, "2").await;
    wait_serving(proxy, "2").await;

    // Bluegreen keeps green out of traffic until every green machine passes, then
    // switches at once (`max_unavailable` does not apply: green comes whole).
    let bluegreen =
        with_max_unavailable(with_strategy(release(&image, "3", true), "bluegreen"), 1.0);
    let (third, slow) = bluegreen_under_load(client, proxy, &bluegreen, "3").await;
    eprintln!("bluegreen deploy of 3 machines: {slow}");
    assert_eq!(third.status, "succeeded", "{third:#?}");
    let steps = kinds(&third);
    assert_eq!(
        steps.iter().filter(|k| **k == "green").count(),
        3,
        "{steps:?}"
    );
    assert_eq!(
        steps.iter().filter(|k| **k == "retire").count(),
        3,
        "{steps:?}"
    );
    let first_retire = steps.iter().position(|k| *k == "retire").unwrap();
    let switch = steps.iter().position(|k| *k == "switch").unwrap();
    assert_eq!(
        steps[..switch].iter().filter(|k| **k == "healthy").count(),
        3,
        "every green machine healthy before the switch: {steps:?}"
    );
    assert!(
        switch < first_retire,
        "the switch before any blue one goes: {steps:?}"
    );
    let green = live_count(client, 3, "the blue machines to be gone").await;
    assert!(
        green.iter().all(|id| !original.contains(id)),
        "a whole new set: {green:?} vs {original:?}"
    );
    all_run(client, "3").await;
    wait_serving(proxy, "3").await;

    let failing = with_strategy(release(&image, "4", false), "canary");
    let (fourth, took, ok) = deploy_under_load(client, proxy, &failing).await;
    assert_eq!(fourth.status, "rolled_back", "{fourth:#?}");
    eprintln!("failing canary rolled back in {took:?}, {ok} requests, none failed");
    let steps = kinds(&fourth);
    assert!(
        !steps.contains(&"update"),
        "no machine was updated: {steps:?}"
    );
    let error = fourth.error.clone().unwrap_or_default();
    assert!(
        error.contains("TESTAPP_HEALTH=fail"),
        "the failing check's output: {error}"
    );
    let left = live_count(client, 3, "the failed canary to be gone").await;
    assert_eq!(left, green);
    all_run(client, "3").await;
}

/// The release command runs once, before any machine, in a temporary machine that is
/// destroyed after; one that exits 1 fails the deployment with its output and changes no
/// machine.
#[tokio::test]
async fn a_release_command_runs_first_and_a_failing_one_changes_nothing() {
    let host = Host::new();
    let image = aloft_testkit::testapp_image();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app(APP, None).await.unwrap();
    let command = |code: &str| {
        Some(vec![
            "/aloft-testapp".to_owned(),
            "release".to_owned(),
            code.to_owned(),
        ])
    };

    let mut first = release(&image, "1", true);
    first.initial_count = Some(2);
    first.release_command = command("0");
    // `[deploy.release_command_vm]`: the command's machine gets its own size.
    let mut guest = aloft_types::machine::MachineGuest::preset("shared-cpu-1x").unwrap();
    guest.memory_mb = 512;
    first.release_command_guest = Some(guest);
    let first = client.deploy(APP, &first).await.unwrap();
    let first = finished(client, &first.id).await;
    assert_eq!(first.status, "succeeded", "{first:#?}");
    let steps = kinds(&first);
    assert_eq!(steps[..2], ["release_command", "released"], "{steps:?}");
    assert!(
        first.steps[1]
            .message
            .contains("release command of version 1: running migrations"),
        "its output: {:?}",
        first.steps[1].message
    );
    // Fly's RELEASE_COMMAND=1, and the memory limit of release_command_vm (512 MB).
    assert!(
        first.steps[1]
            .message
            .contains("RELEASE_COMMAND=1 memory.max=536870912"),
        "its environment and size: {:?}",
        first.steps[1].message
    );
    let machines = live_count(client, 2, "the release command's machine to be gone").await;

    let mut second = release(&image, "2", true);
    second.release_command = command("1");
    let second = client.deploy(APP, &second).await.unwrap();
    let second = finished(client, &second.id).await;
    assert_eq!(second.status, "failed", "{second:#?}");
    let error = second.error.clone().unwrap_or_default();
    assert!(
        error.contains("exited with code 1") && error.contains("migration 3 failed"),
        "the exit code and the command's output: {error}"
    );
    // Without release_command_vm, the command's machine has the release's own size.
    assert!(
        error.contains("RELEASE_COMMAND=1 memory.max=") && !error.contains("memory.max=536870912"),
        "{error}"
    );
    let steps = kinds(&second);
    assert_eq!(
        steps,
        ["release_command", "failed"],
        "nothing else was done"
    );
    let after = live_count(client, 2, "the release command's machine to be gone").await;
    assert_eq!(after, machines);
    all_run(client, "1").await;
    let releases = client.releases(APP).await.unwrap();
    assert_eq!(releases[0].status, "failed");
}

/// A release whose machines crash as they start (exit 1 before listening) fails at the
/// first exit (smoke checks), not at the wait timeout, with the exit code and the crash's
/// log lines, and is rolled back while the previous release keeps serving with no failed
/// request: with service checks configured, and again without any.
#[tokio::test]
async fn a_crashing_release_fails_at_once_and_the_previous_one_keeps_serving() {
    let host = Host::new();
    let image = aloft_testkit::testapp_image();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app(APP, None).await.unwrap();
    let proxy = proxy_address(&host);
    let crashing = |base: DeployRequest| {
        let mut request = base;
        request
            .config
            .env
            .insert("TESTAPP_CRASH".to_owned(), "1".to_owned());
        // Far longer than the test may take: the failure must come from the crash.
        request.wait_timeout = Some(300);
        request
    };
    let unchecked = |version: &str| {
        let mut request = release(&image, version, true);
        for service in &mut request.config.services {
            service.checks.clear();
        }
        request
    };

    for (what, good, bad) in [
        (
            "with service checks",
            release(&image, "1", true),
            release(&image, "2", true),
        ),
        ("without checks", unchecked("3"), unchecked("4")),
    ] {
        let version = good.config.env["TESTAPP_VERSION"].clone();
        let first = client.deploy(APP, &good).await.unwrap();
        let first = finished(client, &first.id).await;
        assert_eq!(first.status, "succeeded", "{what}: {first:#?}");
        assert!(
            first
                .steps
                .iter()
                .any(|s| s.kind == "healthy" && s.message.contains("smoke checks")),
            "{what}: the good release passed its smoke checks: {first:#?}"
        );
        wait_serving(proxy, &version).await;

        let (deployment, took, ok) = deploy_under_load(client, proxy, &crashing(bad)).await;
        assert_eq!(deployment.status, "rolled_back", "{what}: {deployment:#?}");
        let error = deployment.error.clone().unwrap_or_default();
        assert!(
            error.contains("exited with code 1") && error.contains("cannot open the database"),
            "{what}: the exit code and the crash's last lines: {error}"
        );
        assert!(
            took < Duration::from_secs(120),
            "{what}: failed at the crash, not at the 300 s wait timeout: {took:?}"
        );
        eprintln!("{what}: a crashing release rolled back in {took:?}, {ok} requests, none failed");
        all_run(client, &version).await;
        wait_serving(proxy, &version).await;
    }

    // Positive control: with smoke checks off, nothing watches the machines once they
    // are started, so the same crash is not caught as one (at most a machine already
    // seen stopped for good fails it); a release reported live this way leaves an app
    // whose machines all stopped, which the app's status says.
    let mut off = crashing(unchecked("5"));
    off.smoke_checks = Some(false);
    off.strategy = Some("immediate".to_owned());
    off.config.restart = Some(aloft_types::machine::MachineRestart {
        policy: Some(aloft_types::machine::RestartPolicy::No),
        max_retries: 0,
    });
    let deployment = client.deploy(APP, &off).await.unwrap();
    assert_eq!(deployment.smoke_check_seconds, 0);
    let deployment = finished(client, &deployment.id).await;
    let error = deployment.error.clone().unwrap_or_default();
    assert!(!error.contains("appears to be crashing"), "{error}");
    match deployment.status.as_str() {
        "succeeded" => {
            eventually(
                "the app to show its machines all stopped",
                Duration::from_secs(60),
                || async { (client.app(APP).await.ok()?.status == "suspended").then_some(()) },
            )
            .await;
        }
        "rolled_back" => assert!(error.contains("exited with code 1 and stopped"), "{error}"),
        other => panic!("{other}: {deployment:#?}"),
    }
}
