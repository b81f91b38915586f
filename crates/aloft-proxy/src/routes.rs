//! The route table: which machines serve which app on which public port, made from the
//! catalog. Pure: consumers swap in a new table per catalog.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use aloft_types::MachineState;
use aloft_types::catalog::Catalog;
use aloft_types::machine::{
    ConcurrencyKind, Handler, HttpOptions, HttpResponseOptions, Protocol, ProxyProtoVersion,
    TlsOptions,
};

use crate::autoscale::{Sleeper, can_wake};

/// Fly's default limits when a service names none (fly.toml's defaults).
pub const DEFAULT_SOFT_LIMIT: u32 = aloft_types::machine::Concurrency::DEFAULT_SOFT_LIMIT;
pub const DEFAULT_HARD_LIMIT: u32 = aloft_types::machine::Concurrency::DEFAULT_HARD_LIMIT;

/// One machine behind a service; cheap to clone (the proxy copies it per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub machine: Arc<str>,
    pub address: Ipv6Addr,
    pub port: u16,
    pub region: Arc<str>,
    pub soft_limit: u32,
    pub hard_limit: u32,
    pub kind: ConcurrencyKind,
    /// The machine's `[[statics]]`.
    pub statics: Arc<[aloft_types::machine::Static]>,
}

/// What answers on one public port of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub app: String,
    pub handlers: Vec<Handler>,
    pub force_https: bool,
    /// `http_options.response`: headers to set or remove, and `pristine`.
    pub response: Option<Arc<HttpResponseOptions>>,
    /// Started, uncordoned machines whose service checks pass, in id order.
    pub backends: Vec<Backend>,
    /// Stopped machines a request may start (autostart), in id order.
    pub sleepers: Vec<Sleeper>,
    /// The PROXY protocol version of a `proxy_proto` handler.
    pub proxy_proto: Option<ProxyProtoVersion>,
    /// `tls_options`: ALPN protocols and TLS versions for this port.
    pub tls_options: Option<TlsOptions>,
    /// `http_options` (timeouts, among others).
    pub http_options: Option<HttpOptions>,
}

impl Route {
    /// `http_options.h2_backend`: HTTP/2 without TLS (prior knowledge) to the machine.
    pub fn h2_backend(&self) -> bool {
        self.http_options
            .as_ref()
            .and_then(|o| o.h2_backend)
            .unwrap_or(false)
    }
}

/// Every app's routes by public port.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// TCP services (HTTP, TLS, raw TCP) by app and public port.
    apps: BTreeMap<String, BTreeMap<u16, Route>>,
    /// UDP services (`protocol = "udp"`) by app and public port: packets, not
    /// connections, so apart from the TCP ports (a port number may be both).
    udp: BTreeMap<String, BTreeMap<u16, Route>>,
    /// Apps' own hostnames (lowercase; `*.` wildcards) and the app of each.
    hostnames: std::collections::HashMap<String, String>,
}

impl RouteTable {
    pub fn new(catalog: &Arc<Catalog>) -> RouteTable {
        let mut table = RouteTable::default();
        for app in &catalog.apps {
            table.apps.entry(app.name.clone()).or_default();
            for hostname in &app.hostnames {
                table
                    .hostnames
                    .insert(hostname.name.to_ascii_lowercase(), app.name.clone());
            }
        }
        for machine in &catalog.machines {
            let Some(address) = machine.private_ip else {
                continue;
            };
            if !table.apps.contains_key(&machine.app) {
                continue;
            }
            let started = machine.state == MachineState::Started && !machine.cordoned;
            for (index, service) in machine.services.iter().enumerate() {
                let by_protocol = match service.protocol {
                    Protocol::Udp => &mut table.udp,
                    Protocol::Tcp => &mut table.apps,
                };
                let routes = by_protocol.entry(machine.app.clone()).or_default();
                // Routing follows the service's own checks; top-level checks never count.
                let serving = started && machine.service_healthy(index);
                let limits = service.concurrency.clone().unwrap_or_default();
                for port in &service.ports {
                    let public = match (port.port, port.start_port, port.end_port) {
                        (Some(p), _, _) => p..=p,
                        (None, Some(start), Some(end)) => start..=end,
                        _ => continue,
                    };
                    for number in public {
                        let route = routes.entry(number).or_insert_with(|| Route {
                            app: machine.app.clone(),
                            handlers: port.handlers.clone(),
                            force_https: port.force_https,
                            response: port
                                .http_options
                                .as_ref()
                                .and_then(|o| o.response.clone())
                                .map(Arc::new),
                            backends: Vec::new(),
                            sleepers: Vec::new(),
                            proxy_proto: port
                                .proxy_proto_options
                                .as_ref()
                                .map(|o| o.version.unwrap_or_default()),
                            tls_options: port.tls_options.clone(),
                            http_options: port.http_options.clone(),
                        });
                        if serving {
                            route.backends.push(Backend {
                                machine: Arc::from(machine.id.as_str()),
                                address,
                                port: service.internal_port,
                                region: Arc::from(machine.region.as_str()),
                                soft_limit: limits.soft_limit.unwrap_or(DEFAULT_SOFT_LIMIT),
                                hard_limit: limits.hard_limit.unwrap_or(DEFAULT_HARD_LIMIT),
                                kind: limits.kind.unwrap_or(ConcurrencyKind::Connections),
                                statics: Arc::from(machine.statics.as_slice()),
                            });
                        } else if can_wake(machine, index) {
                            route.sleepers.push(Sleeper {
                                machine: machine.id.clone(),
                                region: machine.region.clone(),
                            });
                        }
                    }
                }
            }
        }
        for routes in table.apps.values_mut().chain(table.udp.values_mut()) {
            for route in routes.values_mut() {
                route.backends.sort_by(|a, b| a.machine.cmp(&b.machine));
                route.sleepers.sort_by(|a, b| a.machine.cmp(&b.machine));
            }
        }
        table
    }

