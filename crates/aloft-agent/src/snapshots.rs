//! Volume snapshots on this host: a tar archive of the volume's files (ownership,
//! permissions and symbolic links kept) under `<data_dir>/snapshots/`, written beside its
//! final name and renamed into place, so a snapshot is whole or absent. A restore unpacks
//! beside the volume's data directory and renames it into place the same way.
//!
//! The archive of an encrypted volume is encrypted too (`sealed`), and a volume restored
//! from it gets its files inside its own encrypted directory, never in the clear on the
//! host's disk.
//!
//! The files are read one by one while the machine may be writing: a snapshot of a busy
//! database is as consistent as a copy of its files (stop the machine, or let the
//! database flush, for a clean one).

use std::io::Write;
use std::path::{Path, PathBuf};

use aloft_agent_api::{VolumeFacts, VolumeKey};
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

/// Writes `volume`'s snapshot (encrypted when the volume is: `key`); returns its size
/// and `sha256:` digest. A volume no machine has mounted yet has no files: its snapshot
/// is an empty archive. Refused when it would leave the disk nearly full.
pub(crate) fn take(
    data_dir: &Path,
    volume: &str,
    key: Option<&VolumeKey>,
    snapshot: &str,
) -> std::io::Result<(u64, String)> {
    let data = volume_dir(data_dir, volume);
    // A volume's filesystem not mounted since the host started: what it holds is there.
    crate::volumes::mount_if_made(&data, volume, key).map_err(std::io::Error::other)?;
    let source = crate::volumes::bind_source(&data);
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
    let hashing = Hashing {
        inner: std::io::BufWriter::new(file),
        hash: Sha256::new(),
        written: 0,
    };
    let mut hashing = match key {
        Some(key) => archive(crate::sealed::Sealing::new(hashing, key)?, &source)?.finish()?,
        None => archive(hashing, &source)?,
    };
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

/// Writes the tar archive of what `source` holds (nothing when it is missing) to `out`.
fn archive<W: Write>(out: W, source: &Path) -> std::io::Result<W> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    if source.is_dir() {
        builder.append_dir_all(".", source)?;
    }
    builder.into_inner()
}

