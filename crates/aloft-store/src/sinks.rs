//! Log sinks: where an organization's or an app's log lines are shipped.

use aloft_types::{AppId, OrgId};
use sqlx::Row;

use crate::{Store, StoreError, now_ms, random_hex};

/// One sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    pub id: String,
    pub org_id: OrgId,
    /// `None`: every app of the organization.
    pub app_id: Option<AppId>,
    pub kind: aloft_types::SinkKind,
    pub url: String,
    /// The headers sent with every request (JSON object), sealed.
    pub headers_sealed: String,
    /// A private CA (PEM) for the collector's certificate.
    pub ca_pem: Option<String>,
    pub created_at: i64,
}

const COLUMNS: &str = "id, org_id, app_id, kind, url, headers_sealed, created_at, ca_pem";

fn record_from(row: &sqlx::any::AnyRow) -> Result<SinkRecord, StoreError> {
    let id: String =
        row.try_get(0)
            .map_err(StoreError::database("reading a log sink", "log sink", "*"))?;
    let read = |e| StoreError::database("reading a log sink", "log sink", &id)(e);
    let org: String = row.try_get(1).map_err(read)?;
    let app: Option<String> = row.try_get(2).map_err(read)?;
    Ok(SinkRecord {
        org_id: org
            .parse()
            .map_err(|e| StoreError::corrupt("log sink", &id, e))?,
        app_id: app
            .map(|a| a.parse())
            .transpose()
            .map_err(|e| StoreError::corrupt("log sink", &id, e))?,
        kind: row
            .try_get::<String, _>(3)
            .map_err(read)?
            .parse()
            .map_err(|e| StoreError::corrupt("log sink", &id, e))?,
        url: row.try_get(4).map_err(read)?,
        headers_sealed: row.try_get(5).map_err(read)?,
        created_at: row.try_get(6).map_err(read)?,
        ca_pem: row.try_get(7).map_err(read)?,
        id,
    })
}

impl Store {
    /// Records a new sink (its id is made here).
    pub async fn add_sink(&self, mut sink: SinkRecord) -> Result<SinkRecord, StoreError> {
        sink.id = random_hex();
        sink.created_at = now_ms();
        sqlx::query(&format!(
            "INSERT INTO log_sinks ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&sink.id)
        .bind(sink.org_id.as_str())
        .bind(sink.app_id.as_ref().map(|a| a.as_str().to_owned()))
        .bind(sink.kind.as_str())
        .bind(&sink.url)
        .bind(&sink.headers_sealed)
        .bind(sink.created_at)
        .bind(sink.ca_pem.clone())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "recording a log sink",
            "log sink",
            &sink.id,
        ))?;
        Ok(sink)
    }

    /// Every sink, oldest first (what the shippers run).
    pub async fn all_sinks(&self) -> Result<Vec<SinkRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM log_sinks ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("listing log sinks", "log sink", "*"))?;
        rows.iter().map(record_from).collect()
    }

    /// The organization's sinks (its own and its apps').
    pub async fn sinks_of(&self, org: &OrgId) -> Result<Vec<SinkRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM log_sinks WHERE org_id = $1 ORDER BY created_at, id"
        ))
        .bind(org.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing log sinks",
            "org",
            org.as_str(),
        ))?;
        rows.iter().map(record_from).collect()
    }

    /// Removes one of the organization's sinks.
    pub async fn remove_sink(&self, org: &OrgId, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM log_sinks WHERE org_id = $1 AND id = $2")
            .bind(org.as_str())
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(StoreError::database("removing a log sink", "log sink", id))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "log sink",
                id: id.to_owned(),
            });
        }
        Ok(())
    }
}
