//! An app's logs: a search by time range, machine, region and text, then the same filters
//! followed live.

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::Html;
use serde::Deserialize;

use crate::view::{Chrome, LogLine};
use crate::{Signed, WebError};

/// Lines a search shows.
const PAGE_LINES: usize = 500;

/// The logs page's filters (also the live follow's, minus the time range).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    pub(crate) since: String,
    #[serde(default)]
    pub(crate) until: String,
    #[serde(default)]
    pub(crate) machine: String,
    #[serde(default)]
    pub(crate) region: String,
    #[serde(default)]
    pub(crate) text: String,
}

fn given(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

impl Filters {
    pub(crate) fn request(&self) -> aloft_client::LogsRequest {
        aloft_client::LogsRequest {
            since: given(&self.since),
            until: given(&self.until),
            machine: given(&self.machine),
            region: given(&self.region),
            text: given(&self.text),
            limit: Some(PAGE_LINES),
            cursor: None,
            newest: None,
        }
    }

    /// The live follow's query string (the time range does not apply to new lines).
    fn follow_query(&self) -> String {
        let pairs = [
            ("machine", &self.machine),
            ("region", &self.region),
            ("text", &self.text),
        ];
        let mut query = String::new();
        for (key, value) in pairs {
            if let Some(value) = given(value) {
                query.push(if query.is_empty() { '?' } else { '&' });
                query.push_str(key);
                query.push('=');
                query.push_str(&percent(&value));
            }
        }
        query
    }
}

/// `value` percent-encoded for a query string.
fn percent(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage {
    chrome: Chrome,
    app: String,
    filters: Filters,
    lines: Vec<LogLine>,
    follow: String,
    limited: bool,
}

/// `GET /apps/{app}/logs`.
pub(crate) async fn page(
    signed: Signed,
    Path(app): Path<String>,
    Query(filters): Query<Filters>,
) -> Result<Html<String>, WebError> {
    let found = signed.client.logs(&app, &filters.request()).await?;
    let lines: Vec<LogLine> = found.entries.iter().map(LogLine::of).collect();
    // Following starts where the search ended (no line between the two is lost); a search
    // that ends in the past follows from now.
    let mut follow = format!("/apps/{app}/live/logs{}", filters.follow_query());
    if given(&filters.until).is_none() && !found.next_cursor.is_empty() {
        follow.push(if follow.contains('?') { '&' } else { '?' });
        follow.push_str("cursor=");
        follow.push_str(&percent(&found.next_cursor));
    }
    Ok(Html(
        LogsPage {
            chrome: signed.chrome(),
            follow,
            limited: lines.len() >= PAGE_LINES,
            lines,
            app,
            filters,
        }
        .render()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_follow_keeps_the_filters_but_the_time_range_encoded() {
        let filters = Filters {
            since: "1h".to_owned(),
            until: String::new(),
            machine: "abc123".to_owned(),
            region: " ".to_owned(),
            text: "GET /a b&c".to_owned(),
        };
        assert_eq!(
            filters.follow_query(),
            "?machine=abc123&text=GET%20%2Fa%20b%26c"
        );
        assert_eq!(Filters::default().follow_query(), "");
    }
}
