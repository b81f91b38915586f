//! Where a log sink may connect. A sink's URL is a tenant's input and the shipper runs on
//! the platform's hosts: left alone, it would post to the host's own services (loopback),
//! to cloud metadata (169.254.169.254) or into the machines' private network. A sink
//! reaches only global addresses, and the networks the operator allows besides
//! (`[logs] sink_allowed_networks`, for a collector on the LAN). Names are resolved when
//! connecting, and every address they resolve to is checked (a name that points at
//! loopback later is refused then).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// How long a connection to a sink may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An IP network, `ADDRESS/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

/// A network that is not `ADDRESS/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a network such as 10.0.0.0/8 or fd00::/8")]
pub struct BadNetwork(pub String);

impl FromStr for Network {
    type Err = BadNetwork;

    fn from_str(text: &str) -> Result<Network, BadNetwork> {
        let bad = || BadNetwork(text.to_owned());
        let (address, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(bad());
        }
        Ok(Network { address, prefix })
    }
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why a sink may not connect where its URL points.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReachError {
    #[error(
        "{host} is {address}, which log sinks may not reach (loopback, link-local, private and other non-global addresses; an operator allows networks with [logs] sink_allowed_networks)"
    )]
    Refused { host: String, address: IpAddr },
    #[error("{host} does not resolve: {reason}")]
    Unresolved { host: String, reason: String },
}

/// The networks sinks may reach besides global addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReach {
    allowed: Vec<Network>,
}

impl SinkReach {
    pub fn allowing(allowed: Vec<Network>) -> SinkReach {
        SinkReach { allowed }
    }

    /// Whether a sink may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        is_global(ip) || self.allowed.iter().any(|n| n.contains(ip))
    }

    /// Checks `host` when it is an address; a name is checked when it is resolved.
    pub fn check_literal(&self, host: &str) -> Result<(), ReachError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(address) if !self.permits(address) => Err(ReachError::Refused {
                host: host.to_owned(),
                address,
            }),
            _ => Ok(()),
        }
    }

    /// The addresses of `host:port` a sink may connect to: all of them, or an error naming
    /// one that it may not (a name resolving to both is refused whole).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ReachError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| ReachError::Unresolved {
                host: host.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        if let Some(refused) = addresses.iter().find(|a| !self.permits(a.ip())) {
            return Err(ReachError::Refused {
                host: host.to_owned(),
                address: refused.ip(),
            });
        }
        if addresses.is_empty() {
            return Err(ReachError::Unresolved {
                host: host.to_owned(),
                reason: "no address".to_owned(),
            });
        }
        Ok(addresses)
    }

    /// A TCP connection to `host:port`, to an address a sink may reach.
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, ConnectError> {
        let addresses = self
            .resolve(host, port)
            .await
            .map_err(ConnectError::Reach)?;
        let mut last = None;
        for address in addresses {
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
                .await
            {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(error)) => last = Some(error),
                Err(_) => {
                    last = Some(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {CONNECT_TIMEOUT:?}"),
                    ));
                }
            }
        }
        Err(ConnectError::Io(last.unwrap_or_else(|| {
            std::io::Error::other("no address to connect to")
        })))
    }
}

/// Why a connection to a sink was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(transparent)]
    Reach(ReachError),
    #[error(transparent)]
    Io(std::io::Error),
}

/// Whether `ip` is a global unicast address (the standard library's `is_global` is not
/// stable).
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => global_v4(v4),
        IpAddr::V6(v6) => global_v6(v6),
    }
}

fn global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (b & 0xc0) == 64)
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (b & 0xfe) == 18)
        // Reserved, 240.0.0.0/4.
        || a >= 240)
}

fn global_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local (fc00::/7, the machines' fdaa::/16 among them).
        || (first & 0xfe00) == 0xfc00
        // Link-local, fe80::/10, and the old site-local, fec0::/10.
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        // Discard-only, 100::/64.
        || (first == 0x0100 && ip.segments()[1..4] == [0, 0, 0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_global_addresses_are_reached_by_default() {
        let reach = SinkReach::default();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fdaa:0:1::3",
            "fd00::1",
            "::ffff:127.0.0.1",
            "ff02::1",
        ] {
            assert!(!reach.permits(ip(refused)), "{refused}");
        }
        for allowed in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "203.0.113.9"] {
            assert!(reach.permits(ip(allowed)), "{allowed}");
        }
    }

    #[test]
    fn an_operator_allows_networks() {
        let reach = SinkReach::allowing(vec![
            "127.0.0.0/8".parse().unwrap(),
            "fd12:3456::/32".parse().unwrap(),
        ]);
        assert!(reach.permits(ip("127.0.0.1")));
        assert!(reach.permits(ip("fd12:3456::9")));
        assert!(!reach.permits(ip("10.0.0.1")));
        assert!(!reach.permits(ip("fdaa::3")));
    }

    #[test]
    fn bad_networks_are_named() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "fd00::/129", "x/8"] {
            assert_eq!(bad.parse::<Network>(), Err(BadNetwork(bad.to_owned())));
        }
    }

    #[test]
    fn literal_hosts_are_checked_at_once() {
        let reach = SinkReach::default();
        assert!(reach.check_literal("127.0.0.1").is_err());
        assert!(reach.check_literal("[::1]").is_err());
        assert!(reach.check_literal("collector.example.com").is_ok());
    }

    #[tokio::test]
    async fn names_are_checked_when_resolved() {
        let error = SinkReach::default()
            .resolve("localhost", 80)
            .await
            .unwrap_err();
        assert!(matches!(error, ReachError::Refused { .. }), "{error}");
        let allowed = SinkReach::allowing(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(allowed.resolve("localhost", 80).await.is_ok());
    }
}
