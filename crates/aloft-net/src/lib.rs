//! The private network every organization gets (Fly's "6PN"): IPv6 addresses that say
//! which network, host and machine they belong to.
//!
//! Layout of an address (128 bits):
//!
//! ```text
//! fdaa (16) | network (32) | host (32) | machine (32) | 16 free bits
//! ```
//!
//! - A network is a /48 (`fdaa:NNNN:NNNN::/48`): one organization's default network, or a
//!   named network of it. Traffic between networks is dropped.
//! - A host's part of a network is a /80; its bridge for that network takes `…::1` of
//!   machine number 0.
//! - Each machine gets a /112 and uses `…::2` in it, so an address is stable for the
//!   machine's whole life, across restarts.
//! - `fdaa::3` answers DNS on every host.
//!
//! Invariant: [`SixPn::parse`] of any address this module makes gives back its parts.
//!
//! The host side ([`HostNetwork`], Linux): a bridge per network, a veth per machine into
//! its namespace, `fdaa::3`, and nftables rules that drop traffic between networks.
//!
//! Main types: [`NetworkNumber`], [`HostNumber`], [`MachineNumber`], [`SixPn`],
//! [`HostNetwork`].

pub mod build_fence;
pub mod docker_forward;
pub mod egress;
pub mod firewall;
pub mod netns;
mod plumbing;
mod pool;

use std::fmt;
use std::net::Ipv6Addr;

pub use egress::{Egress, Ipv4Block};
pub use plumbing::{
    DEFAULT_MTU, HostNetwork, Link, MACHINE_INTERFACE, PlumbError, bridge_name, veth_name,
};
pub use pool::{DEFAULT_IPV4_POOL, Ipv4Pool, PoolError};

/// The first 16 bits of every 6PN address.
pub const PREFIX: u16 = 0xfdaa;
/// Where DNS answers on every host: `fdaa::3`.
pub const DNS_ADDRESS: Ipv6Addr = Ipv6Addr::new(PREFIX, 0, 0, 0, 0, 0, 0, 3);
/// Prefix lengths of a network, a host's share of it, and a machine.
pub const NETWORK_PREFIX_LEN: u8 = 48;
pub const HOST_PREFIX_LEN: u8 = 80;
pub const MACHINE_PREFIX_LEN: u8 = 112;
/// The machine's own address in its /112.
const MACHINE_SUFFIX: u16 = 2;
/// The host bridge's address in machine number 0's /112.
const GATEWAY_SUFFIX: u16 = 1;

/// Identifies a private network (an organization's default, or one of its named ones).
/// Zero is reserved (`fdaa::/48` holds `fdaa::3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkNumber(u32);

/// Identifies a host within every network. Zero is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostNumber(u32);

/// Identifies a machine on its host. Zero is reserved for the host's bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MachineNumber(u32);

/// A number outside what its kind allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} number {value} is reserved or out of range (1 to {max})")]
pub struct NumberError {
    pub kind: &'static str,
    pub value: u64,
    pub max: u64,
}

