//! The Aloft daemon. `aloftd server` runs every role in one process: the control plane
//! (Machines API over SQLite or PostgreSQL) and this host's agent (machines on Docker
//! Engine). Later roles (`control`, `agent`, `edge`) split them across hosts.
//!
//! Shutdown: SIGTERM stops accepting requests, finishes those in flight within the grace
//! period, stops the agent's loop and exits 0; SIGINT exits at once. Machines keep running
//! either way and are adopted on the next start.
//!
//! Exit codes: 0 success, 2 usage error, 78 invalid configuration, 1 any other failure.

pub mod acme_config;
mod api_tls;
mod build_config;
mod builder;
pub mod config;
mod metrics;
pub mod quota_config;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use api_tls::{CA_FINGERPRINT_FILE, PLATFORM_CA_DIR};
pub use config::{ApiTlsMode, Config};
pub use server::{
    API_URL_FILE, DNS_ADDR_FILE, HOST_ID_FILE, HTTP_ADDR_FILE, HTTPS_ADDR_FILE, ServerOptions,
    TLS_DIR, run as run_server,
};

/// Exit code of an invalid configuration (`EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

/// The Aloft daemon.
#[derive(Debug, Parser)]
#[command(name = "aloftd", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role on this host: API, state, and the agent that runs machines.
    Server(ServerArgs),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the version of this daemon.
    Version,
    /// Serve SFTP on stdin and stdout inside ROOT (a machine's `/proc/PID/root`); the
    /// agent runs it for `aloft ssh sftp`.
    #[command(hide = true)]
    SftpServer {
        #[arg(long, value_name = "ROOT")]
        root: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// The configuration file (see `aloftd.example.toml`); defaults apply without one.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Overrides `data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Overrides `api.listen` (port 0 picks a free port; the chosen URL is written to
    /// `<data_dir>/api-url`).
    #[arg(long, value_name = "ADDR")]
    api_listen: Option<std::net::SocketAddr>,
    /// Overrides `region`.
    #[arg(long, value_name = "CODE")]
    region: Option<String>,
    /// Overrides `proxy.http_listen` (port 0 picks a free port; the chosen address is
    /// written to `<data_dir>/http-addr`).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<std::net::SocketAddr>,
    /// Overrides `proxy.https_listen` (port 0: the chosen address is written to
    /// `<data_dir>/https-addr`).
    #[arg(long, value_name = "ADDR")]
    https_listen: Option<std::net::SocketAddr>,
    /// Overrides `proxy.apps_domain`.
    #[arg(long, value_name = "DOMAIN")]
    apps_domain: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and print the settings in force.
    Check {
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, config::ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
}

fn report(error: &anyhow::Error) {
    #[allow(clippy::print_stderr, reason = "the daemon's last word before exiting")]
    {
        eprintln!("aloftd: error: {error:#}");
    }
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Version => {
            #[allow(clippy::print_stdout, reason = "the version is this command's output")]
            {
                println!("aloftd {}", env!("CARGO_PKG_VERSION"));
            }
            ExitCode::SUCCESS
        }
        Command::SftpServer { root } => {
            if let Err(error) = aloft_ssh::sftp::enter_root(&root) {
                report(&anyhow::Error::new(error).context(format!("entering {}", root.display())));
                return ExitCode::FAILURE;
            }
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    runtime.block_on(aloft_ssh::sftp::serve_stdio());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    report(&anyhow::Error::new(error).context("starting the async runtime"));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config(ConfigCommand::Check { config }) => match Config::load(&config) {
            Ok(loaded) => {
                #[allow(
                    clippy::print_stdout,
                    reason = "the settings are this command's output"
                )]
                {
                    println!("{} is valid\n{loaded:#?}", config.display());
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                report(&anyhow::Error::new(error));
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Server(server) => {
            let mut config = match load_config(server.config.as_ref()) {
                Ok(config) => config,
                Err(error) => {
                    report(&anyhow::Error::new(error));
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if let Some(dir) = server.data_dir {
                config.data_dir = dir;
            }
            if let Some(listen) = server.api_listen {
                config.api.listen = listen;
            }
            if let Some(region) = server.region {
                config.region = region;
            }
            if let Some(listen) = server.http_listen {
                config.proxy.http_listen = listen;
            }
            if let Some(listen) = server.https_listen {
                config.proxy.https_listen = listen;
            }
            if let Some(domain) = server.apps_domain {
                config.proxy.apps_domain = domain;
            }
            let path = server
                .config
                .unwrap_or_else(|| PathBuf::from("<command line>"));
            if let Err(error) = config.validate(&path) {
                report(&anyhow::Error::new(error));
                return ExitCode::from(EXIT_CONFIG);
            }
            server::init_tracing(&config.log);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    report(&anyhow::Error::new(error).context("starting the async runtime"));
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(server::run(config, ServerOptions::default())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    report(&error);
                    ExitCode::FAILURE
                }
            }
        }
    }
}
