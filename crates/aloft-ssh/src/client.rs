//! The SSH client of `aloft ssh`, `aloft proxy` and `aloft console`: it speaks SSH over
//! any byte stream (the API's tunnel to a machine's host), authenticates with a key and
//! the certificate the organization's CA signed for it, and runs commands, SFTP and port
//! forwards.

use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{Certificate, PrivateKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// Why a session could not be opened or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("SSH: {0}")]
    Ssh(#[from] russh::Error),
    #[error("the machine's SSH server refused the certificate (see the machine's events)")]
    Refused,
    #[error("the machine refused to {0}")]
    Rejected(&'static str),
    #[error("the session ended without an exit status")]
    NoExitStatus,
    #[error("SFTP: {0}")]
    Sftp(#[from] russh_sftp::client::error::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::relay::RelayError> for ClientError {
    fn from(error: crate::relay::RelayError) -> Self {
        match error {
            crate::relay::RelayError::Ssh(error) => ClientError::Ssh(error),
            crate::relay::RelayError::Io(error) => ClientError::Io(error),
        }
    }
}

/// A key and the certificate its organization's CA signed for it.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub key: PrivateKey,
    pub certificate: Certificate,
}

/// Accepts the server's host key: the tunnel it runs in is the API's, which the CLI
/// authenticated (TLS and the token) and which chose the host.
#[derive(Debug)]
struct Tunnelled;

impl client::Handler for Tunnelled {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// An authenticated SSH connection to a machine.
pub struct Connection {
    handle: Handle<Tunnelled>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// Opens an SSH connection over `stream` as `user` (the machine's user to run as).
pub async fn connect<S>(
    stream: S,
    user: &str,
    credentials: &Credentials,
) -> Result<Connection, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = client::Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        channel_buffer_size: crate::CHANNEL_QUEUE,
        ..client::Config::default()
    };
    let mut handle = client::connect_stream(Arc::new(config), stream, Tunnelled).await?;
    let result = handle
        .authenticate_openssh_cert(
            user,
            Arc::new(credentials.key.clone()),
            credentials.certificate.clone(),
        )
        .await?;
    if !result.success() {
        return Err(ClientError::Refused);
    }
    Ok(Connection { handle })
}

/// A pseudo-terminal to ask for.
#[derive(Debug, Clone)]
pub struct PtyRequest {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// What happens to a running command from the client's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The terminal's new size (columns, rows).
    Resize(u32, u32),
    /// A signal for the command (`INT`, `TERM`, ...).
    Signal(String),
}

/// What to run: a command (through the machine's shell) or the login shell.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub command: Option<String>,
    pub pty: Option<PtyRequest>,
    pub env: Vec<(String, String)>,
}

fn signal(name: &str) -> Sig {
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_owned()),
    }
}

/// The exit code a shell would show for a process killed by `signal`.
fn signal_exit(signal: &Sig) -> u32 {
    128 + match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        _ => 15,
    }
}

impl Connection {
    /// Runs `run`, relaying what arrives on `stdin` to it (the channel's end is the input's
    /// end) and its output to `stdout` and `stderr` (with a PTY both arrive on `stdout`),
    /// applying `controls` as they come; returns its exit code (128 + the signal's number
    /// when a signal ended it).
    pub async fn run<O, E>(
        &self,
        run: &Run,
        mut stdin: mpsc::Receiver<Vec<u8>>,
        mut stdout: O,
        mut stderr: E,
        mut controls: mpsc::Receiver<Control>,
    ) -> Result<u32, ClientError>
    where
        O: AsyncWrite + Unpin + Send,
        E: AsyncWrite + Unpin + Send,
    {
        let channel = self.handle.channel_open_session().await?;
        for (name, value) in &run.env {
            channel
                .set_env(false, name.as_str(), value.as_str())
                .await?;
        }
        if let Some(pty) = &run.pty {
            channel
                .request_pty(true, &pty.term, pty.cols, pty.rows, 0, 0, &[])
                .await?;
        }
        match &run.command {
            Some(command) => channel.exec(true, command.as_bytes()).await?,
            None => channel.request_shell(true).await?,
        }
        let (mut reader, writer) = channel.split();
        // Output, input and controls run side by side: waiting for the window to send
        // input must never stop output from being read (the peer may be waiting for us
        // to read before it reads more).
        let output = async {
            let mut exit = None;
            loop {
                match reader.wait().await {
                    Some(ChannelMsg::Data { data }) => {
                        stdout.write_all(&data).await?;
                        stdout.flush().await?;
                    }
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        stderr.write_all(&data).await?;
                        stderr.flush().await?;
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        exit = Some(signal_exit(&signal_name));
                    }
                    Some(ChannelMsg::Failure) => {
                        return Err(ClientError::Rejected("run the command"));
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
            exit.ok_or(ClientError::NoExitStatus)
        };
        let input = async {
            while let Some(data) = stdin.recv().await {
                writer.data_bytes(data).await?;
            }
            writer.eof().await?;
            Ok::<(), ClientError>(())
        };
        let control = async {
            while let Some(control) = controls.recv().await {
                match control {
                    Control::Resize(cols, rows) => writer.window_change(cols, rows, 0, 0).await?,
                    Control::Signal(name) => writer.signal(signal(&name)).await?,
                }
            }
            Ok::<(), ClientError>(())
        };
        let others = async {
            // An input error (the command stopped reading) is not the session's end.
            let _ = tokio::join!(input, control);
            std::future::pending::<()>().await;
        };
        tokio::select! {
            exit = output => exit,
            () = others => unreachable!("pending never completes"),
        }
    }

    /// An SFTP session on the machine's filesystem.
    pub async fn sftp(&self) -> Result<russh_sftp::client::SftpSession, ClientError> {
        let channel = self.handle.channel_open_session().await?;
        channel.request_subsystem(true, "sftp").await?;
        Ok(russh_sftp::client::SftpSession::new(channel.into_stream()).await?)
    }

    /// Carries `stream` to `port` on the machine (its private address) until both
    /// directions have ended: the end of `stream`'s input is sent as the channel's EOF
    /// (the machine's connection sees its peer close), the machine's EOF shuts `stream`'s
    /// output down. Returns the bytes carried (to the machine, from it).
    pub async fn forward<S>(&self, port: u16, stream: S) -> Result<(u64, u64), ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let channel = self
            .handle
            .channel_open_direct_tcpip("localhost", u32::from(port), "127.0.0.1", 0)
            .await?;
        Ok(crate::relay::relay(channel, stream).await?)
    }

    /// Ends the connection.
    pub async fn close(self) -> Result<(), ClientError> {
        self.handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await?;
        Ok(())
    }
}