    /// The app a `Host` header (or TLS server name) names: `<app>.<apps_domain>`, or one
    /// of the apps' own hostnames (exact first, then a `*.` wildcard of its parent).
    pub fn app_for_host(&self, host: &str, apps_domain: &str) -> Option<String> {
        if let Some(app) = app_of_host(host, apps_domain) {
            return Some(app.to_ascii_lowercase());
        }
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if let Some(app) = self.hostnames.get(&name) {
            return Some(app.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.hostnames.get(&format!("*.{parent}")).cloned()
    }

    /// Whether an app of this name exists.
    pub fn has_app(&self, app: &str) -> bool {
        self.apps.contains_key(app)
    }

    /// The public ports `app` has services on.
    pub fn ports(&self, app: &str) -> Vec<u16> {
        self.apps
            .get(app)
            .map(|routes| routes.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Whether `machine` takes traffic on any route.
    pub fn serves(&self, machine: &str) -> bool {
        self.apps
            .values()
            .chain(self.udp.values())
            .flat_map(BTreeMap::values)
            .any(|r| r.backends.iter().any(|b| &*b.machine == machine))
    }

    /// The route of `app` on public `port`.
    pub fn route(&self, app: &str, port: u16) -> Option<&Route> {
        self.apps.get(app)?.get(&port)
    }

    /// The public ports `app` has UDP services on.
    pub fn udp_ports(&self, app: &str) -> Vec<u16> {
        self.udp
            .get(app)
            .map(|routes| routes.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The UDP route of `app` on public `port`.
    pub fn udp_route(&self, app: &str, port: u16) -> Option<&Route> {
        self.udp.get(app)?.get(&port)
    }
}

/// The app a `Host` header names under `apps_domain` (`<app>.<apps_domain>[:port]`,
/// case-insensitive), if any.
pub fn app_of_host<'a>(host: &'a str, apps_domain: &str) -> Option<&'a str> {
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let cut = host.len().checked_sub(apps_domain.len() + 1)?;
    // Not ASCII there: not our domain (and not a place to cut a string).
    let (app, domain) = host.split_at_checked(cut)?;
    (domain
        .strip_prefix('.')
        .is_some_and(|d| d.eq_ignore_ascii_case(apps_domain))
        && !app.is_empty()
        && !app.contains('.'))
    .then_some(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_apps_under_the_domain() {
        let domain = "aloft.localhost";
        assert_eq!(app_of_host("web.aloft.localhost", domain), Some("web"));
        assert_eq!(app_of_host("web.ALOFT.localhost:8080", domain), Some("web"));
        assert_eq!(app_of_host("web.aloft.localhost.", domain), Some("web"));
        assert_eq!(app_of_host("a.b.aloft.localhost", domain), None);
        assert_eq!(app_of_host("aloft.localhost", domain), None);
        assert_eq!(app_of_host("web.example.com", domain), None);
        assert_eq!(app_of_host("webaloft.localhost", domain), None);
        assert_eq!(app_of_host("", domain), None);
        // Found by the routing fuzz target: a multi-byte character where the cut falls.
        assert_eq!(app_of_host("é.aloft.localhostx", domain), None);
        assert_eq!(app_of_host("aéaloft.localhost", domain), None);
        assert_eq!(app_of_host("aaéloft.localhost", domain), None);
    }

    #[test]
    fn udp_services_are_routed_apart_from_tcp_ones() {
        use aloft_types::catalog::{CatalogApp, CatalogMachine};
        use aloft_types::machine::{MachinePort, MachineService};
        let service = |protocol, public: u16, internal| MachineService {
            protocol,
            internal_port: internal,
            autostop: None,
            autostart: None,
            min_machines_running: None,
            ports: vec![MachinePort {
                port: Some(public),
                ..MachinePort::default()
            }],
            checks: vec![],
            concurrency: None,
            force_instance_key: None,
            force_instance_description: None,
        };
        let catalog = Catalog {
            acme_challenges: Vec::new(),
            apps: vec![CatalogApp {
                name: "dns".to_owned(),
                org_id: "org".to_owned(),
                network: 1,
                ipv4: vec![],
                hostnames: vec![],
            }],
            machines: vec![CatalogMachine {
                id: "m1".to_owned(),
                app: "dns".to_owned(),
                region: "ams".to_owned(),
                state: MachineState::Started,
                private_ip: Some("fdaa::2".parse().unwrap()),
                process_group: "app".to_owned(),
                metadata: BTreeMap::new(),
                skip_registration: false,
                cordoned: false,
                services: vec![
                    service(Protocol::Udp, 53, 5353),
                    service(Protocol::Tcp, 53, 5354),
                    service(Protocol::Udp, 1053, 5355),
                ],
                checks: vec![],
                autostart_disabled: false,
                primary_region: None,
                statics: Vec::new(),
            }],
        };
        let table = RouteTable::new(&Arc::new(catalog));
        // Port 53 is both: each protocol its own route, to its own internal port.
        assert_eq!(table.route("dns", 53).unwrap().backends[0].port, 5354);
        assert_eq!(table.udp_route("dns", 53).unwrap().backends[0].port, 5353);
        // A UDP-only port is no TCP port.
        assert_eq!(table.ports("dns"), vec![53]);
        assert_eq!(table.udp_ports("dns"), vec![53, 1053]);
        assert!(table.route("dns", 1053).is_none());
        assert!(table.serves("m1"));
    }
}
