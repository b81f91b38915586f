//! Limits on what the engine's builds run: every `RUN` step of a BuildKit build in Docker
//! Engine runs in a cgroup under `<cgroup parent>/buildkit` (`/docker/buildkit/<step>`
//! with the `cgroupfs` driver), and the engine honours no per-build memory, CPU or pids
//! option with BuildKit. So the limits go on that parent cgroup: all builds of the host
//! together get at most this much memory (no swap), this many CPUs and this many
//! processes, and a step past them is killed (or cannot fork) alone, leaving machines
//! and the platform their share.

use std::path::{Path, PathBuf};

use super::DockerRuntime;
use crate::RuntimeError;

/// What all builds of a host may use together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildLimits {
    pub memory_mb: u64,
    /// CPUs' worth of time per period (`1.5` is one and a half CPUs).
    pub cpus: f64,
    pub pids: u64,
}

/// Why the limits could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum BuildLimitsError {
    #[error(
        "the engine's cgroup driver is {driver:?}: build limits are only known to apply with \
         the cgroupfs driver (dockerd --exec-opt native.cgroupdriver=cgroupfs)"
    )]
    Driver { driver: String },
    #[error("the engine reports cgroup version {0:?}, which Aloft does not know")]
    Version(String),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The engine's build facts: the bridge its build steps run on and how it makes cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildHost {
    /// The default bridge's interface (`docker0`), where `RUN` steps get their network.
    pub bridge: String,
    pub cgroup_driver: String,
    pub cgroup_version: String,
}

impl DockerRuntime {
    /// The bridge builds run on and the engine's cgroup driver and version.
    pub async fn build_host(&self) -> Result<BuildHost, RuntimeError> {
        let unavailable = |error: bollard::errors::Error| RuntimeError::Operation {
            operation: "inspect the engine",
            container: "-".to_owned(),
            source: Box::new(error),
        };
        let info = self.docker.info().await.map_err(unavailable)?;
        let network = self
            .docker
            .inspect_network::<String>("bridge", None)
            .await
            .map_err(unavailable)?;
        let bridge = network
            .options
            .and_then(|options| options.get("com.docker.network.bridge.name").cloned())
            .unwrap_or_else(|| "docker0".to_owned());
        Ok(BuildHost {
            bridge,
            cgroup_driver: info
                .cgroup_driver
                .map(|d| d.to_string())
                .unwrap_or_default(),
            cgroup_version: info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
        })
    }
}

/// The CFS period the CPU limit is expressed in (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

fn write(path: &Path, value: &str) -> Result<(), BuildLimitsError> {
    std::fs::write(path, value).map_err(|source| BuildLimitsError::Write {
        path: path.to_owned(),
        source,
    })
}

