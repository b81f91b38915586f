//! A DNS lookup made as a machine of a network would make it (`aloft dig`): what it
//! answered, in presentation form, and why it could not be made.

/// One record of a a dig answer, in presentation form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigRecord {
    pub name: String,
    pub record_type: String,
    pub ttl: u32,
    pub data: String,
}

/// What a dig got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigAnswer {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...
    pub status: String,
    pub answers: Vec<DigRecord>,
    pub authority: Vec<DigRecord>,
}

/// Why a dig could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DigError {
    #[error("{name:?} is not a domain name")]
    Name { name: String },
    #[error("unknown record type {0:?} (use AAAA, TXT, A, SOA, ANY, ...)")]
    Type(String),
    #[error("no answer (the upstream resolvers did not answer)")]
    NoAnswer,
}
