//! Organizations and their API tokens (stored as hashes of the secret).

use aloft_types::{OrgId, TokenId};
use sqlx::any::AnyRow;

use crate::{Store, StoreError, column, now_ms, random, typed};

/// An organization: the unit of ownership and isolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
    pub created_at: i64,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Everything in its organization, and the platform's: creating organizations, every
    /// organization's metrics, the hosts. The first start's token is the operator's.
    Operator,
    /// Everything in the organization.
    Org,
    /// Deploy and manage one app.
    Deploy,
    /// Read everything in the organization, change nothing.
    Readonly,
    /// Open SSH sessions into one app's machines.
    Ssh,
}

impl TokenKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenKind::Operator => "operator",
            TokenKind::Org => "org",
            TokenKind::Deploy => "deploy",
            TokenKind::Readonly => "readonly",
            TokenKind::Ssh => "ssh",
        }
    }
}

impl std::str::FromStr for TokenKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "operator" => Ok(TokenKind::Operator),
            "org" => Ok(TokenKind::Org),
            "deploy" => Ok(TokenKind::Deploy),
            "readonly" => Ok(TokenKind::Readonly),
            "ssh" => Ok(TokenKind::Ssh),
            other => Err(format!("unknown token kind {other:?}")),
        }
    }
}

/// A token's record; its secret is never stored, only a hash of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: TokenId,
    pub org_id: OrgId,
    pub kind: TokenKind,
    /// The one app a deploy or ssh token is limited to.
    pub app_name: Option<String>,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl Token {
    /// Usable now: not revoked and not expired.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expiry| now < expiry)
    }
}

fn org_from(row: &AnyRow) -> Result<Org, StoreError> {
    const WHAT: &str = "organization";
    Ok(Org {
        id: typed(row, WHAT, "id")?,
        slug: column(row, WHAT, "slug")?,
        name: column(row, WHAT, "name")?,
        created_at: column(row, WHAT, "created_at")?,
    })
}

fn token_from(row: &AnyRow) -> Result<Token, StoreError> {
    const WHAT: &str = "token";
    let kind: String = column(row, WHAT, "kind")?;
    Ok(Token {
        id: typed(row, WHAT, "id")?,
        org_id: typed(row, WHAT, "org_id")?,
        kind: kind.parse().map_err(|reason: String| {
            StoreError::corrupt("token kind", &kind, std::io::Error::other(reason))
        })?,
        app_name: column(row, WHAT, "app_name")?,
        name: column(row, WHAT, "name")?,
        created_at: column(row, WHAT, "created_at")?,
        expires_at: column(row, WHAT, "expires_at")?,
        revoked_at: column(row, WHAT, "revoked_at")?,
    })
}

fn new_org(slug: &str, name: &str) -> Org {
    Org {
        id: OrgId::generate(random()),
        slug: slug.to_owned(),
        name: name.to_owned(),
        created_at: now_ms(),
    }
}

async fn insert_org<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    org: &Org,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO orgs (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(org.id.as_str())
        .bind(&org.slug)
        .bind(&org.name)
        .bind(org.created_at)
        .execute(executor)
        .await
        .map_err(StoreError::database(
            "creating an organization",
            "organization",
            &org.slug,
        ))?;
    Ok(())
}

const TOKEN_COLUMNS: &str = "id, org_id, kind, app_name, name, created_at, expires_at, revoked_at";

impl Store {
    pub async fn create_org(&self, slug: &str, name: &str) -> Result<Org, StoreError> {
        let org = new_org(slug, name);
        insert_org(self.pool(), &org).await?;
        Ok(org)
    }

