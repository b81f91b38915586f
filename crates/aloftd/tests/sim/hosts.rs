//! Hosts and regions on simulated hosts (4 CPUs and 4 GB each): placement by region that
//! spreads a group over the hosts and refuses, naming the region and the resource, what
//! does not fit; cordon, uncordon and drain; and a host lost (power off: its agent gone,
//! its containers killed): its machines without volumes run again elsewhere within 30 s,
//! one with a volume shows `lost`, and the host back runs none of the moved machines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aloft_client::{Client, HostAction};
use aloft_testplatform::SimPlatform;
use aloft_types::api::MachineRequest;
use aloft_types::machine::{MachineConfig, MachineGuest, MachineMount};

use super::{paused_runtime, within};

const APP: &str = "placed";

fn request(region: &str) -> MachineRequest {
    let mut request = MachineRequest::new(MachineConfig {
        image: "sim:1".to_owned(),
        ..MachineConfig::default()
    });
    request.region = Some(region.to_owned());
    request
}

/// Which host runs each machine (by the hosts' runtimes).
fn placement(platform: &SimPlatform) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    for host in 0..platform.hosts() {
        for machine in platform.runtime(host).running().into_keys() {
            found.insert(machine, host);
        }
    }
    found
}

/// Waits until every one of `machines` runs somewhere; where each runs.
async fn running(
    platform: &SimPlatform,
    machines: &BTreeSet<String>,
) -> Result<BTreeMap<String, usize>, String> {
    within("the machines to run", Duration::from_secs(30), || async {
        let placed = placement(platform);
        machines
            .iter()
            .all(|m| placed.contains_key(m))
            .then_some(placed)
    })
    .await
}

async fn live(client: &Client) -> BTreeSet<String> {
    client
        .list_machines(APP)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
        .map(|m| m.id)
        .collect()
}

