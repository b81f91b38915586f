//! Organizations' SSH certificate authorities.

use aloft_types::OrgId;
use sqlx::Row;

use crate::{Store, StoreError, now_ms};

/// One organization's CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAuthority {
    pub org_id: OrgId,
    /// `ssh-ed25519 AAAA…`.
    pub public_key: String,
    /// The private key (OpenSSH PEM), sealed with the secrets key.
    pub private_key_sealed: String,
    pub created_at: i64,
}

impl Store {
    /// The organization's CA, if it has one yet.
    pub async fn ssh_authority(&self, org: &OrgId) -> Result<Option<SshAuthority>, StoreError> {
        let read = StoreError::database("reading an SSH authority", "organization", org.as_str());
        let row = sqlx::query(
            "SELECT public_key, private_key_sealed, created_at FROM ssh_authorities WHERE org_id = $1",
        )
        .bind(org.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(read)?;
        let Some(row) = row else { return Ok(None) };
        let read = StoreError::database("reading an SSH authority", "organization", org.as_str());
        let public_key: String = row.try_get(0).map_err(read)?;
        let read = StoreError::database("reading an SSH authority", "organization", org.as_str());
        let private_key_sealed: String = row.try_get(1).map_err(read)?;
        let read = StoreError::database("reading an SSH authority", "organization", org.as_str());
        let created_at: i64 = row.try_get(2).map_err(read)?;
        Ok(Some(SshAuthority {
            org_id: org.clone(),
            public_key,
            private_key_sealed,
            created_at,
        }))
    }

    /// Keeps `authority` as its organization's CA unless it already has one (two callers
    /// racing both get the same, first one); returns the organization's CA.
    pub async fn keep_ssh_authority(
        &self,
        authority: &SshAuthority,
    ) -> Result<SshAuthority, StoreError> {
        sqlx::query(
            "INSERT INTO ssh_authorities (org_id, public_key, private_key_sealed, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (org_id) DO NOTHING",
        )
        .bind(authority.org_id.as_str())
        .bind(&authority.public_key)
        .bind(&authority.private_key_sealed)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "recording an SSH authority",
            "organization",
            authority.org_id.as_str(),
        ))?;
        self.ssh_authority(&authority.org_id)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "SSH authority",
                id: authority.org_id.as_str().to_owned(),
            })
    }
}
