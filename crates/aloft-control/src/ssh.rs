//! SSH: each organization's certificate authority, the certificates it signs, and the
//! tunnel that carries an SSH connection from the API to a machine's host.
//!
//! - `POST /v1/orgs/{slug}/ssh/certificates` signs a short-lived user certificate for the
//!   caller's public key. The CA (ed25519) is made on first use; its private key is
//!   stored sealed with the secrets key. The certificate names the token (key id and the
//!   `aloft-token@aloft.dev` extension), so the agent refuses it once the token is
//!   revoked or expired.
//! - `GET /v1/apps/{app}/machines/{id}/ssh` with `Upgrade: ssh` answers 101 and hands the
//!   connection to the SSH server of the machine's host (so only the API's port needs to
//!   be reachable). The SSH server authenticates the certificate itself.

use std::sync::Arc;
use std::time::Duration;

use aloft_ssh::ca::{self, CertificateRequest};
use aloft_store::{Org, TokenKind};
use aloft_types::api::{ErrorBody, SshCertificate, SshCertificateRequest};
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access::app_for;
use crate::json::Body;
use crate::{ApiError, Inner, Principal};

/// The certificate extension that names the token a certificate was issued for.
pub use aloft_agent_api::TOKEN_EXTENSION;
/// The `Upgrade` protocol of the SSH tunnel.
pub const UPGRADE_PROTOCOL: &str = "ssh";
/// Default and longest validity of a certificate, in hours.
const DEFAULT_HOURS: u32 = 24;
const MAX_HOURS: u32 = 720;

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(issue))
        .routes(routes!(tunnel))
}

/// The organization's CA, made (and stored sealed) on first use.
pub(crate) async fn authority(
    inner: &Inner,
    org: &Org,
) -> Result<aloft_ssh::russh::keys::PrivateKey, ApiError> {
    let stored = match inner.store.ssh_authority(&org.id).await? {
        Some(stored) => stored,
        None => {
            let key = ca::ed25519_from_seed(&aloft_store::random());
            let pem = ca::private_to_openssh(&key).map_err(|e| ApiError::Internal(Box::new(e)))?;
            let public_key = ca::public_to_openssh(key.public_key())
                .map_err(|e| ApiError::Internal(Box::new(e)))?;
            let fresh = aloft_store::SshAuthority {
                org_id: org.id.clone(),
                public_key,
                private_key_sealed: inner.secrets_key.encrypt(&pem)?,
                created_at: 0,
            };
            tracing::info!(org = %org.slug, "made the organization's SSH certificate authority");
            inner.store.keep_ssh_authority(&fresh).await?
        }
    };
    let pem = inner.secrets_key.decrypt(&stored.private_key_sealed)?;
    ca::private_from_openssh(&pem).map_err(|e| ApiError::Internal(Box::new(e)))
}

/// Whether the token may open SSH sessions into `app`: organization (and operator) tokens
/// into every app, `ssh` and `deploy` tokens into their own; read-only tokens never.
pub(crate) fn may_ssh(principal: &Principal, app: &str) -> bool {
    match principal.token.kind {
        TokenKind::Operator | TokenKind::Org => true,
        TokenKind::Ssh | TokenKind::Deploy => principal.token.app_name.as_deref() == Some(app),
        TokenKind::Readonly => false,
    }
}

