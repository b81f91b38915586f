use std::collections::BTreeMap;

use aloft_store::{App, MachineCaps, MachineFilter, NewMachine, Store, StoreError};
use aloft_types::MachineState;
use aloft_types::machine::MachineConfig;

use crate::on_both_backends;

on_both_backends!(
    machine_versions_states_and_filters,
    machine_events_and_leases,
    machine_caps_count_live_machines_of_the_app_and_the_org,
    a_rest_stops_a_started_machine_and_never_brings_one_back
);

async fn app(store: &Store) -> App {
    let org = store.create_org("acme", "Acme").await.unwrap();
    store
        .create_app(&"web".parse().unwrap(), &org.id, "default")
        .await
        .unwrap()
}

fn config(image: &str, group: &str) -> MachineConfig {
    MachineConfig {
        image: image.to_owned(),
        metadata: BTreeMap::from([("fly_process_group".to_owned(), group.to_owned())]),
        ..MachineConfig::default()
    }
}

fn new_machine(app: &App, name: &str, region: &str, group: &str) -> NewMachine {
    NewMachine {
        app_id: app.id.clone(),
        name: name.to_owned(),
        region: region.to_owned(),
        host_id: None,
        private_ip: None,
        config: config("busybox:1", group),
        state: MachineState::Created,
        desired: aloft_store::Desired::Started,
        cordoned: false,
        volume: None,
    }
}

