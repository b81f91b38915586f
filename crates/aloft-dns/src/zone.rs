//! The `.internal` names (Fly's, see `fly-platform.md` §3.2) answered from a catalog.
//!
//! Pure: no sockets, no clocks. [`Zone::lookup`] says whether a name exists for the asking
//! scope and which AAAA and TXT data it has; the server turns that into a DNS message.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::sync::Arc;

use aloft_types::MachineState;
use aloft_types::catalog::{Catalog, CatalogMachine};

/// The zone every private name lives under.
pub const ZONE: &str = "internal";

/// Whose names a query may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A machine (or host) of this private network: only that network's apps.
    Network(u32),
    /// An operator on the host's loopback listener: every network.
    All,
}

/// What a name holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Records {
    pub aaaa: Vec<Ipv6Addr>,
    /// One TXT value (comma-separated lists, as Fly writes them).
    pub txt: Option<String>,
}

/// Whether `name` (lowercase, without the final dot) is under `.internal`.
pub fn is_internal(name: &str) -> bool {
    name == ZONE || name.ends_with(".internal")
}

/// The catalog, indexed for lookups.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// App name → network number.
    apps: BTreeMap<String, u32>,
    /// App name → its machines that DNS may show (registered, with an address).
    machines: BTreeMap<String, Vec<CatalogMachine>>,
    /// 6PN address → region of the machine holding it (the asker's region).
    regions: BTreeMap<Ipv6Addr, String>,
    /// App name → its TXT values, made once per catalog rather than per query.
    texts: BTreeMap<String, AppTexts>,
    /// Network (`None`: every network) → `_apps`, `_instances`, `all._instances`.
    lists: BTreeMap<Option<u32>, [String; 3]>,
}

/// The TXT values under one app's name.
#[derive(Debug, Clone, Default)]
struct AppTexts {
    vms: String,
    all_vms: String,
    regions: String,
    all_regions: String,
}

fn started(machine: &CatalogMachine) -> bool {
    machine.state == MachineState::Started
}

