//! Replay caching, as Fly's proxy does it: a replay decision remembered for a while, so
//! that later requests go straight to its target without asking the machine that replayed.
//!
//! - Session-based: the port's `http_options.replay_cache` rules key a replay on a cookie
//!   or header value under a path prefix (the longest matching prefix whose cookie or
//!   header the request has).
//! - Path-based: the replaying machine's `fly-replay-cache: PREFIX` with
//!   `fly-replay-cache-ttl-secs` (the JSON form's `cache`) keys it on the path alone.
//!
//! A target that replays back with `fly-replay-cache: invalidate` forgets it; a client
//! skips it with `fly-replay-cache-control: skip` where the rule allows (`allow_bypass`).
//! Caches are per app and hostname. The replayed request says which way it came in
//! `fly-replay-cache-status` (`hit`, `miss` or `bypass`). Caching is an optimisation: a
//! cached target that fails is forgotten and the request goes to the app as usual.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aloft_types::machine::{ReplayCache as Rule, ReplayCacheKind};
use http::HeaderMap;
use http::header::HeaderName;

use http::HeaderValue;
use http::Response;
use hyper::body::Incoming;

use super::Proxy;
use super::lease::{Held, OutgoingBody};
use crate::replay::{CacheDirective, Replay};
use crate::routes::{Backend, Route};

/// The request header that asks to skip a cached replay (`skip`).
pub(super) const CACHE_CONTROL: HeaderName = HeaderName::from_static("fly-replay-cache-control");
/// The header that tells the replay's target how the request came.
pub(super) const CACHE_STATUS: HeaderName = HeaderName::from_static("fly-replay-cache-status");
/// More session entries than any sane use: past it, expired ones are dropped and, if
/// still full, nothing new is remembered.
const MAX_ENTRIES: usize = 100_000;
/// Path-based entries per app and hostname, at most (each request looks at them all).
const MAX_PATHS_PER_HOST: usize = 64;

/// One cached decision's place: the app and hostname, the prefix, and (session-based) the
/// cookie or header value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    app: String,
    host: String,
    prefix: String,
    session: Option<String>,
}

/// A remembered replay, and the machine that asked for it (for `fly-replay-src`).
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) replay: Replay,
    pub(super) origin: Backend,
    expires: Instant,
    allow_bypass: bool,
}

/// A session rule that applies to a request: its key, how long and whether clients may
/// skip it.
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) key: Key,
    ttl: Duration,
    allow_bypass: bool,
}

/// One app's path-based entries by hostname (few per hostname), each with its key.
type HostPaths = HashMap<String, Vec<(Key, Cached)>>;

/// The replay cache of one proxy.
#[derive(Debug, Default)]
pub(crate) struct ReplayCaches {
    /// Session-based entries, by their whole key.
    sessions: Mutex<HashMap<Key, Cached>>,
    /// Path-based entries, by app, then hostname.
    paths: Mutex<HashMap<String, HostPaths>>,
}

/// `prefix` (`[host]/path`, `*` and a final `/` optional) split into its host (lowercase,
/// if any) and its path without a final `/`.
fn split_prefix(prefix: &str) -> (Option<String>, String) {
    let prefix = prefix.trim().trim_end_matches('*').trim_end_matches('/');
    match prefix.find('/') {
        Some(0) => (None, prefix.to_owned()),
        Some(at) => (
            Some(prefix[..at].to_ascii_lowercase()),
            prefix[at..].to_owned(),
        ),
        None if prefix.is_empty() => (None, String::new()),
        None => (Some(prefix.to_ascii_lowercase()), String::new()),
    }
}

