//! Apps' public addresses. An address belongs to one app until released; allocation takes
//! the first free one of the candidates it is given (the control plane's pool), retrying
//! when a concurrent allocation took it first.

use aloft_types::AppId;
use sqlx::Row;

use crate::{Store, StoreError, now_ms};

/// Attempts before an allocation that keeps colliding is reported.
const ALLOCATION_ATTEMPTS: usize = 8;

/// One address of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRecord {
    pub address: String,
    pub app_id: AppId,
    pub kind: aloft_types::IpKind,
    pub region: String,
    pub created_at: i64,
}

fn record_from(row: &sqlx::any::AnyRow) -> Result<IpRecord, StoreError> {
    let address: String =
        row.try_get(0)
            .map_err(StoreError::database("reading an address", "address", "*"))?;
    let app: String = row.try_get(1).map_err(StoreError::database(
        "reading an address",
        "address",
        &address,
    ))?;
    Ok(IpRecord {
        app_id: app
            .parse()
            .map_err(|e| StoreError::corrupt("address", &address, e))?,
        kind: row
            .try_get::<String, _>(2)
            .map_err(StoreError::database(
                "reading an address",
                "address",
                &address,
            ))?
            .parse()
            .map_err(|e| StoreError::corrupt("address", &address, e))?,
        region: row.try_get(3).map_err(StoreError::database(
            "reading an address",
            "address",
            &address,
        ))?,
        created_at: row.try_get(4).map_err(StoreError::database(
            "reading an address",
            "address",
            &address,
        ))?,
        address,
    })
}

const COLUMNS: &str = "address, app_id, kind, region, created_at";

impl Store {
    /// Gives `app` the first of `candidates` no app holds.
    pub async fn allocate_ip(
        &self,
        app: &AppId,
        kind: aloft_types::IpKind,
        region: &str,
        candidates: impl Iterator<Item = String> + Clone,
    ) -> Result<IpRecord, StoreError> {
        for _ in 0..ALLOCATION_ATTEMPTS {
            let taken: std::collections::HashSet<String> =
                sqlx::query_scalar("SELECT address FROM ip_addresses")
                    .fetch_all(self.pool())
                    .await
                    .map_err(StoreError::database("listing addresses", "address", "*"))?
                    .into_iter()
                    .collect();
            let Some(address) = candidates.clone().find(|a| !taken.contains(a)) else {
                return Err(StoreError::Conflict {
                    what: "address pool",
                    id: kind.to_string(),
                    reason: "every address is taken".to_owned(),
                });
            };
            let record = IpRecord {
                address,
                app_id: app.clone(),
                kind,
                region: region.to_owned(),
                created_at: now_ms(),
            };
            let inserted = sqlx::query(&format!(
                "INSERT INTO ip_addresses ({COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
            ))
            .bind(&record.address)
            .bind(record.app_id.as_str())
            .bind(record.kind.as_str())
            .bind(&record.region)
            .bind(record.created_at)
            .execute(self.pool())
            .await
            .map_err(StoreError::database(
                "allocating an address",
                "address",
                &record.address,
            ));
            match inserted {
                Ok(_) => return Ok(record),
                Err(StoreError::Conflict { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Conflict {
            what: "address pool",
            id: kind.to_string(),
            reason: "allocation kept colliding; try again".to_owned(),
        })
    }

    /// An app's addresses, oldest first.
    pub async fn ips_of_app(&self, app: &AppId) -> Result<Vec<IpRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ip_addresses WHERE app_id = $1 ORDER BY created_at, address"
        ))
        .bind(app.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing addresses",
            "app",
            app.as_str(),
        ))?;
        rows.iter().map(record_from).collect()
    }

    /// Every app's addresses (for the catalog).
    pub async fn all_ips(&self) -> Result<Vec<IpRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ip_addresses ORDER BY app_id, created_at, address"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("listing addresses", "address", "*"))?;
        rows.iter().map(record_from).collect()
    }

    /// Takes `address` back from `app`.
    pub async fn release_ip(&self, app: &AppId, address: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM ip_addresses WHERE app_id = $1 AND address = $2")
            .bind(app.as_str())
            .bind(address)
            .execute(self.pool())
            .await
            .map_err(StoreError::database(
                "releasing an address",
                "address",
                address,
            ))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "address",
                id: address.to_owned(),
            });
        }
        Ok(())
    }
}
