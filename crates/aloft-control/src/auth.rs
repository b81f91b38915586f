//! Bearer tokens: `Authorization: Bearer <token>` (or Fly's `FlyV1 <token>`). Tokens are
//! random secrets shown once; the store keeps only their SHA-256.

use std::sync::Arc;

use aloft_store::{Token, TokenKind, now_ms};
use aloft_types::OrgId;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::{ApiError, Inner};

/// The prefix of every Aloft token, so that leaked ones are easy to recognize and scan for.
pub const TOKEN_PREFIX: &str = "aloft_";

/// A new token secret.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = aloft_store::random();
    format!(
        "{TOKEN_PREFIX}{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Whether `text` has the shape of a secret [`new_secret`] makes.
pub(crate) fn is_secret(text: &str) -> bool {
    text.strip_prefix(TOKEN_PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What the store keeps of a secret.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who is calling: the organization and what the token allows.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token: Token,
}

impl Principal {
    pub fn org_id(&self) -> &OrgId {
        &self.token.org_id
    }

    /// Whether this token may read `app` (an app of its organization).
    pub fn may_read_app(&self, app: &str) -> bool {
        match self.token.kind {
            TokenKind::Operator | TokenKind::Org | TokenKind::Readonly => true,
            TokenKind::Deploy | TokenKind::Ssh => self.token.app_name.as_deref() == Some(app),
        }
    }

    /// Whether this token may change `app`.
    pub fn may_write_app(&self, app: &str) -> bool {
        match self.token.kind {
            TokenKind::Operator | TokenKind::Org => true,
            TokenKind::Deploy => self.token.app_name.as_deref() == Some(app),
            TokenKind::Readonly | TokenKind::Ssh => false,
        }
    }

    /// Whether this token may manage the organization (apps, tokens).
    pub fn may_manage_org(&self) -> bool {
        matches!(self.token.kind, TokenKind::Operator | TokenKind::Org)
    }

    /// Whether this token may read everything of its organization (its metrics, say), not
    /// just one app's.
    pub fn may_read_org(&self) -> bool {
        matches!(
            self.token.kind,
            TokenKind::Operator | TokenKind::Org | TokenKind::Readonly
        )
    }

    /// Whether this is the platform operator's token: it creates organizations and reads
    /// the whole platform (every organization's metrics, the hosts).
    pub fn is_operator(&self) -> bool {
        self.token.kind == TokenKind::Operator
    }

    /// Refuses (403) anything but an operator token, saying what needed one.
    pub fn require_operator(&self, what: &str) -> Result<(), ApiError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{what} needs the platform operator's token (the first start's token, in \
                 aloftd's data directory as admin-token)"
            )))
        }
    }

    /// The caller named by `headers` (`Authorization: Bearer <token>`), for a handler
    /// outside the control plane's router (the platform's `/metrics`).
    pub(crate) async fn from_headers(
        inner: &Inner,
        headers: &axum::http::HeaderMap,
    ) -> Result<Principal, ApiError> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthorized("send `Authorization: Bearer <token>`".to_owned())
            })?;
        let header = header.to_str().map_err(|_| {
            ApiError::Unauthorized("the Authorization header is not text".to_owned())
        })?;
        let secret = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("FlyV1 "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "the Authorization header must be `Bearer <token>`".to_owned(),
                )
            })?;
        let token = inner
            .store
            .token_by_hash(&hash_secret(secret))
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown token".to_owned()))?;
        if !token.is_active(now_ms()) {
            return Err(ApiError::Unauthorized(
                "the token is revoked or expired".to_owned(),
            ));
        }
        Ok(Principal { token })
    }
}

impl FromRequestParts<Arc<Inner>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<Inner>,
    ) -> Result<Self, Self::Rejection> {
        // Checked once per request, however many extractors ask.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let principal = Principal::from_headers(state, &parts.headers).await?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}
