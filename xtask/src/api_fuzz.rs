//! The API fuzzed from its own OpenAPI document with schemathesis (PyPI): every operation,
//! against a real `aloftd server` (its own network namespace, data directory and
//! Docker containers, all removed afterwards), checking that no answer is a 5xx and that
//! each status, content type and body is what the document says.
//!
//! Three passes: every operation with generated parameters (mostly apps that do not
//! exist); every operation on an app that does (`fuzz`, with a machine); then the three
//! operations that remove what the others need (the app, the organization, tokens),
//! last. `cargo xtask test` gives each pass a short budget; `cargo xtask soak api
//! --cases SECONDS` a long one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// The schemathesis release the run is written against.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// The checks: no 5xx, and answers as the document describes them.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";
/// Operations that end what the passes before them use: run last, on their own.
const LAST: &[&str] = &["/v1/apps/{app}", "/v1/orgs/{slug}", "/v1/tokens/{id}"];
/// A stream that answers until the client leaves: the fuzzer can only time out on it.
const ENDLESS: &str = "/v1/apps/{app}/logs/stream";
/// Request bodies of `application/x-tar` (builds) for schemathesis, which has no
/// serializer of its own for them.
const HOOKS: &str = "import schemathesis\n\n\n@schemathesis.serializer(\"application/x-tar\")\ndef tar(ctx, value):\n    return value if isinstance(value, bytes) else str(value).encode()\n";

/// `python3 -m schemathesis`, installed from PyPI when missing.
fn ensure_schemathesis() -> Result<()> {
    let installed = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .contains(SCHEMATHESIS.trim_start_matches("schemathesis=="))
        });
    if !installed {
        run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            SCHEMATHESIS,
        ]))?;
    }
    Ok(())
}

/// A platform for the fuzzer; everything it made goes when dropped.
struct Platform {
    child: std::process::Child,
    netns: String,
    dir: PathBuf,
    url: String,
    token: String,
}

impl Platform {
    fn start(root: &Path) -> Result<Platform> {
        let netns = format!("aloft-apifuzz-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "delete", &netns])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &netns]))?;
        let dir = root.join("target").join("api-fuzz");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("aloftd.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n[network]\nnamespace = \"/run/netns/{netns}\"\ndns_listen = \"127.0.0.1:0\"\ndns_upstream = []\n[build]\nmemory_mb = 512\n# Fuzzed volumes stay directories: thousands of loop mounts would test nothing more.\n[agent]\nvolumes = \"directory\"\n[proxy]\nhttp_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\n# A directory and DNS on loopback where nothing answers: fuzzed hostnames are looked up\n# and ordered nowhere else.\n[acme]\ndirectory = \"https://127.0.0.1:9/dir\"\nresolvers = [\"127.0.0.1:9\"]\n",
                dir.join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("aloftd.log"))?;
        let child = Command::new(root.join("target").join("debug").join("aloftd"))
            .arg("server")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting target/debug/aloftd (built with the tests)")?;
        let mut platform = Platform {
            child,
            netns,
            dir: dir.clone(),
            url: String::new(),
            token: String::new(),
        };
        let data = dir.join("data");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let (Ok(url), Ok(token)) = (
                std::fs::read_to_string(data.join("api-url")),
                std::fs::read_to_string(data.join("admin-token")),
            ) {
                platform.url = url.trim().to_owned();
                platform.token = token.trim().to_owned();
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "aloftd did not start; see {}",
                    dir.join("aloftd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(platform)
    }

    /// `curl` of the API with the operator's token: fails unless it answers 2xx.
    fn post(&self, path: &str, body: &str) -> Result<()> {
        run(Command::new("curl")
            .args(["-sSf", "-o", "/dev/null", "-X", "POST"])
            .args(["-H", &format!("authorization: Bearer {}", self.token)])
            .args(["-H", "content-type: application/json", "-d", body])
            .arg(format!("{}{path}", self.url)))
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(host) = std::fs::read_to_string(self.dir.join("data").join("host-id")) {
            let listed = Command::new("docker")
                .args(["ps", "-aq", "--filter"])
                .arg(format!("label=dev.aloft.host={}", host.trim()))
                .output();
            if let Ok(listed) = listed {
                for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                    let _ = Command::new("docker")
                        .args(["rm", "-f", id])
                        .stdout(Stdio::null())
                        .status();
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the three passes, `seconds` each; the number of requests made.
pub(crate) fn fuzz(root: &Path, seconds: u64) -> Result<u64> {
    ensure_schemathesis()?;
    let platform = Platform::start(root)?;
    platform.post("/v1/apps", r#"{"app_name":"fuzz"}"#)?;
    platform.post(
        "/v1/apps/fuzz/machines",
        r#"{"config":{"image":"aloft-test-busybox:1","init":{"cmd":["sleep","86400"]}}}"#,
    )?;
    let work = platform.dir.join("schemathesis");
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("aloft_hooks.py"), HOOKS)?;
    std::fs::write(
        work.join("on-app.toml"),
        "[parameters]\n\"path.app\" = \"fuzz\"\n",
    )?;
    std::fs::write(work.join("generated.toml"), "")?;
    let document = root.join("openapi").join("aloft.json");
    let mut requests = 0;
    for (pass, config, last) in [
        ("generated parameters", "generated.toml", false),
        ("on an app that exists", "on-app.toml", false),
        ("what removes the rest", "on-app.toml", true),
    ] {
        eprintln!("schemathesis: {pass}, {seconds} s");
        let mut command = Command::new("python3");
        command
            .args(["-m", "schemathesis.cli", "--config-file"])
            .arg(work.join(config))
            .arg("run")
            .arg(&document)
            .args(["--url", &platform.url])
            .args(["-H", &format!("Authorization: Bearer {}", platform.token)])
            .args(["--checks", CHECKS])
            .args(["--phases", "coverage,fuzzing"])
            .args(["--max-time", &seconds.to_string()])
            // One worker: CPython 3.11's parser is not safe across threads (hypothesis
            // describes strategies with it), and `wait` may take its whole 60 s.
            .args(["--request-timeout", "70", "--workers", "1"])
            .args(["--exclude-path", ENDLESS])
            .env("PYTHONPATH", &work)
            .env("SCHEMATHESIS_HOOKS", "aloft_hooks")
            .current_dir(&work);
        for path in LAST {
            if last {
                command.args(["--include-path", path]);
            } else {
                command.args(["--exclude-path", path]);
            }
        }
        let output = command.output().context("running schemathesis")?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        requests += generated(&text);
        if !output.status.success() {
            eprintln!("{text}{}", String::from_utf8_lossy(&output.stderr));
            bail!("schemathesis found failures ({pass}): see above");
        }
        // "Tested: 88" (operations), "N generated, N passed" (requests), the verdict.
        for line in text.lines().filter(|line| {
            line.contains("Tested:") || line.contains(" generated,") || line.starts_with("===")
        }) {
            eprintln!("  {}", line.trim());
        }
    }
    Ok(requests)
}

/// `N` of schemathesis's "N generated, ..." line.
fn generated(text: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let (count, rest) = line.trim().split_once(' ')?;
            rest.starts_with("generated").then(|| count.parse().ok())?
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_request_count_is_read_from_the_summary() {
        let text = "Test cases:\n  5856 generated, 5856 passed, 5 errored\n";
        assert_eq!(super::generated(text), 5856);
        assert_eq!(super::generated("nothing"), 0);
    }
}
