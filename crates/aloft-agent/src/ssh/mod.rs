//! The host's SSH server: sessions into this host's machines.
//!
//! Connections arrive through the API's tunnel (`GET /v1/apps/{app}/machines/{id}/ssh`,
//! which names the machine; the SSH user is the machine's user to run as) or on the
//! host's private-network address (the user is `MACHINE` or `USER+MACHINE`). Either way
//! the server accepts only an OpenSSH user certificate that
//! - is signed by the machine's organization's CA and valid now,
//! - names `org:<slug>` or `app:<slug>/<app>` of the machine, and no critical option,
//! - carries the token it was issued for, which must still be active.
//!
//! Plain keys, passwords and everything else are refused. Every refusal is logged and,
//! when the machine is known, recorded as an `ssh` event of the machine (`refused`, with
//! the reason); every session as `ssh` `started` (who, user, command) and `ended` (exit
//! code).
//!
//! A session runs a command (`exec`, without a PTY unless one was asked for), the login
//! shell (`shell`), SFTP (the `sftp` subsystem, served by a helper process whose root is
//! the machine's) or a TCP connection to a port of the machine (`direct-tcpip`, to its
//! private address).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aloft_agent_api::{MachineRecord, SshTrust, TOKEN_EXTENSION};
use aloft_runtime::{AttachOptions, ContainerState, ExecChunk, Runtime};
use aloft_ssh::ca;
use aloft_ssh::russh::keys::Certificate;
use aloft_ssh::russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use aloft_ssh::russh::{self, Channel, ChannelId, ChannelMsg, ChannelOpenFailure, Sig};
use aloft_types::{EventKind, MachineId};
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;

use crate::{LABEL_INSTANCE, Shared, error_chain};

mod accept;
mod error;
mod host_key;

pub use accept::SshLimits;
pub(crate) use accept::{listen, serve};
pub(crate) use error::SshError;
pub(crate) use host_key::server_config;

/// How a connection reached the server.
#[derive(Debug, Clone)]
pub(crate) enum Via {
    /// The API's tunnel, for this machine.
    Tunnel(Box<MachineRecord>),
    /// The private network, from this address.
    Private(std::net::SocketAddr),
}

/// Who a session is: the machine, the certificate's key id, the user to run as.
#[derive(Debug, Clone)]
struct Authorized {
    machine: MachineRecord,
    who: String,
    user: Option<String>,
    via: &'static str,
}

/// How a connection's authentication went, as far as this server saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// No certificate reached the handler: none was offered, or the SSH library refused it
    /// first (expired, not yet valid, a bad signature).
    Unseen,
    /// Refused, and the refusal recorded.
    Refused,
    Accepted,
}

/// One SSH connection.
pub(crate) struct Connection<R: Runtime + 'static> {
    shared: Arc<Shared<R>>,
    via: Via,
    authorized: Option<Authorized>,
    outcome: Arc<std::sync::Mutex<Outcome>>,
    /// Its place among the connections logging in, given back at its login.
    startup: Option<accept::Startup>,
}

