//! The catalog stream: a fresh [`Catalog`] after every change of apps or machines, for
//! DNS (and later the proxy). Consumers hold a `watch::Receiver` and always see the latest
//! one; a burst of changes is folded into one rebuild.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use aloft_net::{HostNumber, MachineNumber, NetworkNumber, SixPn};
use aloft_store::{MachineRecord, Store};
use aloft_types::catalog::{Catalog, CatalogApp, CatalogCheck, CatalogHostname, CatalogMachine};
use aloft_types::machine::METADATA_PROCESS_GROUP;
use aloft_types::{HostId, MachineId};
use tokio::sync::{broadcast, watch};

use crate::{ApiError, Inner};

/// Rebuilt at least this often, whatever notifications said.
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Reads the whole catalog from the store.
pub(crate) async fn build(
    store: &Store,
    secrets_key: &crate::SecretsKey,
) -> Result<Catalog, ApiError> {
    let apps = store.app_networks().await?;
    let names: std::collections::HashMap<_, _> = apps
        .iter()
        .map(|a| (a.app_id.clone(), a.name.clone()))
        .collect();
    let mut checks: std::collections::HashMap<MachineId, Vec<CatalogCheck>> =
        std::collections::HashMap::new();
    for check in store.live_checks().await? {
        checks
            .entry(check.machine_id)
            .or_default()
            .push(CatalogCheck {
                name: check.name,
                service: check.service,
                status: check.status,
            });
    }
    let mut ips: std::collections::HashMap<aloft_types::AppId, Vec<std::net::Ipv4Addr>> =
        std::collections::HashMap::new();
    for ip in store.all_ips().await? {
        if let Ok(address) = ip.address.parse() {
            ips.entry(ip.app_id).or_default().push(address);
        }
    }
    let mut hostnames: std::collections::HashMap<aloft_types::AppId, Vec<CatalogHostname>> =
        std::collections::HashMap::new();
    let mut acme_challenges = Vec::new();
    for certificate in store.all_certificates().await? {
        if let Some(challenge) = certificate.acme.as_ref().and_then(|a| a.challenge.clone()) {
            acme_challenges.push(challenge);
        }
        let Some(served) = served(&certificate, secrets_key) else {
            continue;
        };
        hostnames
            .entry(certificate.app_id)
            .or_default()
            .push(CatalogHostname {
                name: certificate.hostname,
                custom: served,
            });
    }
    // A machine on a host declared down answers nothing: no route, no DNS name.
    let down: std::collections::HashSet<aloft_types::HostId> = store
        .host_records()
        .await?
        .into_iter()
        .filter(|h| h.down_at.is_some())
        .map(|h| h.host.id)
        .collect();
    let mut machines = Vec::new();
    for machine in store.live_machines().await? {
        let Some(app) = names.get(&machine.app_id) else {
            continue;
        };
        if machine.host_id.as_ref().is_some_and(|h| down.contains(h)) {
            continue;
        }
        let checks = checks.remove(&machine.id).unwrap_or_default();
        machines.push(entry(&machine, app, checks));
    }
    Ok(Catalog {
        acme_challenges,
        apps: apps
            .into_iter()
            .filter_map(|a| {
                Some(CatalogApp {
                    ipv4: ips.remove(&a.app_id).unwrap_or_default(),
                    hostnames: hostnames.remove(&a.app_id).unwrap_or_default(),
                    name: a.name,
                    org_id: a.org_id.to_string(),
                    network: u32::try_from(a.network).ok()?,
                })
            })
            .collect(),
        machines,
    })
}

/// The certificate a hostname is served with: `Some(None)` for one the edge's local CA
/// issues, `Some(Some(..))` for an imported one (which comes first) or an issued ACME
/// one, `None` while it has none (an ACME hostname before its first certificate is not
/// served at all, nor routed).
fn served(
    certificate: &aloft_store::CertificateRecord,
    secrets_key: &crate::SecretsKey,
) -> Option<Option<(String, String)>> {
    let open = |chain: &String, sealed: &String| match secrets_key.decrypt(sealed) {
        Ok(key) => Some((chain.clone(), key)),
        Err(error) => {
            tracing::warn!(hostname = %certificate.hostname, error = %error, "a certificate's key cannot be opened");
            None
        }
    };
    if let (Some(chain), Some(sealed)) = (&certificate.fullchain, &certificate.private_key_sealed)
        && let Some(pair) = open(chain, sealed)
    {
        return Some(Some(pair));
    }
    if let Some(pair) = certificate.acme.as_ref().and_then(|acme| {
        let issued = acme
            .fullchain
            .as_ref()
            .zip(certificate.acme_key_sealed.as_ref());
        issued.and_then(|(chain, sealed)| open(chain, sealed))
    }) {
        return Some(Some(pair));
    }
    // A local hostname asked for ACME keeps the local CA's certificate until then.
    (certificate.source == "local").then_some(None)
}

