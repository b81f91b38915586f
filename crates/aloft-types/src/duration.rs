//! Durations written the way Go (and so flyctl and the Machines API) writes them:
//! `"10s"`, `"1m30s"`, `"500ms"`, `"1h0m0s"`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time with nanosecond precision.
///
/// Parses Go's `time.ParseDuration` syntax (a sequence of decimal numbers, each with an
/// optional fraction and a unit among `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`; a bare `0` is
/// allowed) and prints Go's `time.Duration.String()` form, so values round-trip through
/// flyctl-compatible files unchanged. When deserialized from a bare integer the integer is
/// taken as whole seconds; fly.toml keys whose bare integers mean milliseconds are converted
/// before they reach this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

/// Why a duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationParseError {
    #[error("empty duration")]
    Empty,
    #[error("negative durations are not allowed: {input:?}")]
    Negative { input: String },
    #[error(
        "invalid duration {input:?}: expected a number with a unit, such as \"10s\", \"1m30s\" or \"500ms\""
    )]
    Syntax { input: String },
    #[error("missing unit in duration {input:?} (use ns, us, ms, s, m or h, e.g. \"{input}s\")")]
    MissingUnit { input: String },
    #[error("unknown unit {unit:?} in duration {input:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit { input: String, unit: String },
    #[error("duration {input:?} is too large")]
    Overflow { input: String },
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Duration(std::time::Duration::from_millis(millis))
    }

    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }

    pub fn as_millis(self) -> u128 {
        self.0.as_millis()
    }

    fn unit_nanos(unit: &str) -> Option<u128> {
        Some(match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "h" => 3600 * NANOS_PER_SECOND,
            _ => return None,
        })
    }
}

impl DurationParseError {
    /// The same error, naming `input` (the whole text, sign included).
    fn for_input(self, input: &str) -> DurationParseError {
        let input = input.to_owned();
        match self {
            DurationParseError::Empty => DurationParseError::Empty,
            DurationParseError::Negative { .. } => DurationParseError::Negative { input },
            DurationParseError::Syntax { .. } => DurationParseError::Syntax { input },
            DurationParseError::MissingUnit { .. } => DurationParseError::MissingUnit { input },
            DurationParseError::UnknownUnit { unit, .. } => {
                DurationParseError::UnknownUnit { input, unit }
            }
            DurationParseError::Overflow { .. } => DurationParseError::Overflow { input },
        }
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Duration(value)
    }
}

impl FromStr for Duration {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut rest = input.trim();
        if rest.is_empty() {
            return Err(DurationParseError::Empty);
        }
        if let Some(stripped) = rest.strip_prefix('+') {
            rest = stripped;
        } else if let Some(magnitude) = rest.strip_prefix('-') {
            // Go accepts "-0s"; any other negative duration is refused.
            if parse_magnitude(magnitude).is_ok_and(|d| d == Duration::ZERO) {
                return Ok(Duration::ZERO);
            }
            return Err(DurationParseError::Negative {
                input: input.to_owned(),
            });
        }
        parse_magnitude(rest).map_err(|error| error.for_input(input))
    }
}

/// Parses an unsigned Go duration; errors name `rest`, and are renamed to the whole input
/// by the caller.
fn parse_magnitude(rest: &str) -> Result<Duration, DurationParseError> {
    let input = rest;
    let syntax = || DurationParseError::Syntax {
        input: input.to_owned(),
    };
    let mut rest = rest;
    if rest.is_empty() {
        return Err(syntax());
    }
    {
        if rest.is_empty() {
            return Err(syntax());
        }
        if rest == "0" {
            return Ok(Duration::ZERO);
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let digits_end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (whole, after) = rest.split_at(digits_end);
            let (fraction, after) = match after.strip_prefix('.') {
                Some(after) => {
                    let end = after
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(after.len());
                    after.split_at(end)
                }
                None => ("", after),
            };
            if whole.is_empty() && fraction.is_empty() {
                return Err(syntax());
            }
            let unit_end = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_end);
            if unit.is_empty() {
                return Err(DurationParseError::MissingUnit {
                    input: input.to_owned(),
                });
            }
            let scale =
                Duration::unit_nanos(unit).ok_or_else(|| DurationParseError::UnknownUnit {
                    input: input.to_owned(),
                    unit: unit.to_owned(),
                })?;
            let overflow = || DurationParseError::Overflow {
                input: input.to_owned(),
            };
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| overflow())?
            };
            let mut amount = whole.checked_mul(scale).ok_or_else(overflow)?;
            let mut place = scale;
            for digit in fraction.bytes().take(30) {
                place /= 10;
                if place == 0 {
                    break;
                }
                amount = amount
                    .checked_add(u128::from(digit - b'0') * place)
                    .ok_or_else(overflow)?;
            }
            total = total.checked_add(amount).ok_or_else(overflow)?;
            rest = after;
        }
        let secs =
            u64::try_from(total / NANOS_PER_SECOND).map_err(|_| DurationParseError::Overflow {
                input: input.to_owned(),
            })?;
        // The remainder of a division by 10^9 always fits in u32.
        let nanos = (total % NANOS_PER_SECOND) as u32;
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }
}

