//! Volumes on this host. With [`VolumeBacking::Ext4`] (what `aloftd` runs) a volume is a
//! filesystem of its own: an ext4 image the size of the volume
//! (`<data_dir>/volumes/<id>/disk.ext4`, sparse), loop-mounted (`nosuid,nodev`) on the
//! directory machines bind-mount (`.../data`), so a machine that fills it gets `ENOSPC`
//! at the volume's size and nothing of the host's disk beyond. A volume that grew
//! (`extend`) has its image and filesystem grown before its machine's next start
//! (offline, between runs). [`VolumeBacking::Directory`] keeps plain directories (the simulated hosts).
//!
//! Making the filesystem is crash-safe, and also adopts what a plain directory already
//! holds (a snapshot restored into it, or a volume from before filesystems): the image is
//! made as `disk.ext4.partial`, filled with a copy of the directory's files through a
//! mount of its own (`data.adopting`), unmounted, and only then renamed to `disk.ext4`
//! (the commit). A crash before that leaves the directory as it was and the partial
//! image to throw away; a crash after it leaves files the image already holds, removed
//! before the image is mounted over them.
//!
//! A volume with a key (one the control plane made encrypted) is always a filesystem,
//! made with ext4's `encrypt` feature. Its files live in `data/files`, a directory
//! encrypted with the key (fscrypt, `aloft-fscrypt`): the key is added to the
//! filesystem each time it is mounted and goes when it is unmounted, so the image on the
//! host's disk holds only ciphertext. The mark `encrypted` beside `data` records that
//! the volume is so (written before its filesystem is made): machines then bind-mount
//! `data/files` ([`bind_source`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use aloft_agent_api::VolumeKey;

/// The directory of an encrypted volume's files, inside its filesystem (whose root
/// cannot be encrypted).
const FILES: &str = "files";
/// The mark, beside a volume's `data`, that it is encrypted.
const ENCRYPTED_MARK: &str = "encrypted";

/// How volumes are kept on this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VolumeBacking {
    /// A plain directory: no size limit (the simulated hosts of the sim suites).
    #[default]
    Directory,
    /// A loop-mounted ext4 filesystem of the volume's size.
    Ext4,
}

/// Why a volume could not be made ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VolumeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error(
        "volume {volume} holds more than its {size_gb} GB: extend it (aloft volumes extend) or remove files"
    )]
    TooFull { volume: String, size_gb: u64 },
    #[error("volume {volume} is encrypted and its key was not given")]
    KeyMissing { volume: String },
    #[error(
        "volume {volume} was made unencrypted and cannot be encrypted in place: restore a snapshot of it into a new volume"
    )]
    NotEncrypted { volume: String },
    #[error("encrypting volume {volume}: {source}")]
    Encryption {
        volume: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs `program args`; its combined output on failure.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String, VolumeError> {
    let command_text = || {
        std::iter::once(program.to_owned())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let output =
        Command::new(program)
            .args(args)
            .output()
            .map_err(|error| VolumeError::Command {
                command: command_text(),
                output: error.to_string(),
            })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(VolumeError::Command {
            command: command_text(),
            output: text.trim().to_owned(),
        })
    }
}

/// Whether something is mounted on `dir`: another device than its parent's (what a
/// loop-mounted filesystem is), or a mount point of this process's mount table under
/// `dir`'s real path. Files are only ever emptied out of a directory this says is not
/// a mount, so it errs on the side of "mounted".
pub(crate) fn is_mounted(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    if let (Ok(this), Some(Ok(parent))) =
        (std::fs::metadata(dir), dir.parent().map(std::fs::metadata))
        && this.dev() != parent.dev()
    {
        return true;
    }
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let wanted = real.to_string_lossy();
    table.lines().any(|line| {
        line.split_whitespace()
            .nth(4)
            .is_some_and(|point| unescape(point) == wanted)
    })
}

/// A mount point as mountinfo writes it (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(code) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount(image: &Path, dir: &Path) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    run(
        "mount",
        &[
            "-o".as_ref(),
            "loop,nosuid,nodev,noatime".as_ref(),
            image.as_os_str(),
            dir.as_os_str(),
        ],
    )
    .map(drop)
}

/// Unmounts `dir` when something is mounted there (lazily when it is busy: the loop
/// device goes once its last user does).
pub(crate) fn unmount(dir: &Path) -> Result<(), VolumeError> {
    if !is_mounted(dir) {
        return Ok(());
    }
    if run("umount", &[dir.as_os_str()]).is_err() {
        run("umount", &["-l".as_ref(), dir.as_os_str()])?;
    }
    Ok(())
}

