//! Volume snapshots on this host: a tar archive of the volume's files (ownership,
//! permissions and symbolic links kept) under `<data_dir>/snapshots/`, written beside its
//! final name and renamed into place, so a snapshot is whole or absent. A restore unpacks
//! beside the volume's data directory and renames it into place the same way.
//!
//! The files are read one by one while the machine may be writing: a snapshot of a busy
//! database is as consistent as a copy of its files (stop the machine, or let the
//! database flush, for a clean one).

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::spec::volume_dir;

/// Where `snapshot`'s archive is kept.
pub(crate) fn archive_path(data_dir: &Path, snapshot: &str) -> PathBuf {
    data_dir.join("snapshots").join(format!("{snapshot}.tar"))
}

/// A writer that hashes what it writes.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.hash.update(&bytes[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `volume`'s snapshot; returns its size and `sha256:` digest. A volume no machine
/// has mounted yet has no files: its snapshot is an empty archive.
pub(crate) fn take(
    data_dir: &Path,
    volume: &str,
    snapshot: &str,
) -> std::io::Result<(u64, String)> {
    let source = volume_dir(data_dir, volume);
    let path = archive_path(data_dir, snapshot);
    let dir = path.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir)?;
    let partial = path.with_extension("tar.partial");
    let file = std::fs::File::create(&partial)?;
    let mut builder = tar::Builder::new(Hashing {
        inner: std::io::BufWriter::new(file),
        hash: Sha256::new(),
        written: 0,
    });
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    if source.is_dir() {
        builder.append_dir_all(".", &source)?;
    }
    let mut hashing = builder.into_inner()?;
    hashing.flush()?;
    let Hashing {
        inner,
        hash,
        written,
    } = hashing;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok((written, format!("sha256:{:x}", hash.finalize())))
}

/// Fills `volume` with `snapshot`'s files, replacing whatever it held.
pub(crate) fn restore(data_dir: &Path, snapshot: &str, volume: &str) -> std::io::Result<()> {
    let archive = archive_path(data_dir, snapshot);
    let file = std::fs::File::open(&archive).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("snapshot {snapshot} is not on this host ({error})"),
        )
    })?;
    let target = volume_dir(data_dir, volume);
    let parent = target.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(parent)?;
    let staging = parent.join("data.restoring");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    let mut unpacking = tar::Archive::new(std::io::BufReader::new(file));
    unpacking.set_preserve_permissions(true);
    unpacking.set_preserve_ownerships(true);
    unpacking.set_preserve_mtime(true);
    unpacking.set_overwrite(true);
    unpacking.unpack(&staging)?;
    if target.exists() {
        std::fs::remove_dir_all(&target)?;
    }
    std::fs::rename(&staging, &target)
}

/// Deletes `volume`'s files (its whole directory); a volume with none here is fine.
pub(crate) fn delete_volume(data_dir: &Path, volume: &str) -> std::io::Result<()> {
    let data = volume_dir(data_dir, volume);
    let dir = data.parent().unwrap_or(&data);
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Deletes `snapshot`'s archive; one already gone is fine.
pub(crate) fn delete(data_dir: &Path, snapshot: &str) -> std::io::Result<()> {
    match std::fs::remove_file(archive_path(data_dir, snapshot)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_restored_volume_holds_the_files_the_snapshot_saw() {
        let data = tempfile::tempdir().unwrap();
        let source = volume_dir(data.path(), "vol_a");
        std::fs::create_dir_all(source.join("pg/base")).unwrap();
        std::fs::write(source.join("pg/base/1"), b"rows").unwrap();
        std::fs::set_permissions(source.join("pg"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::symlink("base/1", source.join("pg/link")).unwrap();

        let (size, digest) = take(data.path(), "vol_a", "vs_one").unwrap();
        assert!(size > 0 && digest.starts_with("sha256:"), "{size} {digest}");
        // Written after the snapshot: not in it.
        std::fs::write(source.join("later"), b"x").unwrap();

        restore(data.path(), "vs_one", "vol_b").unwrap();
        let restored = volume_dir(data.path(), "vol_b");
        assert_eq!(std::fs::read(restored.join("pg/base/1")).unwrap(), b"rows");
        assert_eq!(
            std::fs::read_link(restored.join("pg/link")).unwrap(),
            PathBuf::from("base/1")
        );
        let mode = std::fs::metadata(restored.join("pg"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!restored.join("later").exists());

        // Again: the same files, nothing left from the first try.
        std::fs::write(restored.join("stray"), b"y").unwrap();
        restore(data.path(), "vs_one", "vol_b").unwrap();
        assert!(!restored.join("stray").exists());
        assert_eq!(std::fs::read(restored.join("pg/base/1")).unwrap(), b"rows");

        // The same files give the same digest; a changed file another.
        let (_, again) = take(data.path(), "vol_b", "vs_two").unwrap();
        std::fs::write(restored.join("pg/base/1"), b"other").unwrap();
        let (_, changed) = take(data.path(), "vol_b", "vs_three").unwrap();
        assert_ne!(again, changed);

        delete(data.path(), "vs_one").unwrap();
        delete(data.path(), "vs_one").unwrap();
        delete_volume(data.path(), "vol_b").unwrap();
        assert!(!restored.exists() && restored.parent().is_some_and(|p| !p.exists()));
        delete_volume(data.path(), "vol_b").unwrap();
        assert!(
            source.join("pg/base/1").exists(),
            "another volume is untouched"
        );
        assert!(restore(data.path(), "vs_one", "vol_c").is_err());
    }

    #[test]
    fn a_volume_never_mounted_snapshots_as_empty() {
        let data = tempfile::tempdir().unwrap();
        let (size, _) = take(data.path(), "vol_new", "vs_empty").unwrap();
        assert!(
            size > 0,
            "an archive with no entries still has its end blocks"
        );
        restore(data.path(), "vs_empty", "vol_copy").unwrap();
        let restored = volume_dir(data.path(), "vol_copy");
        assert_eq!(std::fs::read_dir(restored).unwrap().count(), 0);
    }
}
