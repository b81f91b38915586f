//! Hosts that run machines, with their region, capacity and last heartbeat; the state
//! their operator set, and when the control plane declared them down.

use aloft_types::{HostId, HostState};
use sqlx::any::AnyRow;

use crate::{Store, StoreError, column, typed};

pub use aloft_agent_api::Host;

/// A host as the control plane keeps it: what its agent reports, what its operator set,
/// and when it was declared down (missed heartbeats; its next heartbeat clears it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    pub host: Host,
    /// `up`, `cordoned` or `draining`, as the operator set it.
    pub set: HostState,
    pub down_at: Option<i64>,
}

impl HostRecord {
    /// `down` while declared down, else what the operator set.
    pub fn state(&self) -> HostState {
        if self.down_at.is_some() {
            HostState::Down
        } else {
            self.set
        }
    }
}

const HOST_COLUMNS: &str =
    "id, region, cpus, memory_mb, address, last_heartbeat, state, down_at, encrypts_volumes";

fn record_from(row: &AnyRow) -> Result<HostRecord, StoreError> {
    Ok(HostRecord {
        host: host_from(row)?,
        set: typed(row, "host", "state")?,
        down_at: column(row, "host", "down_at")?,
    })
}

fn host_from(row: &AnyRow) -> Result<Host, StoreError> {
    const WHAT: &str = "host";
    Ok(Host {
        id: typed(row, WHAT, "id")?,
        region: column(row, WHAT, "region")?,
        cpus: column(row, WHAT, "cpus")?,
        memory_mb: column(row, WHAT, "memory_mb")?,
        address: column(row, WHAT, "address")?,
        last_heartbeat: column(row, WHAT, "last_heartbeat")?,
        encrypts_volumes: column::<i64>(row, WHAT, "encrypts_volumes")? != 0,
    })
}

impl Store {
    /// Registers a host, or records its heartbeat and current capacity (a host declared
    /// down is up again).
    pub async fn upsert_host(&self, host: &Host) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO hosts (id, region, cpus, memory_mb, address, last_heartbeat, encrypts_volumes) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET region = $2, cpus = $3, memory_mb = $4, address = $5, last_heartbeat = $6, encrypts_volumes = $7, down_at = NULL",
        )
        .bind(host.id.as_str())
        .bind(&host.region)
        .bind(host.cpus)
        .bind(host.memory_mb)
        .bind(host.address.clone())
        .bind(host.last_heartbeat)
        .bind(i64::from(host.encrypts_volumes))
        .execute(self.pool())
        .await
        .map_err(StoreError::database("registering a host", "host", host.id.as_str()))?;
        Ok(())
    }

    pub async fn list_hosts(&self) -> Result<Vec<Host>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, region, cpus, memory_mb, address, last_heartbeat, encrypts_volumes FROM hosts ORDER BY id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("listing hosts", "host", "*"))?;
        rows.iter().map(host_from).collect()
    }

    /// Every host with its state, by id.
    pub async fn host_records(&self) -> Result<Vec<HostRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY id"))
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::database("listing hosts", "host", "*"))?;
        rows.iter().map(record_from).collect()
    }

    pub async fn host_record(&self, id: &HostId) -> Result<HostRecord, StoreError> {
        let row = sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database("reading a host", "host", id.as_str()))?;
        match row {
            Some(row) => record_from(&row),
            None => Err(StoreError::NotFound {
                what: "host",
                id: id.to_string(),
            }),
        }
    }

    /// Sets what the operator decided for a host: `up`, `cordoned` or `draining`.
    pub async fn set_host_state(&self, id: &HostId, state: HostState) -> Result<(), StoreError> {
        if state == HostState::Down {
            return Err(StoreError::Conflict {
                what: "host",
                id: id.to_string(),
                reason: "a host is declared down by its missed heartbeats, not set down".to_owned(),
            });
        }
        let done = sqlx::query("UPDATE hosts SET state = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(state.as_str())
            .execute(self.pool())
            .await
            .map_err(StoreError::database(
                "setting a host's state",
                "host",
                id.as_str(),
            ))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "host",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Declares a host down at `at` if its last heartbeat is older than `cutoff` and it
    /// is not down already (a heartbeat that comes in meanwhile wins); whether it did.
    pub async fn mark_host_down(
        &self,
        id: &HostId,
        cutoff: i64,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE hosts SET down_at = $3 WHERE id = $1 AND last_heartbeat < $2 AND down_at IS NULL",
        )
        .bind(id.as_str())
        .bind(cutoff)
        .bind(at)
        .execute(self.pool())
        .await
        .map_err(StoreError::database("declaring a host down", "host", id.as_str()))?;
        Ok(done.rows_affected() > 0)
    }
}
