//! The byte-level parts of non-HTTP services: the PROXY protocol header the `proxy_proto`
//! handler puts in front of a connection (v1 text, v2 binary, per HAProxy's spec), its
//! parser (used by tests and the fuzz target), and Postgres' `SSLRequest`, which the
//! `pg_tls` handler answers before the TLS handshake.

use std::net::{IpAddr, SocketAddr};

/// The 12 bytes every PROXY v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest a v1 header may be (the spec's 107 bytes).
const V1_MAX: usize = 107;

/// A PROXY header for a connection from `client` to `local` (v1).
pub fn proxy_v1(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        local.ip(),
        client.port(),
        local.port()
    )
    .into_bytes()
}

/// A PROXY header for a connection from `client` to `local` (v2, command PROXY, TCP).
pub fn proxy_v2(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x21); // version 2, command PROXY
    let mut addresses = Vec::new();
    match (client.ip(), local.ip()) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            header.push(0x11); // TCP over IPv4
            addresses.extend_from_slice(&source.octets());
            addresses.extend_from_slice(&destination.octets());
        }
        (source, destination) => {
            header.push(0x21); // TCP over IPv6
            addresses.extend_from_slice(&v6(source).octets());
            addresses.extend_from_slice(&v6(destination).octets());
        }
    }
    addresses.extend_from_slice(&client.port().to_be_bytes());
    addresses.extend_from_slice(&local.port().to_be_bytes());
    let length = u16::try_from(addresses.len()).unwrap_or(u16::MAX);
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&addresses);
    header
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Both addresses in one family (an IPv4 client of an IPv6 listener, say, is mapped).
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    if client.is_ipv4() == local.is_ipv4() {
        (client, local)
    } else {
        (
            SocketAddr::new(IpAddr::V6(v6(client.ip())), client.port()),
            SocketAddr::new(IpAddr::V6(v6(local.ip())), local.port()),
        )
    }
}

/// A PROXY header read from the start of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// `None` for `UNKNOWN` (v1) or `LOCAL` (v2): the connection's own addresses apply.
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// How many bytes the header took.
    pub length: usize,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyParseError {
    #[error("more bytes are needed")]
    Incomplete,
    #[error("not a PROXY header: {0}")]
    Invalid(&'static str),
}

/// Reads a v1 or v2 header at the start of `bytes`.
pub fn parse_proxy_header(bytes: &[u8]) -> Result<ProxyHeader, ProxyParseError> {
    if bytes.len() >= V2_SIGNATURE.len() && bytes[..12] == V2_SIGNATURE {
        return parse_v2(bytes);
    }
    if V2_SIGNATURE.starts_with(bytes) || b"PROXY ".starts_with(bytes) {
        return Err(ProxyParseError::Incomplete);
    }
    if bytes.starts_with(b"PROXY ") {
        return parse_v1(bytes);
    }
    Err(ProxyParseError::Invalid("no PROXY signature"))
}

fn parse_v1(bytes: &[u8]) -> Result<ProxyHeader, ProxyParseError> {
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX {
            Err(ProxyParseError::Invalid("v1 header longer than 107 bytes"))
        } else {
            Err(ProxyParseError::Incomplete)
        };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyParseError::Invalid("v1 header longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&bytes[..end])
        .map_err(|_| ProxyParseError::Invalid("v1 header is not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(ProxyHeader {
            source: None,
            destination: None,
            length: end + 2,
        }),
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            source,
            destination,
            source_port,
            destination_port,
        ] => {
            let ip = |text: &str| -> Result<IpAddr, ProxyParseError> {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| ProxyParseError::Invalid("v1 address"))?;
                if ip.is_ipv4() != (*family == "TCP4") {
                    return Err(ProxyParseError::Invalid("v1 address of the wrong family"));
                }
                Ok(ip)
            };
            let port = |text: &str| -> Result<u16, ProxyParseError> {
                if text.len() > 1 && text.starts_with('0') {
                    return Err(ProxyParseError::Invalid("v1 port with a leading zero"));
                }
                text.parse()
                    .map_err(|_| ProxyParseError::Invalid("v1 port"))
            };
            Ok(ProxyHeader {
                source: Some(SocketAddr::new(ip(source)?, port(source_port)?)),
                destination: Some(SocketAddr::new(ip(destination)?, port(destination_port)?)),
                length: end + 2,
            })
        }
        _ => Err(ProxyParseError::Invalid("v1 header fields")),
    }
}

