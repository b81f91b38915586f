//! The ACME issuer: for each hostname added with `certificates/acme`, it looks at the
//! hostname's DNS until it points at the app (`aloft_acme::dns::points_at`), then orders a
//! certificate, answering the directory's challenge through the edge (the challenge goes
//! into the store, hence into the catalog every edge follows), and renews it
//! `renew_before` its expiry. Failures back off (DNS looks from 15 s to 10 min, orders
//! from 1 min to 6 h, as a directory's rate limits want); `certificates/{host}/check`
//! makes a hostname due at once.
//!
//! The issuer is the only writer of a hostname's ACME state once it is added; every write
//! is conditional on the state it read (`Store::set_acme`), so a hostname removed, or
//! added again, meanwhile is never overwritten by an order that started before.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_acme::dns::{Lookup, Records};
use aloft_acme::{Account, Directory, Presenter};
use aloft_store::{AcmeState, AcmeStatus, CertificateRecord, now_ms};
use aloft_types::catalog::{AcmeChallenge, AcmeChallengeKind};

use crate::{ApiError, Inner};

/// How the control plane gets certificates from an ACME directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub directory: Directory,
    /// DNS servers asked whether a hostname points at its app; none: the system's.
    pub resolvers: Vec<SocketAddr>,
    /// The challenges answered, in the order they are preferred.
    pub challenges: Vec<AcmeChallengeKind>,
    /// How long before its expiry a certificate is renewed.
    pub renew_before: Duration,
}

/// The issuer's part of the control plane's state.
#[derive(Debug)]
pub(crate) struct Issuer {
    pub(crate) settings: AcmeSettings,
    pub(crate) lookup: Lookup,
    /// Hostnames `check` made due now, whatever their backoff says.
    due: Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
    account: tokio::sync::Mutex<Option<Account>>,
}

/// How often the issuer looks at every hostname without being woken.
const PASS: Duration = Duration::from_secs(5);
/// How long an order may wait for the directory's validation and certificate.
const ORDER_WAIT: Duration = Duration::from_secs(90);
/// How long the edge may take to follow a published challenge.
const PUBLISH_WAIT: Duration = Duration::from_secs(15);

impl Issuer {
    pub(crate) fn new(settings: AcmeSettings) -> Result<Issuer, aloft_acme::dns::DnsError> {
        Ok(Issuer {
            lookup: Lookup::new(&settings.resolvers)?,
            settings,
            due: Mutex::new(HashSet::new()),
            wake: tokio::sync::Notify::new(),
            account: tokio::sync::Mutex::new(None),
        })
    }

    /// Makes `hostname` due at its next pass, which starts now.
    pub(crate) fn poke(&self, hostname: &str) {
        if let Ok(mut due) = self.due.lock() {
            due.insert(hostname.to_owned());
        }
        self.wake.notify_one();
    }
}

/// The wait after `attempts` failures in a row: `base` doubled each time, up to `most`.
fn backoff(attempts: u32, base: Duration, most: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(most)
}

/// Runs the issuer until the control plane stops.
pub(crate) async fn run(inner: Arc<Inner>) {
    let Some(issuer) = inner.acme.clone() else {
        return;
    };
    loop {
        tokio::select! {
            () = inner.stopping.cancelled() => return,
            () = issuer.wake.notified() => {}
            () = tokio::time::sleep(PASS) => {}
        }
        if let Err(error) = pass(&inner, &issuer).await {
            tracing::warn!(%error, "an ACME pass failed; will retry");
        }
    }
}

async fn pass(inner: &Arc<Inner>, issuer: &Issuer) -> Result<(), ApiError> {
    let due: HashSet<String> = issuer
        .due
        .lock()
        .map(|mut due| std::mem::take(&mut *due))
        .unwrap_or_default();
    let renew_before = i64::try_from(issuer.settings.renew_before.as_millis()).unwrap_or(i64::MAX);
    for record in inner.store.all_certificates().await? {
        let Some(state) = &record.acme else {
            continue;
        };
        let now = now_ms();
        let wanted = match state.status {
            AcmeStatus::PendingOwnership | AcmeStatus::PendingValidation => true,
            AcmeStatus::Active => state
                .expires_at
                .is_none_or(|expires| expires.saturating_sub(renew_before) <= now),
        };
        let forced = due.contains(&record.hostname);
        if !wanted || (!forced && state.next_attempt_at > now) {
            continue;
        }
        if inner.stopping.is_cancelled() {
            return Ok(());
        }
        attempt(inner, issuer, record).await?;
    }
    Ok(())
}

/// The addresses an app answers at: its dedicated IPs and the edge's shared ones.
pub(crate) async fn app_addresses(
    inner: &Inner,
    app: &aloft_types::AppId,
) -> Result<Vec<IpAddr>, ApiError> {
    let mut addresses: Vec<IpAddr> = inner
        .store
        .ips_of_app(app)
        .await?
        .iter()
        .filter_map(|ip| ip.address.parse().ok())
        .collect();
    if let Some(edge) = &inner.config.edge {
        addresses.extend(edge.public_addresses.iter().copied());
    }
    Ok(addresses)
}