async fn machine_versions_states_and_filters(store: Store) {
    let app = app(&store).await;
    let first = store
        .insert_machine(new_machine(&app, "one", "ams", "web"))
        .await
        .unwrap();
    let second = store
        .insert_machine(new_machine(&app, "two", "fra", "worker"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_machine(new_machine(&app, "one", "ams", "web"))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(first.version, 1);
    assert_eq!(store.machine(&app.id, &first.id).await.unwrap(), first);

    let by_region = store
        .list_machines(
            &app.id,
            &MachineFilter {
                region: Some("fra".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        by_region.iter().map(|m| &m.id).collect::<Vec<_>>(),
        vec![&second.id]
    );
    let by_metadata = store
        .list_machines(
            &app.id,
            &MachineFilter {
                metadata: vec![("fly_process_group".into(), "web".into())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        by_metadata.iter().map(|m| &m.id).collect::<Vec<_>>(),
        vec![&first.id]
    );

    let updated = store
        .update_machine_config(&app.id, &first.id, &config("busybox:2", "web"), Some(1))
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_ne!(updated.instance_id, first.instance_id);
    assert_eq!(updated.config.image, "busybox:2");
    assert!(matches!(
        store
            .update_machine_config(&app.id, &first.id, &config("busybox:3", "web"), Some(1))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let versions = store.versions(&first.id).await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.config.image.as_str()))
            .collect::<Vec<_>>(),
        vec![(2, "busybox:2"), (1, "busybox:1")]
    );

    assert_eq!(
        store
            .set_machine_state(&first.id, MachineState::Starting)
            .await
            .unwrap()
            .state,
        MachineState::Starting
    );
    store
        .set_machine_state(&first.id, MachineState::Started)
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_machine_state(&first.id, MachineState::Suspended)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    store
        .set_machine_state(&first.id, MachineState::Destroying)
        .await
        .unwrap();
    store
        .set_machine_state(&first.id, MachineState::Destroyed)
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_machine_state(&first.id, MachineState::Starting)
            .await,
        Err(StoreError::Conflict { .. })
    ));

    let alive = store
        .list_machines(&app.id, &MachineFilter::default())
        .await
        .unwrap();
    assert_eq!(
        alive.iter().map(|m| &m.id).collect::<Vec<_>>(),
        vec![&second.id]
    );
    let all = store
        .list_machines(
            &app.id,
            &MachineFilter {
                include_deleted: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 2);

    store.set_cordoned(&app.id, &second.id, true).await.unwrap();
    assert!(store.machine(&app.id, &second.id).await.unwrap().cordoned);

    let other = store.create_org("other", "Other").await.unwrap();
    let stranger = store
        .create_app(&"stranger".parse().unwrap(), &other.id, "default")
        .await
        .unwrap();
    assert!(
        matches!(
            store.machine(&stranger.id, &second.id).await,
            Err(StoreError::NotFound { .. })
        ),
        "a machine is only found through its own app"
    );
    assert!(
        matches!(
            store.delete_app(&app.id).await,
            Err(StoreError::Conflict { .. })
        ),
        "a machine is alive"
    );
}

async fn machine_events_and_leases(store: Store) {
    let app = app(&store).await;
    let machine = store
        .insert_machine(new_machine(&app, "one", "ams", "web"))
        .await
        .unwrap();

    let appends = (0..20).map(|i| {
        let store = store.clone();
        let id = machine.id.clone();
        tokio::spawn(async move {
            store
                .append_event(
                    &id,
                    aloft_types::EventKind::Exit,
                    "stopped",
                    "flyd",
                    &serde_json::json!({ "exit_event": { "exit_code": i } }),
                )
                .await
                .unwrap()
        })
    });
    let mut numbers: Vec<i64> = Vec::new();
    for append in appends {
        numbers.push(append.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=20).collect::<Vec<_>>(),
        "concurrent events are numbered without gaps or repeats"
    );
    let events = store.events(&machine.id).await.unwrap();
    assert_eq!(events.len(), 20);
    assert_eq!(events[0].seq, 20, "newest first");
    assert_eq!(
        events[0].request["exit_event"]["exit_code"]
            .as_i64()
            .map(|c| (0..20).contains(&c)),
        Some(true)
    );

    let lease = store
        .acquire_lease(
            &app.id,
            &machine.id,
            60_000,
            "deployer",
            "rolling deploy",
            None,
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .acquire_lease(&app.id, &machine.id, 60_000, "intruder", "", None)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let refreshed = store
        .acquire_lease(
            &app.id,
            &machine.id,
            120_000,
            "deployer",
            "rolling deploy",
            Some(&lease.nonce),
        )
        .await
        .unwrap();
    assert_eq!(refreshed.nonce, lease.nonce);
    assert!(refreshed.expires_at > lease.expires_at);
    assert_eq!(
        store
            .machine(&app.id, &machine.id)
            .await
            .unwrap()
            .lease
            .unwrap()
            .owner,
        "deployer"
    );
    assert!(matches!(
        store.release_lease(&app.id, &machine.id, "wrong").await,
        Err(StoreError::Conflict { .. })
    ));
    store
        .release_lease(&app.id, &machine.id, &lease.nonce)
        .await
        .unwrap();
    assert!(
        store
            .machine(&app.id, &machine.id)
            .await
            .unwrap()
            .lease
            .is_none()
    );

    let expired = store
        .acquire_lease(&app.id, &machine.id, -1, "gone", "", None)
        .await
        .unwrap();
    let taken = store
        .acquire_lease(&app.id, &machine.id, 60_000, "next", "", None)
        .await
        .unwrap();
    assert_ne!(
        taken.nonce, expired.nonce,
        "an expired lease does not block"
    );
}

async fn machine_caps_count_live_machines_of_the_app_and_the_org(store: Store) {
    let web = app(&store).await;
    let org = web.org_id.clone();
    let api = store
        .create_app(&"api".parse().unwrap(), &org, "default")
        .await
        .unwrap();
    let caps = MachineCaps {
        per_app: 2,
        per_org: 3,
    };
    let first = store
        .insert_machine_within(new_machine(&web, "a", "ams", "app"), caps)
        .await
        .unwrap();
    store
        .insert_machine_within(new_machine(&web, "b", "ams", "app"), caps)
        .await
        .unwrap();
    let refused = store
        .insert_machine_within(new_machine(&web, "c", "ams", "app"), caps)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::LimitReached {
                scope: "app",
                count: 2,
                limit: 2
            }
        ),
        "{refused:?}"
    );
    // Another app of the organization has room until the organization's limit.
    store
        .insert_machine_within(new_machine(&api, "a", "ams", "app"), caps)
        .await
        .unwrap();
    let refused = store
        .insert_machine_within(new_machine(&api, "b", "ams", "app"), caps)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StoreError::LimitReached {
                scope: "organization",
                count: 3,
                limit: 3
            }
        ),
        "{refused:?}"
    );
    // A destroyed machine no longer counts; nothing refused was stored.
    store
        .set_machine_state(&first.id, MachineState::Destroyed)
        .await
        .unwrap();
    store
        .insert_machine_within(new_machine(&web, "c", "ams", "app"), caps)
        .await
        .unwrap();
    let mut names: Vec<String> = store
        .list_machines(&web.id, &MachineFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    assert_eq!(names, ["b", "c"], "the live machines");
}

/// An exit that policy does not restart rests the machine: wanted started, it is now
/// wanted stopped; a machine wanted destroyed meanwhile (a destroy that raced the exit)
/// stays destroyed, and one given a new config meanwhile stays started.
async fn a_rest_stops_a_started_machine_and_never_brings_one_back(store: Store) {
    use aloft_store::Desired;
    let app = app(&store).await;
    let resting = store
        .insert_machine(new_machine(&app, "one", "ams", "web"))
        .await
        .unwrap();
    assert!(
        store
            .rest_machine(&resting.id, &resting.instance_id)
            .await
            .unwrap()
    );
    let rested = store.machine_by_id(&resting.id).await.unwrap();
    assert_eq!(rested.desired, Desired::Stopped, "the positive control");

    // The exit of a config the machine no longer has (a rollback restored it while the
    // failed release's run crashed) does not rest it.
    let updated = store
        .insert_machine(new_machine(&app, "three", "ams", "web"))
        .await
        .unwrap();
    let restored = store
        .update_machine_config(&app.id, &updated.id, &config("busybox:2", "web"), None)
        .await
        .unwrap();
    assert_ne!(restored.instance_id, updated.instance_id);
    assert!(
        !store
            .rest_machine(&updated.id, &updated.instance_id)
            .await
            .unwrap()
    );
    assert_eq!(
        store.machine_by_id(&updated.id).await.unwrap().desired,
        Desired::Started
    );

    let destroyed = store
        .insert_machine(new_machine(&app, "two", "ams", "web"))
        .await
        .unwrap();
    store
        .set_desired(&destroyed.id, Desired::Destroyed)
        .await
        .unwrap();
    assert!(
        !store
            .rest_machine(&destroyed.id, &destroyed.instance_id)
            .await
            .unwrap()
    );
    assert_eq!(
        store.machine_by_id(&destroyed.id).await.unwrap().desired,
        Desired::Destroyed
    );
    let unknown: aloft_types::MachineId = "148e21ea7d2e89".parse().unwrap();
    assert!(matches!(
        store.rest_machine(&unknown, "i").await,
        Err(StoreError::NotFound { .. })
    ));
}
