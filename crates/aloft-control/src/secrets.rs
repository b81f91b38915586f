//! App secrets: encrypted at rest with a key kept outside the database, never returned by
//! the API (a keyed digest shows whether a value changed), never logged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use aloft_types::api::ErrorBody;
use aloft_types::api::{SecretInfo, SecretList, SecretsUpdate, SecretsVersion};
use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::app_for;
use crate::json::Body;
use crate::{ApiError, Inner, Principal};

/// Where the secrets key is kept in the data directory (mode 0600).
pub const SECRETS_KEY_FILE: &str = "secrets.key";

/// The key that encrypts secrets at rest.
#[derive(Clone)]
pub struct SecretsKey([u8; 32]);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<hidden>)")
    }
}

/// Why the key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the secrets key {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secrets key {} is not 64 hex characters", path.display())]
    Malformed { path: std::path::PathBuf },
}

impl SecretsKey {
    pub fn from_bytes(bytes: [u8; 32]) -> SecretsKey {
        SecretsKey(bytes)
    }

    /// Loads the key from `<data_dir>/secrets.key`, creating it on the first start.
    pub fn load_or_create(data_dir: &Path) -> Result<SecretsKey, KeyError> {
        let path = data_dir.join(SECRETS_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let text = text.trim();
                let bytes: Vec<u8> = (0..text.len())
                    .step_by(2)
                    .filter_map(|i| {
                        text.get(i..i + 2)
                            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    })
                    .collect();
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| KeyError::Malformed { path: path.clone() })?;
                if text.len() != 64 {
                    return Err(KeyError::Malformed { path });
                }
                Ok(SecretsKey(key))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = aloft_store::random();
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                crate::write_private(&path, &format!("{hex}\n")).map_err(|source| {
                    KeyError::Read {
                        path: path.clone(),
                        source,
                    }
                })?;
                Ok(SecretsKey(key))
            }
            Err(source) => Err(KeyError::Read { path, source }),
        }
    }

    /// `base64(nonce ‖ ciphertext)` of `value`.
    pub(crate) fn encrypt(&self, value: &str) -> Result<String, ApiError> {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let nonce: [u8; 12] = aloft_store::random();
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), value.as_bytes())
            .map_err(|_| ApiError::Internal("encrypting a secret failed".into()))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(blob))
    }

    pub(crate) fn decrypt(&self, stored: &str) -> Result<String, ApiError> {
        let corrupt =
            || ApiError::Internal("a stored secret cannot be decrypted with this key".into());
        let blob = base64::engine::general_purpose::STANDARD
            .decode(stored)
            .map_err(|_| corrupt())?;
        if blob.len() < 12 {
            return Err(corrupt());
        }
        let (nonce, sealed) = blob.split_at(12);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }

    /// A keyed digest: equal values give equal digests, and it reveals nothing without the key.
    pub(crate) fn digest(&self, name: &str, value: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list, update))
        .routes(routes!(show_one, set_one, unset_one))
}

/// The query Fly's clients send to read secrets: `version` or `min_version` (the answer
/// must reflect at least this secrets version) and `show_secrets` (values in the clear, which Aloft never
/// gives: a value is readable only inside the app's machines).
fn check_read_query(
    query: &std::collections::HashMap<String, String>,
    app: &aloft_store::App,
) -> Result<(), ApiError> {
    if let Some(show) = query.get("show_secrets") {
        match show.as_str() {
            "false" | "0" | "" => {}
            "true" | "1" => {
                return Err(ApiError::Forbidden(
                    "show_secrets: Aloft never returns a secret's value; it is readable only inside the app's machines (aloft ssh console, then printenv NAME)".to_owned(),
                ));
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "show_secrets is {other:?}; say true or false"
                )));
            }
        }
    }
    // fly-go sends `version`; Fly's OpenAPI document names it `min_version`.
    if let Some(version) = query.get("min_version").or_else(|| query.get("version")) {
        let version: i64 = version.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "version is {version:?}; a secrets version is a number"
            ))
        })?;
        if version > app.secrets_version {
            return Err(ApiError::Conflict(format!(
                "secrets of {} are at version {}; version {version} has not been written",
                app.name, app.secrets_version
            )));
        }
    }
    Ok(())
}

/// `POST /v1/apps/{app}/secrets/{name}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct SetRequest {
    value: String,
}

