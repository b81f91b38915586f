//! Autostart and autostop, by Fly's rules: the proxy never creates or destroys machines,
//! it starts the stopped ones an app already has when requests need them and stops idle
//! ones. Pure decisions here; the proxy acts on them through a [`Lifecycle`].
//!
//! - **Start**: a request for a service whose started machines are all at or above their
//!   soft limit (or that has none) starts one stopped machine, nearest region first, if
//!   the service allows it (`autostart`, default on) and the machine does not forbid it
//!   (`disable_machine_autostart`). One start per app at a time.
//! - **Stop**, every interval, per app, service and region, among started machines of
//!   services with `autostop` `stop` or `suspend` (suspend acts as stop): with more than
//!   one machine, `excess = machines - (machines at or above soft limit + 1)`; when
//!   `excess >= 1` exactly one idle machine stops. A lone machine stops when idle.
//!   "Idle" means no request or connection for a whole interval. `min_machines_running`
//!   machines stay started in the app's primary region (`PRIMARY_REGION`, else the
//!   edge's region).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aloft_types::MachineState;
use aloft_types::catalog::{Catalog, CatalogMachine};
use aloft_types::machine::Autostop;

/// How the proxy starts and stops machines (the control plane, in `aloftd`).
pub trait Lifecycle: Send + Sync + std::fmt::Debug {
    /// Asks for `machine` to start; returns once the request is recorded.
    fn start(&self, machine: String) -> BoxFuture<Result<(), LifecycleError>>;
    /// Asks for `machine` to stop with its configured signal and timeout.
    fn stop(&self, machine: String) -> BoxFuture<Result<(), LifecycleError>>;
}

/// Why a start or stop the proxy asked for did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{machine:?} is not a machine id: {source}")]
    BadId {
        machine: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("machine {machine}: {source}")]
    Refused {
        machine: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A boxed future, for the object-safe [`Lifecycle`].
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// A stopped machine a request may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sleeper {
    pub machine: String,
    pub region: String,
}

/// Whether `machine` may be started for its service at `index`.
pub(crate) fn can_wake(machine: &CatalogMachine, index: usize) -> bool {
    let asleep = matches!(
        machine.state,
        MachineState::Stopped | MachineState::Suspended
    );
    let allowed = machine
        .services
        .get(index)
        .is_some_and(|s| s.autostart.unwrap_or(true));
    asleep && allowed && !machine.autostart_disabled && !machine.cordoned
}

/// The sleeper to start: one in `region` first, else the first in id order.
pub(crate) fn nearest<'a>(sleepers: &'a [Sleeper], region: &str) -> Option<&'a Sleeper> {
    sleepers
        .iter()
        .find(|s| s.region == region)
        .or_else(|| sleepers.first())
}

/// What the stop rule needs to know about a machine's traffic.
pub trait Traffic {
    /// Requests (or connections) in flight now.
    fn load(&self, machine: &str) -> u32;
    /// How long it has had nothing in flight (zero while busy).
    fn idle_for(&self, machine: &str) -> Duration;
}