/// Fills `volume` with `snapshot`'s files, replacing whatever it held. `from` is the key
/// the snapshot was written with (its volume's); `into` says the new volume's size and
/// key: an encrypted one is made ready (its filesystem made and unlocked) and its files
/// are unpacked inside its encrypted directory.
pub(crate) fn restore(
    data_dir: &Path,
    backing: crate::VolumeBacking,
    snapshot: &str,
    from: Option<&VolumeKey>,
    volume: &str,
    into: &VolumeFacts,
) -> std::io::Result<()> {
    use std::io::Read as _;
    let archive = archive_path(data_dir, snapshot);
    let mut file = std::io::BufReader::new(std::fs::File::open(&archive).map_err(|error| {
        std::io::Error::new(
            error.kind(),
            format!("snapshot {snapshot} is not on this host ({error})"),
        )
    })?);
    let mut magic = [0u8; crate::sealed::MAGIC.len()];
    let mut head = 0;
    while head < magic.len() {
        match file.read(&mut magic[head..])? {
            0 => break,
            n => head += n,
        }
    }
    let sealed = head == magic.len() && &magic == crate::sealed::MAGIC;
    let reader: Box<dyn std::io::Read> = match (sealed, from) {
        (true, Some(key)) => Box::new(crate::sealed::Unsealing::new(file, key)?),
        (true, None) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("snapshot {snapshot} is encrypted and its key was not given"),
            ));
        }
        // A plain archive: what was read of it is put back in front.
        (false, _) => Box::new(std::io::Cursor::new(magic[..head].to_vec()).chain(file)),
    };
    let target = volume_dir(data_dir, volume);
    let parent = target.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(parent)?;
    // An encrypted volume is unpacked beside its files directory, inside its filesystem
    // and encrypted with its key; a plain one beside its data directory.
    let (staging, into_dir, identifier) = match &into.key {
        Some(key) => {
            let identifier =
                crate::volumes::ensure(backing, &target, volume, into.size_gb, Some(key))
                    .map_err(std::io::Error::other)?;
            (
                target.join("files.restoring"),
                crate::volumes::bind_source(&target),
                identifier,
            )
        }
        None => (parent.join("data.restoring"), target.clone(), None),
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    if let Some(identifier) = &identifier {
        aloft_fscrypt::set_policy(&staging, identifier)?;
    }
    let mut unpacking = tar::Archive::new(reader);
    unpacking.set_preserve_permissions(true);
    unpacking.set_preserve_ownerships(true);
    unpacking.set_preserve_mtime(true);
    unpacking.set_overwrite(true);
    unpacking.unpack(&staging)?;
    if into_dir.exists() {
        std::fs::remove_dir_all(&into_dir)?;
    }
    std::fs::rename(&staging, &into_dir)
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
    use crate::VolumeBacking::Directory;

    /// A new volume that is not encrypted.
    const PLAIN: VolumeFacts = VolumeFacts {
        size_gb: 1,
        key: None,
    };

    #[test]
    fn a_restored_volume_holds_the_files_the_snapshot_saw() {
        let data = tempfile::tempdir().unwrap();
        let source = volume_dir(data.path(), "vol_a");
        std::fs::create_dir_all(source.join("pg/base")).unwrap();
        std::fs::write(source.join("pg/base/1"), b"rows").unwrap();
        std::fs::set_permissions(source.join("pg"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::symlink("base/1", source.join("pg/link")).unwrap();

        let (size, digest) = take(data.path(), "vol_a", None, "vs_one").unwrap();
        assert!(size > 0 && digest.starts_with("sha256:"), "{size} {digest}");
        // Written after the snapshot: not in it.
        std::fs::write(source.join("later"), b"x").unwrap();

        restore(data.path(), Directory, "vs_one", None, "vol_b", &PLAIN).unwrap();
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
        restore(data.path(), Directory, "vs_one", None, "vol_b", &PLAIN).unwrap();
        assert!(!restored.join("stray").exists());
        assert_eq!(std::fs::read(restored.join("pg/base/1")).unwrap(), b"rows");

        // The same files give the same digest; a changed file another.
        let (_, again) = take(data.path(), "vol_b", None, "vs_two").unwrap();
        std::fs::write(restored.join("pg/base/1"), b"other").unwrap();
        let (_, changed) = take(data.path(), "vol_b", None, "vs_three").unwrap();
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
        assert!(restore(data.path(), Directory, "vs_one", None, "vol_c", &PLAIN).is_err());
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
        let (size, _) = take(data.path(), "vol_new", None, "vs_empty").unwrap();
        assert!(
            size > 0,
            "an archive with no entries still has its end blocks"
        );
        restore(data.path(), Directory, "vs_empty", None, "vol_copy", &PLAIN).unwrap();
        let restored = volume_dir(data.path(), "vol_copy");
        assert_eq!(std::fs::read_dir(restored).unwrap().count(), 0);
    }

    #[test]
    fn an_encrypted_volumes_snapshot_is_encrypted_and_restores_into_an_encrypted_volume() {
        use crate::volumes::tests::{MARKER, holds, read_marked, write_marked};
        use crate::volumes::{bind_source, ensure, unmount};
        let data = tempfile::tempdir().unwrap();
        let (key, copy_key) = (
            VolumeKey::from_bytes([8; VolumeKey::LEN]),
            VolumeKey::from_bytes([9; VolumeKey::LEN]),
        );
        let (plain, sealed, copy) = (
            volume_dir(data.path(), "vol_plain"),
            volume_dir(data.path(), "vol_sealed"),
            volume_dir(data.path(), "vol_copy"),
        );
        let _cleanup = [&plain, &sealed, &copy].map(|d| Unmounted(d.clone()));
        ensure(crate::VolumeBacking::Ext4, &plain, "vol_plain", 1, None).unwrap();
        ensure(
            crate::VolumeBacking::Ext4,
            &sealed,
            "vol_sealed",
            1,
            Some(&key),
        )
        .unwrap();
        write_marked(&bind_source(&plain));
        write_marked(&bind_source(&sealed));
        // Unmounted (a restarted host): the snapshot mounts and unlocks it.
        unmount(&sealed).unwrap();
        take(data.path(), "vol_plain", None, "vs_plain").unwrap();
        take(data.path(), "vol_sealed", Some(&key), "vs_sealed").unwrap();
        // The plain archive is the positive control.
        assert!(holds(&archive_path(data.path(), "vs_plain"), MARKER));
        assert!(!holds(&archive_path(data.path(), "vs_sealed"), MARKER));

        let into = VolumeFacts {
            size_gb: 1,
            key: Some(copy_key.clone()),
        };
        let no_key = restore(data.path(), Directory, "vs_sealed", None, "vol_copy", &into);
        assert!(no_key.is_err_and(|e| e.to_string().contains("key")));
        let other = VolumeKey::from_bytes([1; VolumeKey::LEN]);
        assert!(
            restore(
                data.path(),
                Directory,
                "vs_sealed",
                Some(&other),
                "vol_copy",
                &into
            )
            .is_err()
        );
        // Restored, then again (a retry): the same files.
        for _ in 0..2 {
            restore(
                data.path(),
                Directory,
                "vs_sealed",
                Some(&key),
                "vol_copy",
                &into,
            )
            .unwrap();
            assert_eq!(read_marked(&bind_source(&copy)), MARKER.repeat(100));
        }
        unmount(&copy).unwrap();
        assert!(!holds(&copy.with_file_name("disk.ext4"), MARKER));
        ensure(
            crate::VolumeBacking::Ext4,
            &copy,
            "vol_copy",
            1,
            Some(&copy_key),
        )
        .unwrap();
        assert_eq!(read_marked(&bind_source(&copy)), MARKER.repeat(100));
    }

    /// Unmounts a volume's filesystem even when the test fails.
    struct Unmounted(PathBuf);

    impl Drop for Unmounted {
        fn drop(&mut self) {
            let _ = crate::volumes::unmount(&self.0);
        }
    }
}