fn parse_v2(bytes: &[u8]) -> Result<ProxyHeader, ProxyParseError> {
    if bytes.len() < 16 {
        return Err(ProxyParseError::Incomplete);
    }
    if bytes[12] >> 4 != 2 {
        return Err(ProxyParseError::Invalid("v2 version"));
    }
    let command = bytes[12] & 0x0f;
    let length = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let total = 16 + length;
    if bytes.len() < total {
        return Err(ProxyParseError::Incomplete);
    }
    let body = &bytes[16..total];
    let local = ProxyHeader {
        source: None,
        destination: None,
        length: total,
    };
    match command {
        0 => return Ok(local),
        1 => {}
        _ => return Err(ProxyParseError::Invalid("v2 command")),
    }
    match bytes[13] {
        0x11 | 0x12 => {
            if body.len() < 12 {
                return Err(ProxyParseError::Invalid("v2 IPv4 addresses too short"));
            }
            let address =
                |at: usize| IpAddr::from([body[at], body[at + 1], body[at + 2], body[at + 3]]);
            Ok(ProxyHeader {
                source: Some(SocketAddr::new(
                    address(0),
                    u16::from_be_bytes([body[8], body[9]]),
                )),
                destination: Some(SocketAddr::new(
                    address(4),
                    u16::from_be_bytes([body[10], body[11]]),
                )),
                length: total,
            })
        }
        0x21 | 0x22 => {
            if body.len() < 36 {
                return Err(ProxyParseError::Invalid("v2 IPv6 addresses too short"));
            }
            let address = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::from(octets)
            };
            Ok(ProxyHeader {
                source: Some(SocketAddr::new(
                    address(0),
                    u16::from_be_bytes([body[32], body[33]]),
                )),
                destination: Some(SocketAddr::new(
                    address(16),
                    u16::from_be_bytes([body[34], body[35]]),
                )),
                length: total,
            })
        }
        // UNSPEC or UNIX: the connection's own addresses apply.
        _ => Ok(local),
    }
}

/// Postgres' `SSLRequest`: length 8, code 80877103.
pub const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(client: &str, local: &str) -> (SocketAddr, SocketAddr) {
        (client.parse().unwrap(), local.parse().unwrap())
    }

    #[test]
    fn v1_headers_round_trip() {
        for (client, local) in [
            addresses("127.0.0.1:51000", "127.77.0.1:5000"),
            addresses("[2001:db8::1]:443", "[fdaa::2]:8080"),
        ] {
            let header = proxy_v1(client, local);
            let parsed = parse_proxy_header(&header).unwrap();
            assert_eq!(parsed.source, Some(client));
            assert_eq!(parsed.destination, Some(local));
            assert_eq!(parsed.length, header.len());
        }
        assert_eq!(
            proxy_v1(
                addresses("1.2.3.4:5", "6.7.8.9:10").0,
                addresses("1.2.3.4:5", "6.7.8.9:10").1
            ),
            b"PROXY TCP4 1.2.3.4 6.7.8.9 5 10\r\n"
        );
    }

    #[test]
    fn v2_headers_round_trip_with_trailing_data() {
        for (client, local) in [
            addresses("127.0.0.1:51000", "127.77.0.1:5000"),
            addresses("[2001:db8::1]:443", "[fdaa::2]:8080"),
            addresses("10.0.0.1:1", "[::1]:2"),
        ] {
            let mut bytes = proxy_v2(client, local);
            let length = bytes.len();
            bytes.extend_from_slice(b"hello");
            let parsed = parse_proxy_header(&bytes).unwrap();
            assert_eq!(parsed.length, length);
            let (client, local) = same_family(client, local);
            assert_eq!(parsed.source, Some(client));
            assert_eq!(parsed.destination, Some(local));
        }
    }

    #[test]
    fn partial_and_bad_headers_are_told_apart() {
        let v2 = proxy_v2(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        for cut in 0..v2.len() {
            assert_eq!(
                parse_proxy_header(&v2[..cut]),
                Err(ProxyParseError::Incomplete),
                "{cut}"
            );
        }
        assert_eq!(
            parse_proxy_header(b"PROXY TCP4 1.2.3.4"),
            Err(ProxyParseError::Incomplete)
        );
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP9 a b c d\r\n",
        ] {
            assert!(
                matches!(parse_proxy_header(bad), Err(ProxyParseError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(parse_proxy_header(&[b'P'; 200][..]).is_err());
    }
}