    pub async fn org_by_slug(&self, slug: &str) -> Result<Org, StoreError> {
        let row = sqlx::query("SELECT id, slug, name, created_at FROM orgs WHERE slug = $1")
            .bind(slug)
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database(
                "finding an organization",
                "organization",
                slug,
            ))?;
        row.as_ref()
            .map(org_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                what: "organization",
                id: slug.to_owned(),
            })
    }

    pub async fn org(&self, id: &OrgId) -> Result<Org, StoreError> {
        let row = sqlx::query("SELECT id, slug, name, created_at FROM orgs WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database(
                "finding an organization",
                "organization",
                id.as_str(),
            ))?;
        row.as_ref()
            .map(org_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                what: "organization",
                id: id.to_string(),
            })
    }

    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        let rows = sqlx::query("SELECT id, slug, name, created_at FROM orgs ORDER BY slug")
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::database(
                "listing organizations",
                "organization",
                "*",
            ))?;
        rows.iter().map(org_from).collect()
    }

    /// Deletes an organization that owns no apps.
    pub async fn delete_org(&self, id: &OrgId) -> Result<(), StoreError> {
        let apps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apps WHERE org_id = $1")
            .bind(id.as_str())
            .fetch_one(self.pool())
            .await
            .map_err(StoreError::database(
                "counting apps",
                "organization",
                id.as_str(),
            ))?;
        if apps > 0 {
            return Err(StoreError::Conflict {
                what: "organization",
                id: id.to_string(),
                reason: format!("it still owns {apps} app(s); destroy them first"),
            });
        }
        let deleted = sqlx::query("DELETE FROM orgs WHERE id = $1")
            .bind(id.as_str())
            .execute(self.pool())
            .await
            .map_err(StoreError::database(
                "deleting an organization",
                "organization",
                id.as_str(),
            ))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "organization",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    /// Creates an organization and its first token in one transaction: both or neither
    /// (the first start's setup, which a crash between the two would otherwise leave with
    /// an organization that no token can reach).
    pub async fn create_org_with_token(
        &self,
        slug: &str,
        name: &str,
        kind: TokenKind,
        token_name: &str,
        secret_hash: &str,
    ) -> Result<(Org, Token), StoreError> {
        let org = new_org(slug, name);
        let token = Token {
            id: TokenId::generate(random()),
            org_id: org.id.clone(),
            kind,
            app_name: None,
            name: token_name.to_owned(),
            created_at: org.created_at,
            expires_at: None,
            revoked_at: None,
        };
        let failed = StoreError::database("creating an organization", "organization", slug);
        let mut tx = self.pool().begin().await.map_err(failed)?;
        insert_org(&mut *tx, &org).await?;
        sqlx::query(
            "INSERT INTO tokens (id, org_id, kind, app_name, name, secret_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, NULL, $4, $5, $6, NULL)",
        )
        .bind(token.id.as_str())
        .bind(org.id.as_str())
        .bind(kind.as_str())
        .bind(&token.name)
        .bind(secret_hash)
        .bind(token.created_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::database("creating a token", "token", token.id.as_str()))?;
        tx.commit().await.map_err(StoreError::database(
            "creating an organization",
            "organization",
            slug,
        ))?;
        Ok((org, token))
    }

    /// Records a token whose secret hashes to `secret_hash`.
    pub async fn create_token(
        &self,
        org_id: &OrgId,
        kind: TokenKind,
        app_name: Option<&str>,
        name: &str,
        secret_hash: &str,
        expires_at: Option<i64>,
    ) -> Result<Token, StoreError> {
        let token = Token {
            id: TokenId::generate(random()),
            org_id: org_id.clone(),
            kind,
            app_name: app_name.map(str::to_owned),
            name: name.to_owned(),
            created_at: now_ms(),
            expires_at,
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO tokens (id, org_id, kind, app_name, name, secret_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token.id.as_str())
        .bind(org_id.as_str())
        .bind(kind.as_str())
        .bind(token.app_name.clone())
        .bind(&token.name)
        .bind(secret_hash)
        .bind(token.created_at)
        .bind(expires_at)
        .execute(self.pool())
        .await
        .map_err(StoreError::database("creating a token", "token", token.id.as_str()))?;
        Ok(token)
    }

    /// The token whose secret hashes to `secret_hash`, active or not.
    pub async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<Token>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = $1"
        ))
        .bind(secret_hash)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database("finding a token", "token", "<hash>"))?;
        row.as_ref().map(token_from).transpose()
    }

    pub async fn list_tokens(&self, org_id: &OrgId) -> Result<Vec<Token>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE org_id = $1 ORDER BY created_at, id"
        ))
        .bind(org_id.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing tokens",
            "organization",
            org_id.as_str(),
        ))?;
        rows.iter().map(token_from).collect()
    }

    /// Revokes a token of `org_id`; revoking one twice keeps the first time.
    pub async fn revoke_token(&self, org_id: &OrgId, id: &TokenId) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND org_id = $3",
        )
        .bind(now_ms())
        .bind(id.as_str())
        .bind(org_id.as_str())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "revoking a token",
            "token",
            id.as_str(),
        ))?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "token",
                id: id.to_string(),
            });
        }
        Ok(())
    }
}
