//! The host side of the private network, over rtnetlink: a bridge per network, a veth per
//! machine into its network namespace, `fdaa::3` for DNS, and the isolation rules.
//!
//! Everything lives in one network namespace, the host's ("the agent's namespace"): the
//! agent's own by default, or one named in its config (tests give every platform its own,
//! so several run side by side without sharing addresses).
//!
//! Names (at most 15 bytes, as the kernel requires):
//! - `alb` + network number in 8 hex digits: the network's bridge, holding the gateway.
//! - `alv` + machine number in 8 hex digits: the host end of a machine's veth.
//! - `alp` + machine number: the other end, before it moves into the machine and becomes
//!   `eth0` there.
//!
//! Every operation is idempotent, so the agent can repeat any of them after a crash.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::sync::Mutex;

use crate::egress::{Egress, IPV4_GATEWAY};
use crate::netns::{self, NetnsError};
use crate::{
    DNS_ADDRESS, HOST_PREFIX_LEN, HostNumber, MACHINE_PREFIX_LEN, MachineNumber, NetworkNumber,
    SixPn, firewall, gateway,
};

/// The MTU of bridges and veths unless configured: room for WireGuard between hosts.
pub const DEFAULT_MTU: u32 = 1420;
/// A machine's interface, inside its namespace.
pub const MACHINE_INTERFACE: &str = "eth0";

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const ESRCH: i32 = 3;

/// The bridge of `network` on this host.
pub fn bridge_name(network: NetworkNumber) -> String {
    format!("alb{:08x}", network.get())
}

/// The host end of `machine`'s veth.
pub fn veth_name(machine: MachineNumber) -> String {
    format!("alv{:08x}", machine.get())
}

/// The MAC address of a machine's `eth0`: locally administered, from the machine's
/// number (unique on its bridge). A machine keeps it across runs, so when an update
/// replaces its container the host's neighbour entry for its address stays right;
/// a random MAC left the host sending to the old run's for up to a minute.
pub(crate) fn machine_mac(machine: MachineNumber) -> [u8; 6] {
    let [a, b, c, d] = machine.get().to_be_bytes();
    [0x02, 0xaa, a, b, c, d]
}

fn peer_name(machine: MachineNumber) -> String {
    format!("alp{:08x}", machine.get())
}

/// Why plumbing failed.
#[derive(Debug, thiserror::Error)]
pub enum PlumbError {
    #[error(transparent)]
    Namespace(#[from] NetnsError),
    #[error("opening a netlink connection")]
    Connect(#[source] std::io::Error),
    #[error("{operation}")]
    Netlink {
        operation: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("setting {key}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("installing the isolation rules")]
    Firewall(#[from] firewall::FirewallError),
}

fn netlink(operation: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> PlumbError {
    let operation = operation.into();
    move |source| PlumbError::Netlink { operation, source }
}

fn code(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

/// Ignores "already exists" (the work was done before).
fn existing_is_fine(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(error) if code(&error) == Some(EEXIST) => Ok(()),
        other => other,
    }
}

/// A netlink connection whose socket lives in the namespace at `path`.
async fn connect(path: Option<&Path>) -> Result<Handle, PlumbError> {
    let runtime = tokio::runtime::Handle::current();
    let inside = runtime.clone();
    let (connection, handle, _) = netns::run_in(path, move || {
        let _entered = inside.enter();
        rtnetlink::new_connection()
    })?
    .map_err(PlumbError::Connect)?;
    runtime.spawn(connection);
    Ok(handle)
}

/// A link as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub controller: Option<u32>,
    pub up: bool,
}

fn link_of(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        controller: None,
        up: message.header.flags.contains(LinkFlags::Up),
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Controller(index) => link.controller = Some(*index),
            _ => {}
        }
    }
    link
}

async fn find_link(handle: &Handle, name: &str) -> Result<Option<Link>, PlumbError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(found) => Ok(found.as_ref().map(link_of)),
        Err(error) if code(&error) == Some(ENODEV) => Ok(None),
        Err(error) => Err(netlink(format!("looking up link {name}"))(error)),
    }
}

async fn all_links(handle: &Handle) -> Result<Vec<Link>, PlumbError> {
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink("listing links"))?;
    Ok(links.iter().map(link_of).collect())
}

