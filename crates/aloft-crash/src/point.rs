//! Failpoints: the step boundaries at which a test kills the process.

/// A step boundary: the process has made one durable change and not yet the next. A test
/// kills the process at each one in turn and checks that the next start converges (see
/// the crate's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    /// [`crate::write_file`]: its temporary file is created, nothing written.
    FileOpened,
    /// [`crate::write_file`]: its temporary file is whole and synced, not yet renamed.
    FileSynced,
    /// The first start: the operator's token is in its file, nothing stored yet.
    BootstrapTokenWritten,
    /// The first start: the first organization and its operator token are stored; the
    /// server does not yet listen.
    BootstrapStored,
    /// A volume for a machine's mount (`[[mounts]]` by name) is stored; the machine not yet.
    VolumeStored,
    /// A machine is stored (with its volume attached), its agent not yet told.
    MachineStored,
    /// An agent created a machine's container and has not started it.
    ContainerCreated,
    /// An agent started a machine's container and has not reported it started.
    ContainerStarted,
    /// A volume's filesystem is made (`disk.ext4.partial`), not yet committed.
    VolumeMade,
    /// A volume's filesystem is committed (`disk.ext4`), not yet mounted.
    VolumeCommitted,
    /// A deployment wrote a step (what it is about to do), before doing it.
    DeployStep,
    /// A deployment made one move of its plan (a machine created, updated, waited for,
    /// destroyed), before it plans the next.
    DeployMove,
    /// A release command's machine exited; it is not yet destroyed, its outcome not logged.
    ReleaseCommandExited,
}

impl Point {
    /// Every point, in the order a scenario tends to reach them.
    pub const ALL: [Point; 13] = [
        Point::FileOpened,
        Point::FileSynced,
        Point::BootstrapTokenWritten,
        Point::BootstrapStored,
        Point::VolumeStored,
        Point::MachineStored,
        Point::ContainerCreated,
        Point::ContainerStarted,
        Point::VolumeMade,
        Point::VolumeCommitted,
        Point::DeployStep,
        Point::DeployMove,
        Point::ReleaseCommandExited,
    ];

    /// The point's name, as `ALOFT_FAILPOINT` and the trace write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Point::FileOpened => "file.opened",
            Point::FileSynced => "file.synced",
            Point::BootstrapTokenWritten => "bootstrap.token_written",
            Point::BootstrapStored => "bootstrap.stored",
            Point::VolumeStored => "volume.stored",
            Point::MachineStored => "machine.stored",
            Point::ContainerCreated => "container.created",
            Point::ContainerStarted => "container.started",
            Point::VolumeMade => "volume.made",
            Point::VolumeCommitted => "volume.committed",
            Point::DeployStep => "deploy.step",
            Point::DeployMove => "deploy.move",
            Point::ReleaseCommandExited => "release_command.exited",
        }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Point {
    type Err = String;

    fn from_str(name: &str) -> Result<Point, String> {
        Point::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| format!("no failpoint is named {name:?}"))
    }
}

/// Marks that the process reached `point` (see the crate's documentation): in a build
/// with failpoints, it is traced and may be where the process dies.
#[inline]
pub fn reach(point: Point) {
    #[cfg(feature = "failpoints")]
    active::reach(point);
    #[cfg(not(feature = "failpoints"))]
    let _ = point;
}

#[cfg(feature = "failpoints")]
mod active {
    use std::collections::HashMap;
    use std::io::Write as _;
    use std::sync::{Mutex, OnceLock};

    use super::Point;

    /// Where to die, read once from the environment.
    struct Plan {
        die_at: Option<(Point, usize)>,
        trace: Option<std::path::PathBuf>,
        reached: Mutex<HashMap<Point, usize>>,
    }

    fn plan() -> &'static Plan {
        static PLAN: OnceLock<Plan> = OnceLock::new();
        PLAN.get_or_init(|| {
            let die_at = std::env::var(crate::FAILPOINT_VARIABLE).ok().map(|value| {
                let (name, count) = value.split_once('#').unwrap_or((&value, "1"));
                let point = name
                    .parse::<Point>()
                    .unwrap_or_else(|why| panic!("{}={value}: {why}", crate::FAILPOINT_VARIABLE));
                let count = count.parse::<usize>().unwrap_or_else(|_| {
                    panic!(
                        "{}={value}: the count after # must be a number",
                        crate::FAILPOINT_VARIABLE
                    )
                });
                (point, count)
            });
            Plan {
                die_at,
                trace: std::env::var_os(crate::TRACE_VARIABLE).map(Into::into),
                reached: Mutex::new(HashMap::new()),
            }
        })
    }

    pub(super) fn reach(point: Point) {
        let plan = plan();
        let times = {
            let mut reached = plan
                .reached
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let times = reached.entry(point).or_insert(0);
            *times += 1;
            *times
        };
        if let Some(path) = &plan.trace
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            // One write: whole lines even when threads reach points together.
            let _ = file.write_all(format!("{point}\n").as_bytes());
        }
        if plan.die_at == Some((point, times)) {
            tracing_free_note(point, times);
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// What the process says before it dies (stderr is the daemon's log in tests).
    #[allow(
        clippy::print_stderr,
        reason = "the last words of a process killed on purpose"
    )]
    fn tracing_free_note(point: Point, times: usize) {
        eprintln!("failpoint {point} reached the {times}th time: killing this process (SIGKILL)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_has_a_name_that_reads_back() {
        for point in Point::ALL {
            assert_eq!(point.as_str().parse::<Point>(), Ok(point));
        }
        assert!("deploy.nowhere".parse::<Point>().is_err());
    }
}
