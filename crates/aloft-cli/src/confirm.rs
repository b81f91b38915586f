//! Asking before big or destructive changes: on a terminal the user answers y/N; anywhere
//! else the command needs `--yes` (flyctl's `-y`), since nobody can be asked.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use crate::Failure;

/// Goes on when `yes` was given or the user answers yes to `question` on a terminal;
/// otherwise fails, saying that nothing changed. `what` names the change in the error.
pub(crate) fn confirm(question: &str, what: &str, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{what} needs confirmation: pass --yes (-y) to go ahead, since there is no terminal to ask on; nothing was changed"
        )));
    }
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{question} [y/N] ");
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{what}: not confirmed; nothing was changed").into())
    }
}
