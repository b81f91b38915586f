//! The `aloft` command-line client.
//!
//! Conventions every command follows: data goes to stdout, diagnostics to stderr; every
//! listing has `--json`; `NO_COLOR` (or a stderr that is not a terminal) turns colour off.
//! Exit codes: 0 success, 1 invalid configuration, 2 usage error, 3 any other failure.

mod api;
mod commands;
mod confirm;
mod context;
mod output;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of a configuration that is not valid.
pub const EXIT_INVALID_CONFIG: u8 = 1;
/// Exit code of a command line that clap rejects.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of every other failure (a file that cannot be read, say).
pub const EXIT_FAILURE: u8 = 3;

/// Aloft: run your fly.toml apps on machines you own.
#[derive(Debug, Parser)]
#[command(name = "aloft", version, about, max_term_width = 100)]
pub struct Cli {
    /// The app to act on (overrides `app` in the config file).
    #[arg(short = 'a', long = "app", global = true, value_name = "APP")]
    pub app: Option<String>,

    /// The app's config file (default: ./fly.toml, then ./aloft.toml).
    #[arg(short = 'c', long = "config", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save and check API credentials.
    #[command(subcommand)]
    Auth(commands::auth::AuthCommand),
    /// Manage organizations.
    #[command(subcommand)]
    Orgs(commands::orgs::OrgsCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Tokens(commands::orgs::TokensCommand),
    /// Manage apps.
    #[command(subcommand)]
    Apps(commands::apps::AppsCommand),
    /// Run and manage machines.
    #[command(subcommand, visible_aliases = ["m", "machines"])]
    Machine(commands::machine::MachineCommand),
    /// Manage an app's secrets.
    #[command(subcommand)]
    Secrets(commands::secrets::SecretsCommand),
    /// Manage an app's volumes.
    #[command(subcommand, visible_alias = "vol")]
    Volumes(commands::volumes::VolumesCommand),
    /// Ask the private network's DNS server as the app's machines do: `[TYPE] NAME`.
    Dig {
        #[arg(required = true, num_args = 1..=2, value_name = "[TYPE] NAME")]
        words: Vec<String>,
    },
    /// An app's addresses.
    #[command(subcommand)]
    Ips(commands::ips::IpsCommand),
    /// Certificates of the edge.
    #[command(subcommand)]
    Certs(commands::certs::CertsCommand),
    /// Health checks of an app's machines.
    #[command(subcommand)]
    Checks(commands::checks::ChecksCommand),
    /// Make the current directory an app: create it, write fly.toml, deploy.
    Launch(commands::launch::LaunchArgs),
    /// Roll out a new release of the app from its fly.toml, server-side, and follow it.
    Deploy(commands::deploy::DeployArgs),
    /// The app's releases, newest first; `rollback` goes back to one.
    Releases {
        #[command(subcommand)]
        command: Option<commands::deploy::ReleasesCommand>,
    },
    /// The app's log lines: the recent ones (or from --since), then new ones as they come.
    Logs(commands::logs::LogsArgs),
    /// The app, its current release and its machines (state, region, release, checks).
    Status(commands::status::StatusArgs),
    /// Change how many machines run and how big they are.
    #[command(subcommand)]
    Scale(commands::scale::ScaleCommand),
    /// Shells, commands and files in an app's machines, over SSH through the API.
    #[command(subcommand)]
    Ssh(commands::ssh::SshCommand),
    /// Copy files to and from a machine (as `aloft ssh sftp`).
    #[command(subcommand)]
    Sftp(commands::ssh::SftpCommand),
    /// Forward a local port to a port of one of the app's machines: `LOCAL:REMOTE`.
    Proxy(commands::proxy::ProxyArgs),
    /// Run `console_command` in a new machine of the current release, destroyed on exit.
    Console(commands::console::EphemeralArgs),
    /// Print the app's URL (`https://<app>.<apps_domain>/`, with PATH) and open it in a
    /// browser when there is one (`$BROWSER`, or `xdg-open` on a desktop).
    Open {
        /// A path on the app, such as `/admin`.
        path: Option<String>,
    },
    /// Check what the other commands need: the API token, the API answering it, the
    /// fly.toml here and the app's machines; one line each, exit 3 when one fails.
    Doctor,
    /// Print the web dashboard's page of the app (served by the API this CLI uses) and
    /// open it in a browser when there is one; `metrics` opens its graphs.
    #[command(visible_alias = "dash")]
    Dashboard {
        #[command(subcommand)]
        page: Option<commands::apps::DashboardPage>,
    },
    /// Read, check and show an app's fly.toml.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// What the platform offers: its regions and machine sizes; its hosts, for the
    /// operator.
    #[command(subcommand)]
    Platform(commands::platform::PlatformCommand),
    /// The platform's regions, with the CPUs free in each (as `fly regions list`).
    #[command(subcommand)]
    Regions(commands::platform::RegionsCommand),
    /// Print the version of this client.
    Version,
}

/// A failure that decides the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The config has errors; they were already printed.
    InvalidConfig,
    /// Exit with this code (a command run in a machine failed with it).
    Exit(u8),
    /// The command line lacks something only the user can give (exit 2).
    Usage(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Other(error)
    }
}

