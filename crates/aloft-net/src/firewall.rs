//! Isolation between private networks, and of the host from its machines: one nftables
//! table the agent owns (`inet aloft`), always replaced whole, so what is installed is
//! exactly what [`ruleset`] renders (the agent installs it again every reconcile
//! interval, so a flushed table comes back).
//!
//! For each network with a bridge on this host:
//! - a packet from its bridge must come from the network's own prefix (no spoofed source,
//!   inside `fdaa::/16` or not) and may not head for another network's 6PN addresses;
//! - a packet into its bridge must come from the network itself, or answer a connection
//!   a machine made: another network, or a LAN neighbour that routes `fdaa::/16` to the
//!   host, reaches no machine past the proxy;
//! - to the host itself, a machine reaches only what the platform serves it on `fdaa::3`
//!   ([`Served`]: DNS, SSH) and ping there, besides neighbour discovery and answers to
//!   the host's own connections (the proxy, checks, metrics). The gateway, the bridges'
//!   link-local addresses and every other service of the host are dropped.
//!
//! With [`Egress`] (the default in `aloftd`), machines also reach the world: IPv4 from
//! their own address only (strict reverse-path check: another machine's address is routed
//! to another bridge), to anything but [`Egress::denied`] and the machines' block, and
//! IPv6 to anything outside `fdaa::/16` but the denied networks; both are masqueraded
//! behind the host's addresses. Without it no IPv4 passes a bridge.

use std::collections::BTreeSet;
use std::path::Path;

use crate::egress::Egress;
use crate::{DNS_ADDRESS, NetworkNumber, bridge_name, network_prefix};

/// How long one `nft -f` may take.
const NFT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The table's family and name.
pub const TABLE: &str = "inet aloft";

/// What the platform serves machines on `fdaa::3`: the only ports of the host they reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub tcp: BTreeSet<u16>,
    pub udp: BTreeSet<u16>,
}

impl Served {
    /// DNS on `dns_port` (UDP and TCP) and, when it listens, SSH on `ssh_port`.
    pub fn new(dns_port: u16, ssh_port: Option<u16>) -> Served {
        let mut tcp = BTreeSet::from([dns_port]);
        tcp.extend(ssh_port);
        Served {
            tcp,
            udp: BTreeSet::from([dns_port]),
        }
    }
}

impl Default for Served {
    /// DNS on 53 and SSH on 22, the platform's defaults.
    fn default() -> Served {
        Served::new(53, Some(22))
    }
}

/// Why the rules could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running nft")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the rules: {stderr}")]
    Refused { stderr: String },
    #[error("nft did not finish within {0:?}; it was killed")]
    Timeout(std::time::Duration),
}

fn prefix_text(network: NetworkNumber) -> String {
    let (address, length) = network_prefix(network);
    format!("{address}/{length}")
}

fn ports(ports: &BTreeSet<u16>) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The denied networks of one family, as an nft set's elements.
pub(crate) fn denied(egress: &Egress, v4: bool) -> Option<String> {
    let networks: Vec<String> = egress
        .denied
        .iter()
        .filter(|cidr| cidr.address.is_ipv4() == v4)
        .map(ToString::to_string)
        .collect();
    (!networks.is_empty()).then(|| networks.join(", "))
}