fn ensure_dir(path: &Path) -> Result<(), BuildLimitsError> {
    std::fs::create_dir_all(path).map_err(|source| BuildLimitsError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Puts `limits` on the builds' cgroup under the cgroup filesystem at `root`
/// (`/sys/fs/cgroup`) for an engine with these facts; returns the cgroup directories
/// written. Idempotent: run before every build, it also restores limits someone reset.
pub fn apply_build_limits(
    root: &Path,
    host: &BuildHost,
    limits: &BuildLimits,
) -> Result<Vec<PathBuf>, BuildLimitsError> {
    if host.cgroup_driver != "cgroupfs" {
        return Err(BuildLimitsError::Driver {
            driver: host.cgroup_driver.clone(),
        });
    }
    let memory = limits.memory_mb.saturating_mul(1024 * 1024).to_string();
    // At least a thousandth of a CPU: the kernel refuses a quota under 1 ms.
    let quota = ((limits.cpus * CPU_PERIOD_US as f64) as u64).max(1_000);
    let pids = limits.pids.max(1).to_string();
    match host.cgroup_version.as_str() {
        "1" => {
            let memory_dir = root.join("memory/docker/buildkit");
            ensure_dir(&memory_dir)?;
            // With swap accounting, memory+swap may not be below memory: the order of the
            // two writes depends on whether the limit grows or shrinks, so try both.
            let swap = memory_dir.join("memory.memsw.limit_in_bytes");
            let limit = memory_dir.join("memory.limit_in_bytes");
            if swap.exists() {
                if write(&limit, &memory).is_err() {
                    write(&swap, &memory)?;
                    write(&limit, &memory)?;
                } else {
                    write(&swap, &memory)?;
                }
            } else {
                write(&limit, &memory)?;
            }
            let pids_dir = root.join("pids/docker/buildkit");
            ensure_dir(&pids_dir)?;
            write(&pids_dir.join("pids.max"), &pids)?;
            let cpu_dir = root.join("cpu/docker/buildkit");
            ensure_dir(&cpu_dir)?;
            write(
                &cpu_dir.join("cpu.cfs_period_us"),
                &CPU_PERIOD_US.to_string(),
            )?;
            write(&cpu_dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            Ok(vec![memory_dir, pids_dir, cpu_dir])
        }
        "2" => {
            // The controllers must be enabled for the children of every level above.
            let docker = root.join("docker");
            ensure_dir(&docker)?;
            for level in [root, docker.as_path()] {
                write(&level.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
            }
            let dir = docker.join("buildkit");
            ensure_dir(&dir)?;
            write(&dir.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
            write(&dir.join("memory.max"), &memory)?;
            write(&dir.join("memory.swap.max"), "0")?;
            write(&dir.join("pids.max"), &pids)?;
            write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            Ok(vec![dir])
        }
        other => Err(BuildLimitsError::Version(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(driver: &str, version: &str) -> BuildHost {
        BuildHost {
            bridge: "docker0".to_owned(),
            cgroup_driver: driver.to_owned(),
            cgroup_version: version.to_owned(),
        }
    }

    const LIMITS: BuildLimits = BuildLimits {
        memory_mb: 512,
        cpus: 1.5,
        pids: 1024,
    };

    fn read(path: PathBuf) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn cgroup_v1_gets_memory_without_swap_pids_and_cpu_on_the_buildkit_parent() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("memory/docker/buildkit")).unwrap();
        std::fs::write(
            root.path()
                .join("memory/docker/buildkit/memory.memsw.limit_in_bytes"),
            "",
        )
        .unwrap();
        apply_build_limits(root.path(), &host("cgroupfs", "1"), &LIMITS).unwrap();
        let at = |file: &str| read(root.path().join(file));
        assert_eq!(
            at("memory/docker/buildkit/memory.limit_in_bytes"),
            "536870912"
        );
        assert_eq!(
            at("memory/docker/buildkit/memory.memsw.limit_in_bytes"),
            "536870912"
        );
        assert_eq!(at("pids/docker/buildkit/pids.max"), "1024");
        assert_eq!(at("cpu/docker/buildkit/cpu.cfs_quota_us"), "150000");
        assert_eq!(at("cpu/docker/buildkit/cpu.cfs_period_us"), "100000");
    }

    #[test]
    fn cgroup_v2_enables_the_controllers_and_sets_no_swap() {
        let root = tempfile::tempdir().unwrap();
        apply_build_limits(root.path(), &host("cgroupfs", "2"), &LIMITS).unwrap();
        let at = |file: &str| read(root.path().join(file));
        assert_eq!(at("docker/buildkit/memory.max"), "536870912");
        assert_eq!(at("docker/buildkit/memory.swap.max"), "0");
        assert_eq!(at("docker/buildkit/pids.max"), "1024");
        assert_eq!(at("docker/buildkit/cpu.max"), "150000 100000");
        assert_eq!(at("docker/cgroup.subtree_control"), "+memory +pids +cpu");
    }

    #[test]
    fn an_engine_whose_cgroups_are_unknown_is_told_not_guessed() {
        let root = tempfile::tempdir().unwrap();
        let error = apply_build_limits(root.path(), &host("systemd", "2"), &LIMITS).unwrap_err();
        assert!(error.to_string().contains("\"systemd\""), "{error}");
        let error = apply_build_limits(root.path(), &host("cgroupfs", "3"), &LIMITS).unwrap_err();
        assert!(error.to_string().contains("\"3\""), "{error}");
        // Nothing was written for either.
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
