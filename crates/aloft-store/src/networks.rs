//! Numbers for private-network addresses: one per network (an organization's default or a
//! named one), one per host, one per machine on its host. Numbers start at 1 and are never
//! reused while their owner exists; concurrent allocations that collide are retried.

use aloft_types::{AppId, HostId, MachineId, OrgId};

use crate::{Store, StoreError, now_ms};

/// Attempts before an allocation that keeps colliding is reported.
const ALLOCATION_ATTEMPTS: usize = 8;

/// An app and the number of the network it lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppNetwork {
    pub app_id: AppId,
    pub name: String,
    pub org_id: OrgId,
    pub network: i64,
}

/// A private network of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub number: i64,
    pub org_id: OrgId,
    pub name: String,
}

fn is_conflict(error: &StoreError) -> bool {
    matches!(error, StoreError::Conflict { .. })
}

impl Store {
    /// The network `name` of an organization, created (with the next free number) on first use.
    pub async fn network(&self, org_id: &OrgId, name: &str) -> Result<Network, StoreError> {
        for _ in 0..ALLOCATION_ATTEMPTS {
            let existing: Option<i64> =
                sqlx::query_scalar("SELECT number FROM networks WHERE org_id = $1 AND name = $2")
                    .bind(org_id.as_str())
                    .bind(name)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(StoreError::database("finding a network", "network", name))?;
            if let Some(number) = existing {
                return Ok(Network {
                    number,
                    org_id: org_id.clone(),
                    name: name.to_owned(),
                });
            }
            let inserted = sqlx::query(
                "INSERT INTO networks (number, org_id, name, created_at) \
                 SELECT COALESCE(MAX(number), 0) + 1, $1, $2, $3 FROM networks",
            )
            .bind(org_id.as_str())
            .bind(name)
            .bind(now_ms())
            .execute(self.pool())
            .await
            .map_err(StoreError::database("creating a network", "network", name));
            match inserted {
                Ok(_) => {}
                Err(error) if is_conflict(&error) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Conflict {
            what: "network",
            id: name.to_owned(),
            reason: "allocation kept colliding; try again".to_owned(),
        })
    }

    /// Every app with its organization and network number, by app name (for the catalog).
    pub async fn app_networks(&self) -> Result<Vec<AppNetwork>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT a.id, a.name, a.org_id, n.number FROM apps a \
             JOIN networks n ON n.org_id = a.org_id AND n.name = a.network ORDER BY a.name",
        )
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("listing apps' networks", "app", "*"))?;
        rows.into_iter()
            .map(|(id, name, org_id, network)| {
                Ok(AppNetwork {
                    app_id: id.parse().map_err(|e| StoreError::Corrupt {
                        what: "app",
                        id: id.clone(),
                        source: Box::new(e),
                    })?,
                    name,
                    org_id: org_id.parse().map_err(|e| StoreError::Corrupt {
                        what: "org",
                        id: org_id.clone(),
                        source: Box::new(e),
                    })?,
                    network,
                })
            })
            .collect()
    }

    /// The host's number in every network, given on first use.
    pub async fn host_number(&self, host: &HostId) -> Result<i64, StoreError> {
        for _ in 0..ALLOCATION_ATTEMPTS {
            let current: Option<Option<i64>> =
                sqlx::query_scalar("SELECT number FROM hosts WHERE id = $1")
                    .bind(host.as_str())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(StoreError::database(
                        "finding a host",
                        "host",
                        host.as_str(),
                    ))?;
            match current {
                None => {
                    return Err(StoreError::NotFound {
                        what: "host",
                        id: host.to_string(),
                    });
                }
                Some(Some(number)) => return Ok(number),
                Some(None) => {}
            }
            let assigned = sqlx::query(
                "UPDATE hosts SET number = (SELECT COALESCE(MAX(number), 0) + 1 FROM hosts) WHERE id = $1 AND number IS NULL",
            )
            .bind(host.as_str())
            .execute(self.pool())
            .await
            .map_err(StoreError::database("numbering a host", "host", host.as_str()));
            match assigned {
                Ok(_) => {}
                Err(error) if is_conflict(&error) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Conflict {
            what: "host",
            id: host.to_string(),
            reason: "numbering kept colliding; try again".to_owned(),
        })
    }

    /// The machine's number on its host, given on first use.
    pub async fn machine_number(&self, machine: &MachineId) -> Result<i64, StoreError> {
        for _ in 0..ALLOCATION_ATTEMPTS {
            let current: Option<(Option<i64>, Option<String>)> =
                sqlx::query_as("SELECT number, host_id FROM machines WHERE id = $1")
                    .bind(machine.as_str())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(StoreError::database(
                        "finding a machine",
                        "machine",
                        machine.as_str(),
                    ))?;
            let (number, host) = current.ok_or_else(|| StoreError::NotFound {
                what: "machine",
                id: machine.to_string(),
            })?;
            if let Some(number) = number {
                return Ok(number);
            }
            let host = host.ok_or_else(|| StoreError::Conflict {
                what: "machine",
                id: machine.to_string(),
                reason: "it is on no host yet".to_owned(),
            })?;
            let assigned = sqlx::query(
                "UPDATE machines SET number = (SELECT COALESCE(MAX(number), 0) + 1 FROM machines WHERE host_id = $1) \
                 WHERE id = $2 AND number IS NULL",
            )
            .bind(&host)
            .bind(machine.as_str())
            .execute(self.pool())
            .await
            .map_err(StoreError::database("numbering a machine", "machine", machine.as_str()));
            match assigned {
                Ok(_) => {}
                Err(error) if is_conflict(&error) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Conflict {
            what: "machine",
            id: machine.to_string(),
            reason: "numbering kept colliding; try again".to_owned(),
        })
    }
}
