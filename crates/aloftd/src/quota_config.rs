//! `[quotas]` of aloftd's configuration: what each organization may use, and
//! `[quotas.orgs.SLUG]` for one organization's own.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[quotas]`: every organization's quota unless `orgs` names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    /// Apps of one organization.
    pub apps: i64,
    /// CPUs of its live (not destroyed) machines; a machine without a size counts 1.
    pub cpus: i64,
    /// Memory of its live machines, in MB (256 for a machine without a size).
    pub memory_mb: i64,
    /// Gigabytes of its volumes that are not destroyed.
    pub volume_gb: i64,
    /// Dedicated IP addresses of its apps.
    pub ips: i64,
    /// One organization's own quota, by slug; a key left out takes the value above.
    pub orgs: BTreeMap<String, OrgQuota>,
}

/// `[quotas.orgs.SLUG]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgQuota {
    pub apps: Option<i64>,
    pub cpus: Option<i64>,
    pub memory_mb: Option<i64>,
    pub volume_gb: Option<i64>,
    pub ips: Option<i64>,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        let quota = aloft_control::Quota::default();
        QuotaSettings {
            apps: quota.apps,
            cpus: quota.cpus,
            memory_mb: quota.memory_mb,
            volume_gb: quota.volume_gb,
            ips: quota.ips,
            orgs: BTreeMap::new(),
        }
    }
}

impl QuotaSettings {
    /// The quotas as the control plane checks them.
    pub fn quotas(&self) -> aloft_control::Quotas {
        let default = aloft_control::Quota {
            apps: self.apps,
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            volume_gb: self.volume_gb,
            ips: self.ips,
        };
        aloft_control::Quotas {
            default,
            by_org: self
                .orgs
                .iter()
                .map(|(slug, own)| {
                    (
                        slug.clone(),
                        aloft_control::Quota {
                            apps: own.apps.unwrap_or(default.apps),
                            cpus: own.cpus.unwrap_or(default.cpus),
                            memory_mb: own.memory_mb.unwrap_or(default.memory_mb),
                            volume_gb: own.volume_gb.unwrap_or(default.volume_gb),
                            ips: own.ips.unwrap_or(default.ips),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The first negative quota, as (key, message).
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        let quotas = self.quotas();
        let named = std::iter::once((String::new(), quotas.default)).chain(
            quotas
                .by_org
                .iter()
                .map(|(s, q)| (format!("orgs.{s}."), *q)),
        );
        for (prefix, quota) in named {
            for (key, value) in [
                ("apps", quota.apps),
                ("cpus", quota.cpus),
                ("memory_mb", quota.memory_mb),
                ("volume_gb", quota.volume_gb),
                ("ips", quota.ips),
            ] {
                if value < 0 {
                    return Err((
                        format!("quotas.{prefix}{key}"),
                        format!("{value} is negative: 0 allows none"),
                    ));
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
    fn an_organizations_own_quota_takes_the_rest_from_the_default() {
        let settings: QuotaSettings =
            toml::from_str("cpus = 8\n[orgs.trial]\ncpus = 2\nips = 0\n").unwrap();
        let quotas = settings.quotas();
        assert_eq!(quotas.of("acme").cpus, 8);
        let trial = quotas.of("trial");
        assert_eq!((trial.cpus, trial.ips), (2, 0));
        assert_eq!(trial.apps, aloft_control::Quota::default().apps);
        assert_eq!(settings.check(), Ok(()));
        let bad: QuotaSettings = toml::from_str("[orgs.trial]\nmemory_mb = -1\n").unwrap();
        assert_eq!(bad.check().unwrap_err().0, "quotas.orgs.trial.memory_mb");
        assert!(toml::from_str::<QuotaSettings>("[orgs.trial]\ncpu = 2\n").is_err());
    }
}
