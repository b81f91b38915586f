//! A machine's history: its events (`launch`, `start`, `exit`, ...) and every config
//! version it had.

use aloft_types::MachineId;
use aloft_types::machine::MachineConfig;

use crate::machines::not_found;
use crate::{Store, StoreError, column, now_ms};

/// One config version of a machine.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineVersion {
    pub version: i64,
    pub instance_id: String,
    pub config: MachineConfig,
    pub created_at: i64,
}

/// Something that happened to a machine (`launch`, `start`, `exit`, `update`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct MachineEvent {
    /// Numbered from 1 per machine, without gaps.
    pub seq: i64,
    pub kind: aloft_types::EventKind,
    pub status: String,
    /// `user` for API requests, `flyd` for the platform's own doing (Fly's spelling).
    pub source: String,
    /// Details, e.g. `{"exit_event": {"exit_code": 1, ...}}`.
    pub request: serde_json::Value,
    pub at: i64,
}

impl Store {
    /// How many events of each kind and status the machines have had (for metrics:
    /// exits, restarts, launches).
    pub async fn event_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, status, COUNT(*) FROM machine_events GROUP BY kind, status ORDER BY kind, status",
        )
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("counting events", "machine", "*"))?;
        rows.iter()
            .map(|row| {
                let read = |e| StoreError::database("counting events", "machine", "*")(e);
                Ok((
                    sqlx::Row::try_get(row, 0).map_err(read)?,
                    sqlx::Row::try_get(row, 1).map_err(read)?,
                    sqlx::Row::try_get(row, 2).map_err(read)?,
                ))
            })
            .collect()
    }

    /// Records an event; returns its number.
    pub async fn append_event(
        &self,
        id: &MachineId,
        kind: aloft_types::EventKind,
        status: &str,
        source: &str,
        request: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::database(
            "starting a transaction",
            "machine",
            id.as_str(),
        ))?;
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE machines SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::database(
            "numbering an event",
            "machine",
            id.as_str(),
        ))?;
        let seq = seq.ok_or_else(|| not_found(id))?;
        sqlx::query("INSERT INTO machine_events (machine_id, seq, kind, status, source, request, at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(id.as_str())
            .bind(seq)
            .bind(kind.as_str())
            .bind(status)
            .bind(source)
            .bind(request.to_string())
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database("recording an event", "machine", id.as_str()))?;
        tx.commit().await.map_err(StoreError::database(
            "recording an event",
            "machine",
            id.as_str(),
        ))?;
        Ok(seq)
    }

    /// A machine's events, newest first (as Fly lists them).
    pub async fn events(&self, id: &MachineId) -> Result<Vec<MachineEvent>, StoreError> {
        const WHAT: &str = "machine event";
        let rows = sqlx::query("SELECT seq, kind, status, source, request, at FROM machine_events WHERE machine_id = $1 ORDER BY seq DESC")
            .bind(id.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::database("listing events", "machine", id.as_str()))?;
        rows.iter()
            .map(|row| {
                let request: String = column(row, WHAT, "request")?;
                Ok(MachineEvent {
                    seq: column(row, WHAT, "seq")?,
                    kind: column::<String>(row, WHAT, "kind")?
                        .parse()
                        .map_err(|e| StoreError::corrupt(WHAT, id.as_str(), e))?,
                    status: column(row, WHAT, "status")?,
                    source: column(row, WHAT, "source")?,
                    request: serde_json::from_str(&request)
                        .map_err(|e| StoreError::corrupt(WHAT, id.as_str(), e))?,
                    at: column(row, WHAT, "at")?,
                })
            })
            .collect()
    }

    /// Every config version of a machine, newest first.
    pub async fn versions(&self, id: &MachineId) -> Result<Vec<MachineVersion>, StoreError> {
        const WHAT: &str = "machine version";
        let rows = sqlx::query("SELECT version, instance_id, config, created_at FROM machine_versions WHERE machine_id = $1 ORDER BY version DESC")
            .bind(id.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::database("listing versions", "machine", id.as_str()))?;
        rows.iter()
            .map(|row| {
                let config: String = column(row, WHAT, "config")?;
                Ok(MachineVersion {
                    version: column(row, WHAT, "version")?,
                    instance_id: column(row, WHAT, "instance_id")?,
                    config: serde_json::from_str(&config)
                        .map_err(|e| StoreError::corrupt(WHAT, id.as_str(), e))?,
                    created_at: column(row, WHAT, "created_at")?,
                })
            })
            .collect()
    }
}
