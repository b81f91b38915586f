//! A one-shot exec (`Runtime::exec`): its output collected up to [`EXEC_OUTPUT_LIMIT`] per
//! stream, and its processes killed when it runs past its timeout or that limit (the
//! engine has no way to stop an exec).

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::CreateExecOptions;
use futures_util::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use super::{DockerRuntime, operation};
use crate::{EXEC_OUTPUT_LIMIT, ExecOptions, ExecOutput, RuntimeError};

impl DockerRuntime {
    pub(super) async fn exec_collected(
        &self,
        id: &str,
        command: &[String],
        options: &ExecOptions,
    ) -> Result<ExecOutput, RuntimeError> {
        let config = CreateExecOptions {
            cmd: Some(command.to_vec()),
            attach_stdin: Some(options.stdin.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(options.tty),
            ..CreateExecOptions::default()
        };
        let (exec, mut output, mut input) = self.start_exec(id, config, options.tty).await?;
        if let Some(stdin) = &options.stdin {
            input
                .write_all(stdin)
                .await
                .map_err(|error| RuntimeError::Operation {
                    operation: "exec stdin",
                    container: id.to_owned(),
                    source: Box::new(error),
                })?;
        }
        drop(input.shutdown().await);
        let collect = async {
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            while let Some(chunk) = output.next().await {
                match chunk.map_err(operation("exec output", id))? {
                    LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        stdout.extend_from_slice(&message)
                    }
                    LogOutput::StdIn { .. } => {}
                }
                if stdout.len().max(stderr.len()) > EXEC_OUTPUT_LIMIT {
                    return Err(RuntimeError::ExecOutputLimit {
                        container: id.to_owned(),
                        limit: EXEC_OUTPUT_LIMIT,
                    });
                }
            }
            Ok::<_, RuntimeError>((stdout, stderr))
        };
        let collected = match options.timeout {
            Some(timeout) => tokio::time::timeout(timeout, collect)
                .await
                .unwrap_or_else(|_| {
                    Err(RuntimeError::ExecTimeout {
                        container: id.to_owned(),
                        timeout,
                    })
                }),
            None => collect.await,
        };
        let (stdout, stderr) = match collected {
            Ok(output) => output,
            Err(error) => {
                // The engine cannot stop an exec: its processes are killed here, or they
                // would run on (and write on) with nobody reading.
                if matches!(
                    error,
                    RuntimeError::ExecTimeout { .. } | RuntimeError::ExecOutputLimit { .. }
                ) {
                    self.kill_exec(&exec).await;
                }
                return Err(error);
            }
        };
        // The exit code is set once the engine has noticed the process ended.
        for _ in 0..100 {
            let inspected = self
                .docker
                .inspect_exec(&exec)
                .await
                .map_err(operation("exec", id))?;
            if inspected.running != Some(true) {
                return Ok(ExecOutput {
                    exit_code: inspected.exit_code.unwrap_or(-1),
                    stdout,
                    stderr,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(RuntimeError::ExecTimeout {
            container: id.to_owned(),
            timeout: Duration::from_secs(1),
        })
    }

    /// Kills the exec's process and everything it started (best effort: it may have
    /// ended already).
    async fn kill_exec(&self, exec: &str) {
        let pid = match self.docker.inspect_exec(exec).await {
            Ok(inspected) => inspected.pid.and_then(|pid| i32::try_from(pid).ok()),
            Err(error) => {
                tracing::warn!(exec, %error, "could not find an exec's process to kill it");
                None
            }
        };
        if let Some(pid) = pid.filter(|pid| *pid > 1) {
            let killed = kill_tree(pid);
            tracing::info!(exec, pid, killed, "killed an exec past its limit");
        }
    }
}

/// Sends SIGKILL to `root` and its descendants (read from `/proc`); how many were sent it.
fn kill_tree(root: i32) -> usize {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut tree = vec![root];
    let parents = parents();
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        tree.extend(
            parents
                .iter()
                .filter(|(_, parent)| *parent == pid)
                .map(|(child, _)| *child),
        );
        next += 1;
    }
    tree.iter()
        .filter(|pid| kill(Pid::from_raw(**pid), Signal::SIGKILL).is_ok())
        .count()
}

/// Every process of the host and its parent, from `/proc/PID/stat`.
fn parents() -> Vec<(i32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; the name may hold spaces and parentheses.
            let (_, rest) = stat.rsplit_once(')')?;
            let parent = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, parent))
        })
        .collect()
}
