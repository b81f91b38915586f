//! Rules of fly.toml that its types cannot express: Fly's limits, which keys go together,
//! and references between sections. Every finding points at the key it is about.

mod resources;
mod services;

use std::collections::BTreeSet;

use aloft_types::Duration;

use crate::diagnostic::{Diagnostic, did_you_mean, one_of};
use crate::model::{AppConfig, Strategy};
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
}

/// The process groups a section applies to: its `processes`, or the default group.
fn service_groups(processes: &[String], default_group: &str) -> BTreeSet<String> {
    if processes.is_empty() {
        BTreeSet::from([default_group.to_owned()])
    } else {
        processes.iter().cloned().collect()
    }
}
