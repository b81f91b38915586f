//! `aloft ssh console|sftp|issue`: sessions into machines over the API's SSH tunnel,
//! authenticated by a short-lived certificate from the organization's CA (a new key and a
//! one-hour certificate for the app every time; nothing to manage). `aloft proxy` and
//! `aloft console` (modules of their own) open their sessions through [`session`].

pub(crate) mod session;
mod sftp;
mod terminal;

use std::path::{Path, PathBuf};

use aloft_client::Client;
use aloft_ssh::ca;
use anyhow::Context as _;

use crate::Failure;
use crate::api;
use crate::output::Output;
use session::{connect, credentials, exit, pick_machine, run_session};
use sftp::sftp;

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
    aloft_crash::write_file(path, text.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))
}