async fn delete_link(handle: &Handle, link: &Link) -> Result<(), PlumbError> {
    match handle.link().del(link.index).execute().await {
        Err(error) if code(&error) == Some(ENODEV) => Ok(()),
        other => other.map_err(netlink(format!("deleting link {}", link.name))),
    }
}

async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), PlumbError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink(format!("bringing {name} up")))
}

/// Adds `address/prefix` to a link without duplicate address detection (the address is
/// ours by construction), unless it is there already.
async fn add_address(
    handle: &Handle,
    index: u32,
    address: Ipv6Addr,
    prefix: u8,
) -> Result<(), PlumbError> {
    let mut request = handle.address().add(index, IpAddr::V6(address), prefix);
    request
        .message_mut()
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    existing_is_fine(request.execute().await).map_err(netlink(format!("adding {address}")))
}

/// Adds an IPv4 `address/prefix` to a link, unless it is there already.
async fn add_address_v4(
    handle: &Handle,
    index: u32,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<(), PlumbError> {
    existing_is_fine(
        handle
            .address()
            .add(index, IpAddr::V4(address), prefix)
            .execute()
            .await,
    )
    .map_err(netlink(format!("adding {address}")))
}

async fn has_address(handle: &Handle, index: u32, address: IpAddr) -> Result<bool, PlumbError> {
    let addresses: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(netlink("listing addresses"))?;
    Ok(addresses.iter().any(|message| {
        message.attributes.iter().any(
            |attribute| matches!(attribute, AddressAttribute::Address(found) if *found == address),
        )
    }))
}

fn write_sysctl(key: &str, value: &str) -> Result<(), PlumbError> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|source| PlumbError::Sysctl {
        key: key.to_owned(),
        source,
    })
}

/// The private network of one host.
#[derive(Debug)]
pub struct HostNetwork {
    namespace: Option<PathBuf>,
    host: HostNumber,
    mtu: u32,
    handle: Handle,
    /// Networks whose bridge and rules exist (the firewall is rendered from this).
    networks: Mutex<BTreeSet<NetworkNumber>>,
    /// What machines may reach of the host on `fdaa::3`.
    served: firewall::Served,
    /// Machines' way to the internet (IPv4 addresses, masquerading); `None`: none.
    egress: Option<Egress>,
    /// Attaching (shared) never overlaps pruning (exclusive), which would take a
    /// half-made veth for a leftover.
    work: tokio::sync::RwLock<()>,
    /// One attach at a time per machine: a second one (the agent's sweep, say) would
    /// take the first's half-made veth for a leftover and delete it.
    attaching: Mutex<std::collections::HashMap<MachineNumber, Arc<Mutex<()>>>>,
    /// When each bridge and veth was last made or checked: pruning spares what was
    /// touched after the caller read its list of live machines.
    touched: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
}

