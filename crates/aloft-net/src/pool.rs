//! Public IPv4 addresses for apps: a pool written in CIDR form (`127.77.0.0/24`), handed
//! out lowest first. On a single host the default pool is in 127.0.0.0/8, which Linux
//! routes to loopback without any setup, so every app can listen on its own address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The default pool: 65,534 loopback addresses.
pub const DEFAULT_IPV4_POOL: &str = "127.77.0.0/16";

/// A range of IPv4 addresses apps may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Pool {
    network: Ipv4Addr,
    prefix: u8,
}

/// A pool that is not `a.b.c.d/N` with N from 8 to 30.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 pool: write it as a.b.c.d/N, N from 8 to 30")]
pub struct PoolError(pub String);

impl Ipv4Pool {
    /// The addresses apps may get: every one in the range but its first and last (the
    /// network and broadcast addresses).
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + Clone + use<> {
        let base = u32::from(self.network);
        let size = 1u32 << (32 - u32::from(self.prefix));
        (1..size - 1).map(move |offset| Ipv4Addr::from(base + offset))
    }

    /// Whether `address` is one the pool hands out.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        let value = u32::from(address);
        value & mask == u32::from(self.network)
            && value != u32::from(self.network)
            && value | mask != u32::MAX
    }
}

impl FromStr for Ipv4Pool {
    type Err = PoolError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || PoolError(text.to_owned());
        let (address, prefix) = text.trim().split_once('/').ok_or_else(error)?;
        let address: Ipv4Addr = address.parse().map_err(|_| error())?;
        let prefix: u8 = prefix.parse().map_err(|_| error())?;
        if !(8..=30).contains(&prefix) {
            return Err(error());
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        Ok(Ipv4Pool {
            network: Ipv4Addr::from(u32::from(address) & mask),
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_hand_out_every_address_but_the_first_and_last() {
        let pool: Ipv4Pool = "127.77.0.9/29".parse().unwrap();
        assert_eq!(pool.to_string(), "127.77.0.8/29");
        let addresses: Vec<_> = pool.addresses().collect();
        assert_eq!(addresses.len(), 6);
        assert_eq!(addresses[0], Ipv4Addr::new(127, 77, 0, 9));
        assert_eq!(addresses[5], Ipv4Addr::new(127, 77, 0, 14));
        assert!(pool.contains(Ipv4Addr::new(127, 77, 0, 10)));
        assert!(!pool.contains(Ipv4Addr::new(127, 77, 0, 8)));
        assert!(!pool.contains(Ipv4Addr::new(127, 77, 0, 15)));
        assert!(!pool.contains(Ipv4Addr::new(127, 77, 1, 10)));
        assert_eq!(
            DEFAULT_IPV4_POOL
                .parse::<Ipv4Pool>()
                .unwrap()
                .addresses()
                .count(),
            65_534
        );
    }

    #[test]
    fn bad_pools_are_refused() {
        for text in [
            "127.0.0.1",
            "127.0.0.0/31",
            "127.0.0.0/4",
            "nope/24",
            "10.0.0.0/x",
        ] {
            assert!(text.parse::<Ipv4Pool>().is_err(), "{text}");
        }
    }
}