fn entry(machine: &MachineRecord, app: &str, checks: Vec<CatalogCheck>) -> CatalogMachine {
    CatalogMachine {
        id: machine.id.to_string(),
        app: app.to_owned(),
        region: machine.region.clone(),
        state: machine.state,
        private_ip: machine
            .private_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv6Addr>().ok()),
        process_group: machine
            .config
            .metadata
            .get(METADATA_PROCESS_GROUP)
            .cloned()
            .unwrap_or_else(|| "app".to_owned()),
        metadata: machine.config.metadata.clone(),
        skip_registration: machine
            .config
            .dns
            .as_ref()
            .is_some_and(|d| d.skip_registration),
        cordoned: machine.cordoned,
        services: machine.config.services.clone(),
        checks,
        autostart_disabled: machine.config.disable_machine_autostart == Some(true),
        primary_region: machine.config.env.get("PRIMARY_REGION").cloned(),
        // A Tigris mapping has no files on the machine (the config warned of it).
        statics: machine
            .config
            .statics
            .iter()
            .filter(|s| s.tigris_bucket.is_empty())
            .cloned()
            .collect(),
    }
}

/// Keeps `sender` current until every receiver is gone.
pub(crate) async fn publish(inner: Arc<Inner>, sender: watch::Sender<Arc<Catalog>>) {
    let mut changes = inner.changes.subscribe();
    let mut observed = inner.observed.subscribe();
    let mut interval = tokio::time::interval(REFRESH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match build(&inner.store, &inner.secrets_key).await {
            Ok(catalog) => {
                sender.send_if_modified(|current| {
                    if **current == catalog {
                        false
                    } else {
                        *current = Arc::new(catalog);
                        true
                    }
                });
            }
            Err(error) => {
                tracing::warn!(error = %error, "rebuilding the catalog failed; will retry")
            }
        }
        tokio::select! {
            () = sender.closed() => return,
            () = inner.stopping.cancelled() => return,
            change = changes.recv() => if matches!(change, Err(broadcast::error::RecvError::Closed)) { return },
            seen = observed.recv() => if matches!(seen, Err(broadcast::error::RecvError::Closed)) { return },
            () = inner.catalog_dirty.notified() => {},
            _ = interval.tick() => {},
        }
        // Fold a burst into one rebuild.
        while changes.try_recv().is_ok() || observed.try_recv().is_ok() {}
    }
}

/// A machine's 6PN address, assigned on first use: the network of its app, its host's
/// number, and its own number on that host.
pub(crate) async fn private_address(store: &Store, id: &MachineId) -> Result<SixPn, ApiError> {
    let machine = store.machine_by_id(id).await?;
    if let Some(parts) = machine
        .private_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv6Addr>().ok())
        .and_then(SixPn::parse)
    {
        return Ok(parts);
    }
    let host = machine.host_id.clone().ok_or_else(|| {
        ApiError::Conflict(format!(
            "machine {id} is on no host yet, so it has no address"
        ))
    })?;
    let app = store.app(&machine.app_id).await?;
    let network = store.network(&app.org_id, &app.network).await?;
    let parts = SixPn {
        network: number(network.number, NetworkNumber::new, "network")?,
        host: host_number(store, &host).await?,
        machine: number(
            store.machine_number(id).await?,
            MachineNumber::new,
            "machine",
        )?,
    };
    store
        .place_machine(id, Some(&host), Some(&parts.address().to_string()))
        .await?;
    Ok(parts)
}

/// The host's number in every network, given on first use.
pub(crate) async fn host_number(store: &Store, host: &HostId) -> Result<HostNumber, ApiError> {
    number(store.host_number(host).await?, HostNumber::new, "host")
}

pub(crate) fn number<T>(
    value: i64,
    make: fn(u64) -> Result<T, aloft_net::NumberError>,
    kind: &str,
) -> Result<T, ApiError> {
    u64::try_from(value)
        .ok()
        .and_then(|v| make(v).ok())
        .ok_or_else(|| {
            ApiError::Unavailable(format!(
                "the private network has run out of {kind} numbers ({value})"
            ))
        })
}
