//! Signals a machine can be stopped with, spelled as in fly.toml (`kill_signal`) and the
//! Machines API (`stop_config.signal`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A POSIX signal that Aloft can deliver to a machine's main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Signal {
    #[serde(rename = "SIGHUP")]
    Hup,
    #[serde(rename = "SIGINT")]
    Int,
    #[serde(rename = "SIGQUIT")]
    Quit,
    #[serde(rename = "SIGKILL")]
    Kill,
    #[serde(rename = "SIGUSR1")]
    Usr1,
    #[serde(rename = "SIGUSR2")]
    Usr2,
    #[serde(rename = "SIGTERM")]
    Term,
    #[serde(rename = "SIGSTOP")]
    Stop,
}

/// A signal name that is not one of [`Signal::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown signal {name:?} (expected one of SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL, SIGSTOP)"
)]
pub struct UnknownSignal {
    pub name: String,
}

impl Signal {
    pub const ALL: [Signal; 8] = [
        Signal::Int,
        Signal::Term,
        Signal::Quit,
        Signal::Hup,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Kill,
        Signal::Stop,
    ];

    /// fly.toml's default `kill_signal`.
    pub const DEFAULT: Signal = Signal::Int;

    pub const fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Kill => "SIGKILL",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Term => "SIGTERM",
            Signal::Stop => "SIGSTOP",
        }
    }

    /// The signal's number on Linux.
    pub const fn number(self) -> i32 {
        match self {
            Signal::Hup => 1,
            Signal::Int => 2,
            Signal::Quit => 3,
            Signal::Kill => 9,
            Signal::Usr1 => 10,
            Signal::Usr2 => 12,
            Signal::Term => 15,
            Signal::Stop => 19,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Signal {
    type Err = UnknownSignal;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Signal::ALL
            .into_iter()
            .find(|signal| signal.name() == name)
            .ok_or_else(|| UnknownSignal {
                name: name.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for signal in Signal::ALL {
            assert_eq!(signal.name().parse::<Signal>(), Ok(signal));
            let json = serde_json::to_string(&signal).unwrap();
            assert_eq!(json, format!("\"{}\"", signal.name()));
        }
        assert!("SIGFOO".parse::<Signal>().is_err());
    }
}
