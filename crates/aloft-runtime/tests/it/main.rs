//! The Docker Engine runtime against a real engine: every test creates its own labelled
//! containers and removes them when it ends, passing or failing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aloft_runtime::{
    BindMount, ContainerSpec, ContainerState, DockerRuntime, ExecOptions, Runtime, RuntimeError,
};
use aloft_testkit::{ContainerCleanup, busybox_image};
use aloft_types::Signal;
use futures_util::StreamExt;

const TEST_LABEL: &str = "dev.aloft.test";

struct Harness {
    runtime: DockerRuntime,
    cleanup: ContainerCleanup,
    count: std::cell::Cell<u32>,
}

impl Harness {
    async fn new() -> Harness {
        let image = busybox_image();
        let runtime = DockerRuntime::connect()
            .await
            .expect("Docker Engine must be running for these tests");
        assert!(
            !runtime.ensure_image(image).await.unwrap(),
            "an image the engine has is not pulled"
        );
        Harness {
            runtime,
            cleanup: ContainerCleanup::new(TEST_LABEL),
            count: std::cell::Cell::new(0),
        }
    }

    fn spec(&self, script: &str) -> ContainerSpec {
        let (key, value) = self.cleanup.label();
        self.count.set(self.count.get() + 1);
        ContainerSpec {
            name: format!("aloft-test-{}-{}", value, self.count.get()),
            image: busybox_image().to_owned(),
            entrypoint: None,
            cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
            env: BTreeMap::new(),
            labels: BTreeMap::from([(key.to_owned(), value.to_owned())]),
            hostname: None,
            cpus: None,
            memory_mb: None,
            pids: None,
            mounts: vec![],
            stop_signal: Signal::Int,
            tty: false,
        }
    }

    async fn run(&self, spec: &ContainerSpec) -> String {
        let id = self.runtime.create(spec).await.unwrap();
        self.runtime.start(&id).await.unwrap();
        id
    }

    async fn exec(&self, id: &str, script: &str) -> (i64, String, String) {
        let command = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let output = self
            .runtime
            .exec(id, &command, &ExecOptions::default())
            .await
            .unwrap();
        (
            output.exit_code,
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    }
}

const TRAP_INT: &str =
    "trap 'echo trapped; exit 0' INT; echo ready; while true; do sleep 0.1; done";

#[tokio::test]
async fn created_started_exec_and_graceful_stop() {
    let harness = Harness::new().await;
    let id = harness
        .runtime
        .create(&harness.spec(TRAP_INT))
        .await
        .unwrap();
    let info = harness.runtime.inspect(&id).await.unwrap().unwrap();
    assert_eq!(info.state, ContainerState::Created);
    harness.runtime.start(&id).await.unwrap();
    assert_eq!(
        harness.runtime.inspect(&id).await.unwrap().unwrap().state,
        ContainerState::Running
    );

    assert_eq!(
        harness.exec(&id, "echo hi").await,
        (0, "hi\n".to_owned(), String::new())
    );

    let started = Instant::now();
    let exit = harness
        .runtime
        .stop(&id, Signal::Int, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the trap should end it before the timeout"
    );
    assert_eq!(exit.exit_code, 0, "{exit:?}");
    assert_eq!(exit.signal, None);
    let lines: Vec<String> = harness
        .runtime
        .logs(&id, false, None, None)
        .map(|line| line.unwrap().text)
        .collect()
        .await;
    assert_eq!(lines, vec!["ready", "trapped"]);

    harness.runtime.remove(&id).await.unwrap();
    assert!(harness.runtime.inspect(&id).await.unwrap().is_none());
    harness
        .runtime
        .remove(&id)
        .await
        .expect("removing twice is fine");
}

#[tokio::test]
async fn stop_kills_after_the_timeout_when_the_signal_is_ignored() {
    let harness = Harness::new().await;
    let id = harness
        .run(&harness.spec("trap '' INT TERM; while true; do sleep 0.1; done"))
        .await;
    let started = Instant::now();
    let exit = harness
        .runtime
        .stop(&id, Signal::Int, Duration::from_secs(1))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1),
        "killed before the timeout: {elapsed:?}"
    );
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)), "{exit:?}");
}

