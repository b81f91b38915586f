//! `aloft proxy`: a local port forwarded to a machine's port over the API's SSH tunnel.

use anyhow::Context as _;

use super::ssh::session::{connect, pick_machine};
use crate::Failure;
use crate::api;
use crate::output::Output;

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
