//! The fly.toml each release was deployed from, kept so that `aloft config save` can
//! write an app's config where there is no copy of it.

use aloft_types::AppId;
use sqlx::Row as _;

use crate::{Store, StoreError};

/// Records `fly_toml` as the config of release `release_id`, inside the transaction that
/// records the release.
pub(crate) async fn insert(
    tx: &mut crate::busy::Tx,
    release_id: &str,
    app: &str,
    fly_toml: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO release_configs (release_id, app_id, fly_toml, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(release_id)
    .bind(app)
    .bind(fly_toml)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::database("recording a release's fly.toml", "app", app))?;
    Ok(())
}

impl Store {
    /// The fly.toml release `release_id` was deployed from, when it was sent.
    pub async fn release_fly_toml(&self, release_id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT fly_toml FROM release_configs WHERE release_id = $1")
            .bind(release_id)
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database(
                "reading a release's fly.toml",
                "release",
                release_id,
            ))
    }

    /// The app's current fly.toml: that of its newest complete release that has one, else
    /// of its newest release that has one; with the release's number.
    pub async fn app_fly_toml(&self, app: &AppId) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT r.version, c.fly_toml FROM release_configs c JOIN releases r ON r.id = c.release_id \
             WHERE c.app_id = $1 \
             ORDER BY CASE WHEN r.status = 'complete' THEN 0 ELSE 1 END, r.version DESC LIMIT 1",
        )
        .bind(app.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database("reading the app's fly.toml", "app", app.as_str()))?;
        row.map(|row| {
            let read =
                |e| StoreError::database("reading the app's fly.toml", "app", app.as_str())(e);
            Ok((row.try_get(0).map_err(read)?, row.try_get(1).map_err(read)?))
        })
        .transpose()
    }
}