impl<R: Runtime + 'static> Connection<R> {
    fn new(
        shared: Arc<Shared<R>>,
        via: Via,
        outcome: Arc<std::sync::Mutex<Outcome>>,
        startup: Option<accept::Startup>,
    ) -> Connection<R> {
        Connection {
            shared,
            via,
            authorized: None,
            outcome,
            startup,
        }
    }

    fn set_outcome(&self, outcome: Outcome) {
        if let Ok(mut current) = self.outcome.lock() {
            *current = outcome;
        }
    }

    /// The machine and user a login names.
    async fn target(&self, user: &str) -> Result<(MachineRecord, Option<String>), SshError> {
        match &self.via {
            Via::Tunnel(machine) => {
                let user = (!user.is_empty()).then(|| user.to_owned());
                Ok((machine.as_ref().clone(), user))
            }
            Via::Private(_) => {
                let (user, machine) = match user.rsplit_once('+') {
                    Some((user, machine)) => (Some(user.to_owned()), machine),
                    None => (None, user),
                };
                let id: MachineId = machine
                    .parse()
                    .map_err(|_| SshError::Login(machine.to_owned()))?;
                let machine = self
                    .shared
                    .gateway
                    .machine(&id)
                    .await
                    .map_err(|_| SshError::NoMachine(id.clone()))?;
                if machine.host_id.as_ref() != Some(&self.shared.config.host_id) {
                    return Err(SshError::NotOnThisHost(id));
                }
                Ok((machine, user))
            }
        }
    }

    async fn check(
        &self,
        machine: &MachineRecord,
        certificate: &Certificate,
    ) -> Result<String, SshError> {
        let trust: SshTrust = self
            .shared
            .gateway
            .ssh_trust(machine)
            .await
            .map_err(|e| SshError::Trust(error_chain(&e)))?;
        let authorities: Vec<_> = trust
            .authorities
            .iter()
            .filter_map(|key| ca::public_from_openssh(key).ok())
            .collect();
        if authorities.is_empty() {
            return Err(SshError::NoAuthority);
        }
        ca::check_certificate(certificate, &authorities, &trust.principals, ca::unix_now())
            .map_err(|refusal| match refusal {
                ca::Refusal::UnknownAuthority | ca::Refusal::BadSignature => {
                    SshError::Stranger(refusal.to_string())
                }
                other => SshError::Certificate(other.to_string()),
            })?;
        let token = certificate
            .extensions()
            .get(TOKEN_EXTENSION)
            .ok_or(SshError::NoToken)?;
        let active = self
            .shared
            .gateway
            .token_active(&trust.org_id, token)
            .await
            .map_err(|e| SshError::TokenCheck(error_chain(&e)))?;
        if !active {
            return Err(SshError::TokenInactive(token.clone()));
        }
        Ok(certificate.key_id().to_owned())
    }

    /// Whether a refusal (for `reason`; `None`: a plain key) goes into the machine's
    /// events: always through the API's tunnel, whose caller holds a token for the
    /// machine; on the private network only for a certificate of the machine's
    /// organization, so that a stranger cannot write into any machine's events.
    fn records(&self, reason: Option<&SshError>) -> bool {
        match &self.via {
            Via::Tunnel(_) => true,
            Via::Private(_) => !matches!(
                reason,
                None | Some(SshError::Stranger(_) | SshError::NoAuthority)
            ),
        }
    }

    fn peer(&self) -> String {
        match &self.via {
            Via::Tunnel(_) => "api tunnel".to_owned(),
            Via::Private(address) => address.to_string(),
        }
    }

    async fn refuse(
        &self,
        machine: Option<&MachineRecord>,
        user: &str,
        key_id: &str,
        reason: &str,
    ) {
        self.set_outcome(Outcome::Refused);
        tracing::warn!(
            machine = machine.map(|m| m.id.to_string()),
            user,
            key_id,
            peer = %self.peer(),
            reason,
            "refused an SSH login"
        );
        if let Some(machine) = machine {
            let event =
                json!({"user": user, "key_id": key_id, "reason": reason, "peer": self.peer()});
            if let Err(error) = self
                .shared
                .gateway
                .record_event(&machine.id, EventKind::Ssh, "refused", event)
                .await
            {
                tracing::warn!(error = %error_chain(&error), "recording an SSH refusal");
            }
        }
    }
}