/// What the hostname's DNS says, and whether it points at the app.
pub(crate) async fn look(
    inner: &Inner,
    issuer: &Issuer,
    record: &CertificateRecord,
) -> Result<(Records, Result<(), String>), ApiError> {
    let app = inner.store.app(&record.app_id).await?;
    let target = inner
        .config
        .edge
        .as_ref()
        .map(|edge| edge.hostname(app.name.as_str()))
        .unwrap_or_default();
    let addresses = app_addresses(inner, &record.app_id).await?;
    Ok(match issuer.lookup.records(&record.hostname).await {
        Ok(records) => {
            let verdict = aloft_acme::dns::points_at(&records, &addresses, &target);
            (records, verdict)
        }
        Err(error) => (Records::default(), Err(error.to_string())),
    })
}

/// One look at a hostname, and an order if its DNS points at the app.
async fn attempt(
    inner: &Arc<Inner>,
    issuer: &Issuer,
    record: CertificateRecord,
) -> Result<(), ApiError> {
    let mut state = record.acme.clone().unwrap_or_default();
    // A challenge left by an order a killed process never finished is answered no more.
    state.challenge = None;
    let host = record.hostname.clone();
    let (_, verdict) = look(inner, issuer, &record).await?;
    state.dns_configured = verdict.is_ok();
    if let Err(reason) = verdict {
        tracing::info!(hostname = %host, %reason, "not ordering a certificate: the hostname does not point at its app");
        state.attempts += 1;
        let wait = backoff(
            state.attempts,
            Duration::from_secs(15),
            Duration::from_secs(600),
        );
        return fail(inner, &record, state, reason, wait).await;
    }
    let account = match account(inner, issuer).await {
        Ok(account) => account,
        Err(reason) => {
            state.attempts += 1;
            let wait = backoff(
                state.attempts,
                Duration::from_secs(60),
                Duration::from_secs(21_600),
            );
            return fail(inner, &record, state, reason, wait).await;
        }
    };
    if state.status == AcmeStatus::PendingOwnership {
        state.status = AcmeStatus::PendingValidation;
    }
    let seen = inner
        .store
        .set_acme(
            &record.app_id,
            &host,
            record.updated_at,
            Some(&state),
            record.acme_key_sealed.as_deref(),
        )
        .await?;
    if seen == 0 {
        return Ok(());
    }
    let edge = Edge {
        inner,
        record: &record,
        state: Mutex::new((state, seen)),
        used: Mutex::new(None),
    };
    tracing::info!(hostname = %host, directory = %issuer.settings.directory.url, "ordering a certificate");
    let result = account
        .order(&host, &issuer.settings.challenges, &edge, ORDER_WAIT)
        .await;
    let kind = edge.used.lock().ok().and_then(|used| *used);
    let Ok((mut state, seen)) = edge.state.into_inner() else {
        return Ok(());
    };
    if seen == 0 {
        // Removed or added again while the order ran: what it got is not this record's.
        return Ok(());
    }
    let mut current = record.clone();
    current.updated_at = seen;
    match result {
        Ok(issued) => {
            state.challenge = None;
            state.status = AcmeStatus::Active;
            state.fullchain = Some(issued.fullchain);
            state.issued_at = Some(issued.not_before);
            state.expires_at = Some(issued.not_after);
            state.attempts = 0;
            state.next_attempt_at = 0;
            state.errors.clear();
            match kind {
                Some(AcmeChallengeKind::TlsAlpn01) => state.alpn_configured = true,
                Some(AcmeChallengeKind::Http01) => state.http_configured = true,
                None => {}
            }
            let sealed = inner.secrets_key.encrypt(&issued.private_key)?;
            let written = inner
                .store
                .set_acme(&record.app_id, &host, seen, Some(&state), Some(&sealed))
                .await?;
            if written != 0 {
                tracing::info!(hostname = %host, expires_at = %aloft_types::time::rfc3339(issued.not_after), "a certificate was issued");
                inner.catalog_dirty.notify_one();
            }
            Ok(())
        }
        Err(error) => {
            state.challenge = None;
            state.attempts += 1;
            let wait = backoff(
                state.attempts,
                Duration::from_secs(60),
                Duration::from_secs(21_600),
            );
            fail(inner, &current, state, error.to_string(), wait).await
        }
    }
}

