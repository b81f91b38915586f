//! Access to an app: whether the caller's token may see it, or change it. Every handler
//! that names an app goes through [`app_for`]; a machine's handlers then add the
//! machine (`machines::machine_for`, `machines::writable_machine`).

use aloft_store::App;

use crate::{ApiError, Inner, Principal};

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
