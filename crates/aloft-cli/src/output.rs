//! Where output goes: data to stdout, diagnostics to stderr, colour only when wanted.

use std::io::{IsTerminal, Write};

/// The environment variable that turns colour off (<https://no-color.org>).
pub(crate) const NO_COLOR: &str = "NO_COLOR";

#[derive(Debug)]
pub(crate) struct Output {
    color: bool,
}

impl Output {
    pub(crate) fn new() -> Output {
        let no_color = std::env::var_os(NO_COLOR).is_some_and(|value| !value.is_empty());
        Output {
            color: !no_color && std::io::stderr().is_terminal(),
        }
    }

    /// Writes data to stdout.
    pub(crate) fn data(&mut self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = stdout.write_all(b"\n");
        }
        let _ = stdout.flush();
    }

    /// Writes `value` as pretty JSON to stdout.
    pub(crate) fn json(&mut self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| anyhow::anyhow!("writing JSON: {e}"))?;
        self.data(&text);
        Ok(())
    }

    /// Writes text to stdout exactly as it is (a command's own output).
    pub(crate) fn raw_stdout(&mut self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    /// Writes text to stderr exactly as it is.
    pub(crate) fn raw_stderr(&mut self, text: &str) {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    /// Writes rendered diagnostics to stderr, colouring their severity and markers.
    pub(crate) fn diagnostics(&mut self, text: &str) {
        let mut stderr = std::io::stderr().lock();
        for line in text.lines() {
            let line = if !self.color {
                line.to_owned()
            } else if let Some(rest) = line.strip_prefix("error:") {
                format!("\x1b[1;31merror:\x1b[0m\x1b[1m{rest}\x1b[0m")
            } else if let Some(rest) = line.strip_prefix("warning:") {
                format!("\x1b[1;33mwarning:\x1b[0m\x1b[1m{rest}\x1b[0m")
            } else if line.trim_start().starts_with('|') && line.contains('^') {
                line.replace('^', "\x1b[1;31m^\x1b[0m")
            } else {
                line.to_owned()
            };
            let _ = writeln!(stderr, "{line}");
        }
    }

    /// Reports a change that produces no data: `value` as JSON on stdout with `--json`,
    /// else `text` on stderr.
    pub(crate) fn report(
        &mut self,
        json: bool,
        value: serde_json::Value,
        text: &str,
    ) -> anyhow::Result<()> {
        if json {
            self.json(&value)
        } else {
            self.status(text);
            Ok(())
        }
    }

    /// Writes a one-line status message to stderr.
    pub(crate) fn status(&mut self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }

    pub(crate) fn error(&mut self, text: &str) {
        let prefix = if self.color {
            "\x1b[1;31merror:\x1b[0m"
        } else {
            "error:"
        };
        let _ = writeln!(std::io::stderr().lock(), "{prefix} {text}");
    }
}
