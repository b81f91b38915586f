//! Machines reaching the internet. Each machine gets an IPv4 address besides its 6PN one,
//! taken from its number in a block of the host's (`172.20.0.0/14` by default: 262,142
//! machines created on a host before numbers wrap onto addresses again), with a
//! link-local gateway ([`IPV4_GATEWAY`]) on every bridge and a /32 route per machine on
//! the host, so no two networks share a subnet. What leaves for the world is masqueraded
//! behind the host's own addresses, IPv4 and IPv6; destinations in [`Egress::denied`]
//! (the host's LAN, link-local and cloud metadata addresses, other machines' IPv4) are
//! never reached.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use crate::MachineNumber;

/// Every bridge's IPv4 address, the machines' IPv4 gateway (RFC 3927 link-local, never
/// forwarded).
pub const IPV4_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

/// The default block of machines' IPv4 addresses.
pub const DEFAULT_MACHINE_IPV4: &str = "172.20.0.0/14";

/// Destinations machines never reach by default: private, shared, link-local (with the
/// metadata services at 169.254.169.254 and fd00:ec2::254), loopback, multicast and
/// reserved space, and the unique-local IPv6 range (6PN has its own rules).
pub const DEFAULT_DENIED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// A block of IPv4 addresses (`a.b.c.d/N`, N from 8 to 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Block {
    network: Ipv4Addr,
    prefix: u8,
}

/// A block or network that is not written as it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("{0:?} is not a block of machines' IPv4 addresses: write a.b.c.d/N, N from 8 to 24")]
    Block(String),
    #[error("{0:?} is not a network: write an IPv4 or IPv6 address with its prefix length")]
    Network(String),
}

impl Ipv4Block {
    /// The address of machine `number`: one of the block's, never its first or last.
    pub fn address_of(&self, number: MachineNumber) -> Ipv4Addr {
        let usable = (1u64 << (32 - u32::from(self.prefix))) - 2;
        let offset = (u64::from(number.get()) - 1) % usable + 1;
        Ipv4Addr::from(u32::from(self.network) + u32::try_from(offset).unwrap_or(1))
    }

    /// Whether `address` lies in the block.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        u32::from(address) & mask == u32::from(self.network)
    }
}

impl fmt::Display for Ipv4Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Block {
    type Err = EgressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || EgressError::Block(text.to_owned());
        let (address, prefix) = text.trim().split_once('/').ok_or_else(error)?;
        let address: Ipv4Addr = address.parse().map_err(|_| error())?;
        let prefix: u8 = prefix.parse().map_err(|_| error())?;
        if !(8..=24).contains(&prefix) {
            return Err(error());
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(Ipv4Block {
            network: Ipv4Addr::from(u32::from(address) & mask),
            prefix,
        })
    }
}

/// A network in CIDR form, checked (IPv4 or IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = EgressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || EgressError::Network(text.to_owned());
        let (address, prefix) = text.trim().split_once('/').ok_or_else(error)?;
        let address: IpAddr = address.parse().map_err(|_| error())?;
        let prefix: u8 = prefix.parse().map_err(|_| error())?;
        let longest = if address.is_ipv4() { 32 } else { 128 };
        if prefix > longest {
            return Err(error());
        }
        Ok(Cidr { address, prefix })
    }
}

/// Machines' way out: their IPv4 block, and what they never reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    pub ipv4: Ipv4Block,
    pub denied: Vec<Cidr>,
}

impl Egress {
    /// `ipv4` with the default denied destinations.
    pub fn new(ipv4: Ipv4Block) -> Egress {
        Egress {
            ipv4,
            denied: DEFAULT_DENIED
                .iter()
                .filter_map(|network| network.parse().ok())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(n: u64) -> MachineNumber {
        MachineNumber::new(n).unwrap()
    }

    #[test]
    fn machines_get_addresses_inside_the_block_and_never_its_ends() {
        let block: Ipv4Block = "172.20.0.0/14".parse().unwrap();
        assert_eq!(block.address_of(number(1)), Ipv4Addr::new(172, 20, 0, 1));
        assert_eq!(block.address_of(number(256)), Ipv4Addr::new(172, 20, 1, 0));
        let small: Ipv4Block = "10.9.8.0/24".parse().unwrap();
        // 254 usable addresses: number 255 wraps onto the first again.
        assert_eq!(small.address_of(number(254)), Ipv4Addr::new(10, 9, 8, 254));
        assert_eq!(small.address_of(number(255)), Ipv4Addr::new(10, 9, 8, 1));
        for n in [1, 2, 253, 254, 255, 1000, u64::from(u32::MAX)] {
            let address = small.address_of(number(n));
            assert!(small.contains(address), "{n}: {address}");
            assert_ne!(address.octets()[3], 0, "{n}");
            assert_ne!(address.octets()[3], 255, "{n}");
        }
    }

    #[test]
    fn blocks_and_networks_are_checked() {
        assert_eq!(
            "172.20.3.4/14".parse::<Ipv4Block>().unwrap().to_string(),
            "172.20.0.0/14"
        );
        for bad in [
            "172.20.0.0",
            "172.20.0.0/7",
            "172.20.0.0/25",
            "fdaa::/16",
            "x/8",
        ] {
            assert!(bad.parse::<Ipv4Block>().is_err(), "{bad}");
        }
        assert_eq!(
            "fd00:ec2::254/128".parse::<Cidr>().unwrap().to_string(),
            "fd00:ec2::254/128"
        );
        for bad in ["10.0.0.0/33", "::/129", "10.0.0.0", "ten/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(
            Egress::new("172.20.0.0/14".parse().unwrap()).denied.len(),
            DEFAULT_DENIED.len()
        );
    }
}
