//! `[[statics]]`: files of a running machine that the edge serves without asking the app.
//!
//! A machine's filesystem is reached from the host through `/proc/<pid>/root` of its main
//! process. Paths inside it are the tenant's: a symbolic link there resolves against the
//! *host's* root once followed from outside the container, so the file is opened with
//! `openat2` beneath that root, following no link at all (Fly does not honour links in
//! statics either), and only a regular file outside the kernel's pseudo-filesystems is
//! served.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{SFlag, fstat};

/// The main process of each running instance, so that a static file costs no container
/// listing: its pid and its start time, which together name one process for good (a pid
/// reused after the container stopped has another start time).
#[derive(Debug, Default)]
pub(crate) struct Roots {
    by_instance: Mutex<HashMap<String, (u32, u64)>>,
}

/// More instances than a host runs: past it, the map starts again.
const MAX_ROOTS: usize = 4096;

impl Roots {
    /// The instance's main process, when it is the one remembered and still runs.
    pub(crate) fn get(&self, instance: &str) -> Option<u32> {
        let (pid, started) = *self.by_instance.lock().ok()?.get(instance)?;
        if start_time(Path::new("/proc"), pid) == Some(started) {
            return Some(pid);
        }
        if let Ok(mut roots) = self.by_instance.lock() {
            roots.remove(instance);
        }
        None
    }

    /// Remembers `pid` as the instance's main process.
    pub(crate) fn remember(&self, instance: &str, pid: u32) {
        let Some(started) = start_time(Path::new("/proc"), pid) else {
            return;
        };
        if let Ok(mut roots) = self.by_instance.lock() {
            if roots.len() >= MAX_ROOTS {
                roots.clear();
            }
            roots.insert(instance.to_owned(), (pid, started));
        }
    }
}

