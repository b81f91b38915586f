//! Image builds: how to build an image from a context, and what a build reports. Shared by
//! the control plane (which takes build requests) and the runtime (which builds).

use std::collections::BTreeMap;

/// How to build an image from a context (a tar archive with the Dockerfile in it).
#[derive(Clone, PartialEq, Eq, Default)]
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
    /// Build secrets by id, for `RUN --mount=type=secret,id=ID` (never in the image,
    /// never in a log: `Debug` shows their ids only).
    pub secrets: BTreeMap<String, String>,
    /// Run every step again, none from the builder's cache (`docker build --no-cache`).
    pub no_cache: bool,
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("dockerfile", &self.dockerfile)
            .field("tag", &self.tag)
            .field("target", &self.target)
            .field("args", &self.args)
            .field("labels", &self.labels)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("no_cache", &self.no_cache)
            .finish()
    }
}

/// What a build reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildProgress {
    /// Output of the builder (one or more lines, as the engine sent it).
    Output(String),
    /// The build succeeded: the image's id (`sha256:...`, its content digest).
    Built { id: String },
}

/// What an image builder failed at, with the builder's own error as its source (the
/// engine's, for `aloftd server`).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BuilderError(pub Box<dyn std::error::Error + Send + Sync>);

impl BuilderError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> BuilderError {
        BuilderError(Box::new(error))
    }
}
