//! Rules of fly.toml that its types cannot express: Fly's limits, which keys go together,
//! and references between sections. Every finding points at the key it is about.

use std::collections::BTreeSet;

use aloft_types::Duration;
use aloft_types::machine::{
    GUEST_PRESET_NAMES, Handler, MAX_MEMORY_MB_PER_PERFORMANCE_CPU, MAX_MEMORY_MB_PER_SHARED_CPU,
    MIN_MEMORY_MB_PER_PERFORMANCE_CPU, MIN_MEMORY_MB_PER_SHARED_CPU, MachineGuest, MachinePort,
    Protocol,
};

use crate::diagnostic::{Diagnostic, did_you_mean, one_of};
use crate::model::{AppConfig, ServiceHttpCheck, ServiceTcpCheck, Strategy, Vm};
use crate::tree::{KeyPath, Node, path};

/// Longest `kill_timeout` Fly honours.
pub const MAX_KILL_TIMEOUT: Duration = Duration::from_secs(300);
/// Bounds service check durations are clamped to.
pub const MIN_SERVICE_CHECK_DURATION: Duration = Duration::from_secs(1);
pub const MAX_SERVICE_CHECK_DURATION: Duration = Duration::from_secs(60);
/// Bounds of top-level checks (enforced by the Machines API).
pub const MIN_TOP_LEVEL_CHECK_INTERVAL: Duration = Duration::from_secs(2);
pub const MAX_TOP_LEVEL_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many `[[statics]]`.
pub const MAX_STATICS: usize = 10;
/// GPU kinds Fly offers.
pub const GPU_KINDS: [&str; 4] = ["a100-pcie-40gb", "a100-sxm4-80gb", "l40s", "a10"];

struct Validator<'a> {
    config: &'a AppConfig,
    tree: &'a Node,
    out: Vec<Diagnostic>,
}

/// Validates a decoded config; `tree` is the (rewritten) document it came from.
pub(crate) fn validate(config: &AppConfig, tree: &Node) -> Vec<Diagnostic> {
    let mut validator = Validator {
        config,
        tree,
        out: Vec::new(),
    };
    validator.top_level();
    validator.deploy();
    validator.http_service();
    validator.services();
    validator.duplicate_ports();
    validator.top_level_checks();
    validator.mounts();
    validator.vms();
    validator.restarts();
    validator.files();
    validator.statics();
    validator.metrics();
    validator.build();
    validator.out
}