#[tokio::test]
async fn exec_reports_exit_code_stderr_and_takes_stdin() {
    let harness = Harness::new().await;
    let id = harness
        .run(&harness.spec("while true; do sleep 1; done"))
        .await;
    assert_eq!(
        harness.exec(&id, "echo oops >&2; exit 3").await,
        (3, String::new(), "oops\n".to_owned())
    );
    let options = ExecOptions {
        stdin: Some(b"from stdin".to_vec()),
        ..ExecOptions::default()
    };
    let output = harness
        .runtime
        .exec(&id, &["cat".to_owned()], &options)
        .await
        .unwrap();
    assert_eq!(
        (output.exit_code, output.stdout.as_slice()),
        (0, &b"from stdin"[..])
    );
    let tty = ExecOptions {
        tty: true,
        ..ExecOptions::default()
    };
    let output = harness
        .runtime
        .exec(&id, &["sh".into(), "-c".into(), "tty".into()], &tty)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("/dev/pts/"),
        "{output:?}"
    );
}

#[tokio::test]
async fn wait_returns_how_the_process_exited() {
    let harness = Harness::new().await;
    let id = harness.run(&harness.spec("sleep 0.2; exit 7")).await;
    let exit = harness.runtime.wait(&id).await.unwrap();
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (7, None, false)
    );
    let info = harness.runtime.inspect(&id).await.unwrap().unwrap();
    assert_eq!(info.state, ContainerState::Exited);
    assert_eq!(info.exit.unwrap().exit_code, 7);
}

#[tokio::test]
async fn env_limits_labels_mounts_and_no_network() {
    let harness = Harness::new().await;
    let data = tempfile::tempdir().unwrap();
    let mut spec = harness.spec("while true; do sleep 1; done");
    spec.env.insert("GREETING".into(), "hello there".into());
    spec.memory_mb = Some(64);
    spec.cpus = Some(0.5);
    spec.mounts.push(BindMount {
        source: data.path().to_owned(),
        target: "/data".into(),
        read_only: false,
    });
    let id = harness.run(&spec).await;

    assert_eq!(
        harness.exec(&id, "echo \"$GREETING\"").await.1,
        "hello there\n"
    );
    assert_eq!(
        harness.exec(&id, "ls /sys/class/net").await.1,
        "lo\n",
        "machines get no engine network"
    );
    assert_eq!(
        harness
            .exec(&id, "cat /proc/sys/net/ipv6/conf/all/disable_ipv6")
            .await
            .1,
        "0\n"
    );
    assert_eq!(harness.exec(&id, "echo persisted > /data/file").await.0, 0);
    assert_eq!(
        std::fs::read_to_string(data.path().join("file")).unwrap(),
        "persisted\n"
    );

    let usage = harness.runtime.usage(&id).await.unwrap();
    assert_eq!(usage.memory_limit_bytes, 64 * 1024 * 1024);

    let (key, value) = harness.cleanup.label();
    let listed = harness
        .runtime
        .list(&BTreeMap::from([(key.to_owned(), value.to_owned())]))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].labels.get(key).map(String::as_str), Some(value));
    let other = harness
        .runtime
        .list(&BTreeMap::from([(
            key.to_owned(),
            "someone-else".to_owned(),
        )]))
        .await
        .unwrap();
    assert!(other.is_empty());
}

#[tokio::test]
async fn missing_containers_and_images_are_clear_errors() {
    let harness = Harness::new().await;
    assert!(
        harness
            .runtime
            .inspect("aloft-no-such-container")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        harness.runtime.start("aloft-no-such-container").await,
        Err(RuntimeError::NotFound { .. })
    ));
    // A registry on a closed loopback port: refused at once, and no traffic leaves the host.
    let missing = harness
        .runtime
        .ensure_image("127.0.0.1:9/aloft/missing:1")
        .await;
    assert!(
        matches!(missing, Err(RuntimeError::ImageUnavailable { .. })),
        "{missing:?}"
    );
}