impl Zone {
    pub fn new(catalog: &Arc<Catalog>) -> Zone {
        let mut zone = Zone::default();
        for app in &catalog.apps {
            zone.apps.insert(app.name.clone(), app.network);
            zone.machines.entry(app.name.clone()).or_default();
        }
        for machine in &catalog.machines {
            if let Some(ip) = machine.private_ip {
                zone.regions.insert(ip, machine.region.clone());
            }
            if machine.skip_registration || machine.private_ip.is_none() {
                continue;
            }
            if let Some(list) = zone.machines.get_mut(&machine.app) {
                list.push(machine.clone());
            }
        }
        for list in zone.machines.values_mut() {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        for (app, machines) in &zone.machines {
            let texts = AppTexts {
                vms: vms(machines.iter().filter(|m| started(m))),
                all_vms: vms(machines.iter()),
                regions: regions(machines.iter().filter(|m| started(m))),
                all_regions: regions(machines.iter()),
            };
            zone.texts.insert(app.clone(), texts);
        }
        let networks: BTreeSet<Option<u32>> = std::iter::once(None)
            .chain(zone.apps.values().map(|n| Some(*n)))
            .collect();
        for network in networks {
            let scope = network.map_or(Scope::All, Scope::Network);
            let lists = [
                zone.apps_in(scope).cloned().collect::<Vec<_>>().join(","),
                zone.instances(scope, true),
                zone.instances(scope, false),
            ];
            zone.lists.insert(network, lists);
        }
        zone
    }

    fn list(&self, scope: Scope, which: usize) -> Records {
        let key = match scope {
            Scope::All => None,
            Scope::Network(n) => Some(n),
        };
        Records {
            aaaa: Vec::new(),
            txt: Some(
                self.lists
                    .get(&key)
                    .map(|lists| lists[which].clone())
                    .unwrap_or_default(),
            ),
        }
    }

    /// The region of the machine at `address`, if it is one.
    pub fn region_of(&self, address: Ipv6Addr) -> Option<&str> {
        self.regions.get(&address).map(String::as_str)
    }

    fn visible(&self, app: &str, scope: Scope) -> bool {
        match (self.apps.get(app), scope) {
            (Some(_), Scope::All) => true,
            (Some(network), Scope::Network(asking)) => *network == asking,
            (None, _) => false,
        }
    }

    fn apps_in(&self, scope: Scope) -> impl Iterator<Item = &String> {
        self.apps.keys().filter(move |app| self.visible(app, scope))
    }

    /// What `name` (lowercase, no final dot, under `.internal`) holds for `scope`;
    /// `None` when the name does not exist (NXDOMAIN). `region` is the asker's region, for
    /// `top<N>.nearest.of.<app>`.
    pub fn lookup(&self, name: &str, scope: Scope, region: &str) -> Option<Records> {
        if name == ZONE {
            return Some(Records::default());
        }
        let rest = name.strip_suffix(".internal")?;
        match rest {
            "_apps" => return Some(self.list(scope, 0)),
            "_instances" => return Some(self.list(scope, 1)),
            "all._instances" => return Some(self.list(scope, 2)),
            _ => {}
        }
        let (prefix, app) = match rest.rsplit_once('.') {
            Some((prefix, app)) => (Some(prefix), app),
            None => (None, rest),
        };
        let machines = self.app(app, scope)?;
        match prefix {
            None => Some(aaaa(machines.iter().filter(|m| started(m)))),
            Some(prefix) => {
                let labels: Vec<&str> = prefix.split('.').collect();
                self.app_name(app, &labels, machines, region)
            }
        }
    }

    fn app(&self, app: &str, scope: Scope) -> Option<&[CatalogMachine]> {
        if !self.visible(app, scope) {
            return None;
        }
        self.machines.get(app).map(Vec::as_slice)
    }

    /// Names below `<app>.internal`; `prefix` is what comes before the app's label.
    fn app_name(
        &self,
        app: &str,
        prefix: &[&str],
        machines: &[CatalogMachine],
        region: &str,
    ) -> Option<Records> {
        let running = || machines.iter().filter(|m| started(m));
        let texts = self.texts.get(app);
        let text = |pick: fn(&AppTexts) -> &String| {
            Some(Records {
                aaaa: Vec::new(),
                txt: Some(texts.map(pick).cloned().unwrap_or_default()),
            })
        };
        match prefix {
            ["global"] => Some(aaaa(running())),
            ["vms"] => text(|t| &t.vms),
            ["all", "vms"] => text(|t| &t.all_vms),
            ["regions"] => text(|t| &t.regions),
            ["all", "regions"] => text(|t| &t.all_regions),
            [top, "nearest", "of"] => {
                let count: usize = top.strip_prefix("top")?.parse().ok()?;
                if count == 0 {
                    return None;
                }
                let mut nearest: Vec<&CatalogMachine> = running().collect();
                nearest.sort_by_key(|m| (m.region != region, m.id.clone()));
                Some(aaaa(nearest.into_iter().take(count)))
            }
            [id, "vm"] => {
                let machine = machines.iter().find(|m| m.id == *id)?;
                Some(aaaa(std::iter::once(machine).filter(|m| started(m))))
            }
            [group, "process"] => {
                let members = || machines.iter().filter(|m| m.process_group == *group);
                members().next()?;
                Some(aaaa(members().filter(|m| started(m))))
            }
            [value, key, "kv", "_metadata"] => {
                let members = || {
                    machines.iter().filter(|m| {
                        m.metadata
                            .get(*key)
                            .is_some_and(|v| v.eq_ignore_ascii_case(value))
                    })
                };
                members().next()?;
                Some(aaaa(members().filter(|m| started(m))))
            }
            [region_label] => {
                let members = || machines.iter().filter(|m| m.region == *region_label);
                members().next()?;
                Some(aaaa(members().filter(|m| started(m))))
            }
            _ => None,
        }
    }

    fn instances(&self, scope: Scope, only_started: bool) -> String {
        let mut entries = Vec::new();
        for app in self.apps_in(scope) {
            for machine in self.machines.get(app).into_iter().flatten() {
                if only_started && !started(machine) {
                    continue;
                }
                if let Some(ip) = machine.private_ip {
                    entries.push(format!(
                        "instance={},app={},ip={ip},region={}",
                        machine.id, machine.app, machine.region
                    ));
                }
            }
        }
        entries.join(";")
    }
}

fn aaaa<'a>(machines: impl Iterator<Item = &'a CatalogMachine>) -> Records {
    Records {
        aaaa: machines.filter_map(|m| m.private_ip).collect(),
        txt: None,
    }
}

fn vms<'a>(machines: impl Iterator<Item = &'a CatalogMachine>) -> String {
    machines
        .map(|m| format!("{} {}", m.id, m.region))
        .collect::<Vec<_>>()
        .join(",")
}

