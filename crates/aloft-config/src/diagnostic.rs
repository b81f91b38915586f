//! Errors and warnings about a configuration file, each with the key path and the span it
//! is about, rendered with the file name, line, column and the line of text.

use std::fmt::{self, Write as _};

use crate::keypath::KeyPath;
use crate::source::{SourceFile, Span};

/// How serious a diagnostic is: errors make the file invalid, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding about the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The key the finding is about; the root for file-wide findings.
    pub path: KeyPath,
    pub message: String,
    /// A suggestion, such as the closest valid key or the modern spelling of a legacy one.
    pub help: Option<String>,
    pub span: Option<Span>,
}

impl Diagnostic {
    pub fn error(path: KeyPath, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            path,
            message: message.into(),
            help: None,
            span: None,
        }
    }

    pub fn warning(path: KeyPath, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            path,
            message: message.into(),
            help: None,
            span: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn with_help_opt(mut self, help: Option<String>) -> Diagnostic {
        self.help = help;
        self
    }

    pub fn at(mut self, span: Span) -> Diagnostic {
        self.span = Some(span);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic the way compilers do:
    ///
    /// ```text
    /// error: services[0].internal_prot: unknown key
    ///   --> fly.toml:3:1
    ///    |
    ///  3 | internal_prot = 8080
    ///    | ^^^^^^^^^^^^^
    ///    = help: did you mean `internal_port`?
    /// ```
    pub fn render(&self, source: &SourceFile) -> String {
        let mut out = String::new();
        let _ = write!(out, "{}: ", self.severity);
        if !self.path.is_root() {
            let _ = write!(out, "{}: ", self.path);
        }
        out.push_str(&self.message);
        out.push('\n');
        let gutter;
        match self.span {
            Some(span) => {
                let position = source.position(span.start);
                let line = source.line_text(span.start);
                let number = position.line.to_string();
                gutter = " ".repeat(number.len() + 1);
                let _ = writeln!(out, "{gutter}--> {}:{position}", source.name());
                let _ = writeln!(out, "{gutter}|");
                let _ = writeln!(out, "{number} | {line}");
                let start_col = position.column - 1;
                let line_chars = line.chars().count();
                let span_chars = source
                    .slice(span)
                    .split('\n')
                    .next()
                    .map_or(0, |text| text.trim_end_matches('\r').chars().count());
                let width = span_chars.clamp(1, line_chars.saturating_sub(start_col).max(1));
                let _ = writeln!(
                    out,
                    "{gutter}| {}{}",
                    " ".repeat(start_col),
                    "^".repeat(width)
                );
            }
            None => {
                gutter = "  ".to_owned();
                let _ = writeln!(out, "{gutter}--> {}", source.name());
            }
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{gutter}= help: {help}");
        }
        out
    }
}

/// The closest of `candidates` to `input`, if it is close enough to be a likely typo.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = input.to_ascii_lowercase().replace('-', "_");
    candidates
        .into_iter()
        .map(|candidate| {
            let score = strsim::jaro_winkler(&lowered, &candidate.to_ascii_lowercase());
            (candidate, score)
        })
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(candidate, _)| candidate)
}

/// `` did you mean `x`? `` for the closest candidate, if there is one.
pub(crate) fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(input, candidates).map(|candidate| format!("did you mean `{candidate}`?"))
}

/// Joins names as `` `a`, `b` or `c` `` for messages.
pub(crate) fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [only] => format!("`{only}`"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(|name| format!("`{name}`")).collect();
            format!("{} or `{last}`", init.join(", "))
        }
    }
}
