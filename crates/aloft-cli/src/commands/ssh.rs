//! `aloft ssh console|sftp|issue`, `aloft proxy` and `aloft console`: sessions into
//! machines over the API's SSH tunnel, authenticated by a short-lived certificate from
//! the organization's CA (a new key and a one-hour certificate for the app every time;
//! nothing to manage).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use aloft_client::Client;
use aloft_ssh::ca;
use aloft_ssh::client::{self as ssh, Connection, Control, Credentials, PtyRequest, Run};
use aloft_types::api::{MachineRequest, MachineResponse, SshCertificateRequest};
use anyhow::{Context as _, bail};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use crate::Failure;
use crate::api;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub enum SshCommand {
    /// A shell (or one command) inside a machine.
    Console(ConsoleArgs),
    /// Copy files to and from a machine.
    #[command(subcommand)]
    Sftp(SftpCommand),
    /// Get a certificate for your own SSH client (OpenSSH), signed by the organization's CA.
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// Pick the machine from a list (needs a terminal).
    #[arg(short = 's', long = "select")]
    select: bool,
    /// The machine to open (default: a started machine of the app).
    #[arg(long = "machine", value_name = "ID")]
    machine: Option<String>,
    /// Run this command (through the machine's `sh -c`) instead of a shell.
    #[arg(short = 'C', long = "command", value_name = "CMD")]
    command: Option<String>,
    /// Ask for a terminal even with `-C` (default: a terminal only for a shell).
    #[arg(long = "pty")]
    pty: bool,
    /// The machine's user to run as (default: the image's).
    #[arg(short = 'u', long = "user", value_name = "USER")]
    user: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum SftpCommand {
    /// Copy a machine's file here.
    Get {
        remote: String,
        /// Where to write it (default: its name, in the current directory).
        local: Option<PathBuf>,
        #[arg(long = "machine", value_name = "ID")]
        machine: Option<String>,
    },
    /// Copy a file to a machine.
    Put {
        local: PathBuf,
        /// Where to write it in the machine (default: its name, in `/`).
        remote: Option<String>,
        #[arg(long = "machine", value_name = "ID")]
        machine: Option<String>,
    },
    /// Commands from stdin: ls, cd, pwd, get, put, rm, mkdir, rmdir, exit.
    Shell {
        #[arg(long = "machine", value_name = "ID")]
        machine: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// How long the certificate is valid.
    #[arg(long, default_value_t = 24)]
    hours: u32,
    /// Also add the key and certificate to the running ssh-agent (`ssh-add`), for as long
    /// as the certificate is valid.
    #[arg(long)]
    agent: bool,
    /// Where to write `id_aloft` and `id_aloft-cert.pub` (default: ~/.aloft/ssh).
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// `LOCAL:REMOTE` ports (or one port for both).
    #[arg(value_name = "LOCAL:REMOTE")]
    ports: String,
    /// The machine (default: a started machine of the app).
    #[arg(long = "machine", value_name = "ID")]
    machine: Option<String>,
    /// The local address to listen on.
    #[arg(
        short = 'b',
        long = "bind-addr",
        default_value = "127.0.0.1",
        value_name = "ADDR"
    )]
    bind: String,
}

#[derive(Debug, clap::Args)]
pub struct EphemeralArgs {
    /// Run this instead of the fly.toml's `console_command` (default `/bin/sh`).
    #[arg(short = 'C', long = "command", value_name = "CMD")]
    command: Option<String>,
    /// The machine's user to run as.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    user: Option<String>,
}

