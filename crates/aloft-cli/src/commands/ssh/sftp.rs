//! `aloft ssh sftp`: get, put and an interactive shell over SFTP.

use std::path::{Path, PathBuf};

use aloft_client::Client;
use anyhow::{Context as _, bail};
use tokio::io::AsyncWriteExt as _;

use super::SftpCommand;
use super::session::{connect, pick_machine};
use crate::Failure;
use crate::output::Output;

pub(crate) async fn sftp(
    client: &Client,
    app: &str,
    command: SftpCommand,
    out: &mut Output,
) -> Result<(), Failure> {
    let machine = match &command {
        SftpCommand::Get { machine, .. }
        | SftpCommand::Put { machine, .. }
        | SftpCommand::Shell { machine } => machine.clone(),
    };
    let machine = pick_machine(client, app, machine.as_deref(), false, out).await?;
    let connection = connect(client, app, &machine.id, "").await?;
    let session = connection.sftp().await.context("starting SFTP")?;
    match command {
        SftpCommand::Get { remote, local, .. } => {
            let local = local.unwrap_or_else(|| PathBuf::from(base_name(&remote)));
            let bytes = get(&session, &remote, &local).await?;
            out.status(&format!("{remote} → {} ({bytes} bytes)", local.display()));
        }
        SftpCommand::Put { local, remote, .. } => {
            let remote = remote.unwrap_or_else(|| {
                format!(
                    "/{}",
                    local
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            });
            let bytes = put(&session, &local, &remote).await?;
            out.status(&format!("{} → {remote} ({bytes} bytes)", local.display()));
        }
        SftpCommand::Shell { .. } => shell(&session, out).await?,
    }
    let _ = session.close().await;
    let _ = connection.close().await;
    Ok(())
}

pub(crate) fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

pub(crate) async fn get(
    session: &russh_sftp::client::SftpSession,
    remote: &str,
    local: &Path,
) -> anyhow::Result<u64> {
    let mut file = session
        .open(remote)
        .await
        .with_context(|| format!("opening {remote} in the machine"))?;
    let mut target = tokio::fs::File::create(local)
        .await
        .with_context(|| format!("creating {}", local.display()))?;
    let bytes = tokio::io::copy(&mut file, &mut target)
        .await
        .with_context(|| format!("copying {remote}"))?;
    target.flush().await?;
    Ok(bytes)
}

pub(crate) async fn put(
    session: &russh_sftp::client::SftpSession,
    local: &Path,
    remote: &str,
) -> anyhow::Result<u64> {
    let mut source = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("opening {}", local.display()))?;
    let mut file = session
        .create(remote)
        .await
        .with_context(|| format!("creating {remote} in the machine"))?;
    let bytes = tokio::io::copy(&mut source, &mut file)
        .await
        .with_context(|| format!("copying to {remote}"))?;
    file.shutdown().await?;
    Ok(bytes)
}

pub(crate) async fn shell(
    session: &russh_sftp::client::SftpSession,
    out: &mut Output,
) -> anyhow::Result<()> {
    let mut cwd = session
        .canonicalize(".")
        .await
        .unwrap_or_else(|_| "/".to_owned());
    let resolve = |cwd: &str, path: &str| {
        if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("{}/{path}", cwd.trim_end_matches('/'))
        }
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    loop {
        out.raw_stderr(&format!("sftp {cwd}> "));
        line.clear();
        if tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line).await? == 0 {
            return Ok(());
        }
        let words = shlex::split(&line).unwrap_or_default();
        let word = |n: usize| words.get(n).map(String::as_str);
        let result: anyhow::Result<()> = async {
            match (word(0), word(1), word(2)) {
                (None, _, _) => {}
                (Some("exit" | "quit" | "bye"), _, _) => return Err(anyhow::anyhow!("exit")),
                (Some("pwd"), _, _) => out.data(&cwd),
                (Some("cd"), path, _) => {
                    let path = resolve(&cwd, path.unwrap_or("/"));
                    let real = session.canonicalize(&path).await?;
                    if !session.metadata(&real).await?.is_dir() {
                        bail!("{real} is not a directory");
                    }
                    cwd = real;
                }
                (Some("ls"), path, _) => {
                    let path = resolve(&cwd, path.unwrap_or("."));
                    let mut names: Vec<String> = session
                        .read_dir(&path)
                        .await?
                        .map(|e| {
                            let suffix = if e.file_type().is_dir() { "/" } else { "" };
                            format!("{}{suffix}", e.file_name())
                        })
                        .collect();
                    names.sort();
                    for name in names {
                        out.data(&name);
                    }
                }
                (Some("get"), Some(remote), local) => {
                    let local = PathBuf::from(local.unwrap_or(base_name(remote)));
                    let bytes = get(session, &resolve(&cwd, remote), &local).await?;
                    out.status(&format!("{remote} → {} ({bytes} bytes)", local.display()));
                }
                (Some("put"), Some(local), remote) => {
                    let remote = resolve(&cwd, remote.unwrap_or(base_name(local)));
                    let bytes = put(session, Path::new(local), &remote).await?;
                    out.status(&format!("{local} → {remote} ({bytes} bytes)"));
                }
                (Some("rm"), Some(path), _) => session.remove_file(resolve(&cwd, path)).await?,
                (Some("mkdir"), Some(path), _) => session.create_dir(resolve(&cwd, path)).await?,
                (Some("rmdir"), Some(path), _) => session.remove_dir(resolve(&cwd, path)).await?,
                (Some(other), _, _) => bail!(
                    "{other}: commands are ls, cd, pwd, get REMOTE [LOCAL], put LOCAL [REMOTE], rm, mkdir, rmdir, exit"
                ),
            }
            Ok(())
        }
        .await;
        match result {
            Err(error) if error.to_string() == "exit" => return Ok(()),
            Err(error) => out.error(&format!("{error:#}")),
            Ok(()) => {}
        }
    }
}
