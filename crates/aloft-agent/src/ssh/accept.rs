//! Taking SSH connections: on the private network, a cap on connections that have not
//! logged in yet, per source address and in all (OpenSSH's `MaxStartups`); on every path,
//! a login grace time after which a connection that has not logged in is closed
//! (`LoginGraceTime`). A connection past a cap is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_agent_api::SshStream;
use aloft_runtime::Runtime;
use aloft_ssh::russh::server;

use super::{Connection, Outcome, SshError, Via};
use crate::Shared;

/// How many connections may be logging in, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshLimits {
    /// A connection that has not logged in by then is closed.
    pub login_grace: Duration,
    /// Connections not logged in yet, from one source address.
    pub startups_per_source: usize,
    /// Connections not logged in yet, from everywhere.
    pub startups: usize,
}

impl Default for SshLimits {
    /// OpenSSH's `MaxStartups` start (10) per source, 100 in all, and a 30 s grace.
    fn default() -> Self {
        SshLimits {
            login_grace: Duration::from_secs(30),
            startups_per_source: 10,
            startups: 100,
        }
    }
}

/// The connections that have not logged in yet, by source address.
#[derive(Debug, Default)]
pub(crate) struct Startups {
    by_source: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place among [`Startups`], given back when dropped (at its login, or
/// when it ends).
#[derive(Debug)]
pub(crate) struct Startup {
    startups: Arc<Startups>,
    source: IpAddr,
}

impl Drop for Startup {
    fn drop(&mut self) {
        if let Ok(mut by_source) = self.startups.by_source.lock()
            && let Some(count) = by_source.get_mut(&self.source)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

impl Startups {
    /// A place for a new connection from `source`, unless a cap of `limits` is reached.
    pub(crate) fn admit(self: &Arc<Self>, source: IpAddr, limits: &SshLimits) -> Option<Startup> {
        let mut by_source = self.by_source.lock().ok()?;
        let total: usize = by_source.values().sum();
        let mine = by_source.get(&source).copied().unwrap_or(0);
        if total >= limits.startups || mine >= limits.startups_per_source {
            return None;
        }
        *by_source.entry(source).or_default() += 1;
        Some(Startup {
            startups: self.clone(),
            source,
        })
    }
}

/// Serves one SSH connection (`startup`: its place among the connections logging in,
/// given back at its login).
pub(crate) async fn serve<R: Runtime + 'static>(
    shared: Arc<Shared<R>>,
    config: Arc<server::Config>,
    stream: Box<dyn SshStream>,
    via: Via,
    startup: Option<Startup>,
) -> Result<(), SshError> {
    let outcome = Arc::new(std::sync::Mutex::new(Outcome::Unseen));
    let connection = Connection::new(shared.clone(), via.clone(), outcome.clone(), startup);
    let grace = shared.config.ssh_limits.login_grace;
    let session = async {
        match server::run_stream(config, stream, connection).await {
            Ok(running) => running.await.map_err(|e| SshError::Protocol(e.to_string())),
            Err(error) => Err(SshError::Protocol(error.to_string())),
        }
    };
    let seen = |wanted: Outcome| outcome.lock().map(|o| *o == wanted).unwrap_or(false);
    let mut session = std::pin::pin!(session);
    let ended = tokio::select! {
        ended = &mut session => ended,
        () = tokio::time::sleep(grace) => {
            if seen(Outcome::Accepted) {
                session.await
            } else {
                // Dropping the session closes the connection.
                Err(SshError::LoginGrace(grace))
            }
        }
    };
    if seen(Outcome::Unseen) {
        // The SSH library checks a certificate's validity window and signature before
        // the handler sees it: such a refusal is recorded here.
        let reason = match &ended {
            Err(SshError::LoginGrace(grace)) => {
                format!("no login within {grace:?}: the connection was closed")
            }
            _ => "no certificate was accepted: none offered, or one that is expired, not yet valid or badly signed".to_owned(),
        };
        let refusal = Connection::new(shared, via, outcome, None);
        let machine = match &refusal.via {
            Via::Tunnel(machine) => Some(machine.as_ref().clone()),
            Via::Private(_) => None,
        };
        refusal.refuse(machine.as_ref(), "", "", &reason).await;
    }
    ended
}

/// Listens for SSH on the host's private-network side.
pub(crate) async fn listen<R: Runtime + 'static>(
    shared: Arc<Shared<R>>,
    config: Arc<server::Config>,
    listener: tokio::net::TcpListener,
) {
    let startups = Arc::new(Startups::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting an SSH connection");
                    continue;
                }
            },
            () = shared.stopping.cancelled() => return,
        };
        let limits = shared.config.ssh_limits;
        let Some(startup) = startups.admit(peer.ip().to_canonical(), &limits) else {
            tracing::debug!(%peer, per_source = limits.startups_per_source, in_all = limits.startups, "too many SSH connections logging in: one is closed at once");
            drop(stream);
            continue;
        };
        let (shared, config) = (shared.clone(), config.clone());
        tokio::spawn(async move {
            if let Err(error) = serve(
                shared,
                config,
                Box::new(stream),
                Via::Private(peer),
                Some(startup),
            )
            .await
            {
                tracing::debug!(%peer, %error, "SSH connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    use super::*;

    #[test]
    fn startups_are_capped_per_source_and_in_all_and_freed_when_dropped() {
        let limits = SshLimits {
            login_grace: Duration::from_secs(1),
            startups_per_source: 2,
            startups: 3,
        };
        let startups = Arc::new(Startups::default());
        let (a, b): (IpAddr, IpAddr) = ("fdaa::10".parse().unwrap(), "fdaa::11".parse().unwrap());
        let first = startups.admit(a, &limits).unwrap();
        let _second = startups.admit(a, &limits).unwrap();
        assert!(
            startups.admit(a, &limits).is_none(),
            "a third from one source"
        );
        let _other = startups.admit(b, &limits).unwrap();
        assert!(startups.admit(b, &limits).is_none(), "a fourth in all");
        drop(first);
        assert!(
            startups.admit(a, &limits).is_some(),
            "a place freed is taken again"
        );
    }
}
