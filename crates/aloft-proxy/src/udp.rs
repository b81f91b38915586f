//! UDP services (`protocol = "udp"`) on apps' own addresses: for every dedicated IPv4
//! address of an app, a socket on each of its UDP ports (as on Fly, UDP needs a dedicated
//! address). A packet from a client opens a flow to one of the app's started machines
//! (the least loaded; the flow holds one unit of its load), and every later packet of that
//! client address and port goes to the same machine. The machine's answers come back to
//! the client from the app's address and port, so a client sees one peer. A flow with no
//! packet either way for [`IDLE`] ends; so does one whose machine refuses (an ICMP
//! "port unreachable": nothing listens there), and the client's next packet opens a new
//! one.
//!
//! Inside the machine the app binds `fly-global-services:PORT` (its `/etc/hosts` names its
//! private address so, which is where the flows' packets arrive).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_types::catalog::Catalog;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::Lease;
use crate::proxy::{Choice, Proxy};

/// A flow with no packet either way for this long ends.
pub const IDLE: Duration = Duration::from_secs(60);
/// Flows one socket keeps at once; a new client past it is dropped until one ends.
const MAX_FLOWS: usize = 16_384;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// One client's flow: the socket to its machine, and when a packet last passed.
struct Flow {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since the socket's `base` instant.
    last: Arc<AtomicU64>,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Flow>>>;

fn lock(flows: &Flows) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Flow>> {
    flows
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a UDP socket on an app's address serves.
struct Service {
    socket: Arc<UdpSocket>,
    app: String,
    port: u16,
    flows: Flows,
    base: Instant,
    stop: CancellationToken,
}

impl Service {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Why a client's packet opened no flow (logged at debug, with the app and port).
#[derive(Debug, thiserror::Error)]
enum FlowError {
    #[error("the app no longer serves this UDP port")]
    NoPort,
    #[error("the app has no started machine to take the flow")]
    NoMachine,
    #[error("{MAX_FLOWS} flows are open on this address and port")]
    TooMany,
    #[error("opening a socket to machine {machine}: {source}")]
    Socket {
        machine: String,
        #[source]
        source: std::io::Error,
    },
}

impl Proxy {
    /// Opens and closes UDP sockets on apps' own addresses to match `catalog`.
    pub(crate) fn listen_udp_on_app_addresses(
        self: &Arc<Self>,
        catalog: &Catalog,
        stop: &CancellationToken,
    ) {
        let routes = self.routes();
        let wanted = crate::dedicated::wanted_sockets(catalog, |app| routes.udp_ports(app));
        crate::dedicated::follow_sockets(
            &self.dedicated_udp,
            wanted,
            stop,
            "udp",
            |address, app, port, token| {
                let socket = std::net::UdpSocket::bind(address)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .and_then(UdpSocket::from_std)?;
                let service = Service {
                    socket: Arc::new(socket),
                    app,
                    port,
                    flows: Flows::default(),
                    base: Instant::now(),
                    stop: token,
                };
                tokio::spawn(self.clone().relay(Arc::new(service)));
                Ok(())
            },
        );
    }

    /// Passes every client packet on to its flow's machine, opening flows as clients come.
    async fn relay(self: Arc<Self>, service: Arc<Service>) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            let received = tokio::select! {
                () = service.stop.cancelled() => break,
                received = service.socket.recv_from(&mut buffer) => received,
            };
            // An error here is about one packet (an ICMP error of an earlier send): the
            // socket goes on.
            let Ok((length, client)) = received else {
                continue;
            };
            let known = lock(&service.flows).get(&client).map(|flow| {
                flow.last.store(service.now(), Ordering::Relaxed);
                flow.upstream.clone()
            });
            let upstream = match known {
                Some(upstream) => upstream,
                None => match self.open_flow(&service, client).await {
                    Ok(upstream) => upstream,
                    Err(why) => {
                        tracing::debug!(app = %service.app, port = service.port, %client, %why, "a UDP packet was dropped");
                        continue;
                    }
                },
            };
            // A machine that cannot take it now loses the packet, as UDP may.
            let _ = upstream.send(&buffer[..length]).await;
        }
        // Closed: every flow ends with it.
        lock(&service.flows).clear();
    }

    /// A new flow for `client`: a machine picked, a socket to it, and the task that
    /// carries its answers back.
    async fn open_flow(
        &self,
        service: &Arc<Service>,
        client: SocketAddr,
    ) -> Result<Arc<UdpSocket>, FlowError> {
        if lock(&service.flows).len() >= MAX_FLOWS {
            return Err(FlowError::TooMany);
        }
        let route = self
            .routes()
            .udp_route(&service.app, service.port)
            .cloned()
            .ok_or(FlowError::NoPort)?;
        let choice = Choice {
            backends: route.backends,
            h2_backend: false,
            preferred_instance: None,
            regions: vec![self.config.region.clone()],
        };
        let (backend, lease) = self
            .pick(&choice, &[], Duration::ZERO)
            .await
            .ok_or(FlowError::NoMachine)?;
        let failed = |source| FlowError::Socket {
            machine: backend.machine.to_string(),
            source,
        };
        let upstream = aloft_net::netns::udp_socket(
            self.config.namespace.as_deref(),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        )
        .map_err(failed)?;
        upstream
            .connect(SocketAddr::new(IpAddr::V6(backend.address), backend.port))
            .await
            .map_err(failed)?;
        let upstream = Arc::new(upstream);
        let last = Arc::new(AtomicU64::new(service.now()));
        lock(&service.flows).insert(
            client,
            Flow {
                upstream: upstream.clone(),
                last: last.clone(),
            },
        );
        tracing::debug!(app = %service.app, port = service.port, %client, machine = %backend.machine, "a UDP flow opened");
        tokio::spawn(answer(
            service.clone(),
            upstream.clone(),
            client,
            last,
            lease,
        ));
        Ok(upstream)
    }
}

/// Carries a flow's answers from its machine back to `client`, until the flow is idle
/// for [`IDLE`], the machine refuses, or the socket closes; then the flow ends (and its
/// lease with it).
async fn answer(
    service: Arc<Service>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    lease: Lease,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let quiet = service.now().saturating_sub(last.load(Ordering::Relaxed));
        let Some(left) = IDLE.checked_sub(Duration::from_millis(quiet)) else {
            break;
        };
        if left.is_zero() {
            break;
        }
        let received = tokio::select! {
            () = service.stop.cancelled() => break,
            received = tokio::time::timeout(left, upstream.recv(&mut buffer)) => received,
        };
        match received {
            Ok(Ok(length)) => {
                last.store(service.now(), Ordering::Relaxed);
                let _ = service.socket.send_to(&buffer[..length], client).await;
            }
            // Refused (nothing listens on the machine's port) or gone: the flow ends, and
            // the client's next packet picks a machine again.
            Ok(Err(_)) => break,
            // Quiet for a while: look at the client's side of the clock again.
            Err(_) => {}
        }
    }
    let mut flows = lock(&service.flows);
    if flows
        .get(&client)
        .is_some_and(|flow| Arc::ptr_eq(&flow.upstream, &upstream))
    {
        flows.remove(&client);
    }
    drop(flows);
    drop(lease);
    tracing::debug!(app = %service.app, port = service.port, %client, "a UDP flow ended");
}