fn regions<'a>(machines: impl Iterator<Item = &'a CatalogMachine>) -> String {
    let set: BTreeSet<&str> = machines.map(|m| m.region.as_str()).collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_types::catalog::CatalogApp;

    fn machine(id: &str, app: &str, region: &str, state: MachineState, ip: &str) -> CatalogMachine {
        CatalogMachine {
            id: id.to_owned(),
            app: app.to_owned(),
            region: region.to_owned(),
            state,
            private_ip: Some(ip.parse().unwrap()),
            process_group: if id.starts_with('w') { "worker" } else { "app" }.to_owned(),
            metadata: BTreeMap::from([("role".to_owned(), "primary".to_owned())]),
            skip_registration: false,
            cordoned: false,
            services: Vec::new(),
            checks: Vec::new(),
            autostart_disabled: false,
            primary_region: None,
            statics: Vec::new(),
        }
    }

    fn zone() -> Zone {
        let catalog = Catalog {
            acme_challenges: Vec::new(),
            apps: vec![
                CatalogApp {
                    name: "web".into(),
                    org_id: "o1".into(),
                    network: 1,
                    ipv4: Vec::new(),
                    hostnames: Vec::new(),
                },
                CatalogApp {
                    name: "db".into(),
                    org_id: "o1".into(),
                    network: 1,
                    ipv4: Vec::new(),
                    hostnames: Vec::new(),
                },
                CatalogApp {
                    name: "other".into(),
                    org_id: "o2".into(),
                    network: 2,
                    ipv4: Vec::new(),
                    hostnames: Vec::new(),
                },
            ],
            machines: vec![
                machine(
                    "a1",
                    "web",
                    "ams",
                    MachineState::Started,
                    "fdaa:0:1:0:1:0:1:2",
                ),
                machine(
                    "a2",
                    "web",
                    "ord",
                    MachineState::Started,
                    "fdaa:0:1:0:1:0:2:2",
                ),
                machine(
                    "w3",
                    "web",
                    "ams",
                    MachineState::Stopped,
                    "fdaa:0:1:0:1:0:3:2",
                ),
                machine(
                    "o1",
                    "other",
                    "ams",
                    MachineState::Started,
                    "fdaa:0:2:0:1:0:4:2",
                ),
            ],
        };
        Zone::new(&Arc::new(catalog))
    }

    fn ips(records: Option<Records>) -> Vec<String> {
        records
            .unwrap()
            .aaaa
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_name_of_fly() {
        let zone = zone();
        let net = Scope::Network(1);
        let both = vec![
            "fdaa:0:1:0:1:0:1:2".to_owned(),
            "fdaa:0:1:0:1:0:2:2".to_owned(),
        ];
        assert_eq!(ips(zone.lookup("web.internal", net, "ams")), both);
        assert_eq!(ips(zone.lookup("global.web.internal", net, "ams")), both);
        assert_eq!(
            ips(zone.lookup("ord.web.internal", net, "ams")),
            vec!["fdaa:0:1:0:1:0:2:2"]
        );
        assert_eq!(
            ips(zone.lookup("top1.nearest.of.web.internal", net, "ord")),
            vec!["fdaa:0:1:0:1:0:2:2"]
        );
        assert_eq!(
            ips(zone.lookup("a1.vm.web.internal", net, "ams")),
            vec!["fdaa:0:1:0:1:0:1:2"]
        );
        assert_eq!(
            ips(zone.lookup("w3.vm.web.internal", net, "ams")),
            Vec::<String>::new(),
            "stopped: NODATA"
        );
        assert_eq!(
            ips(zone.lookup("worker.process.web.internal", net, "ams")),
            Vec::<String>::new()
        );
        assert_eq!(
            ips(zone.lookup("app.process.web.internal", net, "ams")),
            both
        );
        assert_eq!(
            ips(zone.lookup("primary.role.kv._metadata.web.internal", net, "ams")),
            both
        );
        let txt = |name: &str| zone.lookup(name, net, "ams").unwrap().txt.unwrap();
        assert_eq!(txt("vms.web.internal"), "a1 ams,a2 ord");
        assert_eq!(txt("all.vms.web.internal"), "a1 ams,a2 ord,w3 ams");
        assert_eq!(txt("regions.web.internal"), "ams,ord");
        assert_eq!(txt("_apps.internal"), "db,web");
        assert_eq!(
            txt("_instances.internal"),
            "instance=a1,app=web,ip=fdaa:0:1:0:1:0:1:2,region=ams;instance=a2,app=web,ip=fdaa:0:1:0:1:0:2:2,region=ord"
        );
        assert!(txt("all._instances.internal").contains("instance=w3"));
        assert_eq!(
            zone.lookup("db.internal", net, "ams"),
            Some(Records::default()),
            "no machines: NODATA"
        );
    }

    #[test]
    fn names_that_do_not_exist() {
        let zone = zone();
        let net = Scope::Network(1);
        for name in [
            "nope.internal",
            "syd.web.internal",
            "zz.vm.web.internal",
            "db.process.web.internal",
            "top0.nearest.of.web.internal",
            "x.y.z.web.internal",
            "other.internal",
        ] {
            assert_eq!(zone.lookup(name, net, "ams"), None, "{name}");
        }
    }

    #[test]
    fn a_network_sees_only_its_own_apps() {
        let zone = zone();
        assert_eq!(zone.lookup("web.internal", Scope::Network(2), "ams"), None);
        assert_eq!(
            zone.lookup("_apps.internal", Scope::Network(2), "ams")
                .unwrap()
                .txt
                .unwrap(),
            "other"
        );
        assert_eq!(
            zone.lookup("_apps.internal", Scope::All, "ams")
                .unwrap()
                .txt
                .unwrap(),
            "db,other,web"
        );
        assert_eq!(
            zone.lookup("_apps.internal", Scope::Network(9), "ams")
                .unwrap()
                .txt
                .unwrap(),
            ""
        );
    }
}