/// A new key and a certificate for it, limited to `app` (or the token's whole
/// organization) for `hours`.
async fn credentials(
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
async fn pick_machine(
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

async fn connect(
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

/// The terminal in raw mode until dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("setting the terminal to raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

fn terminal_size() -> (u32, u32) {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .filter(|size| size.ws_col > 0 && size.ws_row > 0)
        .map_or((80, 24), |size| {
            (u32::from(size.ws_col), u32::from(size.ws_row))
        })
}

/// Runs `command` (or a shell) on the connection with this process's stdio; returns its
/// exit code. A terminal is asked for when `pty` (and the local side is one, put in raw
/// mode); its size follows the local one. Without a terminal, Ctrl-C is sent as `INT`.
async fn run_session(
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
    let watcher = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut resized), Ok(mut interrupted)) = (
            signal(SignalKind::window_change()),
            signal(SignalKind::interrupt()),
        ) else {
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
fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
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

fn exit(code: u32) -> Result<(), Failure> {
    match code {
        0 => Ok(()),
        code => Err(Failure::Exit(u8::try_from(code).unwrap_or(255))),
    }
}

pub(crate) async fn ssh(
    command: SshCommand,
    app: Option<&str>,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    let client = api::client()?;
    let need_app = || {
        app.map(str::to_owned)
            .context("name the app with -a APP (or a fly.toml)")
    };
    match command {
        SshCommand::Console(args) => {
            let app = need_app()?;
            let machine =
                pick_machine(&client, &app, args.machine.as_deref(), args.select, out).await?;
            let user = args.user.clone().unwrap_or_default();
            let connection = connect(&client, &app, &machine.id, &user).await?;
            let pty = args.pty || args.command.is_none();
            let code = run_session(&connection, args.command, pty).await?;
            let _ = connection.close().await;
            exit(code)
        }
        SshCommand::Sftp(command) => {
            let app = need_app()?;
            sftp(&client, &app, command, out).await
        }
        SshCommand::Issue(args) => issue(&client, app, args, json, out).await,
    }
}

async fn sftp(
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

fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

async fn get(
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

async fn put(
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

async fn shell(session: &russh_sftp::client::SftpSession, out: &mut Output) -> anyhow::Result<()> {
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

async fn issue(
    client: &Client,
    app: Option<&str>,
    args: IssueArgs,
    json: bool,
    out: &mut Output,
) -> Result<(), Failure> {
    // An org token's certificate opens every app; an app token's only its app.
    let token = client.current_token().await.map_err(anyhow::Error::new)?;
    let scope = token
        .app
        .as_deref()
        .or(if token.kind == "org" { None } else { app });
    let (credentials, issued) = credentials(client, scope, args.hours).await?;
    let dir = match args.output {
        Some(dir) => dir,
        None => PathBuf::from(std::env::var("HOME").context("HOME is not set; give --output DIR")?)
            .join(".aloft/ssh"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_path = dir.join("id_aloft");
    let cert_path = dir.join("id_aloft-cert.pub");
    write_private(
        &key_path,
        &ca::private_to_openssh(&credentials.key).map_err(anyhow::Error::new)?,
    )?;
    std::fs::write(&cert_path, format!("{}\n", issued.certificate))
        .with_context(|| format!("writing {}", cert_path.display()))?;
    if args.agent {
        let seconds = u64::from(args.hours) * 3600;
        let status = std::process::Command::new("ssh-add")
            .arg("-t")
            .arg(seconds.to_string())
            .arg(&key_path)
            .status()
            .context("running ssh-add (is OpenSSH's client installed?)")?;
        if !status.success() {
            return Err(anyhow::anyhow!(
                "ssh-add failed ({status}): is an ssh-agent running (SSH_AUTH_SOCK)?"
            )
            .into());
        }
    }
    if json {
        out.json(&serde_json::json!({
            "key": key_path,
            "certificate": cert_path,
            "key_id": issued.key_id,
            "principals": issued.principals,
            "valid_before": issued.valid_before,
            "ca_public_key": issued.ca_public_key,
            "added_to_agent": args.agent,
        }))?;
    } else {
        out.data(&format!("key:          {}", key_path.display()));
        out.data(&format!("certificate:  {}", cert_path.display()));
        out.data(&format!("principals:   {}", issued.principals.join(", ")));
        out.data(&format!("valid until:  {}", issued.valid_before));
        if args.agent {
            out.data("added to the ssh-agent until then");
        }
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// `aloft proxy LOCAL:REMOTE`: every connection to the local port becomes a connection to
/// the machine's port, over one SSH connection, until Ctrl-C.
pub(crate) async fn proxy(args: ProxyArgs, app: &str, out: &mut Output) -> Result<(), Failure> {
    let (local, remote) = match args.ports.split_once(':') {
        Some((local, remote)) => (local, remote),
        None => (args.ports.as_str(), args.ports.as_str()),
    };
    let parse = |port: &str| {
        port.parse::<u16>()
            .with_context(|| format!("{port:?} in {:?} is not a port number", args.ports))
    };
    let (local, remote) = (parse(local)?, parse(remote)?);
    let client = api::client()?;
    let machine = pick_machine(&client, app, args.machine.as_deref(), false, out).await?;
    let connection = std::sync::Arc::new(connect(&client, app, &machine.id, "").await?);
    let bind = format!("{}:{local}", args.bind);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("listening on {bind}"))?;
    let address = listener.local_addr().context("reading the bound address")?;
    out.status(&format!(
        "Proxying {address} to port {remote} of machine {} ({app}); Ctrl-C stops",
        machine.id
    ));
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted.context("accepting a connection")?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let connection = connection.clone();
        tokio::spawn(async move {
            match connection.forward(remote, &mut stream).await {
                Ok(_) => {}
                Err(error) => {
                    tracing_free_warning(&format!(
                        "{peer}: the machine refused port {remote}: {error}"
                    ));
                }
            }
        });
    }
}

#[allow(
    clippy::print_stderr,
    reason = "a connection's failure, while the proxy goes on"
)]
fn tracing_free_warning(text: &str) {
    eprintln!("warning: {text}");
}

/// `aloft console`: a new machine of the app's current release (its image, env and
/// secrets; no services, checks or volumes) idling, `console_command` run in it over SSH
/// with a terminal, and the machine destroyed when that ends, however it ends.
pub(crate) async fn console(
    args: EphemeralArgs,
    app: &str,
    config: &Option<PathBuf>,
    out: &mut Output,
) -> Result<(), Failure> {
    let command = match args.command {
        Some(command) => command,
        None => console_command(config)?.unwrap_or_else(|| "/bin/sh".to_owned()),
    };
    let client = api::client()?;
    let template = pick_machine(&client, app, None, false, out)
        .await
        .context("the console machine copies a started machine of the current release")?;
    let mut machine_config = template.config.clone();
    machine_config.services.clear();
    machine_config.checks.clear();
    machine_config.mounts.clear();
    machine_config.statics.clear();
    machine_config.schedule = None;
    machine_config.standbys.clear();
    machine_config.auto_destroy = true;
    machine_config.restart = Some(aloft_types::machine::MachineRestart {
        policy: Some(aloft_types::machine::RestartPolicy::No),
        max_retries: 0,
    });
    machine_config.init.exec = Vec::new();
    machine_config.init.entrypoint = vec!["sleep".to_owned()];
    machine_config.init.cmd = vec!["2147483647".to_owned()];
    machine_config.metadata.insert(
        aloft_types::machine::METADATA_PROCESS_GROUP.to_owned(),
        "fly_app_console".to_owned(),
    );
    let created = client
        .create_machine(
            app,
            &MachineRequest {
                config: machine_config,
                region: Some(template.region.clone()),
                name: None,
                skip_launch: false,
                skip_service_registration: true,
                skip_secrets: false,
                lease_ttl: None,
                min_secrets_version: None,
                current_version: None,
            },
        )
        .await
        .context("creating the console machine")?;
    out.status(&format!("Console machine {} is starting", created.id));
    let outcome = async {
        client
            .wait(app, &created.id, aloft_types::MachineState::Started, 60)
            .await
            .context("waiting for the console machine to start")?;
        let connection = connect(
            &client,
            app,
            &created.id,
            &args.user.clone().unwrap_or_default(),
        )
        .await?;
        let code = run_session(&connection, Some(command), true).await?;
        let _ = connection.close().await;
        Ok::<u32, anyhow::Error>(code)
    }
    .await;
    let destroyed = client.destroy_machine(app, &created.id, true).await;
    match destroyed {
        Ok(_) => out.status(&format!("Console machine {} destroyed", created.id)),
        Err(error) => out.error(&format!(
            "destroying console machine {}: {error} (run `aloft machine destroy --force {}`)",
            created.id, created.id
        )),
    }
    exit(outcome?)
}

fn console_command(config: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    let path = match config {
        Some(path) => Some(path.clone()),
        None => aloft_config::find_in(Path::new("")).ok(),
    };
    let Some(path) = path else { return Ok(None) };
    let parsed = aloft_config::load(&path)?;
    Ok(parsed.config().and_then(|c| c.console_command.clone()))
}
