//! Machine leases (Fly's `lease` endpoints): one holder at a time, refreshed by nonce.

use aloft_types::{AppId, MachineId};

use crate::{Lease, Store, StoreError, now_ms};

impl Store {
    /// Takes a lease on a machine for `ttl_ms`, or refreshes the one `nonce` names. Fails
    /// while someone else holds an unexpired lease.
    pub async fn acquire_lease(
        &self,
        app_id: &AppId,
        id: &MachineId,
        ttl_ms: i64,
        owner: &str,
        description: &str,
        nonce: Option<&str>,
    ) -> Result<Lease, StoreError> {
        let now = now_ms();
        let new_nonce = match nonce {
            Some(existing) => existing.to_owned(),
            None => crate::random_hex(),
        };
        let lease = Lease {
            nonce: new_nonce,
            owner: owner.to_owned(),
            description: description.to_owned(),
            expires_at: now + ttl_ms,
        };
        let updated = sqlx::query(
            "UPDATE machines SET lease_nonce = $1, lease_owner = $2, lease_description = $3, lease_expires_at = $4 \
             WHERE id = $5 AND app_id = $6 AND (lease_nonce IS NULL OR lease_expires_at <= $7 OR lease_nonce = $8)",
        )
        .bind(&lease.nonce)
        .bind(owner)
        .bind(description)
        .bind(lease.expires_at)
        .bind(id.as_str())
        .bind(app_id.as_str())
        .bind(now)
        .bind(nonce.map(str::to_owned))
        .execute(self.pool())
        .await
        .map_err(StoreError::database("taking a lease", "machine", id.as_str()))?;
        if updated.rows_affected() == 0 {
            let machine = self.machine(app_id, id).await?;
            let reason = match (&machine.lease, nonce) {
                (Some(held), Some(_)) => format!(
                    "the lease nonce does not match the lease held by {}",
                    held.owner
                ),
                (Some(held), None) => format!(
                    "a lease is held by {} until {}",
                    held.owner, held.expires_at
                ),
                (None, _) => "the lease expired".to_owned(),
            };
            return Err(StoreError::Conflict {
                what: "machine lease",
                id: id.to_string(),
                reason,
            });
        }
        Ok(lease)
    }

    /// Releases the lease `nonce` names.
    pub async fn release_lease(
        &self,
        app_id: &AppId,
        id: &MachineId,
        nonce: &str,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE machines SET lease_nonce = NULL, lease_owner = NULL, lease_description = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND app_id = $2 AND lease_nonce = $3",
        )
        .bind(id.as_str())
        .bind(app_id.as_str())
        .bind(nonce)
        .execute(self.pool())
        .await
        .map_err(StoreError::database("releasing a lease", "machine", id.as_str()))?;
        if updated.rows_affected() == 0 {
            self.machine(app_id, id).await?;
            return Err(StoreError::Conflict {
                what: "machine lease",
                id: id.to_string(),
                reason: "no lease with that nonce".to_owned(),
            });
        }
        Ok(())
    }
}
