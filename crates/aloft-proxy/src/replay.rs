//! `fly-replay`: a machine's answer that asks the proxy to deliver the original request
//! elsewhere (another region, machine or app). Both of Fly's forms are read: the response
//! header (`fly-replay: region=ams;app=other;state=x`) and a response body of type
//! `application/vnd.fly.replay+json`. Pure parsing and formatting; the proxy replays.

use std::time::Duration;

use serde::Deserialize;

/// The content type of a replay given as a JSON body.
pub const REPLAY_JSON: &str = "application/vnd.fly.replay+json";
/// Requests whose body is larger than this are not replayed (Fly's limit).
pub const MAX_REPLAY_BODY: usize = 1024 * 1024;
/// How many times one request may be replayed before the proxy gives up.
pub const MAX_REPLAYS: usize = 4;

/// Where to go when a replay finds no machine or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Back to the machine that asked for the replay, else an error.
    ForceSelf,
    /// Back to that machine if it can take it, else any machine of its app.
    PreferSelf,
}

/// Changes made to the request before it is replayed (JSON form only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub delete_headers: Vec<String>,
    #[serde(default)]
    pub set_headers: Vec<SetHeader>,
}

/// One header a transform sets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SetHeader {
    pub name: String,
    pub value: String,
}

/// One replay request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Region codes (aliases expanded); empty: any region.
    pub regions: Vec<String>,
    pub instance: Option<String>,
    pub prefer_instance: Option<String>,
    pub app: Option<String>,
    pub state: Option<String>,
    /// Leave out the machine that asked.
    pub elsewhere: bool,
    pub timeout: Option<Duration>,
    pub fallback: Option<Fallback>,
    pub transform: Transform,
    /// What the replay asks of the replay cache (path-based caching).
    pub cache: Option<CacheDirective>,
}

/// What a replay asks of the replay cache: Fly's `fly-replay-cache` headers, or the JSON
/// form's `cache` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheDirective {
    /// Send requests under `prefix` (`[host]/path`, implicitly ending in `/*`) straight to
    /// this replay's target for `ttl`.
    Store {
        prefix: String,
        ttl: Duration,
        allow_bypass: bool,
    },
    /// Forget the cached replay that brought this request here.
    Invalidate,
}

/// The response headers of path-based replay caching.
pub const REPLAY_CACHE: &str = "fly-replay-cache";
pub const REPLAY_CACHE_TTL: &str = "fly-replay-cache-ttl-secs";
pub const REPLAY_CACHE_ALLOW_BYPASS: &str = "fly-replay-cache-allow-bypass";

/// Reads the `fly-replay-cache` headers: `invalidate`, or a prefix with its TTL (whole
/// seconds, at least 1) and whether clients may skip it (`yes`).
pub fn cache_directive(
    cache: Option<&str>,
    ttl: Option<&str>,
    allow_bypass: Option<&str>,
) -> Result<Option<CacheDirective>, ReplayError> {
    let Some(cache) = cache.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if cache.eq_ignore_ascii_case("invalidate") {
        return Ok(Some(CacheDirective::Invalidate));
    }
    let ttl = ttl.ok_or_else(|| {
        ReplayError::Cache(format!(
            "{REPLAY_CACHE}: {cache} without {REPLAY_CACHE_TTL}"
        ))
    })?;
    let seconds = ttl
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            ReplayError::Cache(format!(
                "{REPLAY_CACHE_TTL}: {ttl:?} is not a whole number of seconds above 0"
            ))
        })?;
    Ok(Some(CacheDirective::Store {
        prefix: cache.to_owned(),
        ttl: Duration::from_secs(seconds),
        allow_bypass: allow_bypass.is_some_and(|v| v.trim().eq_ignore_ascii_case("yes")),
    }))
}

/// Region groups Fly accepts in `region`.
fn alias(name: &str) -> Option<&'static [&'static str]> {
    const US: &[&str] = &[
        "atl", "bos", "den", "dfw", "ewr", "iad", "lax", "mia", "ord", "phx", "sea", "sjc",
    ];
    const NA: &[&str] = &[
        "atl", "bos", "den", "dfw", "ewr", "iad", "lax", "mia", "ord", "phx", "qro", "sea", "sjc",
        "yul", "yyz",
    ];
    const EU: &[&str] = &["ams", "arn", "cdg", "fra", "lhr", "mad", "otp", "waw"];
    const APAC: &[&str] = &["bom", "hkg", "nrt", "sin", "syd"];
    const SA: &[&str] = &["bog", "eze", "gig", "gru", "scl"];
    match name {
        "us" | "usa" => Some(US),
        "na" => Some(NA),
        "eu" => Some(EU),
        "apac" => Some(APAC),
        "sa" => Some(SA),
        _ => None,
    }
}

