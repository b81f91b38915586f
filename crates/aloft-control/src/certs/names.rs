//! Which hostnames an app may claim.

use crate::{ApiError, Inner};

/// A hostname as certificates name it: lowercase labels of letters, digits and `-`, at
/// least two, optionally `*.` first.
pub(super) fn hostname(text: &str) -> Result<String, ApiError> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = name.strip_prefix("*.").unwrap_or(&name);
    let labels: Vec<&str> = bare.split('.').collect();
    let valid = name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(name)
    } else {
        Err(ApiError::BadRequest(format!(
            "hostname: {text:?} is not a hostname (such as www.example.com or *.example.com)"
        )))
    }
}

/// Refuses a hostname `app` may not claim: one under the platform's apps domain (the
/// platform answers there for every app: claiming `*.<apps_domain>` would take every
/// app's traffic), or one that overlaps another app's (a wildcard over its names, or a
/// name under its wildcard).
pub(super) async fn claimable(
    inner: &Inner,
    app: &aloft_store::App,
    name: &str,
) -> Result<(), ApiError> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    if let Some(edge) = &inner.config.edge {
        let domain = edge.apps_domain.to_ascii_lowercase();
        if bare == domain || bare.ends_with(&format!(".{domain}")) {
            return Err(ApiError::Forbidden(format!(
                "hostname: {name} is under the platform's apps domain {domain}, where the platform answers for every app; each app already has https://<app>.{domain}/"
            )));
        }
    }
    let parent = |host: &str| host.split_once('.').map(|(_, rest)| rest.to_owned());
    for other in inner.store.all_certificates().await? {
        if other.app_id == app.id {
            continue;
        }
        let theirs = other.hostname.as_str();
        // The same name is the store's conflict (it says so itself).
        let overlaps = match (name.strip_prefix("*."), theirs.strip_prefix("*.")) {
            (Some(domain), None) => parent(theirs).as_deref() == Some(domain),
            (None, Some(domain)) => parent(name).as_deref() == Some(domain),
            _ => false,
        };
        if overlaps {
            return Err(ApiError::Conflict(format!(
                "hostname: {name} overlaps {theirs}, which another app answers at"
            )));
        }
    }
    Ok(())
}
