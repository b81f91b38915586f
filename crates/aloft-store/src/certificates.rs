//! Apps' own hostnames and their certificates. A hostname belongs to one app; an imported
//! certificate's key arrives sealed (the store never sees it in the clear).

use aloft_types::AppId;
use sqlx::Row;

use crate::{Store, StoreError, now_ms};

/// One hostname of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub hostname: String,
    pub app_id: AppId,
    /// `local` or `custom`.
    pub source: String,
    /// PEM, for `custom`.
    pub fullchain: Option<String>,
    /// The private key, sealed, for `custom`.
    pub private_key_sealed: Option<String>,
    pub created_at: i64,
}

const COLUMNS: &str = "hostname, app_id, source, fullchain, private_key_sealed, created_at";

fn record_from(row: &sqlx::any::AnyRow) -> Result<CertificateRecord, StoreError> {
    let hostname: String = row.try_get(0).map_err(StoreError::database(
        "reading a certificate",
        "certificate",
        "*",
    ))?;
    let read = |e| StoreError::database("reading a certificate", "certificate", &hostname)(e);
    let app: String = row.try_get(1).map_err(read)?;
    Ok(CertificateRecord {
        app_id: app
            .parse()
            .map_err(|e| StoreError::corrupt("certificate", &hostname, e))?,
        source: row.try_get(2).map_err(read)?,
        fullchain: row.try_get(3).map_err(read)?,
        private_key_sealed: row.try_get(4).map_err(read)?,
        created_at: row.try_get(5).map_err(read)?,
        hostname,
    })
}

impl Store {
    /// Gives `record.hostname` to its app; a hostname another app holds is a conflict, and
    /// the same app's is replaced (a new certificate for it).
    pub async fn put_certificate(&self, record: &CertificateRecord) -> Result<(), StoreError> {
        let holder: Option<String> =
            sqlx::query_scalar("SELECT app_id FROM certificates WHERE hostname = $1")
                .bind(&record.hostname)
                .fetch_optional(self.pool())
                .await
                .map_err(StoreError::database(
                    "finding a certificate",
                    "certificate",
                    &record.hostname,
                ))?;
        if let Some(holder) = holder
            && holder != record.app_id.as_str()
        {
            return Err(StoreError::Conflict {
                what: "hostname",
                id: record.hostname.clone(),
                reason: "another app answers at it".to_owned(),
            });
        }
        sqlx::query(&format!(
            "INSERT INTO certificates ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (hostname) DO UPDATE SET source = excluded.source, \
             fullchain = excluded.fullchain, private_key_sealed = excluded.private_key_sealed, \
             created_at = excluded.created_at"
        ))
        .bind(&record.hostname)
        .bind(record.app_id.as_str())
        .bind(&record.source)
        .bind(record.fullchain.clone())
        .bind(record.private_key_sealed.clone())
        .bind(if record.created_at == 0 {
            now_ms()
        } else {
            record.created_at
        })
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "storing a certificate",
            "hostname",
            &record.hostname,
        ))?;
        Ok(())
    }

    /// An app's hostnames, by name.
    pub async fn certificates_of_app(
        &self,
        app: &AppId,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM certificates WHERE app_id = $1 ORDER BY hostname"
        ))
        .bind(app.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing certificates",
            "app",
            app.as_str(),
        ))?;
        rows.iter().map(record_from).collect()
    }

    /// Every app's hostnames (for the catalog).
    pub async fn all_certificates(&self) -> Result<Vec<CertificateRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM certificates ORDER BY hostname"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing certificates",
            "certificate",
            "*",
        ))?;
        rows.iter().map(record_from).collect()
    }

    /// Takes `hostname` away from `app`.
    pub async fn delete_certificate(&self, app: &AppId, hostname: &str) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM certificates WHERE app_id = $1 AND hostname = $2")
            .bind(app.as_str())
            .bind(hostname)
            .execute(self.pool())
            .await
            .map_err(StoreError::database(
                "removing a certificate",
                "hostname",
                hostname,
            ))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "certificate",
                id: hostname.to_owned(),
            });
        }
        Ok(())
    }
}