impl<R: Runtime + 'static> server::Handler for Connection<R> {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let machine = if self.records(None) {
            self.target(user).await.ok().map(|(m, _)| m)
        } else {
            None
        };
        let reason = format!(
            "a plain key ({}) is not accepted: use a certificate from `aloft ssh issue`",
            key.algorithm
        );
        self.refuse(machine.as_ref(), user, "", &reason).await;
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let (machine, run_as) = match self.target(user).await {
            Ok(target) => target,
            Err(reason) => {
                self.refuse(None, user, certificate.key_id(), &reason.to_string())
                    .await;
                return Ok(Auth::reject());
            }
        };
        match self.check(&machine, certificate).await {
            Ok(who) => {
                tracing::info!(machine = %machine.id, %who, user, peer = %self.peer(), "SSH login");
                self.set_outcome(Outcome::Accepted);
                self.startup = None;
                self.authorized = Some(Authorized {
                    machine,
                    who,
                    user: run_as,
                    via: match self.via {
                        Via::Tunnel(_) => "api",
                        Via::Private(_) => "private network",
                    },
                });
                Ok(Auth::Accept)
            }
            Err(reason) => {
                let recorded = self.records(Some(&reason)).then_some(&machine);
                self.refuse(recorded, user, certificate.key_id(), &reason.to_string())
                    .await;
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(authorized) = self.authorized.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        let shared = self.shared.clone();
        self.shared.tasks.spawn(async move {
            if let Err(error) = session(shared, authorized, channel).await {
                tracing::warn!(%error, "SSH session failed");
            }
        });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        _host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(authorized) = self.authorized.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let Ok(port) = u16::try_from(port_to_connect) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        let address = match self
            .shared
            .gateway
            .private_address(&authorized.machine.id)
            .await
        {
            Ok(address) => std::net::SocketAddr::new(address.address().into(), port),
            Err(_) => {
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return Ok(());
            }
        };
        let namespace = self
            .shared
            .config
            .namespace()
            .map(std::path::Path::to_owned);
        match aloft_net::netns::connect_tcp(namespace.as_deref(), address, Duration::from_secs(5))
            .await
        {
            Ok(mut stream) => {
                reply.accept().await;
                tracing::info!(machine = %authorized.machine.id, who = %authorized.who, port, "SSH port forward");
                self.shared.tasks.spawn(async move {
                    if let Err(error) = aloft_ssh::relay::relay(channel, &mut stream).await {
                        tracing::debug!(%error, "SSH port forward ended");
                    }
                    let _ = stream.shutdown().await;
                });
            }
            Err(error) => {
                tracing::info!(machine = %authorized.machine.id, port, %error, "SSH port forward: connect failed");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn window_change_request(
        &mut self,
        _channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// What a session channel asked for before it runs.
#[derive(Debug, Default)]
struct Request {
    pty: Option<(String, u32, u32)>,
    env: Vec<String>,
}

/// How long a session's process may outlive its client's hang-up before SIGKILL.
const HANGUP_GRACE: Duration = Duration::from_secs(10);

/// The command line of a login shell: bash if the machine has it, else sh.
const LOGIN_SHELL: &str =
    "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi";

async fn session<R: Runtime + 'static>(
    shared: Arc<Shared<R>>,
    authorized: Authorized,
    mut channel: Channel<Msg>,
) -> Result<(), SshError> {
    let mut request = Request::default();
    let command = loop {
        match channel.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                request.pty = Some((term, col_width, row_height));
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                if !variable_name.contains('=') {
                    request
                        .env
                        .push(format!("{variable_name}={variable_value}"));
                }
            }
            Some(ChannelMsg::Exec { command, .. }) => {
                break Some(String::from_utf8_lossy(&command).into_owned());
            }
            Some(ChannelMsg::RequestShell { .. }) => break None,
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => {
                return sftp(&shared, &authorized, channel).await;
            }
            Some(ChannelMsg::Close | ChannelMsg::Eof) | None => return Ok(()),
            Some(_) => {}
        }
    };
    let machine = &authorized.machine;
    let shown = command
        .clone()
        .unwrap_or_else(|| "(login shell)".to_owned());
    audit(
        &shared,
        machine,
        "started",
        json!({
            "who": authorized.who,
            "user": authorized.user.as_deref().unwrap_or("(the image's)"),
            "command": shown,
            "pty": request.pty.is_some(),
            "via": authorized.via,
        }),
    )
    .await;
    let code = match run(&shared, &authorized, command, request, channel).await {
        Ok(code) => code,
        Err(error) => {
            audit(
                &shared,
                machine,
                "ended",
                json!({"who": authorized.who, "error": error.to_string()}),
            )
            .await;
            return Err(error);
        }
    };
    audit(
        &shared,
        machine,
        "ended",
        json!({"who": authorized.who, "exit_code": code}),
    )
    .await;
    Ok(())
}

async fn audit<R: Runtime + 'static>(
    shared: &Shared<R>,
    machine: &MachineRecord,
    status: &str,
    event: serde_json::Value,
) {
    if let Err(error) = shared
        .gateway
        .record_event(&machine.id, EventKind::Ssh, status, event)
        .await
    {
        tracing::warn!(machine = %machine.id, error = %error_chain(&error), "recording an SSH event");
    }
}

/// The machine's running container (its current instance).
async fn running_container<R: Runtime + 'static>(
    shared: &Shared<R>,
    machine: &MachineRecord,
) -> Result<aloft_runtime::ContainerInfo, SshError> {
    let containers = shared
        .containers_of(&machine.id)
        .await
        .map_err(|e| SshError::Containers(error_chain(&e)))?;
    containers
        .into_iter()
        .find(|c| {
            c.labels.get(LABEL_INSTANCE) == Some(&machine.instance_id)
                && c.state == ContainerState::Running
        })
        .ok_or_else(|| SshError::NotRunning(machine.id.clone()))
}