/// Records a failure and when to try again.
async fn fail(
    inner: &Inner,
    record: &CertificateRecord,
    mut state: AcmeState,
    reason: String,
    wait: Duration,
) -> Result<(), ApiError> {
    let now = now_ms();
    tracing::warn!(hostname = %record.hostname, %reason, retry_in_s = wait.as_secs(), "no certificate yet");
    state.failed(reason, now);
    state.next_attempt_at = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
    inner
        .store
        .set_acme(
            &record.app_id,
            &record.hostname,
            record.updated_at,
            Some(&state),
            record.acme_key_sealed.as_deref(),
        )
        .await?;
    inner.catalog_dirty.notify_one();
    Ok(())
}

/// The account on the directory: the stored one, or a new one stored (the first stored
/// wins when two control planes make one at once).
async fn account(inner: &Inner, issuer: &Issuer) -> Result<Account, String> {
    let mut held = issuer.account.lock().await;
    if let Some(account) = &*held {
        return Ok(account.clone());
    }
    let directory = &issuer.settings.directory;
    let stored = |inner: &Inner| {
        let store = inner.store.clone();
        let url = directory.url.clone();
        async move { store.acme_account(&url).await }
    };
    let unseal = |sealed: String| {
        inner
            .secrets_key
            .decrypt(&sealed)
            .map_err(|e| e.to_string())
    };
    let account = match stored(inner).await.map_err(|e| e.to_string())? {
        Some(sealed) => {
            let credentials = unseal(sealed)?;
            Account::open(directory, Some(&credentials))
                .await
                .map_err(|e| e.to_string())?
                .0
        }
        None => {
            let (made, credentials) = Account::open(directory, None)
                .await
                .map_err(|e| e.to_string())?;
            let credentials = credentials.unwrap_or_default();
            let sealed = inner
                .secrets_key
                .encrypt(&credentials)
                .map_err(|e| e.to_string())?;
            inner
                .store
                .put_acme_account(&directory.url, &sealed)
                .await
                .map_err(|e| e.to_string())?;
            match stored(inner).await.map_err(|e| e.to_string())? {
                Some(kept) if kept != sealed => {
                    Account::open(directory, Some(&unseal(kept)?))
                        .await
                        .map_err(|e| e.to_string())?
                        .0
                }
                _ => made,
            }
        }
    };
    *held = Some(account.clone());
    Ok(account)
}

/// Presents challenges through the store (hence the catalog every edge follows).
struct Edge<'a> {
    inner: &'a Arc<Inner>,
    record: &'a CertificateRecord,
    /// The hostname's state as last written, and its `updated_at` (0: lost to another
    /// writer).
    state: Mutex<(AcmeState, i64)>,
    /// The kind of the challenge presented.
    used: Mutex<Option<AcmeChallengeKind>>,
}

impl Edge<'_> {
    async fn write(&self, challenge: Option<AcmeChallenge>) -> Result<(), String> {
        let (state, seen) = {
            let Ok(mut held) = self.state.lock() else {
                return Err("the issuer's state is poisoned".to_owned());
            };
            if held.1 == 0 {
                return Err("the hostname was removed or added again".to_owned());
            }
            held.0.challenge = challenge;
            (held.0.clone(), held.1)
        };
        let written = self
            .inner
            .store
            .set_acme(
                &self.record.app_id,
                &self.record.hostname,
                seen,
                Some(&state),
                self.record.acme_key_sealed.as_deref(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(mut held) = self.state.lock() {
            held.1 = written;
        }
        self.inner.catalog_dirty.notify_one();
        if written == 0 {
            Err("the hostname was removed or added again".to_owned())
        } else {
            Ok(())
        }
    }
}

impl Presenter for Edge<'_> {
    async fn present(&self, challenge: &AcmeChallenge) -> Result<(), String> {
        self.write(Some(challenge.clone())).await?;
        if let Ok(mut used) = self.used.lock() {
            *used = Some(challenge.kind);
        }
        // The edge answers once the catalog it follows has the challenge.
        let Some(mut catalog) = self.inner.catalog.get().cloned() else {
            return Err("no edge follows this control plane's catalog".to_owned());
        };
        let published = tokio::time::timeout(
            PUBLISH_WAIT,
            catalog.wait_for(|c| c.acme_challenges.iter().any(|c| c == challenge)),
        )
        .await;
        match published {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "the catalog did not carry the challenge within {} s",
                PUBLISH_WAIT.as_secs()
            )),
        }
    }

    async fn withdraw(&self, _hostname: &str) {
        let present = self
            .state
            .lock()
            .is_ok_and(|held| held.1 != 0 && held.0.challenge.is_some());
        if present {
            let _ = self.write(None).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_its_base_to_its_ceiling() {
        let base = Duration::from_secs(60);
        let most = Duration::from_secs(21_600);
        assert_eq!(backoff(1, base, most), base);
        assert_eq!(backoff(2, base, most), Duration::from_secs(120));
        assert_eq!(backoff(5, base, most), Duration::from_secs(960));
        assert_eq!(backoff(9, base, most), Duration::from_secs(15_360));
        assert_eq!(backoff(10, base, most), most);
        assert_eq!(backoff(u32::MAX, base, most), most);
    }
}