/// Why a `fly-replay` header or body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("region {0:?} is not a region code or alias")]
    Region(String),
    #[error("timeout {text:?}: {reason}")]
    Timeout { text: String, reason: String },
    #[error("fallback {0:?}: expected force_self or prefer_self")]
    Fallback(String),
    #[error("elsewhere {0:?}: expected true or false")]
    Elsewhere(String),
    #[error("{0:?} is not key=value")]
    NotPair(String),
    #[error("{0}: unterminated quote")]
    UnterminatedQuote(String),
    #[error("{0}: expected ';' after the quoted value")]
    AfterQuote(String),
    #[error("a field without a name")]
    NoName,
    #[error("unknown field {0:?}")]
    UnknownField(String),
    #[error("{0}")]
    Json(String),
    #[error("the fly-replay header is not text")]
    NotText,
    #[error("reading the replay body: {0}")]
    Body(String),
    #[error("{0}")]
    Cache(String),
}

fn regions(list: &str) -> Result<Vec<String>, ReplayError> {
    let mut regions = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let name = name.to_ascii_lowercase();
        if name == "any" {
            return Ok(Vec::new());
        }
        match alias(&name) {
            Some(group) => regions.extend(group.iter().map(|r| (*r).to_owned())),
            None if name.len() == 3 && name.bytes().all(|b| b.is_ascii_lowercase()) => {
                regions.push(name);
            }
            None => return Err(ReplayError::Region(name)),
        }
    }
    Ok(regions)
}

fn duration(text: &str) -> Result<Duration, ReplayError> {
    text.trim()
        .parse::<aloft_types::Duration>()
        .map(aloft_types::Duration::as_std)
        .map_err(|e| ReplayError::Timeout {
            text: text.to_owned(),
            reason: e.to_string(),
        })
}

fn fallback(text: &str) -> Result<Fallback, ReplayError> {
    match text.trim() {
        "force_self" => Ok(Fallback::ForceSelf),
        "prefer_self" => Ok(Fallback::PreferSelf),
        other => Err(ReplayError::Fallback(other.to_owned())),
    }
}

/// Splits `a=1;b="x;y"` into pairs, honouring double quotes.
fn pairs(text: &str) -> Result<Vec<(String, String)>, ReplayError> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| ReplayError::NotPair(rest.to_owned()))?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| ReplayError::UnterminatedQuote(key.clone()))?;
            let remaining = quoted[end + 1..].trim_start();
            let remaining = match remaining.strip_prefix(';') {
                Some(r) => r,
                None if remaining.is_empty() => remaining,
                None => return Err(ReplayError::AfterQuote(key)),
            };
            (quoted[..end].to_owned(), remaining)
        } else {
            match after.split_once(';') {
                Some((value, remaining)) => (value.trim().to_owned(), remaining),
                None => (after.trim().to_owned(), ""),
            }
        };
        if key.is_empty() {
            return Err(ReplayError::NoName);
        }
        pairs.push((key, value));
        rest = remaining.trim();
    }
    Ok(pairs)
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// Reads a `fly-replay` header.
pub fn parse_header(text: &str) -> Result<Replay, ReplayError> {
    let mut replay = Replay::default();
    for (key, value) in pairs(text)? {
        match key.as_str() {
            "region" => replay.regions = regions(&value)?,
            "instance" => replay.instance = non_empty(value),
            "prefer_instance" => replay.prefer_instance = non_empty(value),
            "app" => replay.app = non_empty(value),
            "state" => replay.state = Some(value),
            "elsewhere" => {
                replay.elsewhere = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    other => return Err(ReplayError::Elsewhere(other.to_owned())),
                }
            }
            "timeout" => replay.timeout = Some(duration(&value)?),
            "fallback" => replay.fallback = Some(fallback(&value)?),
            // Replay caching has headers of its own (`fly-replay-cache`, read with the
            // response); fields named so in this one are accepted and ignored.
            other if other.starts_with("cache") => {}
            other => return Err(ReplayError::UnknownField(other.to_owned())),
        }
    }
    Ok(replay)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonReplay {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    prefer_instance: Option<String>,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    elsewhere: bool,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    fallback: Option<Fallback>,
    #[serde(default)]
    transform: Option<Transform>,
    #[serde(default)]
    cache: Option<JsonCache>,
}

/// The JSON form's `cache` object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCache {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    allow_bypass: bool,
    #[serde(default)]
    invalidate: bool,
}