/// A file holding a tar archive of one Dockerfile (removed when dropped).
fn context_with(dockerfile: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), aloft_testkit::dockerfile_context(dockerfile)).unwrap();
    file
}

/// Removes an image tag when dropped, passing or failing.
struct ImageCleanup(String);

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

async fn build(
    runtime: &DockerRuntime,
    dockerfile: &str,
    tag: &str,
    args: &[(&str, &str)],
) -> (String, Result<String, RuntimeError>) {
    build_with_secrets(runtime, dockerfile, tag, args, &[]).await
}

async fn build_with_secrets(
    runtime: &DockerRuntime,
    dockerfile: &str,
    tag: &str,
    args: &[(&str, &str)],
    secrets: &[(&str, &str)],
) -> (String, Result<String, RuntimeError>) {
    build_as(runtime, dockerfile, tag, (args, secrets), false).await
}

/// `KEY=VALUE` pairs (build args, secrets).
type Pairs<'a> = &'a [(&'a str, &'a str)];

async fn build_as(
    runtime: &DockerRuntime,
    dockerfile: &str,
    tag: &str,
    (args, secrets): (Pairs<'_>, Pairs<'_>),
    no_cache: bool,
) -> (String, Result<String, RuntimeError>) {
    let options = aloft_runtime::BuildOptions {
        dockerfile: "Dockerfile".to_owned(),
        tag: tag.to_owned(),
        target: None,
        args: args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        labels: BTreeMap::from([(TEST_LABEL.to_owned(), "build".to_owned())]),
        secrets: secrets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        no_cache,
    };
    let mut output = String::new();
    let context = context_with(dockerfile);
    let mut stream = runtime.build_image(context.path().to_path_buf(), &options);
    while let Some(item) = stream.next().await {
        match item {
            Ok(aloft_runtime::BuildProgress::Output(text)) => output.push_str(&text),
            Ok(aloft_runtime::BuildProgress::Built { id }) => return (output, Ok(id)),
            Err(error) => return (output, Err(error)),
        }
    }
    (
        output,
        Err(RuntimeError::Build {
            tag: tag.to_owned(),
            message: "the stream ended without an outcome".to_owned(),
        }),
    )
}

/// A build again of the same Dockerfile takes its steps from the builder's cache (the
/// control: the same image); with `no_cache` every step runs again (a `RUN` that writes
/// the time makes another image).
#[tokio::test]
async fn a_build_without_the_cache_runs_every_step_again() {
    let harness = Harness::new().await;
    let runtime = &harness.runtime;
    let tag = format!("aloft-test-nocache:{}", std::process::id());
    let _cleanup = ImageCleanup(tag.clone());
    let dockerfile = format!("FROM {}\nRUN date +%s%N > /built-at\n", busybox_image());
    let (output, first) = build(runtime, &dockerfile, &tag, &[]).await;
    let first = first.unwrap_or_else(|e| panic!("{e}: {output}"));
    let (output, cached) = build(runtime, &dockerfile, &tag, &[]).await;
    let cached = cached.unwrap_or_else(|e| panic!("{e}: {output}"));
    assert_eq!(
        cached, first,
        "the control: a second build comes from the cache"
    );
    let (output, fresh) = build_as(runtime, &dockerfile, &tag, (&[], &[]), true).await;
    let fresh = fresh.unwrap_or_else(|e| panic!("{e}: {output}"));
    assert_ne!(fresh, first, "no_cache ran the RUN step again: {output}");
}