impl HostNetwork {
    /// Prepares the host: IPv6 forwarding (between the machines' /112s), loopback up, and
    /// `fdaa::3` on it, where machines reach what `served` names and nothing else of the
    /// host. `namespace` names the network namespace to work in (`None`: the caller's own).
    pub async fn open(
        namespace: Option<PathBuf>,
        host: HostNumber,
        mtu: u32,
        served: firewall::Served,
        egress: Option<Egress>,
    ) -> Result<HostNetwork, PlumbError> {
        let ipv4 = egress.is_some();
        netns::run_in(namespace.as_deref(), move || {
            write_sysctl("net.ipv6.conf.all.forwarding", "1")?;
            if ipv4 {
                // Machines' IPv4 to the world, masqueraded.
                write_sysctl("net.ipv4.ip_forward", "1")?;
            }
            // Addresses here are unique by construction: no duplicate detection, whose
            // delay would drop a new machine's first packets.
            write_sysctl("net.ipv6.conf.default.accept_dad", "0")
        })??;
        let handle = connect(namespace.as_deref()).await?;
        let lo = find_link(&handle, "lo")
            .await?
            .ok_or_else(|| PlumbError::Netlink {
                operation: "finding the loopback interface".to_owned(),
                source: rtnetlink::Error::RequestFailed,
            })?;
        set_up(&handle, lo.index, "lo").await?;
        add_address(&handle, lo.index, DNS_ADDRESS, 128).await?;
        // Networks from an earlier run are kept until the agent prunes what it no longer needs.
        let mut networks = BTreeSet::new();
        for link in all_links(&handle).await? {
            if let Some(number) = link
                .name
                .strip_prefix("alb")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .and_then(|n| NetworkNumber::new(u64::from(n)).ok())
            {
                networks.insert(number);
            }
        }
        // The table is rebuilt from what exists: rules of networks that vanished go.
        firewall::apply(namespace.as_deref(), &networks, &served, egress.as_ref()).await?;
        crate::docker_forward::open_docker_forward(namespace.as_deref()).await?;
        Ok(HostNetwork {
            namespace,
            host,
            mtu,
            handle,
            networks: Mutex::new(networks),
            served,
            egress,
            work: tokio::sync::RwLock::new(()),
            attaching: Mutex::new(std::collections::HashMap::new()),
            touched: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The namespace the host's side lives in (`None`: the agent's own).
    pub fn namespace(&self) -> Option<&Path> {
        self.namespace.as_deref()
    }

    pub fn host(&self) -> HostNumber {
        self.host
    }

    /// Installs the rules again as they should be (the table replaced whole, Docker's
    /// `FORWARD` chains opened to machines), whatever happened to them since: the agent
    /// calls it every reconcile interval, so a flushed or edited table is back within one.
    pub async fn enforce(&self) -> Result<(), PlumbError> {
        let networks = self.networks.lock().await;
        firewall::apply(
            self.namespace(),
            &networks,
            &self.served,
            self.egress.as_ref(),
        )
        .await?;
        crate::docker_forward::open_docker_forward(self.namespace()).await?;
        Ok(())
    }

    /// Makes `network`'s bridge (with the gateway address) and its isolation rules exist.
    pub async fn ensure_network(&self, network: NetworkNumber) -> Result<u32, PlumbError> {
        let mut networks = self.networks.lock().await;
        let name = bridge_name(network);
        self.touch(&name);
        let bridge = match find_link(&self.handle, &name).await? {
            Some(link) => link,
            None => {
                existing_is_fine(
                    self.handle
                        .link()
                        .add(LinkBridge::new(&name).mtu(self.mtu).build())
                        .execute()
                        .await,
                )
                .map_err(netlink(format!("creating bridge {name}")))?;
                find_link(&self.handle, &name)
                    .await?
                    .ok_or_else(|| PlumbError::Netlink {
                        operation: format!("finding bridge {name} after creating it"),
                        source: rtnetlink::Error::RequestFailed,
                    })?
            }
        };
        add_address(
            &self.handle,
            bridge.index,
            gateway(network, self.host),
            HOST_PREFIX_LEN,
        )
        .await?;
        if self.egress.is_some() {
            // Every bridge holds the machines' IPv4 gateway (a /32: no subnet is shared).
            add_address_v4(&self.handle, bridge.index, IPV4_GATEWAY, 32).await?;
        }
        if !bridge.up {
            set_up(&self.handle, bridge.index, &name).await?;
        }
        if networks.insert(network)
            && let Err(error) = firewall::apply(
                self.namespace(),
                &networks,
                &self.served,
                self.egress.as_ref(),
            )
            .await
        {
            networks.remove(&network);
            return Err(error.into());
        }
        Ok(bridge.index)
    }

    /// Connects a machine whose network namespace is at `machine_namespace` (for a
    /// container, `/proc/PID/ns/net`): a veth with `eth0` inside holding the machine's
    /// address, and a default route via the host. Does nothing when that is in place.
    pub async fn attach(&self, machine: SixPn, machine_namespace: &Path) -> Result<(), PlumbError> {
        let _shared = self.work.read().await;
        let this_machine = self
            .attaching
            .lock()
            .await
            .entry(machine.machine)
            .or_default()
            .clone();
        let _alone = this_machine.lock().await;
        let bridge = self.ensure_network(machine.network).await?;
        let inner = connect(Some(machine_namespace)).await?;
        let host_end = veth_name(machine.machine);
        let peer = peer_name(machine.machine);
        let address = machine.address();
        self.touch(&host_end);

        if let (Some(eth0), Some(outer)) = (
            find_link(&inner, MACHINE_INTERFACE).await?,
            find_link(&self.handle, &host_end).await?,
        ) && outer.controller == Some(bridge)
            && outer.up
            && eth0.up
            && has_address(&inner, eth0.index, IpAddr::V6(address)).await?
            && match &self.egress {
                Some(egress) => {
                    let own = egress.ipv4.address_of(machine.machine);
                    has_address(&inner, eth0.index, IpAddr::V4(own)).await?
                }
                None => true,
            }
        {
            if let Some(egress) = &self.egress {
                self.route_ipv4(machine, egress, bridge).await?;
            }
            return Ok(());
        }

        // Leftovers of an earlier, interrupted attempt go first.
        for name in [&host_end, &peer] {
            if let Some(link) = find_link(&self.handle, name).await? {
                delete_link(&self.handle, &link).await?;
            }
        }
        for name in [MACHINE_INTERFACE, peer.as_str()] {
            if let Some(link) = find_link(&inner, name).await? {
                delete_link(&inner, &link).await?;
            }
        }

        self.handle
            .link()
            .add(LinkVeth::new(&host_end, &peer).mtu(self.mtu).build())
            .execute()
            .await
            .map_err(netlink(format!("creating veth {host_end}")))?;
        let peer_link =
            find_link(&self.handle, &peer)
                .await?
                .ok_or_else(|| PlumbError::Netlink {
                    operation: format!("finding {peer} after creating it"),
                    source: rtnetlink::Error::RequestFailed,
                })?;
        // Interfaces made in (or moved into) the machine's namespace from now on skip
        // duplicate address detection; the per-interface setting below then only
        // confirms it (its sysctl file can appear a moment after the move).
        netns::run_in(Some(machine_namespace), || {
            write_sysctl("net.ipv6.conf.default.accept_dad", "0")
        })??;
        let target = File::open(machine_namespace).map_err(|source| {
            PlumbError::Namespace(NetnsError::Open {
                path: machine_namespace.to_owned(),
                source,
            })
        })?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(peer_link.index)
                    .setns_by_fd(target.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("moving {peer} into the machine")))?;
        let outer =
            find_link(&self.handle, &host_end)
                .await?
                .ok_or_else(|| PlumbError::Netlink {
                    operation: format!("finding {host_end} after creating it"),
                    source: rtnetlink::Error::RequestFailed,
                })?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(outer.index)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("attaching {host_end} to its bridge")))?;