/// Reads an `application/vnd.fly.replay+json` body.
pub fn parse_json(body: &[u8]) -> Result<Replay, ReplayError> {
    let json: JsonReplay =
        serde_json::from_slice(body).map_err(|e| ReplayError::Json(e.to_string()))?;
    Ok(Replay {
        regions: json
            .region
            .as_deref()
            .map(regions)
            .transpose()?
            .unwrap_or_default(),
        instance: json.instance.and_then(non_empty),
        prefer_instance: json.prefer_instance.and_then(non_empty),
        app: json.app.and_then(non_empty),
        state: json.state,
        elsewhere: json.elsewhere,
        timeout: json.timeout.as_deref().map(duration).transpose()?,
        fallback: json.fallback,
        transform: json.transform.unwrap_or_default(),
        cache: match json.cache {
            None => None,
            Some(cache) if cache.invalidate => Some(CacheDirective::Invalidate),
            // Caching is an optimisation: a cache object that cannot be read leaves the
            // replay itself standing.
            Some(cache) => cache_directive(
                cache.prefix.as_deref(),
                cache.ttl.map(|t| t.to_string()).as_deref(),
                cache.allow_bypass.then_some("yes"),
            )
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "a replay's cache object is ignored");
                None
            }),
        },
    })
}

/// `fly-replay-src`: who asked for the replay, when (µs since the epoch), and its state.
pub fn source_header(machine: &str, region: &str, micros: u128, state: Option<&str>) -> String {
    let mut value = format!("instance={machine};region={region};t={micros}");
    if let Some(state) = state {
        value.push_str(";state=");
        value.push_str(state);
    }
    value
}

/// Why a replay failed, as `fly-replay-failed` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    Timeout,
    RetriesExhausted,
    NoCandidate,
}

impl FailReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Timeout => "timeout",
            FailReason::RetriesExhausted => "retries_exhausted",
            FailReason::NoCandidate => "no_candidate",
        }
    }
}

/// `fly-replay-failed`: what was asked, who asked, why it failed and after how long.
pub fn failed_header(
    replay: &Replay,
    target_app: &str,
    source: &str,
    reason: FailReason,
    elapsed: Duration,
) -> String {
    format!(
        "instance={};app={target_app};region={};replay_source={source};reason={};elapsed_ms={}",
        replay.instance.as_deref().unwrap_or(""),
        replay.regions.join(","),
        reason.as_str(),
        elapsed.as_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_every_field_and_quoted_lists() {
        let replay = parse_header(
            r#"region="ams,fra"; app=worker;state=abc=1;elsewhere=true;timeout=2s;fallback=prefer_self;prefer_instance=m1"#,
        )
        .unwrap();
        assert_eq!(replay.regions, ["ams", "fra"]);
        assert_eq!(replay.app.as_deref(), Some("worker"));
        assert_eq!(replay.state.as_deref(), Some("abc=1"));
        assert!(replay.elsewhere);
        assert_eq!(replay.timeout, Some(Duration::from_secs(2)));
        assert_eq!(replay.fallback, Some(Fallback::PreferSelf));
        assert_eq!(replay.prefer_instance.as_deref(), Some("m1"));
        assert_eq!(
            parse_header("instance=0123").unwrap().instance.as_deref(),
            Some("0123")
        );
        assert!(parse_header("region=any").unwrap().regions.is_empty());
        assert!(
            parse_header("region=eu")
                .unwrap()
                .regions
                .contains(&"fra".to_owned())
        );
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        for (text, expected) in [
            ("region", "is not key=value"),
            ("colour=blue", "unknown field \"colour\""),
            ("elsewhere=yes", "expected true or false"),
            ("fallback=other", "expected force_self or prefer_self"),
            ("timeout=soon", "timeout \"soon\""),
            ("region=\"ams", "unterminated quote"),
            ("region=europe", "not a region code or alias"),
        ] {
            let error = parse_header(text).unwrap_err();
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn json_bodies_carry_transforms() {
        let replay = parse_json(
            br#"{"app":"worker","region":"fra","transform":{"path":"/v2","delete_headers":["cookie"],"set_headers":[{"name":"x-a","value":"1"}]}}"#,
        )
        .unwrap();
        assert_eq!(replay.app.as_deref(), Some("worker"));
        assert_eq!(replay.regions, ["fra"]);
        assert_eq!(replay.transform.path.as_deref(), Some("/v2"));
        assert_eq!(replay.transform.delete_headers, ["cookie"]);
        assert_eq!(replay.transform.set_headers[0].value, "1");
        assert!(parse_json(b"{\"nope\":1}").is_err());
        assert!(parse_json(b"not json").is_err());
    }

    #[test]
    fn source_and_failure_headers_are_spelled_as_on_fly() {
        assert_eq!(
            source_header("m1", "ams", 42, Some("s")),
            "instance=m1;region=ams;t=42;state=s"
        );
        let replay = Replay {
            regions: vec!["fra".to_owned()],
            ..Replay::default()
        };
        assert_eq!(
            failed_header(
                &replay,
                "worker",
                "m1",
                FailReason::NoCandidate,
                Duration::from_millis(7)
            ),
            "instance=;app=worker;region=fra;replay_source=m1;reason=no_candidate;elapsed_ms=7"
        );
    }
}
