//! Hosts that run machines, with their region, capacity and last heartbeat.

use sqlx::any::AnyRow;

use crate::{Store, StoreError, column, typed};

pub use aloft_agent_api::Host;

fn host_from(row: &AnyRow) -> Result<Host, StoreError> {
    const WHAT: &str = "host";
    Ok(Host {
        id: typed(row, WHAT, "id")?,
        region: column(row, WHAT, "region")?,
        cpus: column(row, WHAT, "cpus")?,
        memory_mb: column(row, WHAT, "memory_mb")?,
        address: column(row, WHAT, "address")?,
        last_heartbeat: column(row, WHAT, "last_heartbeat")?,
    })
}

impl Store {
    /// Registers a host, or records its heartbeat and current capacity.
    pub async fn upsert_host(&self, host: &Host) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO hosts (id, region, cpus, memory_mb, address, last_heartbeat) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET region = $2, cpus = $3, memory_mb = $4, address = $5, last_heartbeat = $6",
        )
        .bind(host.id.as_str())
        .bind(&host.region)
        .bind(host.cpus)
        .bind(host.memory_mb)
        .bind(host.address.clone())
        .bind(host.last_heartbeat)
        .execute(self.pool())
        .await
        .map_err(StoreError::database("registering a host", "host", host.id.as_str()))?;
        Ok(())
    }

    pub async fn list_hosts(&self) -> Result<Vec<Host>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, region, cpus, memory_mb, address, last_heartbeat FROM hosts ORDER BY id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("listing hosts", "host", "*"))?;
        rows.iter().map(host_from).collect()
    }
}
