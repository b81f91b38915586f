//! `/v1/orgs` and `/v1/tokens`: organizations and their scoped API tokens. A token's
//! secret is shown once, when it is created; the store keeps only its hash.

use std::sync::Arc;

use aloft_store::{Org, Token, TokenKind, now_ms};
use aloft_types::TokenId;
use aloft_types::api::ErrorBody;
use aloft_types::api::{
    CreateOrgRequest, CreateTokenRequest, CreatedOrg, CreatedToken, OrgResponse, TokenResponse,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::json::Body;
use crate::{ApiError, Inner, Principal, hash_secret, new_secret};
use aloft_types::time::rfc3339;

pub(crate) fn routes() -> OpenApiRouter<Arc<Inner>> {
    OpenApiRouter::new()
        .routes(routes!(list_orgs, create_org))
        .routes(routes!(show_org, delete_org))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(current_token))
        .routes(routes!(deploy_token))
        .routes(routes!(revoke_token))
        .routes(routes!(app_metrics))
}

#[utoipa::path(get, path = "/v1/orgs/{slug}/metrics", tag = "orgs", params(("slug" = String, Path, description = "The organization's slug")), responses((status = 200, description = "The organization's apps' own metrics (their `[metrics]` endpoints, scraped every 15 s) in Prometheus' text format, each sample labelled with app, machine and region", body = String, content_type = "text/plain"), (status = "4XX", description = "Missing or invalid token, another organization", body = ErrorBody)), operation_id = "Orgs_app_metrics")]
async fn app_metrics(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(slug): Path<String>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    // The operator reads every organization's; anyone else only their own (another is a
    // 404, as if it did not exist).
    let org = if principal.is_operator() {
        inner.store.org_by_slug(&slug).await?
    } else {
        own_org(&inner, &principal, &slug).await?
    };
    if !principal.may_read_org() {
        return Err(ApiError::Forbidden(
            "the organization's metrics need an org, readonly or operator token (a deploy or \
             ssh token is for one app)"
                .to_owned(),
        ));
    }
    let text = inner.samples.org_metrics(&org.id);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

fn org_response(org: &Org) -> OrgResponse {
    OrgResponse {
        id: org.id.to_string(),
        slug: org.slug.clone(),
        name: org.name.clone(),
        created_at: rfc3339(org.created_at),
    }
}

fn token_response(token: &Token) -> TokenResponse {
    TokenResponse {
        id: token.id.to_string(),
        kind: token.kind.as_str().to_owned(),
        name: token.name.clone(),
        app: token.app_name.clone(),
        created_at: rfc3339(token.created_at),
        expires_at: token.expires_at.map(rfc3339),
        revoked_at: token.revoked_at.map(rfc3339),
    }
}

fn require_org_token(principal: &Principal, what: &str) -> Result<(), ApiError> {
    if principal.may_manage_org() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("{what} needs an org token")))
    }
}

/// The caller's own organization, found by slug; any other slug is a 404.
async fn own_org(inner: &Inner, principal: &Principal, slug: &str) -> Result<Org, ApiError> {
    let org = inner.store.org(principal.org_id()).await?;
    if org.slug == slug {
        Ok(org)
    } else {
        Err(ApiError::not_found(format!("organization {slug}")))
    }
}

#[utoipa::path(get, path = "/v1/orgs", tag = "orgs", responses((status = 200, body = Vec<OrgResponse>), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Orgs_list_orgs")]
async fn list_orgs(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
) -> Result<Json<Vec<OrgResponse>>, ApiError> {
    Ok(Json(vec![org_response(
        &inner.store.org(principal.org_id()).await?,
    )]))
}

