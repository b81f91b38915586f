use aloft_store::{CheckRecord, NewMachine, Store};
use aloft_types::machine::MachineConfig;
use aloft_types::{CheckStatus, MachineId, MachineState};

use crate::on_both_backends;

on_both_backends!(checks_are_replaced_per_run_and_updated_per_result);

fn record(
    machine: &MachineId,
    name: &str,
    service: Option<usize>,
    status: CheckStatus,
) -> CheckRecord {
    CheckRecord {
        machine_id: machine.clone(),
        name: name.to_owned(),
        service,
        status,
        output: format!("{name} is {status}"),
        updated_at: 1_700_000_000_000,
    }
}

async fn checks_are_replaced_per_run_and_updated_per_result(store: Store) {
    let org = store.create_org("acme", "Acme").await.unwrap();
    let app = store
        .create_app(&"web".parse().unwrap(), &org.id, "default")
        .await
        .unwrap();
    let machine = store
        .insert_machine(NewMachine {
            app_id: app.id.clone(),
            name: "one".to_owned(),
            region: "ams".to_owned(),
            host_id: None,
            private_ip: None,
            config: MachineConfig::default(),
            state: MachineState::Started,
            desired: aloft_store::Desired::Started,
            cordoned: false,
            volume: None,
        })
        .await
        .unwrap();
    let id = &machine.id;

    let first = [
        record(
            id,
            "servicecheck-00-http-8080",
            Some(0),
            CheckStatus::Warning,
        ),
        record(id, "pg", None, CheckStatus::Warning),
    ];
    store.replace_checks(id, &first).await.unwrap();
    let mut stored = store.checks_of(id).await.unwrap();
    stored.sort_by(|a, b| a.name.cmp(&b.name));
    let mut expected = first.to_vec();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(stored, expected);

    // One result updates one row.
    let passing = CheckRecord {
        updated_at: 1_700_000_001_000,
        ..record(
            id,
            "servicecheck-00-http-8080",
            Some(0),
            CheckStatus::Passing,
        )
    };
    store.record_check(&passing).await.unwrap();
    let stored = store.checks_of(id).await.unwrap();
    assert!(stored.contains(&passing), "{stored:?}");
    assert_eq!(stored.len(), 2);
    assert_eq!(store.checks_of_app(&app.id).await.unwrap().len(), 2);
    assert_eq!(store.live_checks().await.unwrap().len(), 2);

    // A new run's set replaces the old one whole.
    let second = [record(
        id,
        "servicecheck-00-tcp-5432",
        Some(0),
        CheckStatus::Warning,
    )];
    store.replace_checks(id, &second).await.unwrap();
    assert_eq!(store.checks_of(id).await.unwrap(), second.to_vec());

    // A destroyed machine's checks are out of the live set.
    store
        .set_machine_state(id, MachineState::Destroyed)
        .await
        .unwrap();
    assert!(store.live_checks().await.unwrap().is_empty());
}
