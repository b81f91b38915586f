//! fly.toml, read exactly as Fly.io's tools read it, and lowered to Machines API configs.
//!
//! Reading a file goes through four steps, each keeping the position of every value so that
//! any finding names the file, line, column and key path:
//!
//! 1. [`tree`]: TOML, JSON or YAML (the file extension decides) into one span-carrying tree.
//! 2. `patches`: legacy forms (Nomad-era keys, strings where numbers belong, renamed
//!    sections) rewritten the way flyctl does, each with a warning naming the modern form.
//! 3. `decode`: the tree into the typed [`AppConfig`]; unknown keys are errors with the
//!    closest valid key (warnings inside `[experimental]`), and every type error of the file
//!    is reported, not only the first.
//! 4. `validate`: Fly's limits and cross-references (kill_timeout ≤ 300 s, process groups
//!    that exist, strategies allowed with volumes, ...).
//!
//! [`AppConfig::to_machine_config`] then lowers one process group to a
//! [`aloft_types::machine::MachineConfig`]. [`show`] writes the normalized file back out.
//!
//! Invariant: no input makes any step panic; every problem is a [`Diagnostic`].

mod decode;
mod diagnostic;
mod keypath;
mod lower;
mod model;
mod patches;
mod source;
pub mod tree;
mod units;
mod validate;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Severity, closest};
pub use lower::LowerError;
pub use model::*;
pub use source::{Format, Position, SourceFile, Span};
pub use tree::{KeyPath, Node};
pub use units::{HttpMethod, MemorySize, SizeError, VolumeSize};
pub use validate::{
    GPU_KINDS, MAX_KILL_TIMEOUT, MAX_SERVICE_CHECK_DURATION, MAX_STATICS,
    MAX_TOP_LEVEL_CHECK_TIMEOUT, MIN_SERVICE_CHECK_DURATION, MIN_TOP_LEVEL_CHECK_INTERVAL,
};

/// File names looked for when no config path is given, in order.
pub const DEFAULT_FILE_NAMES: [&str; 2] = ["fly.toml", "aloft.toml"];

/// The outcome of reading a config file: the model (when the file could be decoded) and
/// every finding, in file order.
#[derive(Debug, Clone)]
pub struct Parsed {
    source: SourceFile,
    config: Option<AppConfig>,
    diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    pub fn source(&self) -> &SourceFile {
        &self.source
    }

    /// The config, if the file has no errors.
    pub fn config(&self) -> Option<&AppConfig> {
        if self.has_errors() {
            None
        } else {
            self.config.as_ref()
        }
    }

    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    /// Every finding rendered with its position and line, in file order.
    pub fn render(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.render(&self.source))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The config and its warnings, or an error carrying every rendered finding.
    pub fn into_result(self) -> Result<(AppConfig, Vec<Diagnostic>), ConfigError> {
        match (self.has_errors(), self.config) {
            (false, Some(config)) => Ok((config, self.diagnostics)),
            _ => {
                let errors = self.diagnostics.iter().filter(|d| d.is_error()).count();
                let report = self
                    .diagnostics
                    .iter()
                    .map(|d| d.render(&self.source))
                    .collect::<Vec<_>>()
                    .join("\n");
                Err(ConfigError::Invalid {
                    file: self.source.name().to_owned(),
                    errors,
                    report,
                })
            }
        }
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no fly.toml or aloft.toml in {}", dir.display())]
    NotFound { dir: PathBuf },
    #[error("{file} is not valid ({errors} error{})\n{report}", if *errors == 1 { "" } else { "s" })]
    Invalid {
        file: String,
        errors: usize,
        report: String,
    },
}

/// How strictly a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// As flyctl reads a file it deploys: keys it does not know, and a few settings
    /// that cannot be honoured (a value out of its set, a service without a port, a mount
    /// without a volume), are warnings that say what is ignored.
    #[default]
    Lenient,
    /// As `fly config validate --strict`: all of those are errors.
    Strict,
}

/// Reads a config from text, leniently (see [`Strictness`]).
pub fn parse(source: SourceFile) -> Parsed {
    parse_with(source, Strictness::Lenient)
}

/// Reads a config from text.
pub fn parse_with(source: SourceFile, strictness: Strictness) -> Parsed {
    let mut tree = match tree::parse(&source) {
        Ok(tree) => tree,
        Err(diagnostics) => return finish(source, None, diagnostics),
    };
    if tree.as_table().is_none() {
        let diagnostic = Diagnostic::error(
            KeyPath::root(),
            format!(
                "expected a table at the top of the file, found {}",
                tree.value.kind()
            ),
        )
        .at(tree.span);
        return finish(source, None, vec![diagnostic]);
    }
    let mut diagnostics = Vec::new();
    patches::apply(&mut tree, &mut diagnostics);
    tree.number();
    let decoded = decode::decode::<AppConfig>(&tree);
    diagnostics.extend(decoded.diagnostics);
    if let Some(config) = &decoded.value {
        let failed = &decoded.failed_paths;
        // An unknown key that is a typo of a missing one (`internal_prot`) already says
        // what is wrong; "`internal_port` is missing" would repeat it. Read leniently,
        // the unknown key is only a warning, so the missing one stays an error.
        let typos: Vec<(KeyPath, String)> = diagnostics
            .iter()
            .filter(|d| d.message == "unknown key" && strictness == Strictness::Strict)
            .filter_map(|d| {
                let meant = d
                    .help
                    .as_deref()?
                    .strip_prefix("did you mean ")?
                    .strip_suffix('?')?;
                let parent = KeyPath(d.path.segments().split_last()?.1.to_vec());
                Some((parent, meant.to_owned()))
            })
            .collect();
        // A value that failed to decode is absent from the model; what validation would say
        // about its absence is noise next to the decode error itself.
        diagnostics.extend(
            validate::validate(config, &tree)
                .into_iter()
                .filter(|finding| {
                    !failed.iter().any(|f| {
                        finding.path.starts_with(f)
                            || f.starts_with(&finding.path) && !finding.path.is_root()
                    })
                })
                .filter(|finding| {
                    !typos.iter().any(|(parent, meant)| {
                        *parent == finding.path && finding.message.contains(meant.as_str())
                    })
                }),
        );
        if strictness == Strictness::Lenient {
            relax(&mut diagnostics, config);
        }
    }
    if strictness == Strictness::Strict {
        // What the lenient reading lets through with a warning, `--strict` refuses.
        for diagnostic in &mut diagnostics {
            if let Some(message) = diagnostic.message.strip_suffix(STRICT_REFUSES) {
                diagnostic.message = message.to_owned();
                diagnostic.severity = Severity::Error;
            }
        }
    }
    finish(source, decoded.value, diagnostics)
}