#[tokio::test]
async fn buildkit_builds_cache_mounts_with_args_and_reports_failures() {
    let harness = Harness::new().await;
    let runtime = &harness.runtime;
    let tag = format!("aloft-test-buildkit:{}", std::process::id());
    let _cleanup = ImageCleanup(tag.clone());
    // `RUN --mount` needs BuildKit: the classic builder refuses it.
    let dockerfile = format!(
        "FROM {}\nARG GREETING\nRUN --mount=type=cache,target=/root/.cache echo \"$GREETING\" > /root/.cache/seen && cp /root/.cache/seen /greeting\n",
        busybox_image()
    );
    let (output, built) = build(runtime, &dockerfile, &tag, &[("GREETING", "hello")]).await;
    let id = built.unwrap_or_else(|e| panic!("the build failed: {e}\n{output}"));
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(
        output.contains("RUN --mount=type=cache") && output.contains(" DONE"),
        "BuildKit's steps: {output}"
    );
    assert_eq!(
        runtime.image_id(&tag).await.unwrap().as_deref(),
        Some(id.as_str())
    );
    let ran = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", &tag, "cat", "/greeting"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "hello\n");

    // A failing step is the build's error, with the exit code.
    let failing = format!("FROM {}\nRUN exit 3\n", busybox_image());
    let (output, failed) = build(runtime, &failing, &tag, &[]).await;
    match failed {
        Err(RuntimeError::Build { message, .. }) => {
            assert!(message.contains("exit code: 3"), "{message}\n{output}");
        }
        other => panic!("expected a build error: {other:?}\n{output}"),
    }
}

#[tokio::test]
async fn build_secrets_reach_the_build_and_stay_out_of_the_image() {
    let harness = Harness::new().await;
    let runtime = &harness.runtime;
    let tag = format!("aloft-test-secrets:{}", std::process::id());
    let _cleanup = ImageCleanup(tag.clone());
    let dockerfile = format!(
        // The value's MD5, so that the Dockerfile (kept in the image's history) does not
        // hold the secret itself.
        "FROM {}\nARG NONCE\nRUN --mount=type=secret,id=token test \"$(md5sum < /run/secrets/token | cut -c1-32)\" = \"dfe5e226b6e19e8fb9d764084d02923a\" && echo checked > /checked\n",
        busybox_image()
    );
    // BuildKit caches a step whatever its secrets hold: a fresh NONCE makes each build
    // run it.
    let nonce = |n: u32| {
        format!(
            "{}-{n}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        )
    };
    let first = nonce(1);
    let (output, built) = build_with_secrets(
        runtime,
        &dockerfile,
        &tag,
        &[("NONCE", &first)],
        &[("token", "s3cret-value")],
    )
    .await;
    built.unwrap_or_else(|e| panic!("the build failed: {e}\n{output}"));
    let ran = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", &tag, "cat", "/checked"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "checked\n");
    let saved = std::process::Command::new("docker")
        .args(["save", &tag])
        .output()
        .unwrap();
    assert!(saved.status.success());
    assert!(
        !saved
            .stdout
            .windows(b"s3cret-value".len())
            .any(|w| w == b"s3cret-value"),
        "the secret is nowhere in the image"
    );

    // A wrong value fails the step (the secret really is what the build read), and one
    // the build asks for but was not given fails naming it.
    let second = nonce(2);
    let (_, wrong) = build_with_secrets(
        runtime,
        &dockerfile,
        &tag,
        &[("NONCE", &second)],
        &[("token", "other")],
    )
    .await;
    assert!(
        matches!(wrong, Err(RuntimeError::Build { .. })),
        "{wrong:?}"
    );
    let third = nonce(3);
    let (output, missing) = build_with_secrets(
        runtime,
        &dockerfile,
        &tag,
        &[("NONCE", &third)],
        &[("other", "x")],
    )
    .await;
    match missing {
        Err(RuntimeError::Build { message, .. }) => {
            assert!(message.contains("token"), "{message}\n{output}");
        }
        other => panic!("expected a build error: {other:?}\n{output}"),
    }
}
