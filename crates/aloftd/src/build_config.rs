//! `[build]` of aloftd's configuration: the sandbox tenants' image builds run in.

use serde::Deserialize;

/// `[build]`: how big a build may be and what its steps may reach and use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildSettings {
    /// Fence build steps off the host and off the networks machines may not reach
    /// (`[network] egress_denied_networks`, the machines' own addresses): they reach the
    /// internet and nothing else. `false` leaves the engine's bridge as it is.
    pub isolate: bool,
    /// Memory of all builds' steps together, in MB (no swap): half the host's memory
    /// when not set. A step past it is killed, and its build fails.
    pub memory_mb: Option<u64>,
    /// CPUs of all builds' steps together: half the host's CPUs (at least 1) when not set.
    pub cpus: Option<u32>,
    /// Processes of all builds' steps together.
    pub pids: u64,
    /// The largest build context taken, in MB (413 past it).
    pub max_context_mb: u64,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            isolate: true,
            memory_mb: None,
            cpus: None,
            pids: 4096,
            max_context_mb: 1024,
        }
    }
}

impl BuildSettings {
    /// The first value out of range, as (key, why).
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(memory) = self.memory_mb
            && memory < 128
        {
            return Err((
                "build.memory_mb",
                format!("{memory} is below 128 MB, too little for any build"),
            ));
        }
        if self.cpus == Some(0) {
            return Err(("build.cpus", "must be at least 1".to_owned()));
        }
        if self.pids < 64 {
            return Err((
                "build.pids",
                format!("{} is below 64 processes, too few for any build", self.pids),
            ));
        }
        if !(1..=65_536).contains(&self.max_context_mb) {
            return Err((
                "build.max_context_mb",
                format!("{} is outside 1 to 65536 MB", self.max_context_mb),
            ));
        }
        Ok(())
    }

    /// The limits on all builds of a host with `host_memory_mb` of memory and `host_cpus`.
    pub(crate) fn limits(&self, host_memory_mb: u64, host_cpus: u32) -> aloft_runtime::BuildLimits {
        aloft_runtime::BuildLimits {
            memory_mb: self.memory_mb.unwrap_or((host_memory_mb / 2).max(128)),
            cpus: f64::from(self.cpus.unwrap_or((host_cpus / 2).max(1))),
            pids: self.pids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_take_half_the_host_and_bad_values_are_named() {
        let settings = BuildSettings::default();
        assert!(settings.check().is_ok());
        let limits = settings.limits(8192, 2);
        assert_eq!(
            (limits.memory_mb, limits.cpus, limits.pids),
            (4096, 1.0, 4096)
        );
        assert_eq!(settings.limits(100, 1).memory_mb, 128);
        let set = BuildSettings {
            memory_mb: Some(512),
            cpus: Some(3),
            ..BuildSettings::default()
        };
        let limits = set.limits(8192, 2);
        assert_eq!((limits.memory_mb, limits.cpus), (512, 3.0));
        for (bad, key) in [
            (
                BuildSettings {
                    memory_mb: Some(64),
                    ..BuildSettings::default()
                },
                "build.memory_mb",
            ),
            (
                BuildSettings {
                    cpus: Some(0),
                    ..BuildSettings::default()
                },
                "build.cpus",
            ),
            (
                BuildSettings {
                    pids: 10,
                    ..BuildSettings::default()
                },
                "build.pids",
            ),
            (
                BuildSettings {
                    max_context_mb: 0,
                    ..BuildSettings::default()
                },
                "build.max_context_mb",
            ),
        ] {
            assert_eq!(bad.check().map_err(|(key, _)| key), Err(key));
        }
    }
}
