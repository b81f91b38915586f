//! The fence around image builds: a tenant's `RUN` steps run on the engine's default
//! bridge (`docker0`), and BuildKit in Docker Engine offers no other network but the
//! host's own. So Aloft keeps a table of its own (`inet aloft_build`, replaced whole
//! before every build) that lets build steps reach the internet, as a `RUN apt-get` or
//! `npm install` needs, and nothing else:
//! - nothing of the host, on any of its addresses (the bridge's gateway, its LAN
//!   address, loopback services bound to every address), but answers to connections the
//!   host made and DNS to the resolvers the engine gave the steps;
//! - none of the networks machines may not reach either ([`Egress::denied`]: metadata
//!   and link-local addresses, private ranges, the LAN), nor machines' addresses
//!   (`fdaa::/16`, the machines' IPv4 block).
//!
//! Traffic between containers of the bridge itself is the engine's business and left as
//! it is.

use std::net::IpAddr;

use crate::egress::Egress;
use crate::firewall::{FirewallError, denied, run_nft};

/// The table's family and name.
pub const BUILD_TABLE: &str = "inet aloft_build";

fn addresses(resolvers: &[IpAddr], v4: bool) -> Option<String> {
    let list: Vec<String> = resolvers
        .iter()
        .filter(|address| address.is_ipv4() == v4)
        .map(ToString::to_string)
        .collect();
    (!list.is_empty()).then(|| list.join(", "))
}

/// The table for builds on `bridge` whose steps resolve names with `resolvers`, fenced
/// as machines are by `egress`, as an `nft -f` script that replaces any earlier version.
pub fn build_ruleset(bridge: &str, resolvers: &[IpAddr], egress: &Egress) -> String {
    use std::fmt::Write as _;
    let mut script = format!("add table {BUILD_TABLE}\ndelete table {BUILD_TABLE}\n");
    let dns = |script: &mut String| {
        for (family, v4) in [("ip", true), ("ip6", false)] {
            if let Some(list) = addresses(resolvers, v4) {
                let _ = writeln!(
                    script,
                    "    {family} daddr {{ {list} }} meta l4proto {{ tcp, udp }} th dport 53 accept"
                );
            }
        }
    };
    let _ = writeln!(script, "table {BUILD_TABLE} {{");
    let _ = writeln!(
        script,
        "  chain input {{\n    type filter hook input priority -10; policy accept;\n    \
         iifname \"{bridge}\" jump from_build\n  }}"
    );
    script.push_str("  chain from_build {\n    ct state established,related accept\n");
    script.push_str(
        "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept\n",
    );
    dns(&mut script);
    script.push_str("    drop\n  }\n");
    let _ = writeln!(
        script,
        "  chain forward {{\n    type filter hook forward priority -10; policy accept;\n    \
         iifname \"{bridge}\" oifname != \"{bridge}\" jump out_of_build\n  }}"
    );
    script.push_str("  chain out_of_build {\n");
    dns(&mut script);
    let _ = writeln!(
        script,
        "    ip daddr {} drop\n    ip6 daddr fdaa::/16 drop",
        egress.ipv4
    );
    for (family, v4) in [("ip", true), ("ip6", false)] {
        if let Some(list) = denied(egress, v4) {
            let _ = writeln!(script, "    {family} daddr {{ {list} }} drop");
        }
    }
    script.push_str("  }\n}\n");
    script
}

/// The name servers of a `resolv.conf` (what the engine gives build steps, loopback
/// ones aside: the engine replaces those with public resolvers).
pub fn resolvers_of(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // A scoped IPv6 address (`fe80::1%eth0`) has no place in an nft set.
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .filter(|address| !address.is_loopback())
        .collect()
}

/// Installs [`build_ruleset`] in this process's network namespace (the engine's).
pub async fn fence_builds(
    bridge: &str,
    resolvers: &[IpAddr],
    egress: &Egress,
) -> Result<(), FirewallError> {
    run_nft(None, &build_ruleset(bridge, resolvers, egress)).await
}

/// Removes the table (`[build] isolate = false`): the engine's bridge as the engine left it.
pub async fn unfence_builds() -> Result<(), FirewallError> {
    run_nft(
        None,
        &format!("add table {BUILD_TABLE}\ndelete table {BUILD_TABLE}\n"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_closed_to_builds_but_for_dns_and_answers() {
        let egress = Egress::new("172.20.0.0/14".parse().unwrap());
        let resolvers = resolvers_of(
            "# a comment\nnameserver 10.255.255.53\nnameserver 127.0.0.53\nnameserver fd00::1\n\
             nameserver fe80::1%eth0\nsearch example\n",
        );
        assert_eq!(
            resolvers,
            vec![
                "10.255.255.53".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        let script = build_ruleset("docker0", &resolvers, &egress);
        for rule in [
            "iifname \"docker0\" jump from_build",
            "iifname \"docker0\" oifname != \"docker0\" jump out_of_build",
            "ip daddr { 10.255.255.53 } meta l4proto { tcp, udp } th dport 53 accept",
            "ip6 daddr { fd00::1 } meta l4proto { tcp, udp } th dport 53 accept",
            "ip daddr 172.20.0.0/14 drop",
            "ip6 daddr fdaa::/16 drop",
            "169.254.0.0/16",
            "10.0.0.0/8",
        ] {
            assert!(script.contains(rule), "{rule}\n{script}");
        }
        // To the host: DNS and answers, then nothing.
        let host = &script[script.find("chain from_build").unwrap()..];
        let host = &host[..host.find("}\n").unwrap()];
        assert!(host.trim_end().ends_with("drop"), "{host}");
        // Out: the resolvers pass before the private ranges they live in are dropped.
        let out = &script[script.find("chain out_of_build").unwrap()..];
        assert!(
            out.find("th dport 53 accept") < out.find("10.0.0.0/8"),
            "{out}"
        );
        // No resolvers at all (the engine's public fallback): no empty sets.
        let bare = build_ruleset("docker0", &[], &egress);
        assert!(!bare.contains("{  }"), "{bare}");
        assert!(!bare.contains("dport 53"), "{bare}");
    }
}
