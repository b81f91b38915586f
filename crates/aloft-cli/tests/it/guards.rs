//! Guards on big and destructive changes: confirmation (`--yes` where nobody can be
//! asked), machine caps, sizes no host can hold, and Ctrl-C during a scale.

use std::io::BufRead as _;
use std::process::Stdio;

use crate::platform::Platform;
use crate::text;

fn live_machines(p: &Platform, app: &str) -> usize {
    let list: serde_json::Value =
        serde_json::from_str(&p.ok(&["machine", "list", "-a", app, "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] != "destroyed" && m["state"] != "destroying")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn big_and_destructive_changes_need_confirmation_and_stop_at_the_caps() {
    let platform = Platform::start_with(|config| config.limits.machines_per_app = 3).await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    p.ok(&["apps", "create", "guarded"]);
    let first = p.idle_machine("guarded");
    // Lifecycle commands answer --json with the machine's new state.
    let stopped: serde_json::Value =
        serde_json::from_str(&p.ok(&["machine", "stop", &first, "-a", "guarded", "--json"]))
            .unwrap();
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let started: serde_json::Value =
        serde_json::from_str(&p.ok(&["machine", "start", &first, "-a", "guarded", "--json"]))
            .unwrap();
    assert_eq!(started["state"], "started", "{started}");

    // Without a terminal and without --yes nothing happens, and the error says why.
    let refused = p.aloft(&["scale", "count", "100000", "-a", "guarded"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("--yes") && text(&refused.stderr).contains("nothing"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(live_machines(p, "guarded"), 1);
    // A step within --confirm-above needs no confirmation (positive control).
    let scaled: serde_json::Value =
        serde_json::from_str(&p.ok(&["scale", "count", "2", "-a", "guarded", "--json"])).unwrap();
    assert_eq!(scaled["count"], 2, "{scaled}");
    assert_eq!(live_machines(p, "guarded"), 2);

    // With --yes it creates machines until the app's cap, then stops with the reason.
    let capped = p.aloft(&["scale", "count", "100000", "-a", "guarded", "--yes"]);
    let said = text(&capped.stderr);
    assert_eq!(capped.status.code(), Some(3), "{said}");
    assert!(
        said.contains("after 1 new one(s)") && said.contains("machines_per_app = 3"),
        "{said}"
    );
    assert_eq!(live_machines(p, "guarded"), 3);

    // A size no host can hold is refused before anything changes.
    let huge = p.aloft(&["scale", "memory", "999999999", "-a", "guarded"]);
    assert!(!huge.status.success());
    assert!(
        text(&huge.stderr).contains("no host") && text(&huge.stderr).contains("can hold"),
        "{}",
        text(&huge.stderr)
    );
    let run_huge = p.aloft(&[
        "machine",
        "run",
        aloft_testkit::BUSYBOX_IMAGE,
        "-a",
        "guarded",
        "--memory",
        "999999999",
    ]);
    assert!(
        text(&run_huge.stderr).contains("can hold"),
        "{}",
        text(&run_huge.stderr)
    );
    assert_eq!(live_machines(p, "guarded"), 3);

    // Deleting data asks too.
    p.ok(&["secrets", "set", "-a", "guarded", "--stage", "TOKEN=t"]);
    let unset = p.aloft(&["secrets", "unset", "-a", "guarded", "--stage", "TOKEN"]);
    assert_eq!(unset.status.code(), Some(2), "{}", text(&unset.stderr));
    assert!(
        p.ok(&["secrets", "list", "-a", "guarded"])
            .contains("TOKEN")
    );
    let missing = p.aloft(&["secrets", "unset", "-a", "guarded", "--stage", "NOPE", "-y"]);
    assert!(
        text(&missing.stderr).contains("secret NOPE is not set"),
        "{}",
        text(&missing.stderr)
    );
    p.ok(&[
        "secrets", "unset", "-a", "guarded", "--stage", "TOKEN", "-y",
    ]);
    assert!(
        !p.ok(&["secrets", "list", "-a", "guarded"])
            .contains("TOKEN")
    );

    let volume: serde_json::Value = serde_json::from_str(&p.ok(&[
        "volumes", "create", "data", "--size", "1", "-a", "guarded", "--json",
    ]))
    .unwrap();
    let volume = volume["id"].as_str().unwrap();
    // flyctl's `volumes update`: retention and daily snapshots change; nothing to change
    // is a usage error.
    let updated: serde_json::Value = serde_json::from_str(&p.ok(&[
        "volumes",
        "update",
        volume,
        "--snapshot-retention",
        "10",
        "-a",
        "guarded",
        "--json",
    ]))
    .unwrap();
    assert_eq!(updated["snapshot_retention"], 10, "{updated}");
    assert_eq!(updated["auto_backup_enabled"], true, "{updated}");
    let off: serde_json::Value = serde_json::from_str(&p.ok(&[
        "volumes",
        "update",
        volume,
        "--scheduled-snapshots",
        "false",
        "-a",
        "guarded",
        "--json",
    ]))
    .unwrap();
    assert_eq!(off["auto_backup_enabled"], false, "{off}");
    assert_eq!(off["snapshot_retention"], 10, "{off}");
    // `volumes snapshots create|list` (flyctl's), then a volume made from the snapshot.
    let none = p.ok(&[
        "volumes",
        "snapshots",
        "list",
        volume,
        "-a",
        "guarded",
        "--json",
    ]);
    assert_eq!(none.trim(), "[]", "{none}");
    let took = p.aloft(&["volumes", "snapshots", "create", volume, "-a", "guarded"]);
    assert!(took.status.success(), "{}", text(&took.stderr));
    assert!(
        text(&took.stderr).contains("Took snapshot vs_") || text(&took.stdout).contains("vs_"),
        "{}{}",
        text(&took.stdout),
        text(&took.stderr)
    );
    let listed = p.ok(&["volumes", "snapshots", "list", volume, "-a", "guarded"]);
    assert!(
        listed.contains("RETENTION DAYS") && listed.contains("created") && listed.contains(" 10"),
        "{listed}"
    );
    let snapshots: serde_json::Value = serde_json::from_str(&p.ok(&[
        "volumes",
        "snapshots",
        "list",
        volume,
        "-a",
        "guarded",
        "--json",
    ]))
    .unwrap();
    let snapshot = snapshots[0]["id"].as_str().unwrap();
    let copy: serde_json::Value = serde_json::from_str(&p.ok(&[
        "volumes",
        "create",
        "copy",
        "--snapshot-id",
        snapshot,
        "-a",
        "guarded",
        "--json",
    ]))
    .unwrap();
    assert_eq!(copy["state"], "created", "{copy}");
    let copy = copy["id"].as_str().unwrap().to_owned();
    p.ok(&["volumes", "destroy", &copy, "-y", "-a", "guarded"]);
    let nothing = p.aloft(&["volumes", "update", volume, "-a", "guarded"]);
    assert_eq!(nothing.status.code(), Some(2), "{}", text(&nothing.stderr));
    let kept = p.aloft(&["volumes", "destroy", volume, "-a", "guarded"]);
    assert_eq!(kept.status.code(), Some(2), "{}", text(&kept.stderr));
    assert!(p.ok(&["volumes", "list", "-a", "guarded"]).contains(volume));
    p.ok(&["volumes", "destroy", volume, "-a", "guarded", "--yes"]);

    let destroy = p.aloft(&["apps", "destroy", "guarded"]);
    assert_eq!(destroy.status.code(), Some(2), "{}", text(&destroy.stderr));
    assert!(p.ok(&["apps", "list"]).contains("guarded"));
    let destroyed: serde_json::Value =
        serde_json::from_str(&p.ok(&["apps", "destroy", "guarded", "--yes", "--json"])).unwrap();
    assert_eq!(destroyed["destroyed"], true, "{destroyed}");
    assert!(!p.ok(&["apps", "list"]).contains("guarded"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_a_scale_stops_creating_machines() {
    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    p.ok(&["apps", "create", "many"]);
    p.idle_machine("many");
    let mut child = p
        .command(
            p.home.path(),
            &["scale", "count", "60", "-a", "many", "--yes"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("created machine") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the scale ended before creating a machine: {said}"
        );
        said.push_str(&line);
    }
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    said.push_str(&rest);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{said}");
    let made: usize = said
        .split("interrupted: created ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("how many were made: {said}"));
    assert!(made < 59, "{said}");
    // The machines it reported are all there is: no creation went on after it.
    assert_eq!(live_machines(p, "many"), 1 + made, "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn build_secrets_reach_a_deploys_build_and_only_builds() {
    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    p.ok(&["apps", "create", "secretive"]);
    let dir = tempfile::tempdir().unwrap();
    // The Dockerfile checks the secret's MD5, so that it never holds the value itself.
    let digest = "dfe5e226b6e19e8fb9d764084d02923a";
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {} AS check\nARG NONCE\n\
             RUN --mount=type=secret,id=token test \"$(md5sum < /run/secrets/token | cut -c1-32)\" = \"{digest}\" && touch /checked\n\
             FROM {}\nCOPY --from=check /checked /checked\n",
            aloft_testkit::busybox_image(),
            aloft_testkit::testapp_image()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("fly.toml"), "app = \"secretive\"\n").unwrap();
    // BuildKit caches the step whatever the secret holds: a fresh NONCE runs it.
    let nonce = |n: u32| {
        format!(
            "NONCE={}-{n}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        )
    };
    let deployed = p.aloft_in(
        dir.path(),
        &[
            "deploy",
            "--build-secret",
            "token=s3cret-value",
            "--build-arg",
            &nonce(1),
            "--smoke-checks=false",
        ],
    );
    let said = format!("{}{}", text(&deployed.stdout), text(&deployed.stderr));
    assert!(deployed.status.success(), "{said}");
    assert!(
        !said.contains("s3cret-value"),
        "the value is never shown: {said}"
    );

    // Positive control of the check: a wrong value fails the build.
    let wrong = p.aloft_in(
        dir.path(),
        &[
            "deploy",
            "--build-secret",
            "token=other",
            "--build-arg",
            &nonce(2),
        ],
    );
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("build"),
        "{}",
        text(&wrong.stderr)
    );

    // A deploy that builds nothing refuses a build secret rather than ignoring it.
    let refused = p.aloft_in(
        dir.path(),
        &[
            "deploy",
            "--image",
            aloft_testkit::BUSYBOX_IMAGE,
            "--build-secret",
            "token=x",
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("--build-secret is for builds"));
}