        let sysctl_peer = peer.clone();
        match netns::run_in(Some(machine_namespace), move || {
            write_sysctl(&format!("net.ipv6.conf.{sysctl_peer}.accept_dad"), "0")
        })? {
            Ok(()) => {}
            // Not there yet: the namespace's default (set above) already applies.
            Err(PlumbError::Sysctl { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let inside = find_link(&inner, &peer)
            .await?
            .ok_or_else(|| PlumbError::Netlink {
                operation: format!("finding {peer} inside the machine"),
                source: rtnetlink::Error::RequestFailed,
            })?;
        inner
            .link()
            .set(
                LinkUnspec::new_with_index(inside.index)
                    .name(MACHINE_INTERFACE.to_owned())
                    .mtu(self.mtu)
                    .address(machine_mac(machine.machine).to_vec())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink("naming and raising eth0 in the machine"))?;
        if let Some(lo) = find_link(&inner, "lo").await? {
            set_up(&inner, lo.index, "lo in the machine").await?;
        }
        add_address(&inner, inside.index, address, MACHINE_PREFIX_LEN).await?;
        let via = gateway(machine.network, self.host);
        existing_is_fine(
            inner
                .route()
                .add(
                    RouteMessageBuilder::<Ipv6Addr>::new()
                        .destination_prefix(via, 128)
                        .output_interface(inside.index)
                        .build(),
                )
                .execute()
                .await,
        )
        .map_err(netlink("adding the route to the gateway in the machine"))?;
        existing_is_fine(
            inner
                .route()
                .add(
                    RouteMessageBuilder::<Ipv6Addr>::new()
                        .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
                        .gateway(via)
                        .output_interface(inside.index)
                        .build(),
                )
                .execute()
                .await,
        )
        .map_err(netlink("adding the default route in the machine"))?;
        if let Some(egress) = &self.egress {
            let own = egress.ipv4.address_of(machine.machine);
            add_address_v4(&inner, inside.index, own, 32).await?;
            for (destination, length, via) in [
                (IPV4_GATEWAY, 32, None),
                (Ipv4Addr::UNSPECIFIED, 0, Some(IPV4_GATEWAY)),
            ] {
                let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(destination, length)
                    .output_interface(inside.index);
                route = match via {
                    Some(via) => route.gateway(via),
                    // On the link: what makes the gateway usable as one.
                    None => route.scope(RouteScope::Link),
                };
                existing_is_fine(inner.route().add(route.build()).execute().await)
                    .map_err(netlink("adding the machine's IPv4 routes"))?;
            }
            self.route_ipv4(machine, egress, bridge).await?;
        }
        Ok(())
    }

    /// The host's route to a machine's IPv4 address, through its network's bridge (made
    /// again if it points elsewhere: the address of a machine long gone whose number
    /// wrapped onto this one).
    async fn route_ipv4(
        &self,
        machine: SixPn,
        egress: &Egress,
        bridge: u32,
    ) -> Result<(), PlumbError> {
        let own = egress.ipv4.address_of(machine.machine);
        self.handle
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(own, 32)
                    .output_interface(bridge)
                    .scope(RouteScope::Link)
                    .pref_source(IPV4_GATEWAY)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(netlink(format!("routing {own} to its bridge")))
    }

    fn touch(&self, link: &str) {
        if let Ok(mut touched) = self.touched.lock() {
            touched.insert(link.to_owned(), Instant::now());
        }
    }

    fn touched_since(&self, link: &str, as_of: Instant) -> bool {
        self.touched
            .lock()
            .map(|touched| touched.get(link).is_some_and(|at| *at >= as_of))
            .unwrap_or(true)
    }

    /// Removes what no longer belongs: veths of machines not in `machines`, bridges and
    /// rules of networks not in `networks`, and half-made veth pairs. The lists were read
    /// at `as_of`: a bridge or veth made or checked since (a machine started meanwhile)
    /// is kept.
    pub async fn prune(
        &self,
        networks: &BTreeSet<NetworkNumber>,
        machines: &BTreeSet<MachineNumber>,
        as_of: Instant,
    ) -> Result<(), PlumbError> {
        let _exclusive = self.work.write().await;
        let mut installed = self.networks.lock().await;
        let keep_veths: BTreeSet<String> = machines.iter().map(|m| veth_name(*m)).collect();
        let keep_bridges: BTreeSet<String> = networks.iter().map(|n| bridge_name(*n)).collect();
        for link in all_links(&self.handle).await? {
            let stale = (link.name.starts_with("alv") && !keep_veths.contains(&link.name))
                || link.name.starts_with("alp")
                || (link.name.starts_with("alb") && !keep_bridges.contains(&link.name));
            if stale && !self.touched_since(&link.name, as_of) {
                tracing::info!(link = %link.name, "removing a stale private-network link");
                delete_link(&self.handle, &link).await?;
                if let Ok(mut touched) = self.touched.lock() {
                    touched.remove(&link.name);
                }
            }
        }
        let before = installed.len();
        installed.retain(|n| networks.contains(n) || self.touched_since(&bridge_name(*n), as_of));
        if installed.len() != before {
            firewall::apply(
                self.namespace(),
                &installed,
                &self.served,
                self.egress.as_ref(),
            )
            .await?;
        }
        Ok(())
    }

    /// Every link of the private network on this host (bridges and veths), by name.
    pub async fn links(&self) -> Result<Vec<Link>, PlumbError> {
        Ok(all_links(&self.handle)
            .await?
            .into_iter()
            .filter(|l| ["alb", "alv", "alp"].iter().any(|p| l.name.starts_with(p)))
            .collect())
    }

    /// Removes `fdaa::3` (when the host stops serving the private network).
    pub async fn close(self) -> Result<(), PlumbError> {
        if let Some(lo) = find_link(&self.handle, "lo").await? {
            let addresses: Vec<_> = self
                .handle
                .address()
                .get()
                .set_link_index_filter(lo.index)
                .set_address_filter(IpAddr::V6(DNS_ADDRESS))
                .execute()
                .try_collect()
                .await
                .map_err(netlink("listing loopback addresses"))?;
            for message in addresses {
                match self.handle.address().del(message).execute().await {
                    Err(error) if matches!(code(&error), Some(EADDRNOTAVAIL | ESRCH)) => {}
                    other => other.map_err(netlink("removing fdaa::3"))?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_macs_are_local_unicast_and_differ_per_machine() {
        let one = machine_mac(MachineNumber::new(1).unwrap());
        let other = machine_mac(MachineNumber::new(0x0102_0304).unwrap());
        assert_eq!(one, [0x02, 0xaa, 0, 0, 0, 1]);
        assert_eq!(other, [0x02, 0xaa, 1, 2, 3, 4]);
        // Locally administered (bit 1 set), unicast (bit 0 clear).
        assert_eq!(one[0] & 0b11, 0b10);
    }
}