/// Runs the command (or login shell) and relays it to the channel; returns its exit code.
async fn run<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    authorized: &Authorized,
    command: Option<String>,
    request: Request,
    channel: Channel<Msg>,
) -> Result<i64, SshError> {
    let container = match running_container(shared, &authorized.machine).await {
        Ok(container) => container,
        Err(error) => return Err(fail(&channel, error).await),
    };
    let line = command.unwrap_or_else(|| LOGIN_SHELL.to_owned());
    let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), line];
    let mut env = request.env;
    if let Some((term, _, _)) = &request.pty {
        env.push(format!("TERM={term}"));
    }
    let options = AttachOptions {
        tty: request.pty.is_some(),
        user: authorized.user.clone(),
        env,
    };
    let exec = match shared
        .runtime
        .exec_attached(&container.id, &argv, &options)
        .await
    {
        Ok(exec) => exec,
        Err(error) => return Err(fail(&channel, SshError::Exec(error_chain(&error))).await),
    };
    if let Some((_, cols, rows)) = request.pty {
        resize(shared, &exec.id, cols, rows).await;
    }
    // Input and output run side by side: a command that stops reading its input while
    // its output waits for window only stops the client's input (see `aloft_ssh`).
    let (mut reader, writer) = channel.split();
    let mut output = exec.output;
    let mut input = exec.input;
    let relay_output = async {
        while let Some(chunk) = output.next().await {
            let sent = match chunk {
                Ok(ExecChunk::Stdout(data)) => writer.data_bytes(data).await,
                Ok(ExecChunk::Stderr(data)) => writer.extended_data_bytes(1, data).await,
                Err(error) => {
                    tracing::debug!(error = %error_chain(&error), "SSH session output ended");
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
    };
    let relay_input = async {
        let mut input_open = true;
        while let Some(message) = reader.wait().await {
            match message {
                ChannelMsg::Data { data } if input_open => {
                    input_open = input.write_all(&data).await.is_ok();
                }
                ChannelMsg::Eof if input_open => {
                    input_open = false;
                    let _ = input.shutdown().await;
                }
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    ..
                } => {
                    resize(shared, &exec.id, col_width, row_height).await;
                }
                ChannelMsg::Signal { signal } => deliver(shared, &exec.id, &signal).await,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        // The client is gone: end what it ran (SIGKILL if it ignores the hang-up).
        deliver(shared, &exec.id, &Sig::HUP).await;
        tokio::time::sleep(HANGUP_GRACE).await;
        deliver(shared, &exec.id, &Sig::KILL).await;
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = relay_output => {}
        () = relay_input => {}
    }
    let code = exit_code(shared, &exec.id).await;
    let _ = writer.exit_status(u32::try_from(code).unwrap_or(255)).await;
    let _ = writer.eof().await;
    let _ = writer.close().await;
    Ok(code)
}

/// Tells the client why nothing runs, and ends the channel with status 255.
async fn fail(channel: &Channel<Msg>, message: SshError) -> SshError {
    let shown = format!("aloft: {message}\r\n");
    let _ = channel.extended_data_bytes(1, shown.into_bytes()).await;
    let _ = channel.exit_status(255).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
    message
}

async fn resize<R: Runtime + 'static>(shared: &Shared<R>, exec: &str, cols: u32, rows: u32) {
    let (cols, rows) = (
        u16::try_from(cols).unwrap_or(u16::MAX),
        u16::try_from(rows).unwrap_or(u16::MAX),
    );
    if cols == 0 || rows == 0 {
        return;
    }
    if let Err(error) = shared.runtime.exec_resize(exec, cols, rows).await {
        tracing::debug!(error = %error_chain(&error), "resizing an SSH session's TTY");
    }
}

/// Delivers `signal` to the session's process (by its host pid).
async fn deliver<R: Runtime + 'static>(shared: &Shared<R>, exec: &str, signal: &Sig) {
    let number = match signal {
        Sig::HUP => nix::sys::signal::Signal::SIGHUP,
        Sig::INT => nix::sys::signal::Signal::SIGINT,
        Sig::QUIT => nix::sys::signal::Signal::SIGQUIT,
        Sig::KILL => nix::sys::signal::Signal::SIGKILL,
        Sig::TERM => nix::sys::signal::Signal::SIGTERM,
        Sig::USR1 => nix::sys::signal::Signal::SIGUSR1,
        Sig::ALRM => nix::sys::signal::Signal::SIGALRM,
        Sig::PIPE => nix::sys::signal::Signal::SIGPIPE,
        Sig::ABRT => nix::sys::signal::Signal::SIGABRT,
        _ => return,
    };
    let Ok(state) = shared.runtime.exec_state(exec).await else {
        return;
    };
    if let Some(pid) = state.pid.and_then(|pid| i32::try_from(pid).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), number);
    }
}