/// The whole table for these networks, as an `nft -f` script that replaces any earlier
/// version atomically. With no networks the script deletes the table.
pub fn ruleset(
    networks: &BTreeSet<NetworkNumber>,
    served: &Served,
    egress: Option<&Egress>,
) -> String {
    use std::fmt::Write as _;
    // `add table` makes the `delete` valid when the table does not exist yet.
    let mut script = format!("add table {TABLE}\ndelete table {TABLE}\n");
    if networks.is_empty() {
        return script;
    }
    // Per bridge: a packet that passes it must be of the bridge's own network.
    let fenced = |script: &mut String, direction: &str| {
        for network in networks {
            let bridge = bridge_name(*network);
            let own = prefix_text(*network);
            let _ = writeln!(
                script,
                "    {direction} \"{bridge}\" ip6 saddr != {own} drop"
            );
        }
    };
    let _ = writeln!(script, "table {TABLE} {{");
    // To the host itself.
    script.push_str(
        "  chain input {\n    type filter hook input priority -10; policy accept;\n    \
         iifname \"alb*\" jump from_machine\n  }\n",
    );
    script.push_str("  chain from_machine {\n    ct state established,related accept\n");
    script.push_str(
        "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept\n",
    );
    fenced(&mut script, "iifname");
    if !served.udp.is_empty() {
        let _ = writeln!(
            script,
            "    ip6 daddr {DNS_ADDRESS} udp dport {{ {} }} accept",
            ports(&served.udp)
        );
    }
    if !served.tcp.is_empty() {
        let _ = writeln!(
            script,
            "    ip6 daddr {DNS_ADDRESS} tcp dport {{ {} }} accept",
            ports(&served.tcp)
        );
    }
    let _ = writeln!(
        script,
        "    ip6 daddr {DNS_ADDRESS} icmpv6 type echo-request accept\n    drop\n  }}"
    );
    // Through the host: between networks, and between machines and the world.
    script
        .push_str("  chain forward {\n    type filter hook forward priority -10; policy accept;\n");
    fenced(&mut script, "iifname");
    for network in networks {
        let _ = writeln!(
            script,
            "    iifname \"{}\" ip6 daddr fdaa::/16 ip6 daddr != {} drop",
            bridge_name(*network),
            prefix_text(*network)
        );
    }
    match egress {
        Some(egress) => {
            if let Some(v6) = denied(egress, false) {
                let _ = writeln!(
                    script,
                    "    iifname \"alb*\" ip6 daddr != fdaa::/16 ip6 daddr {{ {v6} }} drop"
                );
            }
            let _ = writeln!(
                script,
                "    iifname \"alb*\" ip saddr != {block} drop\n    iifname \"alb*\" ip daddr {block} drop",
                block = egress.ipv4
            );
            if let Some(v4) = denied(egress, true) {
                let _ = writeln!(script, "    iifname \"alb*\" ip daddr {{ {v4} }} drop");
            }
        }
        None => script.push_str("    iifname \"alb*\" meta nfproto ipv4 drop\n"),
    }
    script.push_str("    oifname \"alb*\" ct state established,related accept\n");
    fenced(&mut script, "oifname");
    script.push_str("    oifname \"alb*\" meta nfproto ipv4 drop\n  }\n");
    if let Some(egress) = egress {
        // A machine's IPv4 source must route back to the bridge it came from: its own
        // /32 route does, another machine's leads to that machine's bridge, and any
        // other address to the host's uplink.
        script.push_str(
            "  chain prerouting {\n    type filter hook prerouting priority -150; policy accept;\n    \
             iifname \"alb*\" meta nfproto ipv4 fib saddr . iif oif missing drop\n  }\n",
        );
        let _ = writeln!(
            script,
            "  chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    \
             ip saddr {block} oifname != \"alb*\" masquerade\n    \
             ip6 saddr fdaa::/16 ip6 daddr != fdaa::/16 oifname != \"alb*\" masquerade\n  }}",
            block = egress.ipv4
        );
    }
    script.push_str("}\n");
    script
}

/// Installs [`ruleset`] for `networks` in the namespace at `namespace` (the caller's own
/// when `None`).
pub async fn apply(
    namespace: Option<&Path>,
    networks: &BTreeSet<NetworkNumber>,
    served: &Served,
    egress: Option<&Egress>,
) -> Result<(), FirewallError> {
    run_nft(namespace, &ruleset(networks, served, egress)).await
}

