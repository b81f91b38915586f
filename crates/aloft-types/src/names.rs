//! Validated names: apps and regions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Percent-encodes a URL path segment or query value: everything but unreserved
/// characters (RFC 3986: letters, digits, `-`, `.`, `_`, `~`).
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `https://HOST[:PORT]/`, the port left out when it is HTTPS's own (443).
pub fn https_url(host: &str, port: u16) -> String {
    format!("https://{}/", https_authority(host, port))
}

/// `HOST[:PORT]` of an HTTPS URL, the port left out when it is 443.
pub fn https_authority(host: &str, port: u16) -> String {
    if port == 443 {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} name is empty")]
    Empty { kind: &'static str },
    #[error("{kind} name {name:?} is longer than {max} characters")]
    TooLong {
        kind: &'static str,
        name: String,
        max: usize,
    },
    #[error(
        "{kind} name {name:?} may only contain lowercase letters, digits and dashes, and must start with a letter and not end with a dash"
    )]
    Characters { kind: &'static str, name: String },
}

/// An app name as Fly accepts it: lowercase ASCII letters, digits and dashes, starting with
/// a letter, not ending with a dash, at most 63 characters (it becomes a DNS label:
/// `<app>.internal`, `<app>.<apps_domain>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AppName(String);

impl AppName {
    pub const MAX_LEN: usize = 63;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_label(kind: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            max,
        });
    }
    let bytes = name.as_bytes();
    let allowed = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !allowed || !bytes[0].is_ascii_lowercase() || bytes[bytes.len() - 1] == b'-' {
        return Err(NameError::Characters {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

impl FromStr for AppName {
    type Err = NameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        check_label("app", name, Self::MAX_LEN)?;
        Ok(AppName(name.to_owned()))
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AppName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A region code. Fly's regions are three-letter codes (`ams`, `iad`); an Aloft operator
/// may name regions of their own (`local`, `eu1`), so any lowercase DNS label of at most
/// 16 characters is accepted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RegionCode(String);

impl RegionCode {
    pub const MAX_LEN: usize = 16;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RegionCode {
    type Err = NameError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        check_label("region", code, Self::MAX_LEN)?;
        Ok(RegionCode(code.to_owned()))
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RegionCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        for good in ["a", "terrateam-app-staging", "app1", &"a".repeat(63)] {
            assert!(good.parse::<AppName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "App",
            "1app",
            "app-",
            "my_app",
            "app.x",
            &"a".repeat(64),
        ] {
            assert!(bad.parse::<AppName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn region_codes() {
        for good in ["ams", "iad", "local", "eu1"] {
            assert!(good.parse::<RegionCode>().is_ok(), "{good}");
        }
        for bad in ["", "AMS", "a ms", "1ab"] {
            assert!(bad.parse::<RegionCode>().is_err(), "{bad}");
        }
    }
}
