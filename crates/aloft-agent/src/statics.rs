//! `[[statics]]`: files of a running machine that the edge serves without asking the app.
//!
//! A machine's filesystem is reached from the host through `/proc/<pid>/root` of its main
//! process. Paths inside it are the tenant's: a symbolic link there resolves against the
//! *host's* root once followed from outside the container, so the file is opened with
//! `openat2` beneath that root, following no link at all (Fly does not honour links in
//! statics either), and only a regular file outside the kernel's pseudo-filesystems is
//! served.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{SFlag, fstat};

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
