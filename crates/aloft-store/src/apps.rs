//! Apps: a name (global, it becomes a DNS label), an owner and a private network.

use aloft_types::{AppId, AppName, OrgId};
use sqlx::any::AnyRow;

use crate::{Store, StoreError, column, now_ms, random, typed};

/// An app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: AppId,
    pub name: AppName,
    pub org_id: OrgId,
    /// The private network its machines join (the organization's default unless named).
    pub network: String,
    /// Grows with every change of the app's secrets.
    pub secrets_version: i64,
    pub created_at: i64,
}

fn app_from(row: &AnyRow) -> Result<App, StoreError> {
    const WHAT: &str = "app";
    Ok(App {
        id: typed(row, WHAT, "id")?,
        name: typed(row, WHAT, "name")?,
        org_id: typed(row, WHAT, "org_id")?,
        network: column(row, WHAT, "network")?,
        secrets_version: column(row, WHAT, "secrets_version")?,
        created_at: column(row, WHAT, "created_at")?,
    })
}

const APP_COLUMNS: &str = "id, name, org_id, network, secrets_version, created_at";

impl Store {
    pub async fn create_app(
        &self,
        name: &AppName,
        org_id: &OrgId,
        network: &str,
    ) -> Result<App, StoreError> {
        let app = App {
            id: AppId::generate(random()),
            name: name.clone(),
            org_id: org_id.clone(),
            network: network.to_owned(),
            secrets_version: 0,
            created_at: now_ms(),
        };
        sqlx::query("INSERT INTO apps (id, name, org_id, network, secrets_version, created_at) VALUES ($1, $2, $3, $4, 0, $5)")
            .bind(app.id.as_str())
            .bind(name.as_str())
            .bind(org_id.as_str())
            .bind(network)
            .bind(app.created_at)
            .execute(self.pool())
            .await
            .map_err(StoreError::database("creating an app", "app", name.as_str()))?;
        Ok(app)
    }

    /// The app named `name`, in any organization (callers check ownership).
    pub async fn app_by_name(&self, name: &str) -> Result<App, StoreError> {
        let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database("finding an app", "app", name))?;
        row.as_ref()
            .map(app_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                what: "app",
                id: name.to_owned(),
            })
    }

    pub async fn app(&self, id: &AppId) -> Result<App, StoreError> {
        let row = sqlx::query(&format!("SELECT {APP_COLUMNS} FROM apps WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database("finding an app", "app", id.as_str()))?;
        row.as_ref()
            .map(app_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                what: "app",
                id: id.to_string(),
            })
    }

    pub async fn list_apps(&self, org_id: &OrgId) -> Result<Vec<App>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE org_id = $1 ORDER BY name"
        ))
        .bind(org_id.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing apps",
            "organization",
            org_id.as_str(),
        ))?;
        rows.iter().map(app_from).collect()
    }

    /// Deletes an app with no machine left alive (destroyed ones go with it).
    pub async fn delete_app(&self, id: &AppId) -> Result<(), StoreError> {
        let alive: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM machines WHERE app_id = $1 AND state NOT IN ('destroyed', 'replaced', 'migrated')")
            .bind(id.as_str())
            .fetch_one(self.pool())
            .await
            .map_err(StoreError::database("counting machines", "app", id.as_str()))?;
        if alive > 0 {
            return Err(StoreError::Conflict {
                what: "app",
                id: id.to_string(),
                reason: format!("{alive} machine(s) still exist; destroy them first"),
            });
        }
        let failed = |operation| StoreError::database(operation, "app", id.as_str());
        // Writes only, the first one taking SQLite's write lock: a transaction that read
        // first could not upgrade while the agents write (SQLITE_BUSY, with no wait).
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(failed("deleting an app"))?;
        sqlx::query(
            "INSERT INTO deleted_apps (name, deleted_at) SELECT name, $2 FROM apps WHERE id = $1 \
             ON CONFLICT (name) DO UPDATE SET deleted_at = excluded.deleted_at",
        )
        .bind(id.as_str())
        .bind(crate::now_ms())
        .execute(&mut *tx)
        .await
        .map_err(failed("recording an app's deletion"))?;
        // What only the app's releases and volumes refer to (the hosts have deleted the
        // snapshots' archives first).
        for table in ["release_configs", "volume_snapshots"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE app_id = $1"))
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(failed("deleting an app's records"))?;
        }
        let deleted = sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(failed("deleting an app"))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "app",
                id: id.to_string(),
            });
        }
        tx.commit().await.map_err(failed("deleting an app"))?;
        Ok(())
    }

    /// When an app named `name` was last deleted (Unix ms), if one ever was.
    pub async fn app_name_freed_at(&self, name: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT deleted_at FROM deleted_apps WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database(
                "reading an app name's deletion",
                "app",
                name,
            ))
    }
}