fn bytes_of(size_gb: u64) -> u64 {
    size_gb.max(1).saturating_mul(1 << 30)
}

/// Whether `dir` holds anything (a missing directory holds nothing).
fn has_files(dir: &Path) -> Result<bool, VolumeError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(io(dir)(error)),
    }
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty(dir: &Path) -> Result<(), VolumeError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io(&path))?;
    }
    Ok(())
}

/// Whether the volume at `data` is encrypted (its mark is there).
pub(crate) fn is_encrypted(data: &Path) -> bool {
    data.parent().unwrap_or(data).join(ENCRYPTED_MARK).exists()
}

/// What a machine bind-mounts of the volume at `data`: its encrypted files directory, or
/// `data` itself.
pub(crate) fn bind_source(data: &Path) -> PathBuf {
    if is_encrypted(data) {
        data.join(FILES)
    } else {
        data.to_owned()
    }
}

/// Adds `key` to the filesystem mounted at `mounted` and makes sure its files directory
/// is there and encrypted with it; the key's identifier.
fn unlock(
    mounted: &Path,
    volume: &str,
    key: &VolumeKey,
) -> Result<aloft_fscrypt::Identifier, VolumeError> {
    let failed = |source| VolumeError::Encryption {
        volume: volume.to_owned(),
        source,
    };
    let identifier = aloft_fscrypt::add_key(mounted, key.as_bytes()).map_err(failed)?;
    let files = mounted.join(FILES);
    match std::fs::create_dir(&files) {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(io(&files)(error));
        }
        _ => {}
    }
    // The same policy again is a no-op; another key's is refused (a wrong key).
    aloft_fscrypt::set_policy(&files, &identifier).map_err(failed)?;
    Ok(identifier)
}

/// Makes `volume` (of `size_gb`, encrypted with `key` when it has one) ready at `data`
/// for a machine to bind-mount: its filesystem made (adopting the directory's files) or
/// grown, mounted, and unlocked (the identifier of its key then).
pub(crate) fn ensure(
    backing: VolumeBacking,
    data: &Path,
    volume: &str,
    size_gb: u64,
    key: Option<&VolumeKey>,
) -> Result<Option<aloft_fscrypt::Identifier>, VolumeError> {
    let root = data.parent().unwrap_or(data);
    let image = root.join("disk.ext4");
    let mark = root.join(ENCRYPTED_MARK);
    match key {
        None if mark.exists() => {
            return Err(VolumeError::KeyMissing {
                volume: volume.to_owned(),
            });
        }
        Some(_) if image.exists() && !mark.exists() => {
            return Err(VolumeError::NotEncrypted {
                volume: volume.to_owned(),
            });
        }
        // The intent first: from here the volume is encrypted, made or not.
        Some(_) if !mark.exists() => {
            std::fs::create_dir_all(root).map_err(io(root))?;
            aloft_crash::write_file(&mark, b"fscrypt v2\n", 0o600).map_err(io(&mark))?;
        }
        _ => {}
    }
    // A volume that has a filesystem keeps it whatever the host's setting became; an
    // encrypted one always has one.
    if backing == VolumeBacking::Directory && key.is_none() && !image.exists() {
        return std::fs::create_dir_all(data)
            .map_err(io(data))
            .map(|()| None);
    }
    let want = bytes_of(size_gb);
    if !image.exists() {
        make(root, data, volume, size_gb, key)?;
    }
    let have = std::fs::metadata(&image).map_err(io(&image))?.len();
    let pending = root.join("grow.pending");
    if have < want || pending.exists() {
        grow(&image, data, &pending, want.max(have))?;
        tracing::info!(%volume, size_gb, "grew a volume's filesystem");
    }
    if !is_mounted(data) {
        // Files of a directory the image adopted before a crash: the image has them.
        empty(data)?;
        mount(&image, data)?;
    }
    key.map(|key| unlock(data, volume, key)).transpose()
}