/// When process `pid` started (field 22 of `/proc/<pid>/stat`, in clock ticks since
/// boot), or `None` when there is no such process.
fn start_time(proc: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Opens `guest_path/path` beneath `root` (a machine's `/proc/<pid>/root`): the file and
/// its size, or `None` when it is missing, not a regular file, behind a symbolic link or
/// on procfs or sysfs. `path` must be relative with checked segments (see
/// [`aloft_agent_api::HostLink::open_static`]).
pub(crate) fn open(
    root: &Path,
    guest_path: &str,
    path: &str,
) -> std::io::Result<Option<(File, u64)>> {
    let Some(relative) = joined(guest_path, path) else {
        return Ok(None);
    };
    let root: OwnedFd = match nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let file = match openat2(root.as_fd(), relative.as_str(), how) {
        Ok(fd) => fd,
        // Missing, a link on the way (ELOOP), escaping (EXDEV), a file where a directory
        // was expected (ENOTDIR), not readable: not a static file.
        Err(
            nix::errno::Errno::ENOENT
            | nix::errno::Errno::ELOOP
            | nix::errno::Errno::EXDEV
            | nix::errno::Errno::ENOTDIR
            | nix::errno::Errno::EACCES
            | nix::errno::Errno::ENAMETOOLONG,
        ) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let stat = fstat(&file)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Ok(None);
    }
    let filesystem = nix::sys::statfs::fstatfs(&file)?.filesystem_type();
    if filesystem == nix::sys::statfs::PROC_SUPER_MAGIC
        || filesystem == nix::sys::statfs::SYSFS_MAGIC
    {
        return Ok(None);
    }
    let length = u64::try_from(stat.st_size).unwrap_or(0);
    let file = File::from(file);
    // Reads block on a regular file whatever the flag; it only kept a FIFO from
    // blocking the open itself.
    Ok(Some((file, length)))
}

/// `guest_path` and `path` joined as a path relative to the machine's root, or `None`
/// when either has a segment that is not a plain name.
fn joined(guest_path: &str, path: &str) -> Option<String> {
    let mut segments = Vec::new();
    for segment in guest_path.split('/').filter(|s| !s.is_empty()) {
        segments.push(plain(segment)?);
    }
    for segment in path.split('/') {
        segments.push(plain(segment)?);
    }
    Some(segments.join("/"))
}

fn plain(segment: &str) -> Option<&str> {
    (!segment.is_empty() && segment != "." && segment != ".." && !segment.contains('\0'))
        .then_some(segment)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    #[test]
    fn a_remembered_process_is_known_while_it_runs_and_forgotten_after() {
        let proc = std::path::Path::new("/proc");
        let mine = std::process::id();
        let started = super::start_time(proc, mine).unwrap();
        assert!(started > 0);
        let roots = super::Roots::default();
        roots.remember("current", mine);
        assert_eq!(roots.get("current"), Some(mine));
        assert_eq!(roots.get("other"), None);
        // A process that has ended: its instance is forgotten.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        roots.remember("ended", pid);
        child.wait().unwrap();
        assert_eq!(roots.get("ended"), None);
        // The same pid with another start time is another process.
        roots
            .by_instance
            .lock()
            .unwrap()
            .insert("reused".into(), (mine, started + 1));
        assert_eq!(roots.get("reused"), None);
        assert!(!roots.by_instance.lock().unwrap().contains_key("reused"));
    }

    #[test]
    fn start_time_reads_past_a_command_name_with_spaces_and_parentheses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("42")).unwrap();
        let fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        std::fs::write(
            dir.path().join("42/stat"),
            format!("42 (a) b (c) {}", fields.join(" ")),
        )
        .unwrap();
        assert_eq!(super::start_time(dir.path(), 42), Some(22));
        assert_eq!(super::start_time(dir.path(), 43), None);
    }

    use std::io::Read as _;

    use super::*;

    /// A machine root with `/public/hello.txt`, a link to a file outside `public`, a
    /// linked directory and a subdirectory.
    fn root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let public = root.path().join("public");
        std::fs::create_dir_all(public.join("css")).unwrap();
        std::fs::write(public.join("hello.txt"), "hello").unwrap();
        std::fs::write(public.join("css/app.css"), "body{}").unwrap();
        std::fs::write(root.path().join("secret"), "secret").unwrap();
        std::os::unix::fs::symlink("../secret", public.join("relative-link")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", public.join("absolute-link")).unwrap();
        std::os::unix::fs::symlink("css", public.join("linked-dir")).unwrap();
        std::os::unix::fs::symlink("public", root.path().join("www")).unwrap();
        root
    }

    fn read(root: &Path, guest_path: &str, path: &str) -> Option<String> {
        let (mut file, length) = open(root, guest_path, path).unwrap()?;
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(u64::try_from(text.len()).unwrap(), length);
        Some(text)
    }

    #[test]
    fn regular_files_beneath_the_guest_path_are_served() {
        let root = root();
        assert_eq!(
            read(root.path(), "/public", "hello.txt").as_deref(),
            Some("hello")
        );
        assert_eq!(
            read(root.path(), "/public/", "css/app.css").as_deref(),
            Some("body{}")
        );
        assert_eq!(read(root.path(), "/", "secret").as_deref(), Some("secret"));
    }

    #[test]
    fn links_directories_and_escapes_are_not() {
        let root = root();
        for (guest_path, path) in [
            ("/public", "relative-link"),
            ("/public", "absolute-link"),
            ("/public", "linked-dir/app.css"),
            // A link in the mapping's own path is not followed either.
            ("/www", "hello.txt"),
            ("/public", "css"),
            ("/public", "missing.txt"),
            ("/public", "../secret"),
            ("/public", "./hello.txt"),
            ("/public", "css//app.css"),
            ("/public", ""),
            ("/public/..", "secret"),
            ("/public", "hello.txt/x"),
        ] {
            assert_eq!(
                read(root.path(), guest_path, path),
                None,
                "{guest_path} {path}"
            );
        }
    }

    #[test]
    fn pseudo_filesystems_are_not_served() {
        // Positive control: the same root and path shape serve a real file.
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("version"), "v").unwrap();
        assert_eq!(read(root.path(), "/", "version").as_deref(), Some("v"));
        assert_eq!(read(Path::new("/"), "/proc", "version"), None);
        assert_eq!(read(Path::new("/"), "/proc/self", "status"), None);
    }

    #[test]
    fn a_missing_root_is_no_file() {
        assert!(
            open(Path::new("/nonexistent-root"), "/", "x")
                .unwrap()
                .is_none()
        );
    }
}
