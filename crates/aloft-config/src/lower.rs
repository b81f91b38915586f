//! Lowering: a fly.toml and one of its process groups become the Machines API
//! `MachineConfig` that each machine of that group runs with (flyctl's `Flatten` and
//! `ToMachineConfig`).
//!
//! Sections without `processes` belong to the default group (`app` if it exists, else the
//! first group by name), except `[[vm]]`, which without `processes` sizes every group that
//! no other `[[vm]]` names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aloft_types::Duration;
use aloft_types::machine::{
    self, Autostop, CheckType, DEFAULT_GPU_GUEST_PRESET, DEFAULT_GUEST_PRESET, Handler,
    MachineCheck, MachineConfig, MachineFile, MachineGuest, MachineHttpHeader, MachineInit,
    MachineMetrics, MachineMount, MachinePort, MachineRestart, MachineService, Protocol,
    StopConfig,
};
use base64::Engine as _;

use crate::model::{
    AppConfig, AutoStop, HttpService, RestartPolicy, Service, ServiceHttpCheck, ServiceTcpCheck,
    TopLevelCheck, Vm,
};
use crate::validate::{MAX_SERVICE_CHECK_DURATION, MIN_SERVICE_CHECK_DURATION};

/// Why a config could not be lowered for a group.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("there is no process group `{group}`; the app has {}", available.join(", "))]
    UnknownGroup {
        group: String,
        available: Vec<String>,
    },
    #[error("the command of process group `{group}` cannot be split into words: {command:?}")]
    Command { group: String, command: String },
    #[error(
        "check `{check}` of process group `{group}` has no port and the group has no [http_service] to take it from"
    )]
    CheckWithoutPort { check: String, group: String },
    #[error("[deploy] release_command cannot be split into words: {command:?}")]
    ReleaseCommand { command: String },
    #[error("check `{check}` has no type")]
    CheckWithoutType { check: String },
    #[error("unknown VM size {size:?}")]
    UnknownSize { size: String },
    #[error("{section} of process group `{group}` has no {key}")]
    Missing {
        section: &'static str,
        group: String,
        key: &'static str,
    },
    #[error("reading {path} for [[files]] guest_path {guest_path}")]
    ReadFile {
        path: PathBuf,
        guest_path: String,
        #[source]
        source: std::io::Error,
    },
}

impl AppConfig {
    /// `[deploy] release_command` split into words (`None` when it is unset or blank).
    pub fn release_command(&self) -> Result<Option<Vec<String>>, LowerError> {
        let Some(command) = self
            .deploy
            .as_ref()
            .and_then(|d| d.release_command.as_deref())
            .filter(|c| !c.trim().is_empty())
        else {
            return Ok(None);
        };
        shlex::split(command)
            .map(Some)
            .ok_or_else(|| LowerError::ReleaseCommand {
                command: command.to_owned(),
            })
    }

    /// `[deploy.release_command_vm]` as the release command machine's guest (`None`: it
    /// runs with the release's own).
    pub fn release_command_guest(&self) -> Result<Option<MachineGuest>, LowerError> {
        self.deploy
            .as_ref()
            .and_then(|d| d.release_command_vm.as_ref())
            .map(|vm| self.guest(vm))
            .transpose()
    }

    /// The process groups, sorted by name; `["app"]` when there is no `[processes]`.
    pub fn process_groups(&self) -> Vec<String> {
        if self.processes.is_empty() {
            vec![machine::DEFAULT_PROCESS_GROUP.to_owned()]
        } else {
            self.processes.keys().cloned().collect()
        }
    }

    /// `app` if it is a group, otherwise the first group by name.
    pub fn default_process_group(&self) -> String {
        let groups = self.process_groups();
        if groups.iter().any(|g| g == machine::DEFAULT_PROCESS_GROUP) {
            machine::DEFAULT_PROCESS_GROUP.to_owned()
        } else {
            groups
                .into_iter()
                .next()
                .unwrap_or_else(|| machine::DEFAULT_PROCESS_GROUP.to_owned())
        }
    }

    /// Whether a section listing `processes` applies to `group`.
    fn applies(&self, processes: &[String], group: &str) -> bool {
        if processes.is_empty() {
            group == self.default_process_group()
        } else {
            processes.iter().any(|p| p == group)
        }
    }