/// How specific a match of `prefix` is for `host` and `path` (longer is more), or `None`
/// when it does not match.
fn matches(prefix: &str, host: &str, path: &str) -> Option<usize> {
    let (wanted, under) = split_prefix(prefix);
    if wanted.as_deref().is_some_and(|w| w != host) {
        return None;
    }
    let inside = under.is_empty()
        || path == under
        || path
            .strip_prefix(under.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
    inside.then_some(under.len())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// The session rule of `rules` that applies: the longest prefix matching the request whose
/// cookie or header it carries.
pub(super) fn session(
    rules: &[Rule],
    app: &str,
    host: &str,
    path: &str,
    headers: &HeaderMap,
) -> Option<Session> {
    rules
        .iter()
        .filter_map(|rule| {
            let length = matches(&rule.path_prefix, host, path)?;
            let value = match rule.kind {
                ReplayCacheKind::Cookie => cookie(headers, &rule.name)?,
                ReplayCacheKind::Header => headers.get(&rule.name)?.to_str().ok()?.to_owned(),
            };
            Some((length, rule, value))
        })
        .max_by_key(|(length, _, _)| *length)
        .map(|(_, rule, value)| Session {
            key: Key {
                app: app.to_owned(),
                host: host.to_owned(),
                prefix: split_prefix(&rule.path_prefix).1,
                session: Some(value),
            },
            ttl: Duration::from_secs(u64::from(rule.ttl_seconds)),
            allow_bypass: rule.allow_bypass,
        })
}

/// Whether the client asks to skip a cached replay.
pub(super) fn asks_to_skip(headers: &HeaderMap) -> bool {
    headers
        .get(CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("skip"))
}

impl ReplayCaches {
    /// Whether `app` has path-based entries (so a request without session rules may hit).
    pub(super) fn has_paths(&self, app: &str) -> bool {
        self.paths.lock().is_ok_and(|paths| paths.contains_key(app))
    }

    /// The cached replay for a request: its session's, else the longest path-based one of
    /// its app and host.
    pub(super) fn lookup(
        &self,
        app: &str,
        host: &str,
        path: &str,
        session: Option<&Session>,
    ) -> Option<(Key, Cached, bool)> {
        let now = Instant::now();
        if let Some(session) = session
            && let Ok(mut sessions) = self.sessions.lock()
        {
            match sessions.get(&session.key) {
                Some(cached) if cached.expires > now => {
                    return Some((session.key.clone(), cached.clone(), cached.allow_bypass));
                }
                Some(_) => {
                    sessions.remove(&session.key);
                }
                None => {}
            }
        }
        let mut paths = self.paths.lock().ok()?;
        let hosts = paths.get_mut(app)?;
        let entries = hosts.get_mut(host)?;
        entries.retain(|(_, cached)| cached.expires > now);
        let found = entries
            .iter()
            .filter(|(key, _)| matches(&key.prefix, host, path).is_some())
            .max_by_key(|(key, _)| key.prefix.len())
            .map(|(key, cached)| (key.clone(), cached.clone(), cached.allow_bypass));
        if entries.is_empty() {
            hosts.remove(host);
            if hosts.is_empty() {
                paths.remove(app);
            }
        }
        found
    }

    /// Remembers `replay` (asked for by `origin`) for a session.
    pub(super) fn remember_session(&self, session: &Session, replay: &Replay, origin: &Backend) {
        let Ok(mut sessions) = self.sessions.lock() else {
            return;
        };
        let now = Instant::now();
        if sessions.len() >= MAX_ENTRIES {
            sessions.retain(|_, cached| cached.expires > now);
            if sessions.len() >= MAX_ENTRIES {
                return;
            }
        }
        sessions.insert(
            session.key.clone(),
            entry(replay, origin, now + session.ttl, session.allow_bypass),
        );
    }

    /// Remembers `replay` for requests of `app` at `host` under `prefix` (which must match
    /// the request that asked for it, `path`).
    pub(super) fn remember_path(
        &self,
        (app, host, path): (&str, &str, &str),
        prefix: &str,
        ttl: Duration,
        allow_bypass: bool,
        replay: &Replay,
        origin: &Backend,
    ) {
        if matches(prefix, host, path).is_none() {
            tracing::debug!(%prefix, %path, "a fly-replay-cache prefix that does not match its own request is ignored");
            return;
        }
        let key = Key {
            app: app.to_owned(),
            host: host.to_owned(),
            prefix: split_prefix(prefix).1,
            session: None,
        };
        let Ok(mut paths) = self.paths.lock() else {
            return;
        };
        let now = Instant::now();
        let entries = paths
            .entry(app.to_owned())
            .or_default()
            .entry(host.to_owned())
            .or_default();
        entries.retain(|(k, cached)| cached.expires > now && *k != key);
        if entries.len() >= MAX_PATHS_PER_HOST {
            return;
        }
        entries.push((key, entry(replay, origin, now + ttl, allow_bypass)));
    }

    /// Forgets one cached replay.
    pub(super) fn forget(&self, key: &Key) {
        if key.session.is_some() {
            if let Ok(mut sessions) = self.sessions.lock() {
                sessions.remove(key);
            }
        } else if let Ok(mut paths) = self.paths.lock()
            && let Some(entries) = paths
                .get_mut(&key.app)
                .and_then(|hosts| hosts.get_mut(&key.host))
        {
            entries.retain(|(k, _)| k != key);
        }
    }
}

/// A cache entry for `replay`: without a fallback of its own (a cached target that fails
/// is forgotten and the request goes to the app) and without its cache directive.
fn entry(replay: &Replay, origin: &Backend, expires: Instant, allow_bypass: bool) -> Cached {
    let mut replay = replay.clone();
    replay.fallback = None;
    replay.cache = None;
    Cached {
        replay,
        origin: origin.clone(),
        expires,
        allow_bypass,
    }
}

/// What replay caching means for one request.
#[derive(Debug)]
pub(super) struct Caching {
    host: String,
    path: String,
    session: Option<Session>,
    /// The cached replay to follow, and where it is kept.
    cached: Option<(Key, Cached)>,
    /// The client skipped a cached replay that it may skip.
    bypassed: bool,
}

impl Caching {
    /// A request's caching when nothing is cached for it and no session rule applies: what
    /// a replay's own `fly-replay-cache` needs to be remembered.
    pub(super) fn bare(host: &str, parts: &http::request::Parts) -> Caching {
        Caching {
            host: hostname(host),
            path: parts.uri.path().to_owned(),
            session: None,
            cached: None,
            bypassed: false,
        }
    }

    /// `fly-replay-cache-status` for the replayed request.
    pub(super) fn status(caching: Option<&Caching>, hit: bool) -> HeaderValue {
        let bypassed = caching.is_some_and(|c| c.bypassed);
        HeaderValue::from_static(match (hit, bypassed) {
            (true, _) => "hit",
            (false, true) => "bypass",
            (false, false) => "miss",
        })
    }
}

/// The request's hostname, lowercase and without a port.
fn hostname(host: &str) -> String {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name.to_ascii_lowercase()
}

impl Proxy {
    /// The replay caching of a request for `app` at `host` (its `Host`) on `route`; `None`
    /// when its body cannot be replayed.
    pub(super) fn replay_caching(
        &self,
        app: &str,
        host: &str,
        route: &Route,
        parts: &http::request::Parts,
        body: &OutgoingBody,
    ) -> Option<Caching> {
        let OutgoingBody::Buffered(_) = body else {
            return None;
        };
        let rules = route
            .http_options
            .as_ref()
            .map_or(&[][..], |o| &o.replay_cache[..]);
        // Nothing to look up (the common case): no work per request.
        if rules.is_empty() && !self.replay_caches.has_paths(app) {
            return None;
        }
        let host = hostname(host);
        let path = parts.uri.path().to_owned();
        let session = session(rules, app, &host, &path, &parts.headers);
        let mut cached = self
            .replay_caches
            .lookup(app, &host, &path, session.as_ref());
        let bypassed = cached
            .as_ref()
            .is_some_and(|(_, _, may_skip)| *may_skip && asks_to_skip(&parts.headers));
        if bypassed {
            cached = None;
        }
        Some(Caching {
            host,
            path,
            session,
            cached: cached.map(|(key, entry, _)| (key, entry)),
            bypassed,
        })
    }

    /// Sends the request straight to its cached replay's target; `None` when there is no
    /// cached replay, or it failed (it is then forgotten, and the app gets the request).
    pub(super) async fn cached_replay(
        &self,
        app: &str,
        public_port: u16,
        caching: &Caching,
        parts: &http::request::Parts,
        body: &mut OutgoingBody,
    ) -> Option<(Response<Incoming>, Held, Backend)> {
        let (key, cached) = caching.cached.as_ref()?;
        let mut hit = parts.clone();
        hit.headers
            .insert(CACHE_STATUS, Caching::status(Some(caching), true));
        match self
            .replay(app, public_port, &cached.origin, &cached.replay, &hit, body)
            .await
        {
            Ok(sent) => Some(sent),
            Err(_) => {
                tracing::debug!(%app, prefix = %key.prefix, "a cached replay failed; it is forgotten");
                self.replay_caches.forget(key);
                None
            }
        }
    }

    /// Learns from a replay asked for by `asker`: an invalidation forgets the request's
    /// cached replay; a replay asked by the app itself (`from_origin`) is remembered for
    /// the request's session and, when it says so, for its path.
    pub(super) fn learn_replay(
        &self,
        app: &str,
        caching: &Caching,
        replay: &Replay,
        asker: &Backend,
        from_origin: bool,
    ) {
        if replay.cache == Some(CacheDirective::Invalidate) {
            if let Some((key, _)) = &caching.cached {
                self.replay_caches.forget(key);
            }
            if let Some(session) = &caching.session {
                self.replay_caches.forget(&session.key);
            }
            return;
        }
        if !from_origin || caching.bypassed {
            return;
        }
        if let Some(session) = &caching.session {
            self.replay_caches.remember_session(session, replay, asker);
        }
        if let Some(CacheDirective::Store {
            prefix,
            ttl,
            allow_bypass,
        }) = &replay.cache
        {
            self.replay_caches.remember_path(
                (app, &caching.host, &caching.path),
                prefix,
                *ttl,
                *allow_bypass,
                replay,
                asker,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    use super::*;

    fn rule(prefix: &str, kind: ReplayCacheKind, name: &str) -> Rule {
        Rule {
            path_prefix: prefix.to_owned(),
            ttl_seconds: 60,
            kind,
            name: name.to_owned(),
            allow_bypass: false,
        }
    }

    #[test]
    fn prefixes_match_their_path_and_below_on_their_host() {
        for (prefix, host, path, expected) in [
            ("/", "a.com", "/anything", Some(0)),
            ("/api", "a.com", "/api", Some(4)),
            ("/api", "a.com", "/api/v1", Some(4)),
            ("/api/", "a.com", "/api/v1", Some(4)),
            ("/api/*", "a.com", "/api/v1", Some(4)),
            ("/api", "a.com", "/apix", None),
            ("/api", "a.com", "/", None),
            ("a.com/api", "a.com", "/api/x", Some(4)),
            ("A.com/api", "a.com", "/api/x", Some(4)),
            ("b.com/api", "a.com", "/api/x", None),
            ("a.com", "a.com", "/x", Some(0)),
        ] {
            assert_eq!(
                matches(prefix, host, path),
                expected,
                "{prefix} {host}{path}"
            );
        }
    }

    #[test]
    fn the_longest_rule_whose_cookie_or_header_is_there_applies() {
        let rules = [
            rule("/", ReplayCacheKind::Cookie, "session"),
            rule("/api", ReplayCacheKind::Header, "authorization"),
        ];
        let mut headers = HeaderMap::new();
        headers.insert("cookie", "a=1; session=abc; b=2".parse().unwrap());
        let picked = session(&rules, "web", "a.com", "/api/x", &headers).unwrap();
        assert_eq!(picked.key.session.as_deref(), Some("abc"), "no header yet");
        assert_eq!(picked.key.prefix, "");
        headers.insert("authorization", "Bearer t".parse().unwrap());
        let picked = session(&rules, "web", "a.com", "/api/x", &headers).unwrap();
        assert_eq!(picked.key.session.as_deref(), Some("Bearer t"));
        assert_eq!(picked.key.prefix, "/api");
        assert!(session(&rules, "web", "a.com", "/x", &HeaderMap::new()).is_none());
    }
}