/// The machines to stop now: at most one per app, service and region.
pub fn machines_to_stop(
    catalog: &Catalog,
    traffic: &impl Traffic,
    idle_threshold: Duration,
    edge_region: &str,
) -> Vec<String> {
    // (app, internal port, region) -> (started machines with their soft limit, min running)
    type Group<'a> = (Vec<(&'a CatalogMachine, u32)>, u32);
    let mut groups: BTreeMap<(&str, u16, &str), Group<'_>> = BTreeMap::new();
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    for machine in &catalog.machines {
        if machine.state != MachineState::Started {
            continue;
        }
        for service in machine.services.iter().filter(|s| !s.ports.is_empty()) {
            match service.autostop.unwrap_or(Autostop::Off) {
                // A machine one of whose public services never autostops stays up.
                Autostop::Off => {
                    keep.insert(&machine.id);
                }
                Autostop::Stop | Autostop::Suspend => {
                    let soft = service
                        .concurrency
                        .as_ref()
                        .and_then(|c| c.soft_limit)
                        .unwrap_or(aloft_types::machine::Concurrency::DEFAULT_SOFT_LIMIT);
                    let primary = machine.primary_region.as_deref().unwrap_or(edge_region);
                    let minimum = if machine.region == primary {
                        service.min_machines_running.unwrap_or(0)
                    } else {
                        0
                    };
                    let group = groups
                        .entry((&machine.app, service.internal_port, &machine.region))
                        .or_default();
                    group.0.push((machine, soft));
                    group.1 = group.1.max(minimum);
                }
            }
        }
    }
    let mut stopping: Vec<String> = Vec::new();
    for (machines, minimum) in groups.values() {
        let count = machines.len();
        if count <= usize::try_from(*minimum).unwrap_or(usize::MAX) {
            continue;
        }
        let over_soft = machines
            .iter()
            .filter(|(m, soft)| traffic.load(&m.id) >= *soft)
            .count();
        let excess = count > 1 && count > over_soft + 1;
        if !(excess || count == 1) {
            continue;
        }
        let idlest = machines
            .iter()
            .map(|(m, _)| m)
            .filter(|m| !keep.contains(m.id.as_str()) && !stopping.contains(&m.id))
            .filter(|m| traffic.load(&m.id) == 0 && traffic.idle_for(&m.id) >= idle_threshold)
            .max_by_key(|m| (traffic.idle_for(&m.id), std::cmp::Reverse(m.id.clone())));
        if let Some(machine) = idlest {
            stopping.push(machine.id.clone());
        }
    }
    stopping
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aloft_types::machine::{Concurrency, MachinePort, MachineService, Protocol};

    use super::*;

    struct Fake {
        load: HashMap<String, u32>,
        idle: HashMap<String, Duration>,
    }

    impl Traffic for Fake {
        fn load(&self, machine: &str) -> u32 {
            self.load.get(machine).copied().unwrap_or(0)
        }
        fn idle_for(&self, machine: &str) -> Duration {
            self.idle.get(machine).copied().unwrap_or(Duration::ZERO)
        }
    }

    fn machine(id: &str, region: &str, autostop: Autostop, min: u32) -> CatalogMachine {
        CatalogMachine {
            id: id.to_owned(),
            app: "web".to_owned(),
            region: region.to_owned(),
            state: MachineState::Started,
            private_ip: None,
            process_group: "app".to_owned(),
            metadata: BTreeMap::new(),
            skip_registration: false,
            cordoned: false,
            services: vec![MachineService {
                protocol: Protocol::Tcp,
                internal_port: 8080,
                autostop: Some(autostop),
                autostart: None,
                min_machines_running: Some(min),
                ports: vec![MachinePort {
                    port: Some(80),
                    ..MachinePort::default()
                }],
                checks: vec![],
                concurrency: Some(Concurrency {
                    kind: None,
                    soft_limit: Some(2),
                    hard_limit: Some(4),
                }),
                force_instance_key: None,
                force_instance_description: None,
            }],
            checks: vec![],
            autostart_disabled: false,
            primary_region: Some("ams".to_owned()),
            statics: Vec::new(),
        }
    }

    fn traffic(load: &[(&str, u32)], idle: &[(&str, u64)]) -> Fake {
        Fake {
            load: load.iter().map(|(m, l)| ((*m).to_owned(), *l)).collect(),
            idle: idle
                .iter()
                .map(|(m, s)| ((*m).to_owned(), Duration::from_secs(*s)))
                .collect(),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn catalog(machines: Vec<CatalogMachine>) -> Catalog {
        Catalog {
            acme_challenges: Vec::new(),
            apps: vec![],
            machines,
        }
    }

    #[test]
    fn exactly_one_idle_machine_stops_per_region_and_cycle() {
        let catalog = catalog(vec![
            machine("a", "ams", Autostop::Stop, 0),
            machine("b", "ams", Autostop::Stop, 0),
            machine("c", "ams", Autostop::Stop, 0),
            machine("d", "fra", Autostop::Suspend, 0),
        ]);
        let idle = traffic(&[], &[("a", 120), ("b", 300), ("c", 90), ("d", 100)]);
        // The idlest in ams, and the lone idle one in fra.
        assert_eq!(machines_to_stop(&catalog, &idle, MINUTE, "ams"), ["b", "d"]);
    }

    #[test]
    fn busy_apps_keep_their_machines() {
        let catalog = catalog(vec![
            machine("a", "ams", Autostop::Stop, 0),
            machine("b", "ams", Autostop::Stop, 0),
        ]);
        // a is at its soft limit: excess = 2 - (1 + 1) = 0.
        let busy = traffic(&[("a", 2)], &[("b", 600)]);
        assert!(machines_to_stop(&catalog, &busy, MINUTE, "ams").is_empty());
        // Below soft: b is excess and idle.
        let light = traffic(&[("a", 1)], &[("b", 600)]);
        assert_eq!(machines_to_stop(&catalog, &light, MINUTE, "ams"), ["b"]);
        // Idle for less than the threshold: nothing yet.
        let recent = traffic(&[], &[("a", 10), ("b", 10)]);
        assert!(machines_to_stop(&catalog, &recent, MINUTE, "ams").is_empty());
    }

    #[test]
    fn off_and_min_machines_running_in_the_primary_region_are_respected() {
        let catalog = catalog(vec![
            machine("a", "ams", Autostop::Off, 0),
            machine("b", "ams", Autostop::Stop, 1),
            machine("c", "fra", Autostop::Stop, 1),
        ]);
        let idle = traffic(&[], &[("a", 600), ("b", 600), ("c", 600)]);
        // b is the one machine that min_machines_running keeps in ams (the primary
        // region); fra is not primary, so c stops.
        assert_eq!(machines_to_stop(&catalog, &idle, MINUTE, "ams"), ["c"]);
    }

    #[test]
    fn wakers_pick_the_nearest_sleeper() {
        let sleepers = [
            Sleeper {
                machine: "a".to_owned(),
                region: "fra".to_owned(),
            },
            Sleeper {
                machine: "b".to_owned(),
                region: "ams".to_owned(),
            },
        ];
        assert_eq!(
            nearest(&sleepers, "ams").map(|s| s.machine.as_str()),
            Some("b")
        );
        assert_eq!(
            nearest(&sleepers, "syd").map(|s| s.machine.as_str()),
            Some("a")
        );
        assert_eq!(nearest(&[], "ams"), None);
    }
}