    /// The `[[vm]]` that sizes `group`: one that names it, else one without `processes`.
    pub fn vm_for_group(&self, group: &str) -> Option<&Vm> {
        self.vm
            .iter()
            .find(|vm| vm.processes.iter().any(|p| p == group))
            .or_else(|| self.vm.iter().find(|vm| vm.processes.is_empty()))
    }

    /// The image named in `[build] image`, if any.
    pub fn image(&self) -> Option<&str> {
        self.build.as_ref()?.image.as_deref()
    }

    /// The `MachineConfig` of a machine in `group`. `base_dir` is where fly.toml lives
    /// (`[[files]] local_path` is read relative to it); `image` overrides `[build] image`.
    pub fn to_machine_config(
        &self,
        group: &str,
        base_dir: &Path,
        image: Option<&str>,
    ) -> Result<MachineConfig, LowerError> {
        let groups = self.process_groups();
        if !groups.iter().any(|g| g == group) {
            return Err(LowerError::UnknownGroup {
                group: group.to_owned(),
                available: groups,
            });
        }
        let mut config = MachineConfig {
            image: image.or(self.image()).unwrap_or_default().to_owned(),
            init: self.init(group)?,
            ..MachineConfig::default()
        };
        config.metadata = BTreeMap::from([
            (
                machine::METADATA_PLATFORM_VERSION.to_owned(),
                machine::PLATFORM_VERSION.to_owned(),
            ),
            (machine::METADATA_PROCESS_GROUP.to_owned(), group.to_owned()),
        ]);

        config.env = self.env.clone();
        config
            .env
            .insert("FLY_PROCESS_GROUP".to_owned(), group.to_owned());
        if let Some(region) = &self.primary_region {
            config
                .env
                .insert("PRIMARY_REGION".to_owned(), region.to_string());
        }

        let http_service = self
            .http_service
            .as_ref()
            .filter(|s| self.applies(&s.processes, group));
        if let Some(service) = http_service {
            config.services.push(lower_http_service(service));
        }
        // A service without an internal port routes nowhere: validation says it is left
        // out (a warning, as flyctl accepts the file; an error with `--strict`).
        for service in self
            .services
            .iter()
            .filter(|s| self.applies(&s.processes, group) && s.internal_port.is_some())
        {
            config.services.push(lower_service(service));
        }

        for (name, check) in self
            .checks
            .iter()
            .filter(|(_, c)| self.applies(&c.processes, group))
        {
            let port = check.port.or(http_service.and_then(|s| s.internal_port));
            let port = port.ok_or_else(|| LowerError::CheckWithoutPort {
                check: name.clone(),
                group: group.to_owned(),
            })?;
            config
                .checks
                .insert(name.clone(), lower_top_level_check(name, check, port)?);
        }

        config.metrics = self
            .metrics
            .iter()
            .find(|m| self.applies(&m.processes, group))
            .map(|m| -> Result<MachineMetrics, LowerError> {
                let missing = |key| LowerError::Missing {
                    section: "[metrics]",
                    group: group.to_owned(),
                    key,
                };
                Ok(MachineMetrics {
                    port: m.port.ok_or_else(|| missing("port"))?,
                    path: m.path.clone().ok_or_else(|| missing("path"))?,
                    https: m.https.unwrap_or(false),
                })
            })
            .transpose()?;

        config.statics = self
            .statics
            .iter()
            .map(|s| machine::Static {
                guest_path: s.guest_path.clone().unwrap_or_default(),
                url_prefix: s.url_prefix.clone().unwrap_or_default(),
                tigris_bucket: s.tigris_bucket.clone().unwrap_or_default(),
                index_document: s.index_document.clone().unwrap_or_default(),
            })
            .collect();

        config.mounts = self
            .mounts
            .iter()
            // A mount without a volume name is left out, with validation's warning.
            .filter(|m| self.applies(&m.processes, group) && m.source.is_some())
            .map(|m| MachineMount {
                path: m.destination.clone().unwrap_or_default(),
                name: m.source.clone().unwrap_or_default(),
                size_gb: gb(m.initial_size),
                extend_threshold_percent: m.auto_extend_size_threshold.unwrap_or(0),
                add_size_gb: gb(m.auto_extend_size_increment),
                size_gb_limit: gb(m.auto_extend_size_limit),
                snapshot_retention: m.snapshot_retention.unwrap_or(0),
                scheduled_snapshots: m.scheduled_snapshots,
                ..MachineMount::default()
            })
            .collect();

        if self.kill_signal.is_some() || self.kill_timeout.is_some() {
            config.stop_config = Some(StopConfig {
                signal: self.kill_signal,
                timeout: self.kill_timeout,
            });
        }

        for file in self
            .files
            .iter()
            .filter(|f| self.applies(&f.processes, group))
        {
            config.files.push(lower_file(file, base_dir)?);
        }

        if let Some(vm) = self.vm_for_group(group) {
            config.guest = Some(self.guest(vm)?);
        }

        config.restart = self
            .restart
            .iter()
            .rev()
            .find(|r| self.applies(&r.processes, group))
            .map(|r| MachineRestart {
                policy: r.policy.map(|policy| match policy {
                    RestartPolicy::Always => machine::RestartPolicy::Always,
                    RestartPolicy::Never => machine::RestartPolicy::No,
                    RestartPolicy::OnFailure => machine::RestartPolicy::OnFailure,
                }),
                max_retries: r.retries.unwrap_or(0),
            });
        Ok(config)
    }

