//! Filesystems a test's platform mounted under its directory (volumes are loop-mounted
//! ext4 images): unmounted before the directory goes, so that nothing stays mounted and
//! no loop device stays taken after the test, passing or failing.

use std::path::Path;
use std::process::Command;

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(|point| point.replace("\\040", " "))
        .filter(|point| {
            point == &prefix
                || point
                    .strip_prefix(&prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    points
}

/// Unmounts everything mounted at or under `dir` (lazily: a container still holding one
/// lets go when it ends; its loop device goes with it).
pub fn unmount_under(dir: &Path) {
    // An empty or root path would name every mount of the machine.
    if !dir.is_absolute() || dir.parent().is_none() {
        return;
    }
    for point in mounts_under(dir) {
        let _ = Command::new("umount").args(["-l", &point]).status();
    }
}

/// Whether the file at `path` holds `needle` anywhere. Only its data regions are read
/// (`SEEK_DATA`/`SEEK_HOLE`: a sparse volume image's holes are zeros), so a mostly empty
/// 1 GB image is searched in milliseconds.
pub fn file_holds(path: &Path, needle: &[u8]) -> bool {
    use nix::unistd::{Whence, lseek};
    use std::io::{Read as _, Seek as _};
    let mut file = std::fs::File::open(path)
        .unwrap_or_else(|error| panic!("opening {}: {error}", path.display()));
    let end = file
        .metadata()
        .map(|m| i64::try_from(m.len()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut at = 0i64;
    while at < end {
        // No data past `at` (ENXIO): done.
        let Ok(start) = lseek(&file, at, Whence::SeekData) else {
            return false;
        };
        let stop = lseek(&file, start, Whence::SeekHole).unwrap_or(end);
        let mut region = vec![0u8; usize::try_from(stop - start).unwrap_or(0)];
        let read = file
            .seek(std::io::SeekFrom::Start(start.unsigned_abs()))
            .and_then(|_| file.read_exact(&mut region));
        if let Err(error) = read {
            panic!("reading {}: {error}", path.display());
        }
        if region.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        at = stop;
    }
    false
}
