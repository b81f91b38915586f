//! The `aloftd` daemon. Its roles (`server`, `control`, `agent`, `edge`) arrive with the
//! machines issue; this foundation only names the binary and its version.

use clap::Parser;

/// The Aloft daemon.
#[derive(Debug, Parser)]
#[command(name = "aloftd", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the version of this daemon.
    Version,
}

fn main() {
    match Args::parse().command {
        Command::Version => {
            #[allow(clippy::print_stdout, reason = "the version is this command's output")]
            {
                println!("aloftd {}", env!("CARGO_PKG_VERSION"));
            }
        }
    }
}
