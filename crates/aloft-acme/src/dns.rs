//! What a hostname's public DNS says (its A, AAAA and CNAME records), and whether that
//! points it at an app: every address it resolves to is one of the app's, or its CNAME
//! chain reaches `<app>.<apps_domain>`. Nothing is ordered for a hostname before this
//! holds, so the platform never asks a directory for a name it does not answer at.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

/// Why DNS could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("reading the system's resolver configuration: {0}")]
    System(String),
    #[error("looking up {record} records of {hostname}: {detail}")]
    Lookup {
        hostname: String,
        record: &'static str,
        detail: String,
    },
}

/// A hostname's records as its DNS gives them (a CNAME chain followed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    /// The names the CNAME chain passes through, lowercase, without the final dot.
    pub cname: Vec<String>,
}

impl Records {
    /// Every address the hostname resolves to.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.a
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.aaaa.iter().map(|a| IpAddr::V6(*a)))
            .collect()
    }
}

/// Asks DNS servers (the system's, or the ones given) without a cache: each look sees
/// what the servers say now.
#[derive(Debug, Clone)]
pub struct Lookup {
    resolver: TokioResolver,
}

impl Lookup {
    /// A lookup through `servers` (each `address:port`), or through the system's resolvers
    /// (`/etc/resolv.conf`) when there are none.
    pub fn new(servers: &[SocketAddr]) -> Result<Lookup, DnsError> {
        let mut builder = if servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| DnsError::System(e.to_string()))?
        } else {
            let mut config = ResolverConfig::default();
            for server in servers {
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
                }
                config.add_name_server(name_server);
            }
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        };
        let options = builder.options_mut();
        options.cache_size = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        options.ndots = 0;
        let resolver = builder
            .build()
            .map_err(|e| DnsError::System(e.to_string()))?;
        Ok(Lookup { resolver })
    }

    /// The A, AAAA and CNAME records of `hostname` (none where the name has none).
    pub async fn records(&self, hostname: &str) -> Result<Records, DnsError> {
        let fqdn = format!("{}.", hostname.trim_end_matches('.'));
        let mut records = Records::default();
        // Both asked at once: a server that does not answer costs one timeout, not two.
        let (a, aaaa) = tokio::join!(
            self.resolver.lookup(fqdn.as_str(), RecordType::A),
            self.resolver.lookup(fqdn.as_str(), RecordType::AAAA)
        );
        for (record, answer) in [("A", a), ("AAAA", aaaa)] {
            let answers = match answer {
                Ok(lookup) => lookup.answers().to_vec(),
                Err(error) if error.is_no_records_found() || error.is_nx_domain() => Vec::new(),
                Err(error) => {
                    return Err(DnsError::Lookup {
                        hostname: hostname.to_owned(),
                        record,
                        detail: error.to_string(),
                    });
                }
            };
            for answer in answers {
                match &answer.data {
                    RData::A(a) => records.a.push(a.0),
                    RData::AAAA(aaaa) => records.aaaa.push(aaaa.0),
                    RData::CNAME(name) => {
                        let name = name.0.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                        if !records.cname.contains(&name) {
                            records.cname.push(name);
                        }
                    }
                    _ => {}
                }
            }
        }
        records.a.sort_unstable();
        records.a.dedup();
        records.aaaa.sort_unstable();
        records.aaaa.dedup();
        Ok(records)
    }
}

/// Whether `records` point the hostname at an app whose addresses are `addresses` and
/// whose platform name is `target` (`<app>.<apps_domain>`): `Err` says what is wrong.
pub fn points_at(records: &Records, addresses: &[IpAddr], target: &str) -> Result<(), String> {
    let target = target.trim_end_matches('.').to_ascii_lowercase();
    if records.cname.contains(&target) {
        return Ok(());
    }
    let resolved = records.addresses();
    if resolved.is_empty() {
        return Err(if records.cname.is_empty() {
            "the hostname has no A, AAAA or CNAME record".to_owned()
        } else {
            format!(
                "the hostname's CNAME goes to {}, not {target}",
                records.cname.join(" -> ")
            )
        });
    }
    let elsewhere: Vec<String> = resolved
        .iter()
        .filter(|address| !addresses.contains(address))
        .map(ToString::to_string)
        .collect();
    if elsewhere.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the hostname resolves to {} which {} not the app's ({})",
            elsewhere.join(", "),
            if elsewhere.len() == 1 { "is" } else { "are" },
            if addresses.is_empty() {
                format!("it has no public address yet: point a CNAME at {target}")
            } else {
                addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(a: &[&str], cname: &[&str]) -> Records {
        Records {
            a: a.iter().map(|a| a.parse().unwrap()).collect(),
            aaaa: Vec::new(),
            cname: cname.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn a_hostname_points_at_an_app_by_every_address_or_by_its_cname() {
        let app: Vec<IpAddr> = vec!["198.51.100.7".parse().unwrap()];
        let target = "web.apps.example.net";
        assert_eq!(
            points_at(&records(&["198.51.100.7"], &[]), &app, target),
            Ok(())
        );
        assert_eq!(
            points_at(
                &records(&["198.51.100.9"], &["web.apps.example.net"]),
                &app,
                target
            ),
            Ok(())
        );
        // One address elsewhere is enough to refuse: a validation could reach it.
        let mixed = points_at(
            &records(&["198.51.100.7", "198.51.100.8"], &[]),
            &app,
            target,
        );
        assert!(mixed.unwrap_err().contains("198.51.100.8 which is not"));
        let nothing = points_at(&Records::default(), &app, target);
        assert!(nothing.unwrap_err().contains("no A, AAAA or CNAME"));
        let other = points_at(&records(&[], &["other.example.org"]), &app, target);
        assert!(other.unwrap_err().contains("goes to other.example.org"));
        let homeless = points_at(&records(&["198.51.100.7"], &[]), &[], target);
        assert!(
            homeless
                .unwrap_err()
                .contains("point a CNAME at web.apps.example.net")
        );
    }
}