#[utoipa::path(post, path = "/v1/orgs/{slug}/ssh/certificates", tag = "ssh", params(("slug" = String, Path, description = "The organization's slug")), request_body = SshCertificateRequest, responses((status = 201, body = SshCertificate), (status = "4XX", description = "Bad input, missing or invalid token, a token without SSH rights, another organization", body = ErrorBody)), operation_id = "Ssh_issue_certificate")]
async fn issue(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(slug): Path<String>,
    Body(request): Body<SshCertificateRequest>,
) -> Result<(StatusCode, Json<SshCertificate>), ApiError> {
    let org = inner.store.org(principal.org_id()).await?;
    if org.slug != slug {
        return Err(ApiError::not_found(format!("organization {slug}")));
    }
    let token = &principal.token;
    let app = match (token.kind, &request.app, &token.app_name) {
        (TokenKind::Readonly, _, _) => {
            tracing::warn!(token = %token.id, org = %org.slug, "refused an SSH certificate: read-only token");
            return Err(ApiError::Forbidden(
                "this token has no SSH rights (read-only); use an org, ssh or deploy token"
                    .to_owned(),
            ));
        }
        (TokenKind::Operator | TokenKind::Org, app, _) => app.clone(),
        (_, Some(asked), Some(own)) if asked != own => {
            return Err(ApiError::Forbidden(format!(
                "this token is for app {own}, not {asked}"
            )));
        }
        (_, _, own) => Some(
            own.clone()
                .ok_or_else(|| ApiError::Internal("an app-scoped token names no app".into()))?,
        ),
    };
    if let Some(app) = &app {
        app_for(&inner, &principal, app, false).await?;
    }
    let hours = request.hours.unwrap_or(DEFAULT_HOURS);
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(ApiError::BadRequest(format!(
            "`hours` is {hours}: give 1 to {MAX_HOURS}"
        )));
    }
    let mut valid_for = Duration::from_secs(u64::from(hours) * 3600);
    if let Some(expires) = token.expires_at {
        let left = u64::try_from(expires - aloft_store::now_ms()).unwrap_or(0) / 1000;
        valid_for = valid_for.min(Duration::from_secs(left));
    }
    let subject = ca::public_from_openssh(&request.public_key)
        .map_err(|e| ApiError::BadRequest(format!("`public_key`: {e}")))?;
    let principals = vec![match &app {
        Some(app) => ca::app_principal(&org.slug, app),
        None => ca::org_principal(&org.slug),
    }];
    let key_id = format!(
        "{} ({} token {})",
        token.name,
        token.kind.as_str(),
        token.id
    );
    let authority = authority(&inner, &org).await?;
    let certificate = ca::sign_user_certificate(
        &authority,
        &subject,
        &CertificateRequest {
            key_id: key_id.clone(),
            principals: principals.clone(),
            valid_for,
            serial: u64::from_le_bytes(aloft_store::random()),
            nonce: aloft_store::random(),
            extensions: vec![(TOKEN_EXTENSION.to_owned(), token.id.to_string())],
        },
    )
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    tracing::info!(org = %org.slug, key_id = %key_id, ?principals, hours, "issued an SSH certificate");
    let seconds = |s: u64| {
        aloft_types::time::rfc3339(i64::try_from(s).unwrap_or(i64::MAX).saturating_mul(1000))
    };
    Ok((
        StatusCode::CREATED,
        Json(SshCertificate {
            certificate: ca::certificate_to_openssh(&certificate)
                .map_err(|e| ApiError::Internal(Box::new(e)))?,
            ca_public_key: ca::public_to_openssh(authority.public_key())
                .map_err(|e| ApiError::Internal(Box::new(e)))?,
            key_id,
            principals,
            valid_after: seconds(certificate.valid_after()),
            valid_before: seconds(certificate.valid_before()),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/apps/{app}/machines/{id}/ssh", tag = "ssh", params(("app" = String, Path, description = "The app's name"), ("id" = String, Path, description = "The machine's id")), responses((status = 101, description = "Switching protocols (send `Connection: Upgrade` and `Upgrade: ssh`): the connection now carries SSH to the machine's host, whose server authenticates the certificate"), (status = "4XX", description = "Missing or invalid token, a token without SSH rights, not found, a machine that is not started, no upgrade asked for", body = ErrorBody)), operation_id = "Ssh_tunnel")]
async fn tunnel(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path((app_name, id)): Path<(String, String)>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let app = app_for(&inner, &principal, &app_name, false).await?;
    if !may_ssh(&principal, &app_name) {
        tracing::warn!(token = %principal.token.id, app = %app_name, machine = %id, "refused an SSH tunnel: the token has no SSH rights");
        return Err(ApiError::Forbidden(format!(
            "this token has no SSH rights on app {app_name}"
        )));
    }
    let machine = crate::machines::machine_for(&inner, &app, &id).await?;
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    if !upgrade {
        return Err(ApiError::BadRequest(format!(
            "send `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}` to open an SSH tunnel"
        )));
    }
    if machine.state != aloft_types::MachineState::Started {
        return Err(ApiError::PreconditionFailed(format!(
            "machine {id} is {}; SSH reaches only a started machine",
            machine.state
        )));
    }
    let link = crate::machines::host_link(&inner, &machine)?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let stream = hyper_util::rt::TokioIo::new(upgraded);
                if let Err(error) = link.ssh(&machine, Box::new(stream)).await {
                    tracing::warn!(machine = %machine.id, %error, "SSH session failed");
                }
            }
            Err(error) => {
                tracing::warn!(machine = %machine.id, %error, "SSH tunnel upgrade failed")
            }
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, UPGRADE_PROTOCOL),
        ],
    )
        .into_response())
}
