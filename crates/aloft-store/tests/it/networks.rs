use aloft_store::{Desired, Host, NewMachine, Store, StoreError, now_ms};
use aloft_types::machine::MachineConfig;
use aloft_types::{HostId, MachineState};

use crate::on_both_backends;

on_both_backends!(network_host_and_machine_numbers_are_unique_and_stable);

async fn network_host_and_machine_numbers_are_unique_and_stable(store: Store) {
    let acme = store.create_org("acme", "Acme").await.unwrap();
    let other = store.create_org("other", "Other").await.unwrap();

    // Concurrent first uses of the same and of different networks.
    let mut tasks = Vec::new();
    for (org, name) in [
        (&acme, "default"),
        (&acme, "default"),
        (&acme, "backend"),
        (&other, "default"),
    ] {
        let store = store.clone();
        let org = org.id.clone();
        tasks.push(tokio::spawn(async move {
            store.network(&org, name).await.unwrap()
        }));
    }
    let mut networks = Vec::new();
    for task in tasks {
        networks.push(task.await.unwrap());
    }
    assert_eq!(networks[0], networks[1], "one network per org and name");
    let mut numbers: Vec<i64> = vec![networks[0].number, networks[2].number, networks[3].number];
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 3, "distinct networks get distinct numbers");
    assert_eq!(
        store.network(&acme.id, "backend").await.unwrap(),
        networks[2],
        "stable"
    );

    let mut hosts = Vec::new();
    for seed in [1u8, 2] {
        let host = Host {
            id: HostId::generate([seed; 8]),
            region: "ams".into(),
            cpus: 2,
            memory_mb: 1024,
            address: None,
            last_heartbeat: now_ms(),
            encrypts_volumes: false,
        };
        store.upsert_host(&host).await.unwrap();
        hosts.push(host.id);
    }
    let first = store.host_number(&hosts[0]).await.unwrap();
    let second = store.host_number(&hosts[1]).await.unwrap();
    assert_ne!(first, second);
    assert_eq!(store.host_number(&hosts[0]).await.unwrap(), first, "stable");
    assert!(matches!(
        store.host_number(&HostId::generate([9; 8])).await,
        Err(StoreError::NotFound { .. })
    ));

    let app = store
        .create_app(&"web".parse().unwrap(), &acme.id, "default")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for index in 0..6 {
        let store = store.clone();
        let new = NewMachine {
            app_id: app.id.clone(),
            name: format!("m{index}"),
            region: "ams".into(),
            host_id: Some(hosts[index % 2].clone()),
            private_ip: None,
            config: MachineConfig::default(),
            state: MachineState::Created,
            desired: Desired::Started,
            cordoned: false,
            volume: None,
        };
        tasks.push(tokio::spawn(async move {
            let machine = store.insert_machine(new).await.unwrap();
            let number = store.machine_number(&machine.id).await.unwrap();
            (machine.host_id.unwrap(), number, machine.id)
        }));
    }
    let mut numbered = Vec::new();
    for task in tasks {
        numbered.push(task.await.unwrap());
    }
    for host in &hosts {
        let mut on_host: Vec<i64> = numbered
            .iter()
            .filter(|(h, _, _)| h == host)
            .map(|(_, n, _)| *n)
            .collect();
        on_host.sort_unstable();
        assert_eq!(
            on_host,
            vec![1, 2, 3],
            "numbers on one host are unique, from 1"
        );
    }
    let (_, number, id) = &numbered[0];
    assert_eq!(store.machine_number(id).await.unwrap(), *number, "stable");
}