/// The end of a warning that `--strict` turns into an error.
const STRICT_REFUSES: &str = " (`--strict` refuses it)";

/// Turns the errors flyctl does not stop a deploy for into warnings that say what is
/// ignored; each one's value is absent from the model (or left out by lowering).
fn relax(diagnostics: &mut [Diagnostic], config: &AppConfig) {
    let service_without_port = |path: &KeyPath| match path.segments() {
        [tree::Segment::Key(key), tree::Segment::Index(index), ..] if key == "services" => config
            .services
            .get(*index)
            .is_some_and(|s| s.internal_port.is_none()),
        _ => false,
    };
    for diagnostic in diagnostics.iter_mut().filter(|d| d.is_error()) {
        let path = diagnostic.path.to_string();
        let note = if diagnostic.message == "unknown key" {
            Some("ignored, as flyctl ignores it (`--strict` refuses it)")
        } else if diagnostic.message.starts_with("unknown value")
            && (path == "deploy.strategy" || path.ends_with(".concurrency.type"))
        {
            Some("ignored: the default applies (`--strict` refuses it)")
        } else if diagnostic.message.starts_with("unknown value") && path.contains(".handlers[") {
            Some("ignored: the port does not get this handler (`--strict` refuses it)")
        } else if diagnostic
            .message
            .starts_with("force_https needs the `http` handler")
        {
            Some("force_https has no effect here (`--strict` refuses it)")
        } else if diagnostic.message.starts_with("there is no process group") {
            Some("the service runs on no machine (`--strict` refuses it)")
        } else if service_without_port(&diagnostic.path)
            && (diagnostic.message.starts_with("`internal_port` is missing")
                || diagnostic.message.contains("is already exposed by"))
        {
            Some("this service is left out (`--strict` refuses it)")
        } else if diagnostic.message.starts_with("the mount has no `source`") {
            Some(
                "the mount is left out: nothing survives a restart at its destination (`--strict` refuses it)",
            )
        } else {
            None
        };
        if let Some(note) = note {
            diagnostic.severity = Severity::Warning;
            diagnostic.message = format!("{}; {note}", diagnostic.message);
        }
    }
}

fn finish(
    source: SourceFile,
    config: Option<AppConfig>,
    mut diagnostics: Vec<Diagnostic>,
) -> Parsed {
    diagnostics.sort_by_key(|d| d.span.map_or(usize::MAX, |span| span.start));
    diagnostics.dedup();
    Parsed {
        source,
        config,
        diagnostics,
    }
}

/// Reads the config file at `path`; its extension decides the format.
pub fn load(path: &Path) -> Result<Parsed, ConfigError> {
    load_with(path, Strictness::Lenient)
}

/// Reads the config file at `path` as strictly as asked.
pub fn load_with(path: &Path, strictness: Strictness) -> Result<Parsed, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_with(
        SourceFile::new(path.display().to_string(), text, Format::from_path(path)),
        strictness,
    ))
}

/// The config file to use in `dir` when none is named: `fly.toml`, then `aloft.toml`.
pub fn find_in(dir: &Path) -> Result<PathBuf, ConfigError> {
    DEFAULT_FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| ConfigError::NotFound {
            dir: dir.to_owned(),
        })
}

/// Writing a config back out, normalized (legacy forms rewritten, fly.toml key names).
pub mod show {
    use super::{AppConfig, Format};

    /// Why a config could not be written in the requested format.
    #[derive(Debug, thiserror::Error)]
    #[error("writing the config as {format}: {message}")]
    pub struct ShowError {
        pub format: &'static str,
        pub message: String,
    }

    pub fn to_string(config: &AppConfig, format: Format) -> Result<String, ShowError> {
        let error = |message: String| ShowError {
            format: format.name(),
            message,
        };
        match format {
            Format::Toml => toml::to_string_pretty(config).map_err(|e| error(e.to_string())),
            Format::Json => serde_json::to_string_pretty(config)
                .map(|mut text| {
                    text.push('\n');
                    text
                })
                .map_err(|e| error(e.to_string())),
            Format::Yaml => serde_norway::to_string(config).map_err(|e| error(e.to_string())),
        }
    }
}
