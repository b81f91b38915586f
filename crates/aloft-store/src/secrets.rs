//! App secrets, as ciphertext and digest (the store never sees a value in the clear).

use aloft_types::AppId;

use crate::{Store, StoreError, column, now_ms};

/// A secret's record as listed: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub name: String,
    /// A digest of the value, so users can tell whether it changed.
    pub digest: String,
    /// The app's secrets version when this secret was last set.
    pub version: i64,
    pub created_at: i64,
}

/// Moves the app's secrets version on by one, inside `tx`; returns the new version.
async fn next_secrets_version(tx: &mut crate::busy::Tx, app_id: &AppId) -> Result<i64, StoreError> {
    let version: Option<i64> = sqlx::query_scalar("UPDATE apps SET secrets_version = secrets_version + 1 WHERE id = $1 RETURNING secrets_version")
        .bind(app_id.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(StoreError::database("versioning secrets", "app", app_id.as_str()))?;
    version.ok_or_else(|| StoreError::NotFound {
        what: "app",
        id: app_id.to_string(),
    })
}

impl Store {
    /// Sets (adds or replaces) secrets in one change; returns the app's new secrets version.
    /// Each entry is `(name, ciphertext, digest)`.
    pub async fn set_secrets(
        &self,
        app_id: &AppId,
        entries: &[(String, String, String)],
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::database(
            "starting a transaction",
            "app",
            app_id.as_str(),
        ))?;
        let version = next_secrets_version(&mut tx, app_id).await?;
        let now = now_ms();
        for (name, ciphertext, digest) in entries {
            sqlx::query(
                "INSERT INTO secrets (app_id, name, ciphertext, digest, version, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (app_id, name) DO UPDATE SET ciphertext = $3, digest = $4, version = $5, created_at = $6",
            )
            .bind(app_id.as_str())
            .bind(name)
            .bind(ciphertext)
            .bind(digest)
            .bind(version)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database("setting a secret", "secret", name))?;
        }
        tx.commit().await.map_err(StoreError::database(
            "setting secrets",
            "app",
            app_id.as_str(),
        ))?;
        Ok(version)
    }

    /// Removes secrets; returns the app's new secrets version. Names that are not set are
    /// reported as not found, and nothing is removed.
    pub async fn unset_secrets(&self, app_id: &AppId, names: &[String]) -> Result<i64, StoreError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::database(
            "starting a transaction",
            "app",
            app_id.as_str(),
        ))?;
        for name in names {
            let deleted = sqlx::query("DELETE FROM secrets WHERE app_id = $1 AND name = $2")
                .bind(app_id.as_str())
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::database("unsetting a secret", "secret", name))?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::NotFound {
                    what: "secret",
                    id: name.clone(),
                });
            }
        }
        let version = next_secrets_version(&mut tx, app_id).await?;
        tx.commit().await.map_err(StoreError::database(
            "unsetting secrets",
            "app",
            app_id.as_str(),
        ))?;
        Ok(version)
    }

    /// The app's secrets, by name, without values.
    pub async fn list_secrets(&self, app_id: &AppId) -> Result<Vec<SecretRecord>, StoreError> {
        const WHAT: &str = "secret";
        let rows = sqlx::query(
            "SELECT name, digest, version, created_at FROM secrets WHERE app_id = $1 ORDER BY name",
        )
        .bind(app_id.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing secrets",
            "app",
            app_id.as_str(),
        ))?;
        rows.iter()
            .map(|row| {
                Ok(SecretRecord {
                    name: column(row, WHAT, "name")?,
                    digest: column(row, WHAT, "digest")?,
                    version: column(row, WHAT, "version")?,
                    created_at: column(row, WHAT, "created_at")?,
                })
            })
            .collect()
    }

    /// `(name, ciphertext)` of every secret, for the machines' environment.
    pub async fn secret_ciphertexts(
        &self,
        app_id: &AppId,
    ) -> Result<Vec<(String, String)>, StoreError> {
        const WHAT: &str = "secret";
        let rows =
            sqlx::query("SELECT name, ciphertext FROM secrets WHERE app_id = $1 ORDER BY name")
                .bind(app_id.as_str())
                .fetch_all(self.pool())
                .await
                .map_err(StoreError::database(
                    "reading secrets",
                    "app",
                    app_id.as_str(),
                ))?;
        rows.iter()
            .map(|row| Ok((column(row, WHAT, "name")?, column(row, WHAT, "ciphertext")?)))
            .collect()
    }
}
