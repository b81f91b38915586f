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