/// Parses the command line, runs the command and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    let mut out = output::Output::new();
    match run(cli, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::InvalidConfig) => ExitCode::from(EXIT_INVALID_CONFIG),
        Err(Failure::Exit(code)) => ExitCode::from(code),
        Err(Failure::Usage(error)) => {
            out.error(&format!("{error:#}"));
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Other(error)) => {
            out.error(&format!("{error:#}"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Commands whose output is a terminal session, a byte stream or a file, which `--json`
/// cannot describe: refused, not ignored.
fn json_refused(command: &Command) -> Option<&'static str> {
    use commands::certs::CertsCommand;
    use commands::ssh::SshCommand;
    match command {
        Command::Ssh(SshCommand::Console(_)) => Some("ssh console (a terminal session)"),
        Command::Ssh(SshCommand::Sftp(_)) => Some("ssh sftp (files)"),
        Command::Sftp(_) => Some("sftp (files)"),
        Command::Proxy(_) => Some("proxy (forwarded connections)"),
        Command::Console(_) => Some("console (a terminal session)"),
        Command::Certs(CertsCommand::Ca) => Some("certs ca (a PEM certificate)"),
        _ => None,
    }
}

fn run(cli: Cli, out: &mut output::Output) -> Result<(), Failure> {
    if cli.json
        && let Some(what) = json_refused(&cli.command)
    {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--json does not apply to `aloft {what}`; run it without --json"
        )));
    }
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                Failure::Other(anyhow::Error::new(e).context("starting the async runtime"))
            })
    };
    let app = || api::app_name(cli.app.as_deref(), &cli.config).map_err(Failure::Usage);
    match cli.command {
        Command::Config(command) => {
            commands::config::run(command, &cli.config, cli.app.as_deref(), cli.json, out)
        }
        Command::Version => commands::version(cli.json, out),
        Command::Deploy(args) => runtime()?.block_on(commands::deploy::deploy(
            args,
            &cli.config,
            cli.app.as_deref(),
            cli.json,
            out,
        )),
        Command::Launch(args) => {
            runtime()?.block_on(commands::launch::launch(args, &cli.config, cli.json, out))
        }
        Command::Releases { command } => {
            let app = app()?;
            runtime()?.block_on(commands::deploy::releases_command(
                command, &app, cli.json, out,
            ))
        }
        Command::Logs(args) => match args.command {
            Some(commands::logs::LogsCommand::Ship(command)) => {
                let app = app().ok();
                runtime()?.block_on(commands::logs::ship(command, app.as_deref(), cli.json, out))
            }
            None => {
                let app = app()?;
                runtime()?.block_on(commands::logs::logs(args, &app, cli.json, out))
            }
        },
        Command::Status(args) => {
            let app = app()?;
            runtime()?.block_on(commands::status::status(args, &app, cli.json, out))
        }
        Command::Scale(command) => {
            let app = app()?;
            runtime()?.block_on(commands::scale::scale(command, &app, cli.json, out))
        }
        Command::Ssh(command) => {
            let app = app().ok();
            runtime()?.block_on(commands::ssh::ssh(command, app.as_deref(), cli.json, out))
        }
        Command::Sftp(command) => {
            let app = app().ok();
            runtime()?.block_on(commands::ssh::ssh(
                commands::ssh::SshCommand::Sftp(command),
                app.as_deref(),
                cli.json,
                out,
            ))
        }
        Command::Proxy(args) => {
            let app = app()?;
            runtime()?.block_on(commands::proxy::proxy(args, &app, out))
        }
        Command::Console(args) => {
            let app = app()?;
            runtime()?.block_on(commands::console::console(args, &app, &cli.config, out))
        }
        Command::Auth(command) => runtime()?.block_on(commands::auth::run(command, cli.json, out)),
        Command::Orgs(command) => runtime()?.block_on(commands::orgs::orgs(command, cli.json, out)),
        Command::Tokens(command) => {
            runtime()?.block_on(commands::orgs::tokens(command, cli.json, out))
        }
        Command::Apps(command) => runtime()?.block_on(commands::apps::run(command, cli.json, out)),
        Command::Machine(command) => {
            let app = app()?;
            runtime()?.block_on(commands::machine::run(command, &app, cli.json, out))
        }
        Command::Secrets(command) => {
            let app = app()?;
            runtime()?.block_on(commands::secrets::secrets(command, &app, cli.json, out))
        }
        Command::Volumes(command) => {
            let app = app()?;
            runtime()?.block_on(commands::volumes::volumes(command, &app, cli.json, out))
        }
        Command::Dig { words } => {
            let app = app()?;
            runtime()?.block_on(commands::dig::dig(&words, &app, cli.json, out))
        }
        Command::Open { path } => {
            let app = app()?;
            runtime()?.block_on(commands::apps::open(&app, path.as_deref(), cli.json, out))
        }
        Command::Doctor => runtime()?.block_on(commands::doctor::doctor(
            &cli.config,
            cli.app.as_deref(),
            cli.json,
            out,
        )),
        Command::Dashboard { page } => {
            let app = app()?;
            runtime()?.block_on(commands::apps::dashboard(&app, page, cli.json, out))
        }
        Command::Certs(command) => {
            let app = if commands::certs::certs_need_app(&command) {
                app()?
            } else {
                String::new()
            };
            runtime()?.block_on(commands::certs::certs(command, &app, cli.json, out))
        }
        Command::Checks(command) => {
            let app = app()?;
            runtime()?.block_on(commands::checks::run(command, &app, cli.json, out))
        }
        Command::Ips(command) => {
            let app = app()?;
            runtime()?.block_on(commands::ips::ips(command, &app, cli.json, out))
        }
        Command::Platform(command) => {
            runtime()?.block_on(commands::platform::platform(command, cli.json, out))
        }
        Command::Regions(commands::platform::RegionsCommand::List) => {
            runtime()?.block_on(commands::platform::regions(cli.json, out))
        }
    }
}
