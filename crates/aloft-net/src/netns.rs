//! Network namespaces: doing work inside one without moving the whole process.
//!
//! A thread may switch namespaces (`setns`) without touching the others. Sockets keep the
//! namespace they were created in, so a socket made by a short-lived thread inside a
//! namespace serves that namespace from any thread afterwards. Everything here uses that:
//! a fresh thread enters the namespace, creates what is needed, and ends.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// Why work inside a namespace could not be done.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {}", path.display())]
    Enter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the worker thread for network namespace {} failed", path.display())]
    Thread { path: PathBuf },
}

/// The namespace file of a process (`/proc/PID/ns/net`).
pub fn of_process(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Runs `work` on a thread inside the namespace at `path` (the caller's own namespace when
/// `path` is `None`) and returns what it returns.
pub fn run_in<T, F>(path: Option<&Path>, work: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let Some(path) = path else {
        return Ok(work());
    };
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
    let owned = path.to_owned();
    let thread = std::thread::Builder::new()
        .name("aloft-netns".to_owned())
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Enter {
                path: owned.clone(),
                source: std::io::Error::from(errno),
            })?;
            Ok(work())
        })
        .map_err(|_| NetnsError::Thread {
            path: path.to_owned(),
        })?;
    thread.join().map_err(|_| NetnsError::Thread {
        path: path.to_owned(),
    })?
}
