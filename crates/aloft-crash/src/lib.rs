//! Crash safety, in two parts:
//!
//! - [`write_file`] writes a file whole or not at all (a temporary file beside it, synced,
//!   renamed over it, the directory synced): a process killed at any instant leaves the
//!   old content or the new, never an empty or half-written file that the next start
//!   cannot read.
//! - [`reach`] marks a step boundary ([`Point`]). In a build with the `failpoints` feature
//!   (test builds only), `ALOFT_FAILPOINT=<point>[#<n>]` kills the process with `SIGKILL`
//!   (as `kill -9` would) the `n`-th time (default the first) it reaches that point, and
//!   `ALOFT_FAILPOINT_TRACE=<file>` appends the name of every point reached to the file,
//!   so a test learns which points a scenario passes before it kills at each one. In any
//!   other build, `reach` does nothing.

mod file;
mod point;

pub use file::write_file;
pub use point::{Point, reach};

/// The variable naming the point at which to die: `<point>` or `<point>#<n>`.
pub const FAILPOINT_VARIABLE: &str = "ALOFT_FAILPOINT";

/// The variable naming the file every point reached is appended to, one name a line.
pub const TRACE_VARIABLE: &str = "ALOFT_FAILPOINT_TRACE";