/// Mounts the volume's filesystem at `data` when it has one that is not mounted (after
/// the host restarted, say), and unlocks it with `key`, so that what reads
/// [`bind_source`] reads the volume's files.
pub(crate) fn mount_if_made(
    data: &Path,
    volume: &str,
    key: Option<&VolumeKey>,
) -> Result<(), VolumeError> {
    let image = data.parent().unwrap_or(data).join("disk.ext4");
    if image.exists() && !is_mounted(data) {
        empty(data)?;
        mount(&image, data)?;
    }
    match key {
        Some(key) if image.exists() => unlock(data, volume, key).map(drop),
        None if is_encrypted(data) => Err(VolumeError::KeyMissing {
            volume: volume.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Makes `root/disk.ext4` of `size_gb` holding what `data` holds (see the module).
fn make(
    root: &Path,
    data: &Path,
    volume: &str,
    size_gb: u64,
    key: Option<&VolumeKey>,
) -> Result<(), VolumeError> {
    let partial = root.join("disk.ext4.partial");
    let adopting = root.join("data.adopting");
    unmount(&adopting)?;
    match std::fs::remove_file(&partial) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(&partial)(error));
        }
        _ => {}
    }
    std::fs::create_dir_all(root).map_err(io(root))?;
    let file = std::fs::File::create(&partial).map_err(io(&partial))?;
    file.set_len(bytes_of(size_gb)).map_err(io(&partial))?;
    drop(file);
    let mut mkfs: Vec<&std::ffi::OsStr> = vec![
        "-q".as_ref(),
        "-F".as_ref(),
        "-m".as_ref(),
        "0".as_ref(),
        "-E".as_ref(),
        "lazy_itable_init=1,lazy_journal_init=1,nodiscard".as_ref(),
    ];
    if key.is_some() {
        mkfs.extend([std::ffi::OsStr::new("-O"), std::ffi::OsStr::new("encrypt")]);
    }
    mkfs.push(partial.as_os_str());
    run("mkfs.ext4", &mkfs)?;
    if has_files(data)? {
        mount(&partial, &adopting)?;
        let mut source = data.as_os_str().to_owned();
        source.push("/.");
        // An encrypted volume's files go into its encrypted directory.
        let into = match key {
            Some(key) => match unlock(&adopting, volume, key) {
                Ok(_) => adopting.join(FILES),
                Err(error) => {
                    unmount(&adopting)?;
                    return Err(error);
                }
            },
            None => adopting.clone(),
        };
        let copied = run("cp", &["-a".as_ref(), &source, into.as_os_str()]);
        let synced = run("sync", &["-f".as_ref(), adopting.as_os_str()]);
        unmount(&adopting)?;
        if let Err(error) = copied.and(synced) {
            let _ = std::fs::remove_file(&partial);
            return Err(match error {
                VolumeError::Command { output, .. } if output.contains("No space left") => {
                    VolumeError::TooFull {
                        volume: volume.to_owned(),
                        size_gb,
                    }
                }
                other => other,
            });
        }
        let _ = std::fs::remove_dir(&adopting);
    }
    aloft_crash::reach(aloft_crash::Point::VolumeMade);
    // The commit: from here the image holds the volume's files.
    std::fs::rename(&partial, root.join("disk.ext4")).map_err(io(&partial))?;
    aloft_crash::reach(aloft_crash::Point::VolumeCommitted);
    tracing::info!(%volume, size_gb, "made a volume's filesystem");
    Ok(())
}

/// Grows `image` to `bytes` and its filesystem with it, offline (growing a mounted ext4
/// needs `CAP_SYS_RESOURCE`, which containerised hosts often lack): unmounted from `data`
/// (it is between runs: no machine holds it), checked, resized. `pending` records the
/// intent first, so a crash between the file's growth and the filesystem's is finished
/// by the next call.
fn grow(image: &Path, data: &Path, pending: &Path, bytes: u64) -> Result<(), VolumeError> {
    std::fs::write(pending, bytes.to_string()).map_err(io(pending))?;
    if is_mounted(data) {
        // Not lazily: a filesystem still in use must not be resized under its user.
        run("umount", &[data.as_os_str()])?;
    }
    released(image)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .map_err(io(image))?;
    if file.metadata().map_err(io(image))?.len() < bytes {
        file.set_len(bytes).map_err(io(image))?;
    }
    file.sync_all().map_err(io(image))?;
    drop(file);
    // e2fsck exits 1 when it corrected something, which is fine before a resize.
    let checked = Command::new("e2fsck")
        .args(["-f", "-p"])
        .arg(image)
        .output()
        .map_err(io(image))?;
    if checked.status.code().is_none_or(|code| code > 1) {
        return Err(VolumeError::Command {
            command: format!("e2fsck -f -p {}", image.display()),
            output: String::from_utf8_lossy(&checked.stdout).into_owned()
                + &String::from_utf8_lossy(&checked.stderr),
        });
    }
    run("resize2fs", &[image.as_os_str()])?;
    std::fs::remove_file(pending).map_err(io(pending))
}

/// How long a filesystem unmounted here may stay alive elsewhere before a resize gives
/// up (a stopped machine's last processes are still exiting, say).
const RELEASE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until no loop device is backed by `image` any more: its filesystem is then
/// unmounted everywhere, not only here (a machine's mount namespace that is still going
/// away holds it, and a filesystem mounted there must not be resized, nor mounted again
/// here as the same, old-sized, superblock).
fn released(image: &Path) -> Result<(), VolumeError> {
    let wanted = std::fs::canonicalize(image).map_err(io(image))?;
    let deadline = std::time::Instant::now() + RELEASE_WITHIN;
    loop {
        let Some(device) = loop_device_of(&wanted) else {
            return Ok(());
        };
        if std::time::Instant::now() >= deadline {
            return Err(VolumeError::Command {
                command: format!("waiting for {device} to let go of {}", image.display()),
                output: format!(
                    "the volume's filesystem is still mounted elsewhere after {}s",
                    RELEASE_WITHIN.as_secs()
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The loop device backed by `image` (a canonical path), if any.
fn loop_device_of(image: &Path) -> Option<String> {
    let wanted = image.to_string_lossy();
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let backing = std::fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            (backing.trim_end() == wanted).then(|| format!("/dev/{name}"))
        })
}

/// Unmounts `volume`'s filesystem at `data` and deletes the volume's whole directory.
pub(crate) fn delete(data: &Path) -> Result<(), VolumeError> {
    let root = data.parent().unwrap_or(data);
    unmount(data)?;
    unmount(&root.join("data.adopting"))?;
    match std::fs::remove_dir_all(root) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io(root)(error)),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(unescape("/var/lib/a\\040b"), "/var/lib/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/odd\\"), "/odd\\");
    }

    /// Unmounts `dir`'s volume even when the test fails.
    struct Unmount(PathBuf);

    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = unmount(&self.0);
            let _ = unmount(&self.0.with_file_name("data.adopting"));
        }
    }

    #[test]
    fn a_filesystem_adopts_a_directorys_files_and_survives_a_crash_after_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("volumes/vol_1/data");
        let _cleanup = Unmount(data.clone());
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("sub/kept.txt"), "kept\n").unwrap();
        ensure(VolumeBacking::Ext4, &data, "vol_1", 1, None).unwrap();
        assert!(is_mounted(&data));
        assert_eq!(
            std::fs::read_to_string(data.join("sub/kept.txt")).unwrap(),
            "kept\n"
        );
        // Made again (the same call after a restart) changes nothing.
        ensure(VolumeBacking::Ext4, &data, "vol_1", 1, None).unwrap();
        // A crash after the commit, before the directory was emptied: its stale copy
        // goes, the image's files show.
        unmount(&data).unwrap();
        assert!(!is_mounted(&data));
        std::fs::write(data.join("stale.txt"), "stale").unwrap();
        ensure(VolumeBacking::Directory, &data, "vol_1", 1, None).unwrap();
        assert!(is_mounted(&data), "a volume with a filesystem keeps it");
        assert!(!data.join("stale.txt").exists());
        assert!(data.join("sub/kept.txt").exists());
        // Grown between runs, with its files; a crash between the file's growth and the
        // filesystem's is finished by the next call (the intent file).
        std::fs::write(data.with_file_name("grow.pending"), "").unwrap();
        ensure(VolumeBacking::Ext4, &data, "vol_1", 2, None).unwrap();
        assert!(!data.with_file_name("grow.pending").exists());
        let size = nix::sys::statvfs::statvfs(&data).unwrap();
        let bytes = size.blocks() * size.fragment_size();
        assert!(bytes > 3 << 29, "grown to 2 GiB: {bytes}");
        assert!(data.join("sub/kept.txt").exists());
        delete(&data).unwrap();
        assert!(!is_mounted(&data));
        assert!(!dir.path().join("volumes/vol_1").exists());
    }

    #[test]
    fn a_directory_volume_is_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("volumes/vol_1/data");
        ensure(VolumeBacking::Directory, &data, "vol_1", 1, None).unwrap();
        assert!(data.is_dir());
        assert!(!dir.path().join("volumes/vol_1/disk.ext4").exists());
        delete(&data).unwrap();
        assert!(!dir.path().join("volumes/vol_1").exists());
    }

    pub(crate) use aloft_testkit::file_holds as holds;

    pub(crate) const MARKER: &[u8] = b"aloft-plaintext-marker-4f1c9e";

    /// Writes the marker as a file's contents and name under `dir`, on disk.
    pub(crate) fn write_marked(dir: &Path) {
        let name = format!("{}.txt", String::from_utf8_lossy(MARKER));
        let path = dir.join(name);
        std::fs::write(&path, MARKER.repeat(100)).unwrap();
        std::fs::File::open(&path).unwrap().sync_all().unwrap();
    }

    pub(crate) fn read_marked(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(format!("{}.txt", String::from_utf8_lossy(MARKER)))).unwrap()
    }

    #[test]
    fn an_encrypted_volume_keeps_only_ciphertext_on_its_hosts_disk() {
        let dir = tempfile::tempdir().unwrap();
        let key = VolumeKey::from_bytes([3; VolumeKey::LEN]);
        for (name, key) in [("vol_plain", None), ("vol_sealed", Some(&key))] {
            let data = dir.path().join("volumes").join(name).join("data");
            let _cleanup = Unmount(data.clone());
            ensure(VolumeBacking::Ext4, &data, name, 1, key).unwrap();
            assert_eq!(is_encrypted(&data), key.is_some());
            let files = bind_source(&data);
            write_marked(&files);
            unmount(&data).unwrap();
            let image = data.with_file_name("disk.ext4");
            // The plain volume is the positive control: its image shows the marker.
            assert_eq!(
                holds(&image, MARKER),
                key.is_none(),
                "{name}: whether the image on disk shows the file's text"
            );
        }
        let data = dir.path().join("volumes/vol_sealed/data");
        let _cleanup = Unmount(data.clone());
        // Mounted again (a restart) with its key: the files read back.
        ensure(VolumeBacking::Ext4, &data, "vol_sealed", 1, Some(&key)).unwrap();
        assert_eq!(read_marked(&bind_source(&data)), MARKER.repeat(100));
        // Grown offline, still encrypted and readable.
        ensure(VolumeBacking::Ext4, &data, "vol_sealed", 2, Some(&key)).unwrap();
        assert_eq!(read_marked(&bind_source(&data)), MARKER.repeat(100));
        unmount(&data).unwrap();
        // Without its key, or with another, it is refused and nothing is lost.
        let missing = ensure(VolumeBacking::Ext4, &data, "vol_sealed", 2, None).unwrap_err();
        assert!(
            matches!(missing, VolumeError::KeyMissing { .. }),
            "{missing}"
        );
        let other = VolumeKey::from_bytes([4; VolumeKey::LEN]);
        let wrong = ensure(VolumeBacking::Ext4, &data, "vol_sealed", 2, Some(&other)).unwrap_err();
        assert!(matches!(wrong, VolumeError::Encryption { .. }), "{wrong}");
        ensure(VolumeBacking::Ext4, &data, "vol_sealed", 2, Some(&key)).unwrap();
        assert_eq!(read_marked(&bind_source(&data)), MARKER.repeat(100));
        // A plain volume is never taken for an encrypted one.
        let plain = dir.path().join("volumes/vol_plain/data");
        let _plain = Unmount(plain.clone());
        let refused = ensure(VolumeBacking::Ext4, &plain, "vol_plain", 1, Some(&key)).unwrap_err();
        assert!(
            matches!(refused, VolumeError::NotEncrypted { .. }),
            "{refused}"
        );
    }

    #[test]
    fn an_encrypted_volume_adopts_a_directorys_files_into_its_encrypted_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("volumes/vol_1/data");
        let _cleanup = Unmount(data.clone());
        std::fs::create_dir_all(&data).unwrap();
        write_marked(&data);
        let key = VolumeKey::from_bytes([5; VolumeKey::LEN]);
        ensure(VolumeBacking::Directory, &data, "vol_1", 1, Some(&key)).unwrap();
        assert!(is_mounted(&data), "an encrypted volume is a filesystem");
        assert_eq!(read_marked(&bind_source(&data)), MARKER.repeat(100));
        unmount(&data).unwrap();
        assert!(!holds(&data.with_file_name("disk.ext4"), MARKER));
    }
}
