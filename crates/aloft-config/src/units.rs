//! Values with units as fly.toml writes them: memory (`"512mb"`, `"1gb"`, bare integer =
//! MB), volume sizes (`"30GB"`, bare integer = GB) and HTTP methods.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Splits `"1.5 GiB"` into `(1.5, "g")`: a number, then an optional unit letter among
/// k, m, g, t, p with an optional `i` and `b` (any case), as Docker's size parser reads it.
fn split_size(input: &str) -> Option<(f64, char)> {
    let text = input.trim();
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let mut chars = unit.chars();
    let letter = match chars.next() {
        None => return Some((number, ' ')),
        Some('b') if chars.as_str().is_empty() => return Some((number, 'b')),
        Some(letter @ ('k' | 'm' | 'g' | 't' | 'p')) => letter,
        Some(_) => return None,
    };
    let rest = chars.as_str();
    if matches!(rest, "" | "b" | "i" | "ib") {
        Some((number, letter))
    } else {
        None
    }
}

fn power(letter: char) -> i32 {
    match letter {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        _ => 0,
    }
}

/// Memory of a machine in MiB. Strings use binary units (`"1gb"` = 1024 MB); a bare number
/// is MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemorySize {
    mb: u64,
}

/// A size that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason}")]
pub struct SizeError {
    pub input: String,
    pub reason: &'static str,
}

impl MemorySize {
    pub const fn from_mb(mb: u64) -> MemorySize {
        MemorySize { mb }
    }

    pub const fn mb(self) -> u64 {
        self.mb
    }
}

impl FromStr for MemorySize {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| SizeError {
            input: input.to_owned(),
            reason,
        };
        let (number, letter) = split_size(input)
            .ok_or_else(|| error("expected a number with a unit, such as \"512mb\" or \"2gb\""))?;
        let bytes = if letter == ' ' {
            number * 1024f64.powi(2)
        } else {
            number * 1024f64.powi(power(letter))
        };
        let mb = bytes / 1024f64.powi(2);
        if !mb.is_finite() || mb > u32::MAX as f64 {
            return Err(error("too large"));
        }
        if mb.fract() != 0.0 {
            return Err(error("not a whole number of megabytes"));
        }
        Ok(MemorySize { mb: mb as u64 })
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mb != 0 && self.mb.is_multiple_of(1024) {
            write!(f, "{}gb", self.mb / 1024)
        } else {
            write!(f, "{}mb", self.mb)
        }
    }
}

impl Serialize for MemorySize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MemoryVisitor;
        impl Visitor<'_> for MemoryVisitor {
            type Value = MemorySize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a memory size such as \"512mb\" or \"1gb\", or a number of megabytes")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<MemorySize, E> {
                u64::try_from(value)
                    .map(MemorySize::from_mb)
                    .map_err(|_| E::custom("memory cannot be negative"))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<MemorySize, E> {
                Ok(MemorySize::from_mb(value))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<MemorySize, E> {
                value.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(MemoryVisitor)
    }
}

/// A volume size in bytes. Strings use decimal units (`"30GB"` = 30 × 10^9 bytes), as Fly
/// reads them; a bare number is GB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeSize {
    bytes: u64,
}

const GB: u64 = 1_000_000_000;
const MB: u64 = 1_000_000;

impl VolumeSize {
    pub const fn from_gb(gb: u64) -> VolumeSize {
        VolumeSize { bytes: gb * GB }
    }

    /// Whole gigabytes, rounded down.
    pub const fn gb(self) -> u64 {
        self.bytes / GB
    }
}

impl FromStr for VolumeSize {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| SizeError {
            input: input.to_owned(),
            reason,
        };
        let (number, letter) = split_size(input)
            .ok_or_else(|| error("expected a number with a unit, such as \"10gb\""))?;
        let bytes = if letter == ' ' {
            number * GB as f64
        } else {
            number * 1000f64.powi(power(letter))
        };
        if !bytes.is_finite() || bytes > 1e18 {
            return Err(error("too large"));
        }
        Ok(VolumeSize {
            bytes: bytes.round() as u64,
        })
    }
}

impl fmt::Display for VolumeSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bytes.is_multiple_of(GB) {
            write!(f, "{}gb", self.bytes / GB)
        } else if self.bytes.is_multiple_of(MB) {
            write!(f, "{}mb", self.bytes / MB)
        } else {
            write!(f, "{}b", self.bytes)
        }
    }
}

impl Serialize for VolumeSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VolumeSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct VolumeVisitor;
        impl Visitor<'_> for VolumeVisitor {
            type Value = VolumeSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"10gb\", or a number of gigabytes")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<VolumeSize, E> {
                u64::try_from(value)
                    .ok()
                    .filter(|gb| *gb <= 1_000_000)
                    .map(VolumeSize::from_gb)
                    .ok_or_else(|| E::custom(format!("{value} is not a valid number of gigabytes")))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<VolumeSize, E> {
                self.visit_i64(i64::try_from(value).unwrap_or(-1))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<VolumeSize, E> {
                value.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(VolumeVisitor)
    }
}

/// An HTTP method, normalized to upper case (`"get"` reads as `GET`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct HttpMethod(String);

impl HttpMethod {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HttpMethod {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let valid = !input.is_empty()
            && input
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if valid {
            Ok(HttpMethod(input.to_ascii_uppercase()))
        } else {
            Err(format!("invalid HTTP method {input:?}"))
        }
    }
}

impl<'de> Deserialize<'de> for HttpMethod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        for (input, mb) in [
            ("512mb", 512),
            ("1gb", 1024),
            ("1GB", 1024),
            ("256MB", 256),
            ("4gb", 4096),
            ("416gb", 425_984),
            ("1GiB", 1024),
            ("2048", 2048),
            ("1.5gb", 1536),
            ("1 gb", 1024),
        ] {
            assert_eq!(input.parse::<MemorySize>().unwrap().mb(), mb, "{input}");
        }
        for bad in ["", "gb", "1xb", "1.2.3gb", "-1gb", "0.1mb"] {
            assert!(bad.parse::<MemorySize>().is_err(), "{bad}");
        }
        assert_eq!(MemorySize::from_mb(2048).to_string(), "2gb");
        assert_eq!(MemorySize::from_mb(512).to_string(), "512mb");
    }

    #[test]
    fn volume_sizes() {
        for (input, gb) in [
            ("30GB", 30),
            ("1gb", 1),
            ("64GB", 64),
            ("500mb", 0),
            ("1", 1),
        ] {
            assert_eq!(input.parse::<VolumeSize>().unwrap().gb(), gb, "{input}");
        }
        assert_eq!("500mb".parse::<VolumeSize>().unwrap().to_string(), "500mb");
        assert_eq!(VolumeSize::from_gb(3).to_string(), "3gb");
    }

    #[test]
    fn methods_are_upper_case() {
        assert_eq!("get".parse::<HttpMethod>().unwrap().as_str(), "GET");
        assert!("GE T".parse::<HttpMethod>().is_err());
    }
}
