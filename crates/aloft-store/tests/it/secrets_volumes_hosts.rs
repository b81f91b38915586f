use aloft_store::{Host, NewVolume, Store, StoreError, VolumeState, now_ms};
use aloft_types::machine::MachineConfig;
use aloft_types::{HostId, MachineState};

use crate::on_both_backends;

on_both_backends!(
    secrets_are_versioned,
    volumes_attach_to_one_machine,
    hosts_register_and_heartbeat
);

async fn secrets_are_versioned(store: Store) {
    let org = store.create_org("acme", "Acme").await.unwrap();
    let app = store
        .create_app(&"web".parse().unwrap(), &org.id, "default")
        .await
        .unwrap();
    let entry = |name: &str, cipher: &str| {
        (
            name.to_owned(),
            cipher.to_owned(),
            format!("digest-of-{cipher}"),
        )
    };
    assert_eq!(
        store
            .set_secrets(&app.id, &[entry("A", "c1"), entry("B", "c2")])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .set_secrets(&app.id, &[entry("A", "c3")])
            .await
            .unwrap(),
        2
    );
    let listed = store.list_secrets(&app.id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.name.as_str(), s.digest.as_str(), s.version))
            .collect::<Vec<_>>(),
        vec![("A", "digest-of-c3", 2), ("B", "digest-of-c2", 1)]
    );
    assert_eq!(
        store.secret_ciphertexts(&app.id).await.unwrap(),
        vec![
            ("A".to_owned(), "c3".to_owned()),
            ("B".to_owned(), "c2".to_owned())
        ]
    );
    assert!(matches!(
        store
            .unset_secrets(&app.id, &["B".to_owned(), "NOPE".to_owned()])
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.list_secrets(&app.id).await.unwrap().len(),
        2,
        "a failed unset removes nothing"
    );
    assert_eq!(
        store
            .unset_secrets(&app.id, &["B".to_owned()])
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.app_by_name("web").await.unwrap().secrets_version, 3);
}

async fn volumes_attach_to_one_machine(store: Store) {
    let org = store.create_org("acme", "Acme").await.unwrap();
    let app = store
        .create_app(&"web".parse().unwrap(), &org.id, "default")
        .await
        .unwrap();
    let volume = store
        .create_volume(NewVolume {
            app_id: app.id.clone(),
            name: "data".into(),
            region: "ams".into(),
            host_id: None,
            size_gb: 1,
            encrypted: true,
            snapshot_retention: 5,
        })
        .await
        .unwrap();
    assert_eq!(volume.state, VolumeState::Created);
    let machine = |name: &str| aloft_store::NewMachine {
        app_id: app.id.clone(),
        name: name.into(),
        region: "ams".into(),
        host_id: None,
        private_ip: None,
        config: MachineConfig::default(),
        state: MachineState::Created,
        desired: aloft_store::Desired::Started,
    };
    let one = store.insert_machine(machine("one")).await.unwrap();
    let two = store.insert_machine(machine("two")).await.unwrap();
    store
        .attach_volume(&app.id, &volume.id, &one.id)
        .await
        .unwrap();
    store
        .attach_volume(&app.id, &volume.id, &one.id)
        .await
        .expect("attaching again to the same machine is fine");
    let taken = store
        .attach_volume(&app.id, &volume.id, &two.id)
        .await
        .unwrap_err();
    assert!(taken.to_string().contains(one.id.as_str()), "{taken}");
    let attached = store.destroy_volume(&app.id, &volume.id).await.unwrap_err();
    assert!(
        attached.to_string().contains("attached to machine"),
        "{attached}"
    );

    assert_eq!(
        store
            .extend_volume(&app.id, &volume.id, 3)
            .await
            .unwrap()
            .size_gb,
        3
    );
    assert!(
        matches!(
            store.extend_volume(&app.id, &volume.id, 2).await,
            Err(StoreError::Conflict { .. })
        ),
        "volumes never shrink"
    );

    store.detach_volume(&app.id, &volume.id).await.unwrap();
    assert_eq!(
        store
            .destroy_volume(&app.id, &volume.id)
            .await
            .unwrap()
            .state,
        VolumeState::Destroyed
    );
    assert!(store.list_volumes(&app.id).await.unwrap().is_empty());
}

async fn hosts_register_and_heartbeat(store: Store) {
    let mut host = Host {
        id: HostId::generate([7; 8]),
        region: "ams".into(),
        cpus: 2,
        memory_mb: 24_000,
        address: Some("[fdaa::1]:4281".into()),
        last_heartbeat: now_ms(),
    };
    store.upsert_host(&host).await.unwrap();
    host.last_heartbeat += 1000;
    host.cpus = 4;
    store.upsert_host(&host).await.unwrap();
    assert_eq!(store.list_hosts().await.unwrap(), vec![host]);
}