#[utoipa::path(post, path = "/v1/orgs", tag = "orgs", request_body = CreateOrgRequest, responses((status = 201, body = CreatedOrg), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Orgs_create_org")]
async fn create_org(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Body(request): Body<CreateOrgRequest>,
) -> Result<(StatusCode, Json<CreatedOrg>), ApiError> {
    principal.require_operator("creating an organization")?;
    let slug: aloft_types::AppName =
        request.slug.parse().map_err(|e: aloft_types::NameError| {
            ApiError::BadRequest(format!(
                "slug: {}",
                e.to_string().replace("app name", "organization slug")
            ))
        })?;
    let name = request.name.unwrap_or_else(|| slug.to_string());
    if name.trim().is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 100 characters".to_owned(),
        ));
    }
    let org = inner
        .store
        .create_org(slug.as_str(), &name)
        .await
        .map_err(|error| match error {
            aloft_store::StoreError::Conflict { .. } => {
                ApiError::Conflict(format!("the organization slug {slug} is taken"))
            }
            other => other.into(),
        })?;
    let secret = new_secret();
    inner
        .store
        .create_token(
            &org.id,
            TokenKind::Org,
            None,
            "owner",
            &hash_secret(&secret),
            None,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedOrg {
            org: org_response(&org),
            token: secret,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/orgs/{slug}", tag = "orgs", params(("slug" = String, Path)), responses((status = 200, body = OrgResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Orgs_show_org")]
async fn show_org(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(slug): Path<String>,
) -> Result<Json<OrgResponse>, ApiError> {
    Ok(Json(org_response(
        &own_org(&inner, &principal, &slug).await?,
    )))
}

