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

/// The share of the disk a snapshot must leave free, in percent.
const KEEP_FREE_PERCENT: u64 = 5;

/// Bytes the files under `dir` take (what their archive needs, headers aside); a missing
/// directory takes none. Symbolic links are not followed.
fn size_of_tree(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let entries = match std::fs::read_dir(&next) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Refuses a snapshot of `needed` bytes on a disk with `free` of `total` bytes left when
/// it would leave less than [`KEEP_FREE_PERCENT`] of the disk free: a snapshot must never
/// fill the disk the machines' volumes live on.
fn room_for(needed: u64, free: u64, total: u64) -> std::io::Result<()> {
    let keep = total / 100 * KEEP_FREE_PERCENT;
    if needed.saturating_add(keep) > free {
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "the snapshot needs {needed} bytes and the host's disk has {free} free, of which {keep} ({KEEP_FREE_PERCENT}% of the disk) stay free"
            ),
        ));
    }
    Ok(())
}

/// Writes `volume`'s snapshot; returns its size and `sha256:` digest. A volume no machine
/// has mounted yet has no files: its snapshot is an empty archive. Refused when it would
/// leave the disk nearly full.
pub(crate) fn take(
    data_dir: &Path,
    volume: &str,
    snapshot: &str,
) -> std::io::Result<(u64, String)> {
    let source = volume_dir(data_dir, volume);
    // A volume's filesystem not mounted since the host started: what it holds is there.
    crate::volumes::mount_if_made(&source).map_err(std::io::Error::other)?;
    let path = archive_path(data_dir, snapshot);
    let dir = path.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir)?;
    let disk = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let unit: u64 = disk.fragment_size();
    let (available, blocks): (u64, u64) = (disk.blocks_available(), disk.blocks());
    room_for(
        size_of_tree(&source)?,
        available.saturating_mul(unit),
        blocks.saturating_mul(unit),
    )?;
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

/// Deletes `volume`'s files (its filesystem unmounted, its whole directory); a volume
/// with none here is fine.
pub(crate) fn delete_volume(data_dir: &Path, volume: &str) -> std::io::Result<()> {
    crate::volumes::delete(&volume_dir(data_dir, volume)).map_err(std::io::Error::other)
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
    fn a_snapshot_that_would_nearly_fill_the_disk_is_refused() {
        // 1,000 bytes of disk: 50 stay free.
        room_for(900, 950, 1000).unwrap();
        let refused = room_for(901, 950, 1000).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::StorageFull);
        assert!(refused.to_string().contains("901 bytes"), "{refused}");
        room_for(0, 0, 0).unwrap();

        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("tree");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/one"), [0; 10]).unwrap();
        std::fs::write(dir.join("a/b/two"), [0; 32]).unwrap();
        assert_eq!(size_of_tree(&dir).unwrap(), 42);
        assert_eq!(size_of_tree(&data.path().join("none")).unwrap(), 0);
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