/// Runs `nft -f -` with `script` in the namespace at `namespace` (the caller's own when
/// `None`), killed after [`NFT_TIMEOUT`].
pub(crate) async fn run_nft(namespace: Option<&Path>, script: &str) -> Result<(), FirewallError> {
    let mut command = match namespace {
        Some(path) => {
            let mut command = tokio::process::Command::new("nsenter");
            command.arg(format!("--net={}", path.display())).arg("nft");
            command
        }
        None => tokio::process::Command::new("nft"),
    };
    command
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(FirewallError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(FirewallError::Spawn)?;
    }
    // The agent installs the table on every reconcile tick: a hung nft must not hold its
    // loop (the child is killed when the wait is dropped).
    let output = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| FirewallError::Timeout(NFT_TIMEOUT))?
        .map_err(FirewallError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Refused {
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_networks_removes_the_table() {
        assert_eq!(
            ruleset(&BTreeSet::new(), &Served::default(), None),
            "add table inet aloft\ndelete table inet aloft\n"
        );
    }

    #[test]
    fn each_network_is_fenced_in_both_directions_and_the_host_serves_only_fdaa_3() {
        let networks = BTreeSet::from([
            NetworkNumber::new(1).unwrap(),
            NetworkNumber::new(0x1_0002).unwrap(),
        ]);
        let script = ruleset(&networks, &Served::new(53, Some(2222)), None);
        for rule in [
            // Spoofed sources, inside fdaa::/16 or not.
            "iifname \"alb00000001\" ip6 saddr != fdaa:0:1::/48 drop",
            // Other networks.
            "iifname \"alb00000001\" ip6 daddr fdaa::/16 ip6 daddr != fdaa:0:1::/48 drop",
            // Into a bridge from outside its network (another network, a LAN neighbour).
            "oifname \"alb00010002\" ip6 saddr != fdaa:1:2::/48 drop",
            // The host: what it serves on fdaa::3, and nothing else.
            "ip6 daddr fdaa::3 udp dport { 53 } accept",
            "ip6 daddr fdaa::3 tcp dport { 53, 2222 } accept",
            "iifname \"alb*\" jump from_machine",
        ] {
            assert!(script.contains(rule), "{rule}\n{script}");
        }
        // The chain to the host ends in a drop after what it accepts.
        let host = &script[script.find("chain from_machine").unwrap()..];
        let host = &host[..host.find("}\n").unwrap()];
        assert!(host.trim_end().ends_with("drop"), "{host}");
    }

    #[test]
    fn egress_masquerades_checks_sources_and_denies_the_hosts_neighbourhood() {
        let networks = BTreeSet::from([NetworkNumber::new(1).unwrap()]);
        let closed = ruleset(&networks, &Served::default(), None);
        assert!(closed.contains("iifname \"alb*\" meta nfproto ipv4 drop"));
        assert!(!closed.contains("masquerade"));
        let egress = Egress::new("172.20.0.0/14".parse().unwrap());
        let open = ruleset(&networks, &Served::default(), Some(&egress));
        for rule in [
            "iifname \"alb*\" ip saddr != 172.20.0.0/14 drop",
            "iifname \"alb*\" ip daddr 172.20.0.0/14 drop",
            "169.254.0.0/16",
            "fib saddr . iif oif missing drop",
            "ip saddr 172.20.0.0/14 oifname != \"alb*\" masquerade",
            "ip6 saddr fdaa::/16 ip6 daddr != fdaa::/16 oifname != \"alb*\" masquerade",
            "ip6 daddr != fdaa::/16 ip6 daddr { ::1/128, fc00::/7",
        ] {
            assert!(open.contains(rule), "{rule}\n{open}");
        }
        assert!(
            !open.contains("iifname \"alb*\" meta nfproto ipv4 drop"),
            "{open}"
        );
        // Into a bridge, IPv4 still only answers what a machine started.
        assert!(
            open.contains("oifname \"alb*\" meta nfproto ipv4 drop"),
            "{open}"
        );
    }
}