impl Validator<'_> {
    fn error(&mut self, at: KeyPath, message: impl Into<String>, help: Option<String>) {
        let span = self.tree.span_of(at.segments());
        self.out
            .push(Diagnostic::error(at, message).with_help_opt(help).at(span));
    }

    fn warning(&mut self, at: KeyPath, message: impl Into<String>, help: Option<String>) {
        let span = self.tree.span_of(at.segments());
        self.out.push(
            Diagnostic::warning(at, message)
                .with_help_opt(help)
                .at(span),
        );
    }

    fn group_names(&self) -> Vec<&str> {
        if self.config.processes.is_empty() {
            vec![aloft_types::machine::DEFAULT_PROCESS_GROUP]
        } else {
            self.config.processes.keys().map(String::as_str).collect()
        }
    }

    /// Every name in `processes` must be a process group.
    fn groups_exist(&mut self, processes: &[String], at: &KeyPath) {
        let known: Vec<String> = self.group_names().into_iter().map(str::to_owned).collect();
        for (index, name) in processes.iter().enumerate() {
            if !known.contains(name) {
                let help = did_you_mean(name, known.iter().map(String::as_str)).or_else(|| {
                    Some(format!(
                        "add `{name} = \"<command>\"` to [processes], or use one of {}",
                        one_of(&known.iter().map(String::as_str).collect::<Vec<_>>())
                    ))
                });
                self.error(
                    at.child("processes").child(index),
                    format!("there is no process group `{name}`"),
                    help,
                );
            }
        }
    }

    fn shell_words(&mut self, command: &str, at: KeyPath) {
        if shlex::split(command).is_none() {
            self.error(
                at,
                "the command cannot be split into words (an unclosed quote?)",
                None,
            );
        }
    }

    fn top_level(&mut self) {
        if let Some(timeout) = self.config.kill_timeout
            && timeout > MAX_KILL_TIMEOUT
        {
            self.error(
                    path!["kill_timeout"],
                    format!("kill_timeout is {timeout}; the most a machine is given to stop is 5m0s (300 seconds)"),
                    Some("lower kill_timeout to 300 or less".to_owned()),
                );
        }
        for name in self.config.env.keys() {
            if name.starts_with("FLY_") {
                self.error(
                    path!["env", name],
                    "environment variable names starting with `FLY_` are reserved for the platform",
                    Some("rename the variable".to_owned()),
                );
            } else if name.is_empty() || name.contains(['=', '\0']) {
                self.error(
                    path!["env", name],
                    "invalid environment variable name",
                    None,
                );
            }
        }
        for (name, command) in &self.config.processes {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                self.error(
                    path!["processes", name],
                    "process group names may only contain letters, digits, `-` and `_`",
                    None,
                );
            }
            self.shell_words(command, path!["processes", name]);
        }
        if let Some(command) = &self.config.console_command {
            self.shell_words(command, path!["console_command"]);
        }
    }

    fn has_any_check(&self) -> bool {
        !self.config.checks.is_empty()
            || self
                .config
                .http_service
                .as_ref()
                .is_some_and(|s| !s.checks.is_empty())
            || self
                .config
                .services
                .iter()
                .any(|s| !s.http_checks.is_empty() || !s.tcp_checks.is_empty())
    }

    fn deploy(&mut self) {
        let Some(deploy) = &self.config.deploy else {
            return;
        };
        if let Some(strategy @ (Strategy::Canary | Strategy::Bluegreen)) = deploy.strategy {
            if !self.config.mounts.is_empty() {
                self.error(
                    path!["deploy", "strategy"],
                    format!("the {} strategy cannot be used with [[mounts]]: a volume is attached to one machine at a time", strategy.as_str()),
                    Some("use `strategy = \"rolling\"` or `\"immediate\"`".to_owned()),
                );
            }
            if strategy == Strategy::Bluegreen && !self.has_any_check() {
                self.error(
                    path!["deploy", "strategy"],
                    "the bluegreen strategy needs at least one health check to decide when the new machines are ready",
                    Some("add [[http_service.checks]], [[services.http_checks]], [[services.tcp_checks]] or [checks.<name>]".to_owned()),
                );
            }
        }
        if let Some(max) = deploy.max_unavailable
            && (max.is_nan() || max <= 0.0 || (max >= 1.0 && max.fract() != 0.0))
        {
            self.error(
                    path!["deploy", "max_unavailable"],
                    format!("max_unavailable is {max}; expected a fraction between 0 and 1 (of the machines) or a whole number of machines"),
                    None,
                );
        }
        if let Some(command) = &deploy.release_command {
            self.shell_words(command, path!["deploy", "release_command"]);
        }
        if let Some(command) = &deploy.seed_command {
            self.shell_words(command, path!["deploy", "seed_command"]);
        }
        if let Some(vm) = &deploy.release_command_vm {
            self.vm(vm, &path!["deploy", "release_command_vm"]);
        }
    }

    fn service_processes(&mut self, processes: &[String], at: &KeyPath) {
        if processes.is_empty() && !self.config.processes.is_empty() {
            let names: Vec<&str> = self.group_names();
            self.error(
                at.clone(),
                format!(
                    "this service names no process group, but the app defines {}",
                    one_of(&names)
                ),
                Some(format!(
                    "add `processes = [\"{}\"]` to the service",
                    names[0]
                )),
            );
        }
        self.groups_exist(processes, at);
    }

    fn internal_port(&mut self, port: Option<u16>, at: &KeyPath) {
        match port {
            None => self.error(
                at.clone(),
                "`internal_port` is missing: the port the app listens on inside the machine",
                Some("add `internal_port = 8080` (or the port your app binds)".to_owned()),
            ),
            Some(0) => self.error(
                at.child("internal_port"),
                "internal_port must be between 1 and 65535",
                None,
            ),
            Some(_) => {}
        }
    }

    fn http_service(&mut self) {
        let Some(service) = &self.config.http_service else {
            return;
        };
        let at = path!["http_service"];
        self.internal_port(service.internal_port, &at);
        self.service_processes(&service.processes, &at);
        if let Some(concurrency) = &service.concurrency {
            self.concurrency(concurrency, &at);
        }
        for (index, check) in service.checks.iter().enumerate() {
            self.http_check(check, &at.child("checks").child(index));
        }
        if let Some(options) = &service.http_options {
            self.replay_cache(options, &at.child("http_options"));
        }
        if service.proxy_proto_options.is_some() {
            self.warning(
                at.child("proxy_proto_options"),
                "proxy_proto_options have no effect on [http_service], whose ports use the `http` and `tls` handlers",
                Some("use a [[services]] port with the `proxy_proto` handler to send PROXY protocol headers".to_owned()),
            );
        }
    }

    fn concurrency(&mut self, concurrency: &aloft_types::machine::Concurrency, service: &KeyPath) {
        if let (Some(soft), Some(hard)) = (concurrency.soft_limit, concurrency.hard_limit)
            && soft > hard
        {
            self.error(
                    service.child("concurrency").child("soft_limit"),
                    format!("soft_limit ({soft}) is greater than hard_limit ({hard})"),
                    Some("the soft limit is where the proxy starts preferring other machines; keep it at or below the hard limit".to_owned()),
                );
        }
        if concurrency.hard_limit == Some(0) {
            self.error(
                service.child("concurrency").child("hard_limit"),
                "hard_limit of 0 would refuse all traffic",
                None,
            );
        }
    }

    fn replay_cache(&mut self, options: &aloft_types::machine::HttpOptions, at: &KeyPath) {
        for (index, cache) in options.replay_cache.iter().enumerate() {
            if cache.ttl_seconds < 10 {
                self.error(
                    at.child("replay_cache").child(index).child("ttl_seconds"),
                    "ttl_seconds must be at least 10",
                    None,
                );
            }
        }
    }

    fn service_check_duration(&mut self, value: Option<Duration>, zero_ok: bool, at: KeyPath) {
        let Some(value) = value else { return };
        if zero_ok && value == Duration::ZERO {
            return;
        }
        if value < MIN_SERVICE_CHECK_DURATION {
            self.warning(
                at,
                format!("{value} is less than 1 second; it will be raised to 1s"),
                None,
            );
        } else if value > MAX_SERVICE_CHECK_DURATION {
            self.warning(
                at,
                format!("{value} is more than 1 minute; it will be lowered to 1m0s"),
                None,
            );
        }
    }

    fn tcp_check(&mut self, check: &ServiceTcpCheck, at: &KeyPath) {
        self.service_check_duration(check.interval, false, at.child("interval"));
        self.service_check_duration(check.timeout, false, at.child("timeout"));
        self.service_check_duration(check.grace_period, true, at.child("grace_period"));
    }

    fn http_check(&mut self, check: &ServiceHttpCheck, at: &KeyPath) {
        self.service_check_duration(check.interval, false, at.child("interval"));
        self.service_check_duration(check.timeout, false, at.child("timeout"));
        self.service_check_duration(check.grace_period, true, at.child("grace_period"));
        if let Some(path) = &check.path
            && !path.starts_with('/')
        {
            self.error(
                at.child("path"),
                format!("the check path {path:?} must start with `/`"),
                Some(format!("write `path = \"/{path}\"`")),
            );
        }
    }

    fn port(&mut self, port: &MachinePort, protocol: Protocol, at: &KeyPath) {
        match (port.port, port.start_port, port.end_port) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => self.error(
                at.clone(),
                "give either `port` or `start_port` and `end_port`, not both",
                None,
            ),
            (None, None, None) => self.error(
                at.clone(),
                "the port has no number",
                Some("add `port = 443`, or `start_port` and `end_port` for a range".to_owned()),
            ),
            (None, Some(_), None) | (None, None, Some(_)) => self.error(
                at.clone(),
                "a port range needs both `start_port` and `end_port`",
                None,
            ),
            (None, Some(start), Some(end)) if start > end => self.error(
                at.child("start_port"),
                format!("start_port ({start}) is greater than end_port ({end})"),
                None,
            ),
            _ => {}
        }
        for (name, value) in [
            ("port", port.port),
            ("start_port", port.start_port),
            ("end_port", port.end_port),
        ] {
            if value == Some(0) {
                self.error(at.child(name), "ports must be between 1 and 65535", None);
            }
        }
        let has = |handler| port.handlers.contains(&handler);
        if port.force_https && !has(Handler::Http) {
            self.error(
                at.child("force_https"),
                "force_https needs the `http` handler on this port",
                Some("add \"http\" to handlers, or remove force_https".to_owned()),
            );
        }
        if protocol == Protocol::Udp && !port.handlers.is_empty() {
            self.warning(
                at.child("handlers"),
                "handlers have no effect on udp services; packets are forwarded as they are",
                None,
            );
        }
        if port.tls_options.is_some() && !has(Handler::Tls) {
            self.warning(
                at.child("tls_options"),
                "tls_options have no effect without the `tls` handler",
                None,
            );
        }
        if port.http_options.is_some() && !has(Handler::Http) {
            self.warning(
                at.child("http_options"),
                "http_options have no effect without the `http` handler",
                None,
            );
        }
        if port.proxy_proto_options.is_some() && !has(Handler::ProxyProto) {
            self.warning(
                at.child("proxy_proto_options"),
                "proxy_proto_options have no effect without the `proxy_proto` handler",
                None,
            );
        }
        if let Some(options) = &port.http_options {
            self.replay_cache(options, &at.child("http_options"));
        }
    }

    fn services(&mut self) {
        for (index, service) in self.config.services.iter().enumerate() {
            let at = path!["services", index];
            let protocol = service.protocol.unwrap_or(Protocol::Tcp);
            self.internal_port(service.internal_port, &at);
            self.service_processes(&service.processes, &at);
            if service.ports.is_empty() {
                self.warning(
                    at.clone(),
                    "the service exposes no port, so it receives no traffic",
                    Some("add a [[services.ports]] section with `port` and `handlers`".to_owned()),
                );
            }
            for (port_index, port) in service.ports.iter().enumerate() {
                self.port(port, protocol, &at.child("ports").child(port_index));
            }
            if let Some(concurrency) = &service.concurrency {
                self.concurrency(concurrency, &at);
            }
            for (check_index, check) in service.tcp_checks.iter().enumerate() {
                self.tcp_check(check, &at.child("tcp_checks").child(check_index));
            }
            for (check_index, check) in service.http_checks.iter().enumerate() {
                self.http_check(check, &at.child("http_checks").child(check_index));
            }
        }
    }

    /// The same public port and protocol may be exposed once per process group.
    fn duplicate_ports(&mut self) {
        let default_group = self.config.default_process_group();
        let mut seen: Vec<(u16, Protocol, BTreeSet<String>, String)> = Vec::new();
        let mut exposed = Vec::new();
        if let Some(service) = &self.config.http_service {
            let groups = service_groups(&service.processes, &default_group);
            exposed.push((80, Protocol::Tcp, groups.clone(), path!["http_service"]));
            exposed.push((443, Protocol::Tcp, groups, path!["http_service"]));
        }
        for (index, service) in self.config.services.iter().enumerate() {
            let groups = service_groups(&service.processes, &default_group);
            for (port_index, port) in service.ports.iter().enumerate() {
                let numbers: Vec<u16> = match (port.port, port.start_port, port.end_port) {
                    (Some(port), _, _) => vec![port],
                    (None, Some(start), Some(end)) if start <= end && end - start < 1024 => {
                        (start..=end).collect()
                    }
                    _ => vec![],
                };
                for number in numbers {
                    exposed.push((
                        number,
                        service.protocol.unwrap_or(Protocol::Tcp),
                        groups.clone(),
                        path!["services", index, "ports", port_index],
                    ));
                }
            }
        }
        for (number, protocol, groups, at) in exposed {
            let clash = seen
                .iter()
                .find(|(n, p, g, _)| *n == number && *p == protocol && !g.is_disjoint(&groups));
            if let Some((_, _, _, first)) = clash {
                let protocol_name = if protocol == Protocol::Tcp {
                    "tcp"
                } else {
                    "udp"
                };
                self.error(
                    at.clone(),
                    format!("port {number}/{protocol_name} is already exposed by {first}"),
                    Some("give each service its own public ports".to_owned()),
                );
            } else {
                seen.push((number, protocol, groups, at.to_string()));
            }
        }
    }

    fn top_level_checks(&mut self) {
        for (name, check) in &self.config.checks {
            let at = path!["checks", name];
            if check.kind.is_none() {
                self.error(
                    at.clone(),
                    "the check has no `type`",
                    Some("add `type = \"http\"` or `type = \"tcp\"`".to_owned()),
                );
            }
            if check.port.is_none()
                && self
                    .config
                    .http_service
                    .as_ref()
                    .and_then(|s| s.internal_port)
                    .is_none()
            {
                self.error(
                    at.clone(),
                    "the check has no `port`, and there is no [http_service] to take it from",
                    Some("add `port = <the port to check>`".to_owned()),
                );
            }
            if let Some(interval) = check.interval
                && interval < MIN_TOP_LEVEL_CHECK_INTERVAL
            {
                self.error(
                    at.child("interval"),
                    format!("interval is {interval}; the shortest is 2s"),
                    None,
                );
            }
            if let Some(timeout) = check.timeout
                && timeout > MAX_TOP_LEVEL_CHECK_TIMEOUT
            {
                self.error(
                    at.child("timeout"),
                    format!("timeout is {timeout}; the longest is 1m0s"),
                    None,
                );
            }
            if let Some(path) = &check.path
                && !path.starts_with('/')
            {
                self.error(
                    at.child("path"),
                    format!("the check path {path:?} must start with `/`"),
                    None,
                );
            }
            self.groups_exist(&check.processes, &at);
        }
    }

    fn mounts(&mut self) {
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

    fn vm(&mut self, vm: &Vm, at: &KeyPath) {
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

    fn vms(&mut self) {
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

    fn restarts(&mut self) {
        for (index, restart) in self.config.restart.iter().enumerate() {
            self.groups_exist(&restart.processes, &path!["restart", index]);
        }
    }

    fn files(&mut self) {
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

    fn statics(&mut self) {
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

    fn metrics(&mut self) {
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

    fn build(&mut self) {
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

/// The process groups a section applies to: its `processes`, or the default group.
fn service_groups(processes: &[String], default_group: &str) -> BTreeSet<String> {
    if processes.is_empty() {
        BTreeSet::from([default_group.to_owned()])
    } else {
        processes.iter().cloned().collect()
    }
}
