//! Errors that say what to do: a refused token before any upload, an unreachable API, a
//! URL without a scheme, `auth login` without a URL.

use std::process::Command;

use crate::platform::Platform;
use crate::text;

/// `aloft ARGS` with the API at `url` and `token`, nothing saved.
fn aloft_at(url: &str, token: &str, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(args)
        .current_dir(dir)
        .env("ALOFT_CONFIG_DIR", home.path())
        .env("ALOFT_API_URL", url)
        .env("ALOFT_API_TOKEN", token)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_on_a_deploy_with_a_build_context_shows_the_401_every_time() {
    let platform = Platform::start().await;
    let p = &platform;
    p.ok(&["auth", "login", "--token", &p.token, "--api-url", &p.url]);
    p.ok(&["apps", "create", "upload"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fly.toml"), "app = \"upload\"\n").unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY big /big\n",
    )
    .unwrap();
    // Big enough that the upload is still being written when an early answer comes.
    std::fs::write(dir.path().join("big"), vec![7u8; 16 << 20]).unwrap();
    for run in 0..20 {
        let output = aloft_at(&p.url, "aloft_wrong_token", dir.path(), &["deploy"]);
        let said = text(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "run {run}: {said}");
        assert!(
            said.contains("HTTP 401") && said.contains("aloft auth login --token"),
            "run {run}: {said}"
        );
    }
    // Positive control: the right token gets past that point (to a missing app's error).
    let output = aloft_at(&p.url, &p.token, dir.path(), &["deploy", "-a", "nosuch"]);
    let said = text(&output.stderr);
    assert!(
        said.contains("app nosuch does not exist") && said.contains("aloft apps create nosuch"),
        "{said}"
    );
}

#[test]
fn an_unreachable_api_and_a_url_without_a_scheme_say_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let down = aloft_at("http://127.0.0.1:9", "t", dir.path(), &["apps", "list"]);
    let said = text(&down.stderr);
    assert_eq!(down.status.code(), Some(3), "{said}");
    assert!(
        said.contains("cannot reach the Aloft API at http://127.0.0.1:9")
            && said.contains("Connection refused")
            && said.contains("ALOFT_API_URL"),
        "{said}"
    );
    assert_eq!(said.trim_end().lines().count(), 1, "one line: {said}");
    assert!(!said.contains("error sending request"), "{said}");

    let bare = aloft_at("127.0.0.1:4280", "t", dir.path(), &["apps", "list"]);
    let said = text(&bare.stderr);
    assert!(
        said.contains("has no scheme: use http://127.0.0.1:4280"),
        "{said}"
    );
    assert!(!said.contains("relative URL"), "{said}");

    // `auth login` without --api-url says which URL it tried and where the right one is.
    let home = tempfile::tempdir().unwrap();
    let login = Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(["auth", "login", "--token", "t"])
        .env("ALOFT_CONFIG_DIR", home.path())
        .env("ALOFT_API_URL", "http://127.0.0.1:9")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let said = text(&login.stderr);
    assert!(
        said.contains("No --api-url was given, so http://127.0.0.1:9 was tried")
            && said.contains("api-url"),
        "{said}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args([
            "auth",
            "login",
            "--token",
            "t",
            "--api-url",
            "localhost:4280",
        ])
        .env("ALOFT_CONFIG_DIR", home.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(text(&bad.stderr).contains("has no scheme"));
}

#[test]
fn json_is_refused_where_it_cannot_apply() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["certs", "ca", "--json"][..],
        &["ssh", "console", "-a", "web", "--json"],
        &["proxy", "15432:5432", "-a", "web", "--json"],
    ] {
        let output = aloft_at("http://127.0.0.1:9", "t", dir.path(), args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            text(&output.stderr).contains("--json does not apply"),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    // Positive control: the same command without --json gets past that check (to the
    // unreachable API).
    let output = aloft_at("http://127.0.0.1:9", "t", dir.path(), &["certs", "ca"]);
    assert!(
        text(&output.stderr).contains("cannot reach"),
        "{}",
        text(&output.stderr)
    );
}