macro_rules! number {
    ($name:ident, $kind:literal) => {
        impl $name {
            pub const MAX: u32 = u32::MAX;

            /// `value` if it is a usable number (1 to `u32::MAX`).
            pub fn new(value: u64) -> Result<$name, NumberError> {
                match u32::try_from(value) {
                    Ok(number) if number != 0 => Ok($name(number)),
                    _ => Err(NumberError {
                        kind: $kind,
                        value,
                        max: u64::from(u32::MAX),
                    }),
                }
            }

            pub const fn get(self) -> u32 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}
number!(NetworkNumber, "network");
number!(HostNumber, "host");
number!(MachineNumber, "machine");

/// Where a machine sits in the private network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SixPn {
    pub network: NetworkNumber,
    pub host: HostNumber,
    pub machine: MachineNumber,
}

fn halves(value: u32) -> (u16, u16) {
    ((value >> 16) as u16, (value & 0xffff) as u16)
}

fn join(high: u16, low: u16) -> u32 {
    (u32::from(high) << 16) | u32::from(low)
}

impl SixPn {
    /// The machine's address: `…::2` of its /112.
    pub fn address(&self) -> Ipv6Addr {
        self.with_suffix(MACHINE_SUFFIX)
    }

    /// The machine's /112 (its address with the last 16 bits zero).
    pub fn prefix(&self) -> (Ipv6Addr, u8) {
        (self.with_suffix(0), MACHINE_PREFIX_LEN)
    }

    fn with_suffix(&self, suffix: u16) -> Ipv6Addr {
        let (n1, n2) = halves(self.network.0);
        let (h1, h2) = halves(self.host.0);
        let (m1, m2) = halves(self.machine.0);
        Ipv6Addr::new(PREFIX, n1, n2, h1, h2, m1, m2, suffix)
    }

    /// The parts of a machine address; `None` for anything that is not one.
    pub fn parse(address: Ipv6Addr) -> Option<SixPn> {
        let [prefix, n1, n2, h1, h2, m1, m2, suffix] = address.segments();
        if prefix != PREFIX || suffix != MACHINE_SUFFIX {
            return None;
        }
        Some(SixPn {
            network: NetworkNumber::new(u64::from(join(n1, n2))).ok()?,
            host: HostNumber::new(u64::from(join(h1, h2))).ok()?,
            machine: MachineNumber::new(u64::from(join(m1, m2))).ok()?,
        })
    }
}

/// A network's /48.
pub fn network_prefix(network: NetworkNumber) -> (Ipv6Addr, u8) {
    let (n1, n2) = halves(network.0);
    (
        Ipv6Addr::new(PREFIX, n1, n2, 0, 0, 0, 0, 0),
        NETWORK_PREFIX_LEN,
    )
}

/// A host's /80 of a network.
pub fn host_prefix(network: NetworkNumber, host: HostNumber) -> (Ipv6Addr, u8) {
    let (n1, n2) = halves(network.0);
    let (h1, h2) = halves(host.0);
    (
        Ipv6Addr::new(PREFIX, n1, n2, h1, h2, 0, 0, 0),
        HOST_PREFIX_LEN,
    )
}

/// The address of a host's bridge for a network: the machines' default gateway.
pub fn gateway(network: NetworkNumber, host: HostNumber) -> Ipv6Addr {
    let (n1, n2) = halves(network.0);
    let (h1, h2) = halves(host.0);
    Ipv6Addr::new(PREFIX, n1, n2, h1, h2, 0, 0, GATEWAY_SUFFIX)
}

/// Whether `address` lies in `network`'s /48.
pub fn in_network(address: Ipv6Addr, network: NetworkNumber) -> bool {
    let [prefix, n1, n2, ..] = address.segments();
    prefix == PREFIX && join(n1, n2) == network.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pn(network: u64, host: u64, machine: u64) -> SixPn {
        SixPn {
            network: NetworkNumber::new(network).unwrap(),
            host: HostNumber::new(host).unwrap(),
            machine: MachineNumber::new(machine).unwrap(),
        }
    }

    #[test]
    fn the_layout_matches_fly() {
        // Fly's example address from the seed post: fdaa:0:c037:a7b:c6ef:47dd:247:2.
        let seen: Ipv6Addr = "fdaa:0:c037:a7b:c6ef:47dd:247:2".parse().unwrap();
        let parts = SixPn::parse(seen).unwrap();
        assert_eq!(
            (parts.network.get(), parts.host.get(), parts.machine.get()),
            (0xc037, 0x0a7b_c6ef, 0x47dd_0247)
        );
        assert_eq!(parts.address(), seen);
        assert_eq!(
            parts.prefix(),
            ("fdaa:0:c037:a7b:c6ef:47dd:247:0".parse().unwrap(), 112)
        );
        assert_eq!(DNS_ADDRESS.to_string(), "fdaa::3");
    }

    #[test]
    fn prefixes_nest() {
        let machine = pn(7, 9, 11);
        let (network, network_len) = network_prefix(machine.network);
        let (host, host_len) = host_prefix(machine.network, machine.host);
        assert_eq!(
            (network.to_string(), network_len),
            ("fdaa:0:7::".to_owned(), 48)
        );
        assert_eq!(
            (host.to_string(), host_len),
            ("fdaa:0:7:0:9::".to_owned(), 80)
        );
        assert_eq!(
            gateway(machine.network, machine.host).to_string(),
            "fdaa:0:7:0:9::1"
        );
        assert!(in_network(machine.address(), machine.network));
        assert!(!in_network(
            machine.address(),
            NetworkNumber::new(8).unwrap()
        ));
        assert!(
            SixPn::parse(gateway(machine.network, machine.host)).is_none(),
            "a gateway is no machine"
        );
        assert!(SixPn::parse(DNS_ADDRESS).is_none());
    }

    #[test]
    fn reserved_numbers_are_refused() {
        assert!(NetworkNumber::new(0).is_err());
        assert!(HostNumber::new(1 << 32).is_err());
        assert!(MachineNumber::new(0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

        #[test]
        fn addresses_round_trip(network in 1u32.., host in 1u32.., machine in 1u32..) {
            let parts = pn(u64::from(network), u64::from(host), u64::from(machine));
            prop_assert_eq!(SixPn::parse(parts.address()), Some(parts));
            prop_assert!(in_network(parts.address(), parts.network));
        }

        #[test]
        fn different_machines_never_share_an_address(a in (1u32.., 1u32.., 1u32..), b in (1u32.., 1u32.., 1u32..)) {
            let first = pn(a.0.into(), a.1.into(), a.2.into());
            let second = pn(b.0.into(), b.1.into(), b.2.into());
            prop_assert_eq!(first == second, first.address() == second.address());
        }
    }
}
