//! `aloft scale count --region` and `aloft regions list` on a platform of simulated hosts
//! in two regions (`aloft-testplatform`'s `SimPlatform`, in real time: the control plane
//! and agents in this process, machines on the simulated runtime, no Docker).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

use aloft_testplatform::SimPlatform;
use aloft_types::api::MachineRequest;
use aloft_types::machine::MachineConfig;

use crate::text;

const APP: &str = "spread";

fn run(url: &str, token: &str, home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(args)
        .env("ALOFT_CONFIG_DIR", home)
        .env("ALOFT_API_URL", url)
        .env("ALOFT_API_TOKEN", token)
        .env("NO_COLOR", "1")
        .current_dir(home)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_count_spreads_a_group_over_regions_and_their_hosts() {
    let platform = SimPlatform::start_in(&["ams", "ams", "ord", "ord"]).await;
    let (url, token) = platform.api();
    let home = tempfile::tempdir().unwrap();
    let aloft =
        |args: &[&str]| tokio::task::block_in_place(|| run(&url, &token, home.path(), args));
    platform.client.create_app(APP, None).await.unwrap();
    // The app's first machine, as a deploy makes it, in its primary region.
    let mut first = MachineRequest::new(MachineConfig {
        image: "sim/app:1".to_owned(),
        ..MachineConfig::default()
    });
    first.region = Some("ams".to_owned());
    platform.client.create_machine(APP, &first).await.unwrap();

    let scaled = aloft(&["scale", "count", "4", "--region", "ams,ord", "-a", APP]);
    assert!(scaled.status.success(), "{}", text(&scaled.stderr));
    let machines = platform.client.list_machines(APP).await.unwrap();
    let mut per_region: BTreeMap<String, usize> = BTreeMap::new();
    for machine in &machines {
        *per_region.entry(machine.region.clone()).or_default() += 1;
    }
    assert_eq!(
        per_region,
        BTreeMap::from([("ams".to_owned(), 2), ("ord".to_owned(), 2)])
    );
    // Each on a host of its own (the group spreads over each region's two hosts).
    let mut hosts = BTreeSet::new();
    for host in 0..platform.hosts() {
        for machine in platform.runtime(host).running().into_keys() {
            assert!(hosts.insert(host), "host {host} runs two: {machine}");
        }
    }
    assert_eq!(hosts.len(), 4);

    // What cannot fit under --max-per-region is refused before anything changes.
    let refused = aloft(&[
        "scale",
        "count",
        "5",
        "--region",
        "ams,ord",
        "--max-per-region",
        "2",
        "-a",
        APP,
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("holds at most 4 machine(s), fewer than 5"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(platform.client.list_machines(APP).await.unwrap().len(), 4);
    // Down to one per region: each region gives back its newest.
    let down = aloft(&[
        "scale",
        "count",
        "2",
        "--region",
        "ams,ord",
        "--max-per-region",
        "1",
        "-a",
        APP,
    ]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    let live: Vec<String> = platform
        .client
        .list_machines(APP)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
        .map(|m| m.region)
        .collect();
    assert_eq!(live.iter().filter(|r| *r == "ams").count(), 1, "{live:?}");
    assert_eq!(live.iter().filter(|r| *r == "ord").count(), 1, "{live:?}");

    // flyctl's GROUP=N form: the machines have no process group of their own, `app`.
    let grouped = aloft(&[
        "scale", "count", "app=3", "--region", "ams,ord", "-a", APP, "--json",
    ]);
    assert!(grouped.status.success(), "{}", text(&grouped.stderr));
    let said: serde_json::Value = serde_json::from_slice(&grouped.stdout).unwrap();
    assert_eq!(said["process_group"], "app", "{said}");
    assert_eq!(said["count"], 3, "{said}");
    let unknown = aloft(&["scale", "count", "app=x", "-a", APP]);
    assert!(
        text(&unknown.stderr).contains("expected a number of machines, or GROUP=NUMBER"),
        "{}",
        text(&unknown.stderr)
    );

    let regions = aloft(&["regions", "list"]);
    let said = text(&regions.stdout);
    assert!(said.contains("ams") && said.contains("ord"), "{said}");
    platform.stop().await;
}
