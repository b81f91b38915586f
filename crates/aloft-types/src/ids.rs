//! Typed identifiers. Each can only be built by parsing (which validates its form) or by
//! generating a fresh one from random bytes the caller supplies (this crate does no I/O).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: expected {expected}")]
pub struct IdError {
    pub kind: &'static str,
    pub input: String,
    pub expected: &'static str,
}

fn lower_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Base-36 (digits and lowercase letters) text of `bytes`, `len` characters long.
fn base36(bytes: &[u8], len: usize) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    bytes
        .iter()
        .cycle()
        .take(len)
        .map(|b| ALPHABET[usize::from(*b) % 36] as char)
        .collect()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $expected:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(input: &str) -> Result<Self, Self::Err> {
                let check: fn(&str) -> bool = $check;
                if check(input) {
                    Ok($name(input.to_owned()))
                } else {
                    Err(IdError { kind: $kind, input: input.to_owned(), expected: $expected })
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_prefixed_base36(text: &str, prefix: &str, len: usize) -> bool {
    text.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == len
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    })
}

id_type!(
    /// A machine's id: 14 lowercase hex characters, as Fly's (`3d8d9016b24489`).
    MachineId, "machine id", "14 lowercase hex characters", |s| is_hex(s, 14)
);
id_type!(
    /// A volume's id: `vol_` and 16 lowercase letters or digits, as Fly's.
    VolumeId, "volume id", "`vol_` followed by 16 lowercase letters or digits", |s| is_prefixed_base36(s, "vol_", 16)
);
id_type!(
    /// A volume snapshot's id: `vs_` and 16 lowercase letters or digits, as Fly's.
    SnapshotId, "snapshot id", "`vs_` followed by 16 lowercase letters or digits", |s| is_prefixed_base36(s, "vs_", 16)
);
id_type!(
    /// An organization's internal id: `org_` and 16 lowercase letters or digits.
    OrgId, "organization id", "`org_` followed by 16 lowercase letters or digits", |s| is_prefixed_base36(s, "org_", 16)
);
id_type!(
    /// An app's internal id: `app_` and 16 lowercase letters or digits.
    AppId, "app id", "`app_` followed by 16 lowercase letters or digits", |s| is_prefixed_base36(s, "app_", 16)
);
id_type!(
    /// An API token's id (not its secret): `tok_` and 16 lowercase letters or digits.
    TokenId, "token id", "`tok_` followed by 16 lowercase letters or digits", |s| is_prefixed_base36(s, "tok_", 16)
);
id_type!(
    /// A host's id: 16 lowercase hex characters.
    HostId, "host id", "16 lowercase hex characters", |s| is_hex(s, 16)
);

impl MachineId {
    /// A new id from 7 random bytes.
    pub fn generate(random: [u8; 7]) -> MachineId {
        MachineId(lower_hex(&random))
    }
}

impl HostId {
    /// A new id from 8 random bytes.
    pub fn generate(random: [u8; 8]) -> HostId {
        HostId(lower_hex(&random))
    }
}

macro_rules! generate_base36 {
    ($name:ident, $prefix:literal) => {
        impl $name {
            /// A new id from 16 random bytes.
            pub fn generate(random: [u8; 16]) -> $name {
                $name(format!(concat!($prefix, "{}"), base36(&random, 16)))
            }
        }
    };
}
generate_base36!(VolumeId, "vol_");
generate_base36!(SnapshotId, "vs_");
generate_base36!(OrgId, "org_");
generate_base36!(AppId, "app_");
generate_base36!(TokenId, "tok_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let machine = MachineId::generate([1, 2, 3, 4, 5, 6, 255]);
        assert_eq!(machine.as_str(), "010203040506ff");
        assert_eq!(machine.as_str().parse::<MachineId>(), Ok(machine.clone()));
        let volume = VolumeId::generate([200; 16]);
        assert_eq!(volume.as_str().parse::<VolumeId>(), Ok(volume.clone()));
        let snapshot = SnapshotId::generate([7; 16]);
        assert!(snapshot.as_str().starts_with("vs_"), "{snapshot}");
        assert_eq!(
            snapshot.as_str().parse::<SnapshotId>(),
            Ok(snapshot.clone())
        );
        assert!("vol_aaaaaaaaaaaaaaaa".parse::<SnapshotId>().is_err());
        let host = HostId::generate([9; 8]);
        assert_eq!(host.as_str().parse::<HostId>(), Ok(host.clone()));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "3D8D9016B24489",
            "3d8d9016b2448",
            "3d8d9016b24489a",
            "zzzzzzzzzzzzzz",
        ] {
            assert!(bad.parse::<MachineId>().is_err(), "{bad}");
        }
        for bad in [
            "vol_",
            "vol_ABCDEFGHIJKLMNOP",
            "vol_abc",
            "xyz_abcdefghijklmnop",
        ] {
            assert!(bad.parse::<VolumeId>().is_err(), "{bad}");
        }
    }
}