/// Secret names follow environment variable rules; `FLY_` and `ALOFT_` are the platform's.
pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 255;
    if !valid {
        return Err(ApiError::BadRequest(format!(
            "secret name {name:?} must be letters, digits and underscores, not starting with a digit"
        )));
    }
    if name.starts_with("FLY_") || name.starts_with("ALOFT_") {
        return Err(ApiError::BadRequest(format!(
            "secret name {name:?}: names starting with FLY_ or ALOFT_ are reserved"
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/apps/{app}/secrets", tag = "secrets", params(("app" = String, Path, description = "The app's name"), ("version" = Option<i64>, Query, description = "The answer reflects at least this secrets version (409 when it has not been written)"), ("show_secrets" = Option<bool>, Query, description = "true is refused: values are never returned")), responses((status = 200, body = SecretList), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Secrets_list")]
async fn list(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    UrlPath(app): UrlPath<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<SecretList>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
    check_read_query(&query, &app)?;
    Ok(Json(SecretList {
        secrets: secrets_of(&inner, &app).await?,
    }))
}

#[utoipa::path(get, path = "/v1/apps/{app}/secrets/{name}", tag = "secrets", params(("app" = String, Path, description = "The app's name"), ("name" = String, Path), ("version" = Option<i64>, Query, description = "The answer reflects at least this secrets version (409 when it has not been written)"), ("show_secrets" = Option<bool>, Query, description = "true is refused: values are never returned")), responses((status = 200, body = SecretInfo), (status = "4XX", description = "Bad input, missing or invalid token, no such app or secret", body = ErrorBody)), operation_id = "Secrets_show_one")]
async fn show_one(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    UrlPath((app, name)): UrlPath<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<SecretInfo>, ApiError> {
    let app = app_for(&inner, &principal, &app, false).await?;
    check_read_query(&query, &app)?;
    secrets_of(&inner, &app)
        .await?
        .into_iter()
        .find(|secret| secret.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("secret {name} of {}", app.name)))
}

async fn secrets_of(inner: &Inner, app: &aloft_store::App) -> Result<Vec<SecretInfo>, ApiError> {
    Ok(inner
        .store
        .list_secrets(&app.id)
        .await?
        .into_iter()
        .map(|s| SecretInfo {
            name: s.name,
            digest: s.digest,
            version: s.version,
            created_at: aloft_types::time::rfc3339(s.created_at),
        })
        .collect())
}

/// Sets and unsets secrets. `tolerant`: unsetting a name that is not set is no error (as
/// Fly's bulk update treats it); the single-secret `DELETE` answers 404 instead.
async fn apply(
    inner: &Inner,
    app: &aloft_store::App,
    values: BTreeMap<String, Option<String>>,
    tolerant: bool,
) -> Result<i64, ApiError> {
    if values.is_empty() {
        return Err(ApiError::BadRequest("`values` names no secret".to_owned()));
    }
    let mut set = Vec::new();
    let mut unset = Vec::new();
    for (name, value) in values {
        check_name(&name)?;
        match value {
            Some(value) => {
                let sealed = inner.secrets_key.encrypt(&value)?;
                let digest = inner.secrets_key.digest(&name, &value);
                set.push((name, sealed, digest));
            }
            None => unset.push(name),
        }
    }
    if tolerant && !unset.is_empty() {
        let existing: Vec<String> = inner
            .store
            .list_secrets(&app.id)
            .await?
            .into_iter()
            .map(|s| s.name)
            .collect();
        unset.retain(|name| existing.contains(name));
    }
    let mut version = app.secrets_version;
    if !set.is_empty() {
        version = inner.store.set_secrets(&app.id, &set).await?;
    }
    if !unset.is_empty() {
        version = inner.store.unset_secrets(&app.id, &unset).await?;
    }
    Ok(version)
}

#[utoipa::path(post, path = "/v1/apps/{app}/secrets", tag = "secrets", params(("app" = String, Path, description = "The app's name")), request_body = SecretsUpdate, responses((status = 200, body = SecretsVersion), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Secrets_update")]
async fn update(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    UrlPath(app): UrlPath<String>,
    Body(request): Body<SecretsUpdate>,
) -> Result<Json<SecretsVersion>, ApiError> {
    let app = app_for(&inner, &principal, &app, true).await?;
    let version = apply(&inner, &app, request.values.into_iter().collect(), true).await?;
    Ok(Json(SecretsVersion {
        version,
        secrets: secrets_of(&inner, &app).await?,
    }))
}

#[utoipa::path(post, path = "/v1/apps/{app}/secrets/{name}", tag = "secrets", params(("app" = String, Path, description = "The app's name"), ("name" = String, Path)), request_body = SetRequest, responses((status = 200, body = SecretInfo), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Secrets_set_one")]
async fn set_one(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    UrlPath((app, name)): UrlPath<(String, String)>,
    Body(request): Body<SetRequest>,
) -> Result<Json<SecretInfo>, ApiError> {
    let app = app_for(&inner, &principal, &app, true).await?;
    let version = apply(
        &inner,
        &app,
        BTreeMap::from([(name.clone(), Some(request.value))]),
        false,
    )
    .await?;
    // Fly answers with the secret (name, digest, dates) and the secrets version.
    let secret = secrets_of(&inner, &app)
        .await?
        .into_iter()
        .find(|secret| secret.name == name)
        .ok_or_else(|| ApiError::not_found(format!("secret {name} of {}", app.name)))?;
    Ok(Json(SecretInfo { version, ..secret }))
}

#[utoipa::path(delete, path = "/v1/apps/{app}/secrets/{name}", tag = "secrets", params(("app" = String, Path, description = "The app's name"), ("name" = String, Path)), responses((status = 200, body = SecretsVersion), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Secrets_unset_one")]
async fn unset_one(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    UrlPath((app, name)): UrlPath<(String, String)>,
) -> Result<Json<SecretsVersion>, ApiError> {
    let app = app_for(&inner, &principal, &app, true).await?;
    let version = apply(&inner, &app, BTreeMap::from([(name, None)]), false).await?;
    Ok(Json(SecretsVersion {
        version,
        secrets: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_round_trips_and_hides_the_value() {
        let key = SecretsKey::from_bytes([7; 32]);
        let sealed = key.encrypt("hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            key.encrypt("hunter2").unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(key.decrypt(&sealed).unwrap(), "hunter2");
        assert!(SecretsKey::from_bytes([8; 32]).decrypt(&sealed).is_err());
        assert_eq!(key.digest("A", "x"), key.digest("A", "x"));
        assert_ne!(key.digest("A", "x"), key.digest("A", "y"));
    }

    #[test]
    fn names_follow_environment_rules() {
        for good in ["DATABASE_URL", "_X", "a1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "FLY_REGION", "ALOFT_X", "A B"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
