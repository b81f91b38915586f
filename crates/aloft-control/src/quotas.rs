//! Per-organization quotas: apps, CPUs and memory of live machines, volume gigabytes and
//! IP addresses. The operator sets the platform's defaults and any organization's own
//! (`[quotas]` and `[quotas.orgs.SLUG]` in aloftd's config); a request that would go past
//! one is refused with a 422 naming the quota, the use and the ask.
//!
//! A check and the change it guards run under the organization's lock, so two requests of
//! one organization cannot both take the last of a quota (one control plane holds the
//! locks; several would need the check inside the store's transaction).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aloft_store::{Org, StoreError};
use aloft_types::OrgId;
use aloft_types::machine::MachineGuest;
use serde::Serialize;

use crate::{ApiError, Inner};

/// What one organization may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quota {
    pub apps: i64,
    /// CPUs of live (not destroyed) machines, Fly's default size counting 1.
    pub cpus: i64,
    /// Memory of live machines, in MB.
    pub memory_mb: i64,
    /// Sizes of volumes that are not destroyed, in GB.
    pub volume_gb: i64,
    /// Dedicated IP addresses of its apps.
    pub ips: i64,
}

impl Default for Quota {
    /// Generous for one team, small enough that one organization cannot take a host.
    fn default() -> Quota {
        Quota {
            apps: 100,
            cpus: 64,
            memory_mb: 131_072,
            volume_gb: 1_000,
            ips: 20,
        }
    }
}

/// The platform's default quota and organizations' own, by slug.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quotas {
    pub default: Quota,
    pub by_org: BTreeMap<String, Quota>,
}

impl Quotas {
    /// The quota of the organization `slug`.
    pub fn of(&self, slug: &str) -> Quota {
        self.by_org.get(slug).copied().unwrap_or(self.default)
    }
}

/// What an organization uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub apps: i64,
    pub cpus: i64,
    pub memory_mb: i64,
    pub volume_gb: i64,
    pub ips: i64,
}

/// What a request would add.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ask<'a> {
    App,
    /// A machine of this guest; `replacing` the guest it had (an update), if any.
    Machine {
        guest: Option<&'a MachineGuest>,
        replacing: Option<Option<&'a MachineGuest>>,
    },
    /// More volume gigabytes.
    VolumeGb(i64),
    Ip,
}

/// Each organization's lock, held from a check to the change it allowed.
#[derive(Debug, Default)]
pub(crate) struct Locks(std::sync::Mutex<HashMap<OrgId, Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    async fn lock(&self, org: &OrgId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(org.clone())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}

/// Held while the change a check allowed is made.
#[must_use = "the quota holds only while the change is made under it"]
pub(crate) struct Held(
    #[allow(dead_code, reason = "held for its drop")] tokio::sync::OwnedMutexGuard<()>,
);

/// What `org` uses now: its apps, live machines, volumes and IPs.
pub(crate) async fn usage(inner: &Inner, org: &OrgId) -> Result<Usage, StoreError> {
    let mut usage = Usage::default();
    let filter = aloft_store::MachineFilter::default();
    for app in inner.store.list_apps(org).await? {
        usage.apps += 1;
        for machine in inner.store.list_machines(&app.id, &filter).await? {
            let limits = MachineGuest::limits(machine.config.guest.as_ref());
            usage.cpus += i64::from(limits.cpus);
            usage.memory_mb += i64::from(limits.memory_mb);
        }
        for volume in inner.store.list_volumes(&app.id).await? {
            usage.volume_gb += volume.size_gb;
        }
        usage.ips += i64::try_from(inner.store.ips_of_app(&app.id).await?.len()).unwrap_or(0);
    }
    Ok(usage)
}

/// Checks that `ask` fits `org`'s quota, and holds the organization's lock until the
/// returned guard is dropped (after the change is stored).
pub(crate) async fn check(inner: &Inner, org: &Org, ask: Ask<'_>) -> Result<Held, ApiError> {
    let held = Held(inner.quota_locks.lock(&org.id).await);
    fits(inner, org, ask).await?;
    Ok(held)
}

/// Checks that `ask` fits `org`'s quota, for a caller that holds its lock already (a
/// volume made for a machine being created).
pub(crate) async fn fits(inner: &Inner, org: &Org, ask: Ask<'_>) -> Result<(), ApiError> {
    let quota = inner.config.quotas.of(&org.slug);
    let used = usage(inner, &org.id).await?;
    let over = |what: &str, key: &str, used: i64, more: i64, limit: i64| {
        ApiError::Unprocessable(format!(
            "organization {} uses {used} {what} of its quota of {limit}; this needs {more} more ({key} in aloftd's [quotas], or [quotas.orgs.{}] for this organization): free some first, or ask the operator to raise it",
            org.slug, org.slug
        ))
    };
    match ask {
        Ask::App => {
            if used.apps + 1 > quota.apps {
                return Err(over("apps", "apps", used.apps, 1, quota.apps));
            }
        }
        Ask::Machine { guest, replacing } => {
            let new = MachineGuest::limits(guest);
            let old = replacing.map(MachineGuest::limits);
            let cpus = i64::from(new.cpus) - old.map_or(0, |o| i64::from(o.cpus));
            let memory = i64::from(new.memory_mb) - old.map_or(0, |o| i64::from(o.memory_mb));
            if cpus > 0 && used.cpus + cpus > quota.cpus {
                return Err(over("CPUs", "cpus", used.cpus, cpus, quota.cpus));
            }
            if memory > 0 && used.memory_mb + memory > quota.memory_mb {
                return Err(over(
                    "MB of memory",
                    "memory_mb",
                    used.memory_mb,
                    memory,
                    quota.memory_mb,
                ));
            }
        }
        Ask::VolumeGb(more) => {
            if more > 0 && used.volume_gb + more > quota.volume_gb {
                return Err(over(
                    "GB of volumes",
                    "volume_gb",
                    used.volume_gb,
                    more,
                    quota.volume_gb,
                ));
            }
        }
        Ask::Ip => {
            if used.ips + 1 > quota.ips {
                return Err(over("IP addresses", "ips", used.ips, 1, quota.ips));
            }
        }
    }
    Ok(())
}

/// [`check`] for an app's organization.
pub(crate) async fn check_app(
    inner: &Inner,
    app: &aloft_store::App,
    ask: Ask<'_>,
) -> Result<Held, ApiError> {
    let org = inner.store.org(&app.org_id).await?;
    check(inner, &org, ask).await
}
