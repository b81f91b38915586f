//! Isolation between private networks: one nftables table the agent owns (`inet aloft`),
//! always replaced whole, so what is installed is exactly what [`ruleset`] renders.
//!
//! For each network with a bridge on this host, packets that arrive from its bridge are
//! dropped when they claim a source outside the network (spoofing) or head for a 6PN
//! address outside it (another network's machines, or the host's bridges of other
//! networks). `fdaa::3` (DNS) stays reachable from every network. Packets that leave
//! through a bridge from outside its network are dropped as well, so both directions hold
//! even if one rule were missing.

use std::collections::BTreeSet;
use std::path::Path;

use crate::{DNS_ADDRESS, NetworkNumber, bridge_name, network_prefix};

/// The table's family and name.
pub const TABLE: &str = "inet aloft";

/// Why the rules could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running nft")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the rules: {stderr}")]
    Refused { stderr: String },
}

fn prefix_text(network: NetworkNumber) -> String {
    let (address, length) = network_prefix(network);
    format!("{address}/{length}")
}

/// The whole table for these networks, as an `nft -f` script that replaces any earlier
/// version atomically. With no networks the script deletes the table.
pub fn ruleset(networks: &BTreeSet<NetworkNumber>) -> String {
    // `add table` makes the `delete` valid when the table does not exist yet.
    let mut script = format!("add table {TABLE}\ndelete table {TABLE}\n");
    if networks.is_empty() {
        return script;
    }
    script.push_str(&format!("table {TABLE} {{\n"));
    for (chain, hook) in [("forward", "forward"), ("input", "input")] {
        script.push_str(&format!(
            "  chain {chain} {{\n    type filter hook {hook} priority -10; policy accept;\n"
        ));
        for network in networks {
            let bridge = bridge_name(*network);
            let own = prefix_text(*network);
            script.push_str(&format!(
                "    iifname \"{bridge}\" ip6 saddr fdaa::/16 ip6 saddr != {own} drop\n"
            ));
            if chain == "forward" {
                script.push_str(&format!(
                    "    iifname \"{bridge}\" ip6 daddr fdaa::/16 ip6 daddr != {own} drop\n"
                ));
                script.push_str(&format!(
                    "    oifname \"{bridge}\" ip6 saddr fdaa::/16 ip6 saddr != {own} drop\n"
                ));
            } else {
                script.push_str(&format!(
                    "    iifname \"{bridge}\" ip6 daddr fdaa::/16 ip6 daddr != {{ {own}, {DNS_ADDRESS} }} drop\n"
                ));
            }
        }
        script.push_str("  }\n");
    }
    script.push_str("}\n");
    script
}

/// Installs [`ruleset`] for `networks` in the namespace at `namespace` (the caller's own
/// when `None`).
pub async fn apply(
    namespace: Option<&Path>,
    networks: &BTreeSet<NetworkNumber>,
) -> Result<(), FirewallError> {
    let script = ruleset(networks);
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
    let output = child
        .wait_with_output()
        .await
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
            ruleset(&BTreeSet::new()),
            "add table inet aloft\ndelete table inet aloft\n"
        );
    }

    #[test]
    fn each_network_is_fenced_in_both_directions() {
        let networks = BTreeSet::from([
            NetworkNumber::new(1).unwrap(),
            NetworkNumber::new(0x1_0002).unwrap(),
        ]);
        let script = ruleset(&networks);
        assert!(script.contains(
            "iifname \"alb00000001\" ip6 daddr fdaa::/16 ip6 daddr != fdaa:0:1::/48 drop"
        ));
        assert!(script.contains(
            "oifname \"alb00010002\" ip6 saddr fdaa::/16 ip6 saddr != fdaa:1:2::/48 drop"
        ));
        assert!(script.contains(
            "iifname \"alb00010002\" ip6 daddr fdaa::/16 ip6 daddr != { fdaa:1:2::/48, fdaa::3 } drop"
        ));
    }
}