/// Writes `value` (a count of `unit`-sized steps, `unit` = 10^precision) with the trailing
/// zeros of its fraction removed, as Go's `fmtFrac` + `fmtInt` do.
fn write_fraction(out: &mut String, value: u128, precision: u32) {
    let unit = 10u128.pow(precision);
    let whole = value / unit;
    let mut fraction = value % unit;
    out.push_str(&whole.to_string());
    if fraction != 0 {
        let mut digits = precision;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            digits -= 1;
        }
        out.push('.');
        out.push_str(&format!("{fraction:0width$}", width = digits as usize));
    }
}

impl fmt::Display for Duration {
    /// Go's `time.Duration.String()`: `"0s"`, `"750ms"`, `"1.5s"`, `"1m30s"`, `"2h0m0s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        let mut out = String::new();
        if nanos == 0 {
            out.push_str("0s");
        } else if nanos < NANOS_PER_SECOND {
            let (precision, unit) = if nanos < 1_000 {
                (0, "ns")
            } else if nanos < 1_000_000 {
                (3, "µs")
            } else {
                (6, "ms")
            };
            write_fraction(&mut out, nanos, precision);
            out.push_str(unit);
        } else {
            let hours = nanos / (3600 * NANOS_PER_SECOND);
            let minutes = (nanos / (60 * NANOS_PER_SECOND)) % 60;
            let second_nanos = nanos % (60 * NANOS_PER_SECOND);
            if hours > 0 {
                out.push_str(&format!("{hours}h"));
            }
            if hours > 0 || minutes > 0 {
                out.push_str(&format!("{minutes}m"));
            }
            write_fraction(&mut out, second_nanos, 9);
            out.push('s');
        }
        f.write_str(&out)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"10s\", \"1m30s\" or \"500ms\", or whole seconds")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Duration, E> {
                value.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(value))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Duration, E> {
                u64::try_from(value)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom(format!("negative durations are not allowed: {value}")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Duration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A Go-style duration such as \"10s\", \"1m30s\" or \"500ms\" (a bare integer is seconds)"))
            .examples([serde_json::json!("10s")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Duration {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_forms() {
        let cases = [
            ("10s", 10_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("1m0s", 60_000),
            ("1m21s", 81_000),
            ("1.5s", 1_500),
            ("2h", 7_200_000),
            ("0", 0),
            ("1h1m1s", 3_661_000),
        ];
        for (input, millis) in cases {
            let parsed: Duration = input.parse().unwrap();
            assert_eq!(parsed.as_millis(), millis, "{input}");
        }
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        assert_eq!("".parse::<Duration>(), Err(DurationParseError::Empty));
        assert!(matches!(
            "10".parse::<Duration>(),
            Err(DurationParseError::MissingUnit { .. })
        ));
        assert!(matches!(
            "10d".parse::<Duration>(),
            Err(DurationParseError::UnknownUnit { .. })
        ));
        assert!(matches!(
            "-5s".parse::<Duration>(),
            Err(DurationParseError::Negative { .. })
        ));
        assert!(matches!(
            "s".parse::<Duration>(),
            Err(DurationParseError::Syntax { .. })
        ));
        assert!(matches!(
            "99999999999999999999999h".parse::<Duration>(),
            Err(DurationParseError::Overflow { .. })
        ));
    }

    #[test]
    fn prints_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (
                Duration::from(std::time::Duration::from_micros(1500)),
                "1.5ms",
            ),
            (Duration::from(std::time::Duration::from_nanos(15)), "15ns"),
        ];
        for (duration, text) in cases {
            assert_eq!(duration.to_string(), text);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

        #[test]
        fn display_round_trips(nanos in 0u64..10_000_000_000_000u64) {
            let duration = Duration::from(std::time::Duration::from_nanos(nanos));
            let parsed: Duration = duration.to_string().parse().unwrap();
            prop_assert_eq!(parsed, duration);
        }

        #[test]
        fn parse_never_panics(input in "\\PC{0,24}") {
            let _ = input.parse::<Duration>();
        }
    }
}