#[utoipa::path(delete, path = "/v1/orgs/{slug}", tag = "orgs", params(("slug" = String, Path)), responses((status = 202, description = "Deleted"), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Orgs_delete_org")]
async fn delete_org(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    let org = own_org(&inner, &principal, &slug).await?;
    require_org_token(&principal, "deleting an organization")?;
    // Deleting it would delete the platform's operator tokens with it: nobody could
    // create organizations or see the hosts again.
    if inner
        .store
        .list_tokens(&org.id)
        .await?
        .iter()
        .any(|token| token.kind == TokenKind::Operator && token.revoked_at.is_none())
    {
        return Err(ApiError::Conflict(format!(
            "organization {slug} holds the platform operator's tokens; it cannot be deleted"
        )));
    }
    let apps = inner.store.list_apps(&org.id).await?.len();
    if apps > 0 {
        return Err(ApiError::Conflict(format!(
            "organization {slug} still has {apps} app(s): delete them first (`aloft apps destroy`), so their machines and volumes go too"
        )));
    }
    inner.store.delete_org(&org.id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenResponse>), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Tokens_list_tokens")]
async fn list_tokens(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
) -> Result<Json<Vec<TokenResponse>>, ApiError> {
    require_org_token(&principal, "listing tokens")?;
    Ok(Json(
        inner
            .store
            .list_tokens(principal.org_id())
            .await?
            .iter()
            .map(token_response)
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/tokens/current", tag = "tokens", responses((status = 200, body = TokenResponse), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Tokens_current_token")]
async fn current_token(principal: Principal) -> Json<TokenResponse> {
    Json(token_response(&principal.token))
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateTokenRequest, responses((status = 201, body = CreatedToken), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Tokens_create_token")]
async fn create_token(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Body(request): Body<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(issue(&inner, &principal, request).await?),
    ))
}

/// `POST /v1/apps/{app}/deploy_token` (Fly's `CreateAppDeployTokenRequest`).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
struct DeployTokenRequest {
    /// How long the token lives (`"720h"`); Fly's default when absent: 20 years.
    #[serde(default)]
    expiry: Option<String>,
}

/// Fly's `CreateAppResponse`: the new token's secret, shown once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct DeployTokenResponse {
    token: String,
}

/// Fly's default life of a deploy token.
const DEPLOY_TOKEN_LIFE: std::time::Duration = std::time::Duration::from_secs(20 * 365 * 24 * 3600);

#[utoipa::path(post, path = "/v1/apps/{app}/deploy_token", tag = "tokens", params(("app" = String, Path, description = "The app's name")), request_body = DeployTokenRequest, responses((status = 200, body = DeployTokenResponse), (status = "4XX", description = "Bad expiry, missing or invalid token, no such app", body = ErrorBody)), operation_id = "Apps_create_deploy_token")]
async fn deploy_token(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(app): Path<String>,
    Body(request): Body<DeployTokenRequest>,
) -> Result<Json<DeployTokenResponse>, ApiError> {
    let expiry = match request.expiry.as_deref().filter(|e| !e.is_empty()) {
        Some(text) => text.parse::<aloft_types::Duration>().map_err(|e| {
            ApiError::BadRequest(format!("expiry {text:?}: {e} (say \"720h\", say)"))
        })?,
        None => aloft_types::Duration::from(DEPLOY_TOKEN_LIFE),
    };
    let created = issue(
        &inner,
        &principal,
        CreateTokenRequest {
            kind: TokenKind::Deploy.as_str().to_owned(),
            name: Some(format!("deploy token for {app}")),
            app: Some(app),
            expiry: Some(expiry),
        },
    )
    .await?;
    Ok(Json(DeployTokenResponse {
        token: created.token,
    }))
}

/// Makes a token as `request` says, for `principal`'s organization.
async fn issue(
    inner: &Inner,
    principal: &Principal,
    request: CreateTokenRequest,
) -> Result<CreatedToken, ApiError> {
    require_org_token(principal, "creating tokens")?;
    let kind: TokenKind = request.kind.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "kind {:?}: expected org, deploy, readonly, ssh or operator",
            request.kind
        ))
    })?;
    if kind == TokenKind::Operator {
        principal.require_operator("creating an operator token")?;
    }
    let app = match (kind, request.app) {
        (TokenKind::Deploy | TokenKind::Ssh, None) => {
            return Err(ApiError::BadRequest(format!(
                "a {} token is for one app: give `app`",
                kind.as_str()
            )));
        }
        (TokenKind::Deploy | TokenKind::Ssh, Some(app)) => {
            let found = crate::access::app_for(inner, principal, &app, true).await?;
            Some(found.name.to_string())
        }
        (_, Some(app)) => {
            return Err(ApiError::BadRequest(format!(
                "a {} token covers the whole organization; `app` ({app}) does not apply",
                kind.as_str()
            )));
        }
        (_, None) => None,
    };
    let expires_at = match request.expiry {
        Some(expiry) if expiry == aloft_types::Duration::ZERO => {
            return Err(ApiError::BadRequest(
                "expiry must be longer than 0s".to_owned(),
            ));
        }
        Some(expiry) => {
            Some(now_ms().saturating_add(i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX / 2)))
        }
        None => None,
    };
    let name = request
        .name
        .unwrap_or_else(|| format!("{} token", kind.as_str()));
    let secret = new_secret();
    let token = inner
        .store
        .create_token(
            principal.org_id(),
            kind,
            app.as_deref(),
            &name,
            &hash_secret(&secret),
            expires_at,
        )
        .await?;
    Ok(CreatedToken {
        record: token_response(&token),
        token: secret,
    })
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "The token's id")), responses((status = 204, description = "Revoked"), (status = "4XX", description = "Bad input, missing or invalid token, not found, or a conflict", body = ErrorBody)), operation_id = "Tokens_revoke_token")]
async fn revoke_token(
    State(inner): State<Arc<Inner>>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_org_token(&principal, "revoking tokens")?;
    let id: TokenId = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("token {id}")))?;
    // The platform's last operator token stays: without it nobody could administer it.
    let tokens = inner.store.list_tokens(principal.org_id()).await?;
    let operators: Vec<_> = tokens
        .iter()
        .filter(|token| token.kind == TokenKind::Operator && token.revoked_at.is_none())
        .collect();
    if operators.len() == 1 && operators.iter().any(|token| token.id == id) {
        return Err(ApiError::Conflict(format!(
            "token {id} is the platform's last operator token; create another operator token first"
        )));
    }
    inner.store.revoke_token(principal.org_id(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
