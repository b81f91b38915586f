//! Image builds: how to build an image from a context, and what a build reports. Shared by
//! the control plane (which takes build requests) and the runtime (which builds).

use std::collections::BTreeMap;

/// How to build an image from a context (a tar archive with the Dockerfile in it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildOptions {
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// The tag the image gets (`name:tag`).
    pub tag: String,
    /// The stage to build (`--target`); the last one when `None`.
    pub target: Option<String>,
    /// `ARG` values.
    pub args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// What a build reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildProgress {
    /// Output of the builder (one or more lines, as the engine sent it).
    Output(String),
    /// The build succeeded: the image's id (`sha256:...`, its content digest).
    Built { id: String },
}
