//! Files written whole or not at all.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use crate::{Point, reach};

/// Writes `contents` to `path` with permissions `mode` (0600 for anything secret), so that
/// a crash at any instant leaves either the file as it was or the whole new content: the
/// bytes go to `<path>.tmp` first, which is synced and renamed over `path`, and then the
/// directory is synced so that the rename itself survives a power loss.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let temporary = path.with_file_name(name);
    // A leftover of a write that was cut short.
    match std::fs::remove_file(&temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)?;
    reach(Point::FileOpened);
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    reach(Point::FileSynced);
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_file_is_replaced_whole_with_its_mode_and_a_leftover_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        // What a write killed between its open and its rename left.
        std::fs::write(dir.path().join("key.tmp"), b"half").unwrap();
        write_file(&path, b"first\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first\n");
        write_file(&path, b"second\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key")]);
    }
}
