//! The rules of `[[services]]`, `[http_service]`, their ports, concurrency and checks,
//! and of the top-level `[checks]`.

use std::collections::BTreeSet;

use aloft_types::Duration;
use aloft_types::machine::{Handler, MachinePort, Protocol};

use super::{
    MAX_SERVICE_CHECK_DURATION, MAX_TOP_LEVEL_CHECK_TIMEOUT, MIN_SERVICE_CHECK_DURATION,
    MIN_TOP_LEVEL_CHECK_INTERVAL, Validator, service_groups,
};
use crate::diagnostic::one_of;
use crate::model::{ServiceHttpCheck, ServiceTcpCheck};
use crate::tree::{KeyPath, path};

impl Validator<'_> {
    pub(super) fn service_processes(&mut self, processes: &[String], at: &KeyPath) {
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

    pub(super) fn internal_port(&mut self, port: Option<u16>, at: &KeyPath) {
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

    pub(super) fn http_service(&mut self) {
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

    pub(super) fn concurrency(
        &mut self,
        concurrency: &aloft_types::machine::Concurrency,
        service: &KeyPath,
    ) {
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

    pub(super) fn replay_cache(
        &mut self,
        options: &aloft_types::machine::HttpOptions,
        at: &KeyPath,
    ) {
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

    pub(super) fn service_check_duration(
        &mut self,
        value: Option<Duration>,
        zero_ok: bool,
        at: KeyPath,
    ) {
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

    pub(super) fn tcp_check(&mut self, check: &ServiceTcpCheck, at: &KeyPath) {
        self.service_check_duration(check.interval, false, at.child("interval"));
        self.service_check_duration(check.timeout, false, at.child("timeout"));
        self.service_check_duration(check.grace_period, true, at.child("grace_period"));
    }

    pub(super) fn http_check(&mut self, check: &ServiceHttpCheck, at: &KeyPath) {
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

    pub(super) fn port(&mut self, port: &MachinePort, protocol: Protocol, at: &KeyPath) {
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

    pub(super) fn services(&mut self) {
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
    pub(super) fn duplicate_ports(&mut self) {
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

    pub(super) fn top_level_checks(&mut self) {
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
}
