//! Apps' own hostnames and their certificates. A hostname belongs to one app; an imported
//! or ACME-issued certificate's key arrives sealed (the store never sees it in the clear).

use aloft_types::AppId;
use aloft_types::catalog::AcmeChallenge;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{Store, StoreError, now_ms};

/// One hostname of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub hostname: String,
    pub app_id: AppId,
    /// How the hostname was added: `local` (the edge's local CA), `custom` (imported) or
    /// `acme`.
    pub source: String,
    /// PEM, for an imported certificate.
    pub fullchain: Option<String>,
    /// The imported certificate's private key, sealed.
    pub private_key_sealed: Option<String>,
    /// The hostname's ACME certificate and its progress; `None`: none was asked for.
    pub acme: Option<AcmeState>,
    /// The ACME certificate's private key, sealed.
    pub acme_key_sealed: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl CertificateRecord {
    /// A new hostname of `app`, added as `source` says, with nothing issued yet.
    pub fn new(hostname: String, app_id: AppId, source: &str) -> CertificateRecord {
        let now = now_ms();
        CertificateRecord {
            hostname,
            app_id,
            source: source.to_owned(),
            fullchain: None,
            private_key_sealed: None,
            acme: None,
            acme_key_sealed: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// Where a hostname's ACME certificate stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcmeStatus {
    /// Its DNS does not point at the app yet: nothing is ordered.
    #[default]
    PendingOwnership,
    /// An order is in flight: the edge answers its challenge.
    PendingValidation,
    /// A certificate was issued and is served (renewals keep this status).
    Active,
}

/// A hostname's ACME state, stored as JSON in the `acme` column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AcmeState {
    pub status: AcmeStatus,
    /// The issued chain (PEM), served once `Active`.
    pub fullchain: Option<String>,
    /// When the served certificate was issued and when it expires (ms since the epoch).
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// The challenge the edge answers while an order waits.
    pub challenge: Option<AcmeChallenge>,
    /// What the last look at the hostname's DNS and the last order showed.
    pub dns_configured: bool,
    pub alpn_configured: bool,
    pub http_configured: bool,
    /// Failed attempts in a row (ownership looks and orders); the backoff grows with them.
    pub attempts: u32,
    /// The next look or order is not before this (ms since the epoch).
    pub next_attempt_at: i64,
    /// The newest failures, oldest first (at most [`AcmeState::ERRORS_KEPT`]).
    pub errors: Vec<AcmeFailure>,
}

impl AcmeState {
    /// How many failures a hostname keeps.
    pub const ERRORS_KEPT: usize = 10;

    /// Records a failure, dropping the oldest beyond [`AcmeState::ERRORS_KEPT`].
    pub fn failed(&mut self, message: String, at: i64) {
        self.errors.push(AcmeFailure { message, at });
        let extra = self.errors.len().saturating_sub(Self::ERRORS_KEPT);
        self.errors.drain(..extra);
    }
}

/// One failed look or order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeFailure {
    pub message: String,
    /// ms since the epoch.
    pub at: i64,
}

const COLUMNS: &str = "hostname, app_id, source, fullchain, private_key_sealed, created_at, acme, acme_key_sealed, updated_at";

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
        acme: row
            .try_get::<Option<String>, _>(6)
            .map_err(read)?
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| StoreError::corrupt("certificate", &hostname, e))?,
        acme_key_sealed: row.try_get(7).map_err(read)?,
        updated_at: row.try_get(8).map_err(read)?,
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
        let acme = record
            .acme
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::corrupt("certificate", &record.hostname, e))?;
        sqlx::query(&format!(
            "INSERT INTO certificates ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (hostname) DO UPDATE SET source = excluded.source, \
             fullchain = excluded.fullchain, private_key_sealed = excluded.private_key_sealed, \
             created_at = excluded.created_at, acme = excluded.acme, \
             acme_key_sealed = excluded.acme_key_sealed, updated_at = excluded.updated_at"
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
        .bind(acme)
        .bind(record.acme_key_sealed.clone())
        .bind(now_ms())
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

    /// One hostname of `app`.
    pub async fn certificate(
        &self,
        app: &AppId,
        hostname: &str,
    ) -> Result<CertificateRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM certificates WHERE app_id = $1 AND hostname = $2"
        ))
        .bind(app.as_str())
        .bind(hostname)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database(
            "finding a certificate",
            "hostname",
            hostname,
        ))?;
        match row {
            Some(row) => record_from(&row),
            None => Err(StoreError::NotFound {
                what: "certificate",
                id: hostname.to_owned(),
            }),
        }
    }

    /// Replaces the ACME state (and key) of `hostname` if `app` still holds it and nobody
    /// changed it since `seen` (its `updated_at` when read): false if it was removed or
    /// changed meanwhile (the caller reads it again).
    pub async fn set_acme(
        &self,
        app: &AppId,
        hostname: &str,
        seen: i64,
        acme: Option<&AcmeState>,
        key_sealed: Option<&str>,
    ) -> Result<i64, StoreError> {
        let text = acme
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::corrupt("certificate", hostname, e))?;
        // Strictly later than `seen`, so the next writer's compare tells the two apart.
        let now = now_ms().max(seen + 1);
        let done = sqlx::query(
            "UPDATE certificates SET acme = $1, acme_key_sealed = $2, updated_at = $3 \
             WHERE app_id = $4 AND hostname = $5 AND updated_at = $6",
        )
        .bind(text)
        .bind(key_sealed.map(str::to_owned))
        .bind(now)
        .bind(app.as_str())
        .bind(hostname)
        .bind(seen)
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "storing a certificate's ACME state",
            "hostname",
            hostname,
        ))?;
        Ok(if done.rows_affected() == 1 { now } else { 0 })
    }

    /// The sealed credentials of the ACME account on `directory`, if one was made.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT credentials_sealed FROM acme_accounts WHERE directory = $1")
            .bind(directory)
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database(
                "finding an ACME account",
                "directory",
                directory,
            ))
    }

    /// Keeps the sealed credentials of the account made on `directory`; the first one
    /// stored wins (two control planes making accounts at once keep one).
    pub async fn put_acme_account(
        &self,
        directory: &str,
        credentials_sealed: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO acme_accounts (directory, credentials_sealed, created_at) \
             VALUES ($1, $2, $3) ON CONFLICT (directory) DO NOTHING",
        )
        .bind(directory)
        .bind(credentials_sealed)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "storing an ACME account",
            "directory",
            directory,
        ))?;
        Ok(())
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
