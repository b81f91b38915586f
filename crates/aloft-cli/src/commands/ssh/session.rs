//! A session into a machine: a certificate for it, the machine picked, the connection
//! through the API's tunnel, and a command or shell run attached to the terminal.

use std::io::IsTerminal as _;

use aloft_client::Client;
use aloft_ssh::ca;
use aloft_ssh::client::{self as ssh, Connection, Control, Credentials, PtyRequest, Run};
use aloft_types::api::{MachineResponse, SshCertificateRequest};
use anyhow::{Context as _, bail};
use tokio::sync::mpsc;

use super::terminal::{RawMode, terminal_size};
use crate::Failure;
use crate::output::Output;

/// A new key and a certificate for it, limited to `app` (or the token's whole
/// organization) for `hours`.
pub(crate) async fn credentials(
    client: &Client,
    app: Option<&str>,
    hours: u32,
) -> anyhow::Result<(Credentials, aloft_types::api::SshCertificate)> {
    let orgs = client.list_orgs().await?;
    let org = orgs
        .first()
        .context("the token belongs to no organization")?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("reading random bytes for a key: {e}"))?;
    let key = ca::ed25519_from_seed(&seed);
    let issued = client
        .ssh_certificate(
            &org.slug,
            &SshCertificateRequest {
                public_key: ca::public_to_openssh(key.public_key())?,
                hours: Some(hours),
                app: app.map(str::to_owned),
            },
        )
        .await
        .context("getting an SSH certificate")?;
    let certificate = ca::certificate_from_openssh(&issued.certificate)?;
    Ok((Credentials { key, certificate }, issued))
}

/// The machine a session opens: `--machine`, a pick from a list (`-s`), or the first
/// started machine (of the `app` process group when there is one).
pub(crate) async fn pick_machine(
    client: &Client,
    app: &str,
    machine: Option<&str>,
    select: bool,
    out: &mut Output,
) -> anyhow::Result<MachineResponse> {
    let machines = client.list_machines(app).await?;
    if let Some(id) = machine {
        return machines
            .into_iter()
            .find(|m| m.id == id)
            .with_context(|| format!("app {app} has no machine {id}"));
    }
    let mut started: Vec<MachineResponse> = machines
        .into_iter()
        .filter(|m| m.state == "started")
        .collect();
    started.sort_by_key(|m| {
        m.config
            .process_group()
            .is_none_or(|g| g != aloft_types::machine::DEFAULT_PROCESS_GROUP)
    });
    if started.is_empty() {
        bail!("app {app} has no started machine: `aloft status` shows its machines");
    }
    if !select {
        return Ok(started.swap_remove(0));
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "-s picks a machine in a terminal; here give one with --machine ID ({})",
            started
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (n, machine) in started.iter().enumerate() {
        out.raw_stderr(&format!(
            "{:>3}  {}  {}  {}  {}\n",
            n + 1,
            machine.id,
            machine.region,
            machine.config.process_group().unwrap_or("-"),
            machine.private_ip
        ));
    }
    out.raw_stderr("Machine number: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let n: usize = line.trim().parse().context("give the machine's number")?;
    if n == 0 || n > started.len() {
        bail!("there is no machine number {n}");
    }
    Ok(started.swap_remove(n - 1))
}

pub(crate) async fn connect(
    client: &Client,
    app: &str,
    machine: &str,
    user: &str,
) -> anyhow::Result<Connection> {
    let (credentials, _) = credentials(client, Some(app), 1).await?;
    let tunnel = client
        .ssh_tunnel(app, machine)
        .await
        .with_context(|| format!("opening an SSH tunnel to machine {machine}"))?;
    Ok(ssh::connect(tunnel, user, &credentials).await?)
}

/// Runs `command` (or a shell) on the connection with this process's stdio; returns its
/// exit code. A terminal is asked for when `pty` (and the local side is one, put in raw
/// mode); its size follows the local one. Without a terminal, Ctrl-C is sent as `INT`.
pub(crate) async fn run_session(
    connection: &Connection,
    command: Option<String>,
    pty: bool,
) -> anyhow::Result<u32> {
    let pty = pty && std::io::stdin().is_terminal();
    let (controls, receiver) = mpsc::channel(16);
    let mut env = Vec::new();
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".to_owned());
    let request = pty.then(|| {
        let (cols, rows) = terminal_size();
        PtyRequest {
            term: term.clone(),
            cols,
            rows,
        }
    });
    if let Ok(lang) = std::env::var("LANG") {
        env.push(("LANG".to_owned(), lang));
    }
    let raw = if pty { Some(RawMode::enter()?) } else { None };
    // Listening starts here, before the command runs: a listener made later in the task
    // (not yet polled when a busy machine delivers the first Ctrl-C) missed the signal,
    // and the command ran on.
    use tokio::signal::unix::{SignalKind, signal};
    let listeners = (
        signal(SignalKind::window_change()),
        signal(SignalKind::interrupt()),
    );
    let watcher = tokio::spawn(async move {
        let (Ok(mut resized), Ok(mut interrupted)) = listeners else {
            return;
        };
        loop {
            let control = tokio::select! {
                _ = resized.recv() => {
                    let (cols, rows) = terminal_size();
                    Control::Resize(cols, rows)
                }
                _ = interrupted.recv() => Control::Signal("INT".to_owned()),
            };
            if controls.send(control).await.is_err() {
                return;
            }
        }
    });
    let run = Run {
        command,
        pty: request,
        env,
    };
    let code = connection
        .run(
            &run,
            stdin_chunks(),
            tokio::io::stdout(),
            tokio::io::stderr(),
            receiver,
        )
        .await;
    watcher.abort();
    drop(raw);
    Ok(code?)
}

/// This process's stdin, read by a thread of its own: a blocking read that never ends
/// (an idle terminal) must not keep the process from exiting when the session does.
pub(crate) fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0; 32 * 1024];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    receiver
}

pub(crate) fn exit(code: u32) -> Result<(), Failure> {
    match code {
        0 => Ok(()),
        code => Err(Failure::Exit(u8::try_from(code).unwrap_or(255))),
    }
}