#[test]
fn machines_spread_over_their_regions_hosts_and_what_does_not_fit_is_refused() {
    paused_runtime().block_on(async {
        let platform = SimPlatform::start_in(&["ams", "ams", "ord", "ord"]).await;
        let client = &platform.client;
        client.create_app(APP, None).await.unwrap();
        let mut ids = BTreeSet::new();
        for region in ["ams", "ord", "ams", "ord"] {
            ids.insert(
                client
                    .create_machine(APP, &request(region))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let placed = running(&platform, &ids).await.unwrap();
        let hosts: BTreeSet<usize> = placed.values().copied().collect();
        assert_eq!(hosts.len(), 4, "one machine per host: {placed:?}");
        for machine in client.list_machines(APP).await.unwrap() {
            let host = placed[&machine.id];
            let expected = if host < 2 { "ams" } else { "ord" };
            assert_eq!(machine.region, expected, "{machine:?} on host {host}");
        }
        // ord's two hosts have 4 GB each, 256 MB taken: three 1 GB machines fit on each.
        let mut big = request("ord");
        big.config.guest = Some(MachineGuest {
            cpus: 1,
            memory_mb: 1024,
            ..MachineGuest::default()
        });
        for _ in 0..6 {
            client.create_machine(APP, &big).await.unwrap();
        }
        let refused = client
            .create_machine(APP, &big)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("no host in region ord can take the machine: memory is short"),
            "{refused}"
        );
        // ams still has room for the same machine.
        let mut elsewhere = big.clone();
        elsewhere.region = Some("ams".to_owned());
        client.create_machine(APP, &elsewhere).await.unwrap();
        let unknown = client
            .create_machine(APP, &request("syd"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains(
                "no host in region syd can take the machine (regions with hosts: ams, ord)"
            ),
            "{unknown}"
        );
        let hosts = client.platform_hosts().await.unwrap().hosts;
        assert_eq!(hosts.len(), 4);
        assert!(hosts.iter().all(|h| h.state == "up"), "{hosts:#?}");
        let ord: i64 = hosts
            .iter()
            .filter(|h| h.region == "ord")
            .map(|h| h.memory_reserved_mb)
            .sum();
        assert_eq!(ord, 2 * 256 + 6 * 1024, "{hosts:#?}");
        platform.stop().await;
    });
}

#[test]
fn a_cordoned_host_takes_nothing_new_and_a_drained_one_hands_its_machines_over() {
    paused_runtime().block_on(async {
        let platform = SimPlatform::start_in(&["ams", "ams"]).await;
        let client = &platform.client;
        client.create_app(APP, None).await.unwrap();
        let first = platform.host_id(0).to_string();
        client
            .set_host_state(&first, HostAction::Cordon)
            .await
            .unwrap();
        let mut ids = BTreeSet::new();
        for _ in 0..3 {
            ids.insert(
                client
                    .create_machine(APP, &request("ams"))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let placed = running(&platform, &ids).await.unwrap();
        assert!(
            placed.values().all(|h| *h == 1),
            "cordoned host 0 took one: {placed:?}"
        );
        // Both cordoned: nothing can be placed, and the refusal says why.
        let second = platform.host_id(1).to_string();
        client
            .set_host_state(&second, HostAction::Cordon)
            .await
            .unwrap();
        let refused = client
            .create_machine(APP, &request("ams"))
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("none is up"), "{refused}");
        assert!(
            refused.contains(&format!("{first} is cordoned")),
            "{refused}"
        );
        client
            .set_host_state(&first, HostAction::Uncordon)
            .await
            .unwrap();
        // Host 1 drains: each machine is replaced on host 0 (started) before it goes.
        let shown = client
            .set_host_state(&second, HostAction::Drain)
            .await
            .unwrap();
        assert_eq!(shown.state, "draining");
        let drained = within("host 1 to drain", Duration::from_secs(60), || async {
            let machines = live(client).await;
            let placed = placement(&platform);
            let handed_over = machines.len() == 3
                && machines.iter().all(|m| placed.get(m) == Some(&0))
                && platform.runtime(1).running().is_empty();
            handed_over.then_some(machines)
        })
        .await
        .unwrap();
        assert!(drained.is_disjoint(&ids), "every machine was replaced");
        platform.stop().await;
    });
}

#[test]
fn a_lost_hosts_machines_run_again_elsewhere_and_it_comes_back_without_them() {
    paused_runtime().block_on(async {
        let mut platform = SimPlatform::start_in(&["ams", "ams", "ord"]).await;
        platform.client.create_app(APP, None).await.unwrap();
        let mut ids = BTreeSet::new();
        for _ in 0..2 {
            let made = platform
                .client
                .create_machine(APP, &request("ams"))
                .await
                .unwrap();
            ids.insert(made.id);
        }
        let mut with_volume = request("ams");
        with_volume.config.mounts = vec![MachineMount {
            name: "data".to_owned(),
            path: "/data".to_owned(),
            ..MachineMount::default()
        }];
        let stateful = platform
            .client
            .create_machine(APP, &with_volume)
            .await
            .unwrap()
            .id;
        let mut all = ids.clone();
        all.insert(stateful.clone());
        let placed = running(&platform, &all).await.unwrap();
        let host = placed[&stateful];
        let moved: BTreeSet<String> = ids.iter().filter(|m| placed[*m] == host).cloned().collect();
        assert_eq!(
            moved.len(),
            1,
            "the two spread over ams's hosts: {placed:?}"
        );
        let killed = tokio::time::Instant::now();
        platform.kill_host(host).await;
        let client = platform.client.clone();
        let replaced = within("a replacement to run", Duration::from_secs(60), || async {
            let machines = live(&client).await;
            let placed = placement(&platform);
            let fresh: Vec<String> = machines.difference(&all).cloned().collect();
            (fresh.len() == 1 && placed.contains_key(&fresh[0]) && machines.is_disjoint(&moved))
                .then(|| fresh[0].clone())
        })
        .await
        .unwrap();
        let took = killed.elapsed();
        assert!(
            took <= Duration::from_secs(30),
            "replaced {took:?} after the kill"
        );
        let after = placement(&platform);
        assert_ne!(after[&replaced], host);
        let lost = client.machine(APP, &stateful).await.unwrap();
        assert_eq!(lost.state, "lost", "{lost:?}");
        assert_eq!(lost.host_status, "unreachable");
        // The lost machine leaves the routes and DNS; the replacement is in them.
        let routed: BTreeSet<String> = platform
            .catalog()
            .await
            .machines
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert!(!routed.contains(&stateful), "{routed:?}");
        assert!(routed.contains(&replaced), "{routed:?}");
        match client.machine(APP, moved.first().unwrap()).await {
            Ok(gone) => assert_eq!(gone.state, "destroyed", "{gone:?}"),
            Err(error) => assert!(error.to_string().contains("not found"), "{error}"),
        }
        let hosts = client.platform_hosts().await.unwrap().hosts;
        let down: Vec<&str> = hosts
            .iter()
            .filter(|h| h.state == "down")
            .map(|h| h.id.as_str())
            .collect();
        assert_eq!(down, [platform.host_id(host).to_string()]);
        // The host comes back: the moved machine's container goes, the stateful one runs.
        platform.revive_host(host);
        let back = within(
            "the host to come back clean",
            Duration::from_secs(60),
            || async {
                let running = platform.runtime(host).running();
                let stateful_runs = running.contains_key(&stateful);
                let duplicate = running.keys().any(|m| moved.contains(m));
                let state = client.machine(APP, &stateful).await.ok()?.state;
                (stateful_runs && !duplicate && state == "started").then_some(running)
            },
        )
        .await
        .unwrap();
        assert_eq!(back.len(), 1, "{back:?}");
        let routed = within(
            "the machine back in the routes",
            Duration::from_secs(30),
            || async {
                let catalog = platform.catalog().await;
                catalog
                    .machines
                    .iter()
                    .any(|m| m.id == stateful)
                    .then_some(())
            },
        )
        .await;
        assert!(routed.is_ok(), "{routed:?}");
        let per_machine: usize = (0..platform.hosts())
            .map(|h| platform.runtime(h).running().len())
            .sum();
        assert_eq!(per_machine, 3, "the app's three machines, each once");
        platform.stop().await;
    });
}

/// Fly's `standbys`: a stopped machine that stands by for another is started when that
/// one's host is lost, and the lost machine is not replaced as well; a stopped machine
/// that stands by for nothing stays stopped.
#[test]
fn a_standby_starts_when_the_host_of_its_machine_is_lost() {
    paused_runtime().block_on(async {
        let mut platform = SimPlatform::start_in(&["ams", "ord"]).await;
        let client = platform.client.clone();
        client.create_app(APP, None).await.unwrap();
        let watched = client
            .create_machine(APP, &request("ams"))
            .await
            .unwrap()
            .id;
        let mut standing_by = request("ord");
        standing_by.config.standbys = vec![watched.clone()];
        standing_by.skip_launch = true;
        let standby = client.create_machine(APP, &standing_by).await.unwrap().id;
        let mut idle = request("ord");
        idle.skip_launch = true;
        let idle = client.create_machine(APP, &idle).await.unwrap().id;
        let placed = running(&platform, &BTreeSet::from([watched.clone()]))
            .await
            .unwrap();
        assert_eq!(placed.len(), 1, "only the watched machine runs: {placed:?}");

        platform.kill_host(placed[&watched]).await;
        within("the standby to run", Duration::from_secs(60), || async {
            placement(&platform).contains_key(&standby).then_some(())
        })
        .await
        .unwrap();
        let events = client.events(APP, &standby).await.unwrap();
        assert!(
            events.iter().any(|e| e.kind == "start"
                && e.source == "flyd"
                && e.request.get("reason").and_then(|r| r.as_str()) == Some("standby")),
            "{events:?}"
        );
        // Its standby is its replacement: no other machine was made, the idle one rests.
        assert_eq!(
            live(&client).await,
            BTreeSet::from([watched.clone(), standby.clone(), idle.clone()])
        );
        assert!(!placement(&platform).contains_key(&idle));
    });
}