    fn init(&self, group: &str) -> Result<MachineInit, LowerError> {
        let mut init = MachineInit {
            swap_size_mb: self.swap_size_mb,
            ..MachineInit::default()
        };
        if let Some(command) = self.processes.get(group).filter(|c| !c.is_empty()) {
            init.cmd = shlex::split(command).ok_or_else(|| LowerError::Command {
                group: group.to_owned(),
                command: command.clone(),
            })?;
        }
        if let Some(experimental) = &self.experimental {
            if init.cmd.is_empty() {
                init.cmd = experimental.cmd.clone();
            }
            init.entrypoint = experimental.entrypoint.clone();
            init.exec = experimental.exec.clone();
        }
        Ok(init)
    }

    fn guest(&self, vm: &Vm) -> Result<MachineGuest, LowerError> {
        let size = match (&vm.size, &vm.gpu_kind) {
            (Some(size), _) => size.as_str(),
            (None, Some(_)) => DEFAULT_GPU_GUEST_PRESET,
            (None, None) => DEFAULT_GUEST_PRESET,
        };
        let mut guest = MachineGuest::preset(size).ok_or_else(|| LowerError::UnknownSize {
            size: size.to_owned(),
        })?;
        if let Some(id) = vm
            .host_dedication_id
            .as_ref()
            .or(self.host_dedication_id.as_ref())
        {
            guest.host_dedication_id = Some(id.clone());
        }
        if let Some(memory) = vm.memory {
            guest.memory_mb = u32::try_from(memory.mb()).unwrap_or(u32::MAX);
        }
        if let Some(kind) = vm.cpu_kind {
            guest.cpu_kind = Some(kind);
        }
        for (value, slot) in [
            (vm.cpus, &mut guest.cpus),
            (vm.memory_mb, &mut guest.memory_mb),
            (vm.max_memory_mb, &mut guest.max_memory_mb),
            (vm.gpus, &mut guest.gpus),
        ] {
            if let Some(value) = value.filter(|v| *v != 0) {
                *slot = value;
            }
        }
        if let Some(kind) = &vm.gpu_kind {
            guest.gpu_kind = Some(kind.clone());
        }
        if !vm.kernel_args.is_empty() {
            guest.kernel_args = vm.kernel_args.clone();
        }
        if let Some(persist) = vm.persist_rootfs {
            guest.persist_rootfs = Some(persist);
        }
        Ok(guest)
    }
}

fn gb(size: Option<crate::units::VolumeSize>) -> u32 {
    size.map_or(0, |size| u32::try_from(size.gb()).unwrap_or(u32::MAX))
}

fn autostop(value: Option<AutoStop>) -> Option<Autostop> {
    value.map(|value| match value {
        AutoStop::Off => Autostop::Off,
        AutoStop::Stop => Autostop::Stop,
        AutoStop::Suspend => Autostop::Suspend,
    })
}

/// Service check durations are clamped to [1s, 1m], as Fly does (a zero grace period stays).
fn clamp(value: Option<Duration>, zero_ok: bool) -> Option<Duration> {
    value.map(|value| {
        if zero_ok && value == Duration::ZERO {
            value
        } else {
            value.clamp(MIN_SERVICE_CHECK_DURATION, MAX_SERVICE_CHECK_DURATION)
        }
    })
}

fn headers(headers: &BTreeMap<String, String>) -> Vec<MachineHttpHeader> {
    headers
        .iter()
        .map(|(name, value)| MachineHttpHeader {
            name: name.clone(),
            values: vec![value.clone()],
        })
        .collect()
}

