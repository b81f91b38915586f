//! Docker Engine, on the host whose namespace the private network shares, sets the
//! `FORWARD` policy of iptables to DROP (and of ip6tables, when its IPv6 is on) and
//! accepts only its own bridges' traffic. A packet must pass every table's chains on its
//! hook, so machines' traffic through the host (egress, one bridge to another) would
//! die there whatever `inet aloft` says. Docker keeps a chain for its users,
//! `DOCKER-USER`, evaluated first and never flushed: Aloft puts two rules at its top,
//! what comes from a machine bridge and what answers a connection into one, and leaves
//! every decision about them to its own table. Nothing is done where there is no such
//! chain (no Docker in that namespace, or no iptables at all).

use std::path::Path;

use crate::firewall::FirewallError;

/// How long one iptables call may take (it waits up to 5 s for the xtables lock).
const IPTABLES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The chain Docker leaves to its users.
const CHAIN: &str = "DOCKER-USER";

/// The rules, in the order they end up at the chain's top.
const RULES: [&[&str]; 2] = [
    &["-i", "alb+", "-j", "ACCEPT"],
    &[
        "-o",
        "alb+",
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ],
];

/// Runs `tool args` in the namespace at `namespace` (the caller's own when `None`):
/// `None` when the tool is not installed, else whether it succeeded and its stderr.
async fn run(
    namespace: Option<&Path>,
    tool: &str,
    args: &[&str],
) -> Result<Option<(bool, String)>, FirewallError> {
    let mut command = match namespace {
        Some(path) => {
            let mut command = tokio::process::Command::new("nsenter");
            command.arg(format!("--net={}", path.display())).arg(tool);
            command
        }
        None => tokio::process::Command::new(tool),
    };
    command
        .args(["-w", "5"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(IPTABLES_TIMEOUT, command.output()).await {
        Err(_) => return Err(FirewallError::Timeout(IPTABLES_TIMEOUT)),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Ok(Err(error)) => return Err(FirewallError::Spawn(error)),
        Ok(Ok(output)) => output,
    };
    // nsenter itself exists; the tool inside may not (127 from its exec).
    if output.status.code() == Some(127) {
        return Ok(None);
    }
    Ok(Some((
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    )))
}

/// Makes Docker's `FORWARD` chains let machines' traffic through to `inet aloft`, in the
/// namespace at `namespace`, for both families; idempotent (a rule in place stays, once).
pub async fn open_docker_forward(namespace: Option<&Path>) -> Result<(), FirewallError> {
    for tool in ["iptables", "ip6tables"] {
        match run(namespace, tool, &["-S", CHAIN]).await? {
            Some((true, _)) => {}
            // No tool, or no Docker chain in this namespace: nothing drops our traffic.
            None | Some((false, _)) => continue,
        }
        for rule in RULES.iter().rev() {
            let check = [&["-C", CHAIN][..], rule].concat();
            if matches!(run(namespace, tool, &check).await?, Some((true, _))) {
                continue;
            }
            let insert = [&["-I", CHAIN, "1"][..], rule].concat();
            match run(namespace, tool, &insert).await? {
                Some((true, _)) => {
                    tracing::info!(%tool, rule = %rule.join(" "), "opened Docker's FORWARD chain to machines");
                }
                Some((false, stderr)) => {
                    return Err(FirewallError::Refused {
                        stderr: format!("{tool} -I {CHAIN} {}: {stderr}", rule.join(" ")),
                    });
                }
                None => {}
            }
        }
    }
    Ok(())
}
