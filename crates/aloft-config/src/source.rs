//! The text of a configuration file, its format, and positions in it.

use std::fmt;
use std::path::Path;

/// The syntax a configuration file is written in; the file extension decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Toml,
    Json,
    Yaml,
}

impl Format {
    /// `.json` is JSON, `.yaml`/`.yml` is YAML, anything else (`fly.toml`,
    /// `fly.production.toml`, no extension) is TOML.
    pub fn from_path(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|ext| ext.to_str())
            .map(str::to_ascii_lowercase)
        {
            Some(ext) if ext == "json" => Format::Json,
            Some(ext) if ext == "yaml" || ext == "yml" => Format::Yaml,
            _ => Format::Toml,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
            Format::Yaml => "YAML",
        }
    }
}

/// A byte range in a [`SourceFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub const fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
}

impl From<std::ops::Range<usize>> for Span {
    fn from(range: std::ops::Range<usize>) -> Self {
        Span::new(range.start, range.end)
    }
}

/// A 1-based line and column (counted in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A configuration file's name (as shown in messages), text and format.
#[derive(Debug, Clone)]
pub struct SourceFile {
    name: String,
    text: String,
    format: Format,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>, format: Format) -> SourceFile {
        SourceFile {
            name: name.into(),
            text: text.into(),
            format,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Clamps `offset` to the text and moves it back to a character boundary.
    fn boundary(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// The text of `span`, with both ends moved back to character boundaries.
    pub fn slice(&self, span: Span) -> &str {
        let start = self.boundary(span.start);
        let end = self.boundary(span.end.max(span.start));
        &self.text[start..end.max(start)]
    }

    pub fn position(&self, offset: usize) -> Position {
        let offset = self.boundary(offset);
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    /// The whole line that holds `offset`, without its line break.
    pub fn line_text(&self, offset: usize) -> &str {
        let offset = self.boundary(offset);
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        self.text[start..end].trim_end_matches('\r')
    }
}