/// The exit code of a finished exec (the engine notices the end shortly after the
/// output closes).
async fn exit_code<R: Runtime + 'static>(shared: &Shared<R>, exec: &str) -> i64 {
    for _ in 0..200 {
        match shared.runtime.exec_state(exec).await {
            Ok(state) if !state.running => return state.exit_code.unwrap_or(255),
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => return 255,
        }
    }
    255
}

/// Serves SFTP with the helper process, rooted in the machine's filesystem.
async fn sftp<R: Runtime + 'static>(
    shared: &Arc<Shared<R>>,
    authorized: &Authorized,
    channel: Channel<Msg>,
) -> Result<(), SshError> {
    let container = running_container(shared, &authorized.machine).await?;
    let pid = container
        .pid
        .ok_or_else(|| SshError::NoProcess(authorized.machine.id.clone()))?;
    let helper: PathBuf = shared.config.helper.clone().ok_or(SshError::NoHelper)?;
    audit(
        shared,
        &authorized.machine,
        "started",
        json!({
            "who": authorized.who,
            "command": "sftp",
            "via": authorized.via,
        }),
    )
    .await;
    let mut child = tokio::process::Command::new(&helper)
        .arg("sftp-server")
        .arg("--root")
        .arg(format!("/proc/{pid}/root"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SshError::Helper {
            path: helper.clone(),
            source,
        })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(SshError::HelperStdio);
    };
    let helper_io = tokio::io::join(stdout, stdin);
    let copied = aloft_ssh::relay::relay(channel, helper_io).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    audit(
        shared,
        &authorized.machine,
        "ended",
        json!({"who": authorized.who, "command": "sftp"}),
    )
    .await;
    copied.map(|_| ()).map_err(SshError::Relay)
}
