//! The headers the proxy adds, removes and answers with: Fly's `Fly-*` and the
//! `X-Forwarded-*` headers, hop-by-hop headers, request ids and `http_options.response`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aloft_types::machine::{HttpResponseOptions, ResponseHeader};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};

use super::Proxy;

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
pub(super) const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Header names the proxy reads or writes on every request, made once (a name given as
/// text is parsed and hashed anew at every use).
pub(super) const FLY_CLIENT_IP: HeaderName = HeaderName::from_static("fly-client-ip");

pub(super) const FLY_FORWARDED_PORT: HeaderName = HeaderName::from_static("fly-forwarded-port");

pub(super) const FLY_REGION: HeaderName = HeaderName::from_static("fly-region");

pub(super) const FLY_REQUEST_ID: HeaderName = HeaderName::from_static("fly-request-id");

pub(super) const FLY_FORCE_INSTANCE_ID: HeaderName =
    HeaderName::from_static("fly-force-instance-id");

pub(super) const FLY_PREFER_INSTANCE_ID: HeaderName =
    HeaderName::from_static("fly-prefer-instance-id");

pub(super) const FLY_FORCE_REGION: HeaderName = HeaderName::from_static("fly-force-region");

pub(super) const FLY_PREFER_REGION: HeaderName = HeaderName::from_static("fly-prefer-region");

/// Request headers only the proxy sets (on replays); a client's are removed.
const SET_BY_THE_PROXY: [&str; 3] = [
    "fly-replay-src",
    "fly-replay-failed",
    "fly-replay-cache-status",
];
pub(super) const FLY_REPLAY: HeaderName = HeaderName::from_static("fly-replay");

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

pub(super) const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

pub(super) const X_FORWARDED_SSL: HeaderName = HeaderName::from_static("x-forwarded-ssl");

pub(super) const VIA_ALOFT: HeaderValue = HeaderValue::from_static("1.1 aloft");

/// `http_options.response.headers`: `false` removes a header, a string sets it, a list
/// sets every value.
pub(super) fn apply_response_headers(headers: &mut http::HeaderMap, options: &HttpResponseOptions) {
    for (name, rule) in &options.headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        match rule {
            ResponseHeader::Keep(false) => {
                headers.remove(&name);
            }
            ResponseHeader::Keep(true) => {}
            ResponseHeader::One(value) => {
                if let Ok(value) = HeaderValue::from_str(value) {
                    headers.insert(name, value);
                }
            }
            ResponseHeader::Many(values) => {
                headers.remove(&name);
                for value in values {
                    if let Ok(value) = HeaderValue::from_str(value) {
                        headers.append(name.clone(), value);
                    }
                }
            }
        }
    }
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` and `Upgrade: X`).
pub(super) fn wants_upgrade(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asked
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// 128 random bits for request ids: SplitMix64 per thread, seeded from the OS once
/// (ids must be unique, not secret; a system call per request cost more than the rest of
/// the id).
pub(super) fn random_u128() -> u128 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_le_bytes(seed)
        });
    }
    let next = || {
        STATE.with(|state| {
            let value = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(value);
            let mut z = value;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    };
    (u128::from(next()) << 64) | u128::from(next())
}

/// `Fly-Request-Id`: a ULID (time-ordered, 26 Crockford base32 characters) and the region.
pub fn request_id(region: &str) -> String {
    request_id_at(region, Instant::now())
}

/// Milliseconds since the Unix epoch at `now`, from a wall-clock reading this thread takes
/// once a second (the wall clock is a system call on some virtual machines).
pub(super) fn unix_millis(now: Instant) -> u128 {
    thread_local! {
        static BASE: std::cell::Cell<Option<(Instant, u128)>> = const { std::cell::Cell::new(None) };
    }
    BASE.with(|base| {
        let (at, millis) = match base.get() {
            Some((at, millis)) if now >= at && now.duration_since(at) < Duration::from_secs(1) => {
                (at, millis)
            }
            _ => {
                let millis = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                base.set(Some((now, millis)));
                (now, millis)
            }
        };
        millis + now.duration_since(at).as_millis()
    })
}

/// [`request_id`] for a request that arrived at `now`.
pub(super) fn request_id_at(region: &str, now: Instant) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = unix_millis(now) & ((1 << 48) - 1);
    let value = (millis << 80) | (random_u128() & ((1 << 80) - 1));
    let mut text = String::with_capacity(26 + 1 + region.len());
    for index in (0..26).rev() {
        let digit = ((value >> (5 * index)) & 0x1f) as usize;
        text.push(char::from(ALPHABET[digit]));
    }
    text.push('-');
    text.push_str(region);
    text
}

impl Proxy {
    /// Fly's request headers, the original `Host`, and no hop-by-hop headers.
    pub(super) fn forwarded_headers(
        &self,
        headers: &mut http::HeaderMap,
        host: &str,
        client: SocketAddr,
        local_port: u16,
        tls: bool,
    ) {
        // Headers the client's `Connection` names are hop-by-hop too (rare: parsed only
        // when present beyond the usual `keep-alive`/`close`).
        if let Some(named) = headers
            .get(header::CONNECTION)
            .and_then(|c| c.to_str().ok())
            .filter(|c| {
                c.split(',').any(|n| {
                    let n = n.trim();
                    !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close")
                })
            })
            .map(|c| {
                c.split(',')
                    .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                    .collect::<Vec<_>>()
            })
        {
            for name in named {
                headers.remove(name);
            }
        }
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        if let Ok(value) = HeaderValue::from_str(host) {
            headers.insert(header::HOST, value);
        }
        headers.remove(FLY_FORCE_INSTANCE_ID);
        headers.remove(FLY_PREFER_INSTANCE_ID);
        // What only the proxy says about a replay: a client's own would be believed.
        for name in SET_BY_THE_PROXY {
            headers.remove(name);
        }
        let client_ip = client.ip().to_canonical();
        let client_ip_value =
            HeaderValue::from_maybe_shared(Bytes::from(client_ip.to_string())).ok();
        let forwarded_for = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) => {
                HeaderValue::from_maybe_shared(Bytes::from(format!("{earlier}, {client_ip}"))).ok()
            }
            None => client_ip_value.clone(),
        };
        let port = HeaderValue::from(local_port);
        if let Some(value) = client_ip_value {
            headers.insert(FLY_CLIENT_IP, value);
        }
        if let Some(value) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(FLY_FORWARDED_PORT, port.clone());
        headers.insert(X_FORWARDED_PORT, port);
        headers.insert(FLY_REGION, self.region_header.clone());
        let (proto, ssl) = if tls {
            ("https", "on")
        } else {
            ("http", "off")
        };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        headers.insert(X_FORWARDED_SSL, HeaderValue::from_static(ssl));
        headers.append(header::VIA, VIA_ALOFT);
    }
}
