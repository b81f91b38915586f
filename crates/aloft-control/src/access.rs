//! Access to an app: whether the caller's token may see it, or change it. Handlers whose
//! path names an app (`{app}`) take it as a [`ReadApp`] or [`WriteApp`]; others go
//! through [`app_for`]. A machine's handlers then add the machine
//! (`machines::machine_for`, `machines::writable_machine`).

use std::sync::Arc;

use aloft_store::App;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use crate::{ApiError, Inner, Principal};

/// The app the path names, which the caller's token may see (404 otherwise).
pub(crate) struct ReadApp(pub(crate) App);

/// The app the path names, which the caller's token may change (403 when it may only
/// look, 404 when it may not see it).
pub(crate) struct WriteApp(pub(crate) App);

/// The app named by the path's `{app}`, as [`app_for`] finds it for the caller.
async fn path_app(parts: &mut Parts, inner: &Arc<Inner>, write: bool) -> Result<App, ApiError> {
    let principal = Principal::from_request_parts(parts, inner).await?;
    let params = RawPathParams::from_request_parts(parts, inner)
        .await
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let name = params
        .iter()
        .find(|(key, _)| *key == "app")
        .map(|(_, value)| value.to_owned())
        .ok_or_else(|| ApiError::BadRequest("the path names no app".to_owned()))?;
    app_for(inner, &principal, &name, write).await
}

impl FromRequestParts<Arc<Inner>> for ReadApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, inner: &Arc<Inner>) -> Result<Self, ApiError> {
        Ok(ReadApp(path_app(parts, inner, false).await?))
    }
}

impl FromRequestParts<Arc<Inner>> for WriteApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, inner: &Arc<Inner>) -> Result<Self, ApiError> {
        Ok(WriteApp(path_app(parts, inner, true).await?))
    }
}

/// The app named `name`, if the caller's token may see it (404 otherwise: another
/// organization's apps do not exist for it). With `write`, the token must also be allowed
/// to change it (403 when it may only look).
pub(crate) async fn app_for(
    inner: &Inner,
    principal: &Principal,
    name: &str,
    write: bool,
) -> Result<App, ApiError> {
    let not_found = || ApiError::not_found(format!("app {name}"));
    let app = match inner.store.app_by_name(name).await {
        Ok(app) => app,
        Err(aloft_store::StoreError::NotFound { .. }) => return Err(not_found()),
        Err(error) => return Err(error.into()),
    };
    if &app.org_id != principal.org_id() || !principal.may_read_app(name) {
        return Err(not_found());
    }
    if write && !principal.may_write_app(name) {
        return Err(ApiError::Forbidden(format!(
            "this token may not change app {name}"
        )));
    }
    Ok(app)
}