fn lower_tcp_check(check: &ServiceTcpCheck) -> MachineCheck {
    MachineCheck {
        kind: Some(CheckType::Tcp),
        interval: clamp(check.interval, false),
        timeout: clamp(check.timeout, false),
        grace_period: clamp(check.grace_period, true),
        ..MachineCheck::default()
    }
}

fn lower_http_check(check: &ServiceHttpCheck) -> MachineCheck {
    MachineCheck {
        kind: Some(CheckType::Http),
        interval: clamp(check.interval, false),
        timeout: clamp(check.timeout, false),
        grace_period: clamp(check.grace_period, true),
        method: check.method.as_ref().map(|m| m.as_str().to_owned()),
        path: check.path.clone(),
        protocol: check.protocol,
        tls_skip_verify: check.tls_skip_verify,
        tls_server_name: check.tls_server_name.clone(),
        headers: headers(&check.headers),
        ..MachineCheck::default()
    }
}

fn lower_top_level_check(
    name: &str,
    check: &TopLevelCheck,
    port: u16,
) -> Result<MachineCheck, LowerError> {
    Ok(MachineCheck {
        port: Some(port),
        kind: Some(check.kind.ok_or_else(|| LowerError::CheckWithoutType {
            check: name.to_owned(),
        })?),
        interval: check.interval,
        timeout: check.timeout,
        grace_period: check.grace_period,
        method: check.method.as_ref().map(|m| m.as_str().to_owned()),
        path: check.path.clone(),
        protocol: check.protocol,
        tls_skip_verify: check.tls_skip_verify,
        tls_server_name: check.tls_server_name.clone(),
        headers: headers(&check.headers),
        ..MachineCheck::default()
    })
}

/// `[http_service]` is one TCP service: port 80 speaks HTTP (and may redirect to HTTPS),
/// port 443 terminates TLS and speaks HTTP.
fn lower_http_service(service: &HttpService) -> MachineService {
    MachineService {
        protocol: Protocol::Tcp,
        internal_port: service.internal_port.unwrap_or_default(),
        autostop: autostop(service.auto_stop_machines),
        autostart: service.auto_start_machines,
        min_machines_running: service.min_machines_running,
        ports: vec![
            MachinePort {
                port: Some(80),
                handlers: vec![Handler::Http],
                force_https: service.force_https.unwrap_or(false),
                http_options: service.http_options.clone(),
                ..MachinePort::default()
            },
            MachinePort {
                port: Some(443),
                handlers: vec![Handler::Tls, Handler::Http],
                http_options: service.http_options.clone(),
                tls_options: service.tls_options.clone(),
                ..MachinePort::default()
            },
        ],
        checks: service.checks.iter().map(lower_http_check).collect(),
        concurrency: service.concurrency.clone(),
        force_instance_key: None,
        force_instance_description: None,
    }
}

fn lower_service(service: &Service) -> MachineService {
    MachineService {
        protocol: service.protocol.unwrap_or(Protocol::Tcp),
        internal_port: service.internal_port.unwrap_or_default(),
        autostop: autostop(service.auto_stop_machines),
        autostart: service.auto_start_machines,
        min_machines_running: service.min_machines_running,
        ports: service.ports.clone(),
        checks: service
            .tcp_checks
            .iter()
            .map(lower_tcp_check)
            .chain(service.http_checks.iter().map(lower_http_check))
            .collect(),
        concurrency: service.concurrency.clone(),
        force_instance_key: None,
        force_instance_description: None,
    }
}

fn lower_file(file: &crate::model::File, base_dir: &Path) -> Result<MachineFile, LowerError> {
    let guest_path = file.guest_path.clone().unwrap_or_default();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut lowered = MachineFile {
        guest_path: guest_path.clone(),
        ..MachineFile::default()
    };
    if let Some(local) = &file.local_path {
        let path = base_dir.join(local);
        let content = std::fs::read(&path).map_err(|source| LowerError::ReadFile {
            path,
            guest_path,
            source,
        })?;
        lowered.raw_value = Some(engine.encode(content));
    } else if let Some(secret) = &file.secret_name {
        lowered.secret_name = Some(secret.clone());
    } else if let Some(raw) = &file.raw_value {
        lowered.raw_value = Some(engine.encode(raw));
    }
    Ok(lowered)
}
