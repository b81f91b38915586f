//! The local terminal during a session: raw mode, restored on every way out, and its size.

use anyhow::Context as _;

/// The terminal in raw mode until dropped.
pub(crate) struct RawMode {
    pub(crate) saved: rustix::termios::Termios,
}

impl RawMode {
    pub(crate) fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("setting the terminal to raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

pub(crate) fn terminal_size() -> (u32, u32) {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .filter(|size| size.ws_col > 0 && size.ws_row > 0)
        .map_or((80, 24), |size| {
            (u32::from(size.ws_col), u32::from(size.ws_row))
        })
}
