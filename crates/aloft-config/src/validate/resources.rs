//! The rules of what a machine is given: `[mounts]`, `[[vm]]`, `[[restart]]`,
//! `[[files]]`, `[[statics]]`, `[[metrics]]` and `[build]`.

use aloft_types::machine::{
    GUEST_PRESET_NAMES, MAX_MEMORY_MB_PER_PERFORMANCE_CPU, MAX_MEMORY_MB_PER_SHARED_CPU,
    MIN_MEMORY_MB_PER_PERFORMANCE_CPU, MIN_MEMORY_MB_PER_SHARED_CPU, MachineGuest,
};

use super::{GPU_KINDS, MAX_STATICS, Validator, service_groups};
use crate::diagnostic::{did_you_mean, one_of};
use crate::model::Vm;
use crate::tree::{KeyPath, path};

impl Validator<'_> {
    pub(super) fn mounts(&mut self) {
        let default_group = self.config.default_process_group();
        let mut groups_with_mount: Vec<(String, usize)> = Vec::new();
        for (index, mount) in self.config.mounts.iter().enumerate() {
            let at = path!["mounts", index];
            if mount.source.as_deref().is_none_or(str::is_empty) {
                self.error(
                    at.clone(),
                    "the mount has no `source`: the name of the volume to mount",
                    Some("add `source = \"data\"`".to_owned()),
                );
            }
            match mount.destination.as_deref() {
                None | Some("") => self.error(
                    at.clone(),
                    "the mount has no `destination`: where the volume appears in the machine",
                    Some("add `destination = \"/data\"`".to_owned()),
                ),
                Some("/") => self.error(
                    at.child("destination"),
                    "a volume cannot be mounted at `/`",
                    Some("mount it at a directory such as \"/data\"".to_owned()),
                ),
                Some(path) if !path.starts_with('/') => self.error(
                    at.child("destination"),
                    format!("the destination {path:?} must be an absolute path"),
                    None,
                ),
                Some(_) => {}
            }
            if let Some(size) = mount.initial_size
                && size.gb() < 1
            {
                self.error(
                    at.child("initial_size"),
                    format!("initial_size is {size}; the smallest volume is 1gb"),
                    None,
                );
            }
            if let Some(days) = mount.snapshot_retention
                && !(1..=60).contains(&days)
            {
                self.error(
                    at.child("snapshot_retention"),
                    format!("snapshot_retention is {days}; keep snapshots between 1 and 60 days"),
                    None,
                );
            }
            let extend = [
                mount.auto_extend_size_threshold.is_some(),
                mount.auto_extend_size_increment.is_some(),
                mount.auto_extend_size_limit.is_some(),
            ];
            if extend.iter().any(|set| *set) && !extend.iter().all(|set| *set) {
                self.error(at.clone(), "auto_extend_size_threshold, auto_extend_size_increment and auto_extend_size_limit must be given together", None);
            }
            if let Some(threshold) = mount.auto_extend_size_threshold
                && !(50..=99).contains(&threshold)
            {
                self.error(at.child("auto_extend_size_threshold"), format!("auto_extend_size_threshold is {threshold}; use a percentage between 50 and 99"), None);
            }
            if let Some(increment) = mount.auto_extend_size_increment
                && !(1..=100).contains(&increment.gb())
            {
                self.error(
                    at.child("auto_extend_size_increment"),
                    format!("auto_extend_size_increment is {increment}; use between 1gb and 100gb"),
                    None,
                );
            }
            if let Some(limit) = mount.auto_extend_size_limit
                && !(1..=500).contains(&limit.gb())
            {
                self.error(
                    at.child("auto_extend_size_limit"),
                    format!("auto_extend_size_limit is {limit}; use between 1gb and 500gb"),
                    None,
                );
            }
            self.groups_exist(&mount.processes, &at);
            for group in service_groups(&mount.processes, &default_group) {
                if let Some((_, first)) = groups_with_mount.iter().find(|(g, _)| *g == group) {
                    let first = *first;
                    self.error(at.clone(), format!("process group `{group}` already mounts a volume (mounts[{first}]); a machine has at most one mount"), Some("set `processes` on each mount so that every group has one".to_owned()));
                } else {
                    groups_with_mount.push((group, index));
                }
            }
        }
    }

    pub(super) fn vm(&mut self, vm: &Vm, at: &KeyPath) {
        let mut guest = MachineGuest::default();
        if let Some(size) = &vm.size {
            match MachineGuest::preset(size) {
                Some(preset) => guest = preset,
                None => self.error(
                    at.child("size"),
                    format!("unknown VM size {size:?}"),
                    did_you_mean(size, GUEST_PRESET_NAMES).or_else(|| Some("see `aloft platform vm-sizes`; e.g. \"shared-cpu-1x\", \"performance-2x\"".to_owned())),
                ),
            }
        }
        if let Some(kind) = &vm.gpu_kind
            && !GPU_KINDS.contains(&kind.as_str())
        {
            self.error(
                at.child("gpu_kind"),
                format!("unknown GPU kind {kind:?}, expected {}", one_of(&GPU_KINDS)),
                did_you_mean(kind, GPU_KINDS),
            );
        }
        if vm.cpus == Some(0) {
            self.error(at.child("cpus"), "cpus must be at least 1", None);
        }
        let (memory, memory_key) = match (vm.memory_mb, vm.memory) {
            (Some(mb), _) => (Some(u64::from(mb)), "memory_mb"),
            (None, Some(memory)) => (Some(memory.mb()), "memory"),
            (None, None) => (None, "memory"),
        };
        if let Some(mb) = memory {
            if mb == 0 {
                self.error(at.child(memory_key), "memory cannot be zero", None);
            } else if mb % 256 != 0 {
                self.error(
                    at.child(memory_key),
                    format!("memory is {mb} MB; it must be a multiple of 256 MB"),
                    None,
                );
            } else if vm.gpu_kind.is_none() && guest.gpu_kind.is_none() {
                let cpus = u64::from(vm.cpus.unwrap_or(guest.cpus.max(1)));
                let kind = vm
                    .cpu_kind
                    .or(guest.cpu_kind)
                    .unwrap_or(aloft_types::machine::CpuKind::Shared);
                let (min, max) = match kind {
                    aloft_types::machine::CpuKind::Shared => {
                        (MIN_MEMORY_MB_PER_SHARED_CPU, MAX_MEMORY_MB_PER_SHARED_CPU)
                    }
                    aloft_types::machine::CpuKind::Performance => (
                        MIN_MEMORY_MB_PER_PERFORMANCE_CPU,
                        MAX_MEMORY_MB_PER_PERFORMANCE_CPU,
                    ),
                };
                if mb < cpus * u64::from(min) || mb > cpus * u64::from(max) {
                    self.warning(
                        at.child(memory_key),
                        format!(
                            "{mb} MB for {cpus} {} CPU(s) is outside the range of {min} to {max} MB per CPU",
                            if kind == aloft_types::machine::CpuKind::Shared { "shared" } else { "performance" }
                        ),
                        None,
                    );
                }
            }
        }
        self.groups_exist(&vm.processes, at);
    }

    pub(super) fn vms(&mut self) {
        let mut targeted: Vec<(String, usize)> = Vec::new();
        for (index, vm) in self.config.vm.iter().enumerate() {
            let at = path!["vm", index];
            self.vm(vm, &at);
            for group in &vm.processes {
                if let Some((_, first)) = targeted.iter().find(|(g, _)| g == group) {
                    let first = *first;
                    self.error(
                        at.clone(),
                        format!("process group `{group}` is already sized by vm[{first}]"),
                        None,
                    );
                } else {
                    targeted.push((group.clone(), index));
                }
            }
        }
        if self
            .config
            .vm
            .iter()
            .filter(|vm| vm.processes.is_empty())
            .count()
            > 1
        {
            self.error(
                path!["vm"],
                "more than one [[vm]] applies to all process groups",
                Some("set `processes` on all but one".to_owned()),
            );
        }
    }

    pub(super) fn restarts(&mut self) {
        for (index, restart) in self.config.restart.iter().enumerate() {
            self.groups_exist(&restart.processes, &path!["restart", index]);
        }
    }

    pub(super) fn files(&mut self) {
        for (index, file) in self.config.files.iter().enumerate() {
            let at = path!["files", index];
            match file.guest_path.as_deref() {
                None | Some("") => self.error(
                    at.clone(),
                    "the file has no `guest_path`: where to write it in the machine",
                    None,
                ),
                Some(path) if !path.starts_with('/') => self.error(
                    at.child("guest_path"),
                    format!("guest_path {path:?} must be an absolute path"),
                    None,
                ),
                Some(_) => {}
            }
            let sources = [&file.raw_value, &file.local_path, &file.secret_name]
                .iter()
                .filter(|s| s.is_some())
                .count();
            if sources != 1 {
                self.error(
                    at.clone(),
                    "give exactly one of `raw_value`, `local_path` or `secret_name`",
                    None,
                );
            }
            self.groups_exist(&file.processes, &at);
        }
    }

    pub(super) fn statics(&mut self) {
        if self.config.statics.len() > MAX_STATICS {
            self.error(
                path!["statics", MAX_STATICS],
                format!(
                    "there are {} [[statics]]; at most {MAX_STATICS} are allowed",
                    self.config.statics.len()
                ),
                None,
            );
        }
        let mut prefixes: Vec<(String, usize)> = Vec::new();
        for (index, statics) in self.config.statics.iter().enumerate() {
            let at = path!["statics", index];
            if statics.guest_path.as_deref().is_none_or(str::is_empty) {
                self.error(at.clone(), "the static has no `guest_path`", None);
            }
            // Fly serves such a mapping from a Tigris bucket; the edge here serves files
            // of the machine only, and not its whole filesystem in a bucket's place.
            if statics
                .tigris_bucket
                .as_deref()
                .is_some_and(|b| !b.is_empty())
            {
                self.warning(
                    at.child("tigris_bucket"),
                    "Aloft has no Tigris buckets: this mapping is not served, and requests under its url_prefix go to the app (`--strict` refuses it)",
                    None,
                );
            }
            if statics
                .index_document
                .as_deref()
                .is_some_and(|d| !d.is_empty())
            {
                self.warning(
                    at.child("index_document"),
                    "`index_document` applies to Tigris buckets only and is ignored (`--strict` refuses it)",
                    None,
                );
            }
            let Some(prefix) = statics.url_prefix.as_deref().filter(|p| !p.is_empty()) else {
                self.error(at.clone(), "the static has no `url_prefix`", None);
                continue;
            };
            if !prefix.starts_with('/') {
                self.error(
                    at.child("url_prefix"),
                    format!("url_prefix {prefix:?} must start with `/`"),
                    None,
                );
            }
            let normalized = format!("{}/", prefix.trim_end_matches('/'));
            if let Some((other, first)) = prefixes
                .iter()
                .find(|(p, _)| p.starts_with(&normalized) || normalized.starts_with(p.as_str()))
            {
                let message = format!(
                    "url_prefix {prefix:?} overlaps statics[{first}] ({:?})",
                    other.trim_end_matches('/')
                );
                self.error(at.child("url_prefix"), message, None);
            } else {
                prefixes.push((normalized, index));
            }
        }
    }

    pub(super) fn metrics(&mut self) {
        for (index, metrics) in self.config.metrics.iter().enumerate() {
            let at = path!["metrics", index];
            match metrics.port {
                None => self.error(
                    at.clone(),
                    "[metrics] has no `port`",
                    Some("add `port = 9091`".to_owned()),
                ),
                Some(0) => self.error(at.child("port"), "ports must be between 1 and 65535", None),
                Some(_) => {}
            }
            match metrics.path.as_deref() {
                None => self.error(
                    at.clone(),
                    "[metrics] has no `path`",
                    Some("add `path = \"/metrics\"`".to_owned()),
                ),
                Some(path) if !path.starts_with('/') => self.error(
                    at.child("path"),
                    format!("the metrics path {path:?} must start with `/`"),
                    None,
                ),
                Some(_) => {}
            }
            self.groups_exist(&metrics.processes, &at);
        }
    }

    pub(super) fn build(&mut self) {
        let Some(build) = &self.config.build else {
            return;
        };
        let mut ways = Vec::new();
        if let Some(image) = &build.image {
            ways.push(format!("the image {image:?}"));
        }
        if build.builder.is_some() || !build.buildpacks.is_empty() {
            ways.push("buildpacks".to_owned());
        }
        if build.dockerfile.is_some() || build.build_target.is_some() {
            ways.push("a Dockerfile".to_owned());
        }
        if let Some(builtin) = &build.builtin {
            ways.push(format!("the builtin {builtin:?}"));
        }
        if ways.len() > 1 {
            self.warning(
                path!["build"],
                format!("more than one way to get the image: {}", ways.join(", ")),
                Some("keep one of image, dockerfile, builder or builtin".to_owned()),
            );
        }
    }
}
