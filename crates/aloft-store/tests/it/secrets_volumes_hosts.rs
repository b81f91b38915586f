use aloft_store::{Host, NewVolume, SnapshotStatus, Store, StoreError, VolumeState, now_ms};
use aloft_types::machine::MachineConfig;
use aloft_types::{HostId, MachineState};

use crate::on_both_backends;

on_both_backends!(
    secrets_are_versioned,
    volumes_attach_to_one_machine,
    snapshots_are_recorded_before_they_are_taken,
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
            key_sealed: Some("sealed-key".into()),
            snapshot_retention: 5,
            auto_backup_enabled: true,
        })
        .await
        .unwrap();
    assert_eq!(volume.state, VolumeState::Created);
    // Its sealed key is kept as given.
    let read = store.volume(&app.id, &volume.id).await.unwrap();
    assert_eq!(read.key_sealed.as_deref(), Some("sealed-key"));
    assert!(read.encrypted);
    let machine = |name: &str| aloft_store::NewMachine {
        app_id: app.id.clone(),
        name: name.into(),
        region: "ams".into(),
        host_id: None,
        private_ip: None,
        config: MachineConfig::default(),
        state: MachineState::Created,
        desired: aloft_store::Desired::Started,
        cordoned: false,
        volume: None,
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
    // A machine stored with the taken volume is refused whole: no machine is left
    // behind without its volume.
    let three = store
        .insert_machine(aloft_store::NewMachine {
            volume: Some(volume.id.clone()),
            ..machine("three")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&three, StoreError::Conflict { what: "volume", .. }),
        "{three}"
    );
    assert!(three.to_string().contains(one.id.as_str()), "{three}");
    let names: Vec<String> = store
        .list_machines(&app.id, &aloft_store::MachineFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
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

async fn snapshots_are_recorded_before_they_are_taken(store: Store) {
    let org = store.create_org("acme", "Acme").await.unwrap();
    let app = store
        .create_app(&"web".parse().unwrap(), &org.id, "default")
        .await
        .unwrap();
    let new = |name: &str, backups: bool| NewVolume {
        app_id: app.id.clone(),
        name: name.into(),
        region: "ams".into(),
        host_id: Some(HostId::generate([3; 8])),
        size_gb: 2,
        encrypted: false,
        key_sealed: None,
        snapshot_retention: 7,
        auto_backup_enabled: backups,
    };
    let volume = store.create_volume(new("data", true)).await.unwrap();
    let quiet = store.create_volume(new("quiet", false)).await.unwrap();
    assert!(volume.auto_backup_enabled && !quiet.auto_backup_enabled);

    // Due a daily snapshot: only volumes with them on, made by the day's start.
    let start = volume.created_at.max(quiet.created_at);
    let due = store.volumes_due_snapshot(start).await.unwrap();
    assert_eq!(
        due.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["data"]
    );
    assert!(
        store.volumes_due_snapshot(-1).await.unwrap().is_empty(),
        "a volume newer than the day's start is not due"
    );

    let first = store.begin_snapshot(&volume).await.unwrap();
    assert_eq!(first.status, SnapshotStatus::Creating);
    assert_eq!((first.volume_size, first.retention_days), (2, 7));
    assert_eq!(first.host_id, volume.host_id);
    store
        .finish_snapshot(&first.id, 4096, "sha256:ab")
        .await
        .unwrap();
    let done = store.snapshot(&app.id, &first.id).await.unwrap();
    assert_eq!(
        (done.status, done.size, done.digest.as_str()),
        (SnapshotStatus::Created, 4096, "sha256:ab")
    );
    assert_eq!(done.expires_at(), done.created_at + 7 * 24 * 3600 * 1000);
    assert!(
        store
            .volumes_due_snapshot(done.created_at)
            .await
            .unwrap()
            .is_empty(),
        "a snapshot since the day's start satisfies it"
    );

    // One left `creating` by a control plane that died is failed at the next start.
    let second = store.begin_snapshot(&volume).await.unwrap();
    assert_eq!(
        store.fail_unfinished_snapshots(now_ms() + 1).await.unwrap(),
        1
    );
    assert_eq!(
        store.snapshot(&app.id, &second.id).await.unwrap().status,
        SnapshotStatus::Failed
    );
    let listed = store.snapshots_of_volume(&volume.id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(store.all_snapshots().await.unwrap().len(), 2);
    store.delete_snapshot(&second.id).await.unwrap();
    assert_eq!(
        store.snapshots_of_volume(&volume.id).await.unwrap(),
        vec![done]
    );

    // A volume left `restoring` is destroyed at the next start; restoring refuses mounts.
    let copy = store.create_volume(new("copy", true)).await.unwrap();
    store
        .set_volume_state(&app.id, &copy.id, VolumeState::Restoring)
        .await
        .unwrap();
    let machine = store
        .insert_machine(aloft_store::NewMachine {
            app_id: app.id.clone(),
            name: "m".into(),
            region: "ams".into(),
            host_id: None,
            private_ip: None,
            config: MachineConfig::default(),
            state: MachineState::Created,
            desired: aloft_store::Desired::Started,
            cordoned: false,
            volume: None,
        })
        .await
        .unwrap();
    let refused = store
        .attach_volume(&app.id, &copy.id, &machine.id)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("restored"), "{refused}");
    assert_eq!(store.abandon_restoring_volumes().await.unwrap(), 1);
    assert_eq!(
        store.volume(&app.id, &copy.id).await.unwrap().state,
        VolumeState::Destroyed
    );
    // Fly's volume update: each setting alone, the other kept.
    let on = store
        .update_volume_settings(&app.id, &quiet.id, None, Some(true))
        .await
        .unwrap();
    assert!(on.auto_backup_enabled);
    assert_eq!(on.snapshot_retention, 7);
    let longer = store
        .update_volume_settings(&app.id, &quiet.id, Some(30), None)
        .await
        .unwrap();
    assert_eq!(
        (longer.snapshot_retention, longer.auto_backup_enabled),
        (30, true)
    );
    let missing = aloft_types::VolumeId::generate([9; 16]);
    assert!(matches!(
        store
            .update_volume_settings(&app.id, &missing, Some(3), None)
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn hosts_register_and_heartbeat(store: Store) {
    let mut host = Host {
        id: HostId::generate([7; 8]),
        region: "ams".into(),
        cpus: 2,
        memory_mb: 24_000,
        address: Some("[fdaa::1]:4281".into()),
        last_heartbeat: now_ms(),
        encrypts_volumes: true,
    };
    store.upsert_host(&host).await.unwrap();
    host.last_heartbeat += 1000;
    host.cpus = 4;
    store.upsert_host(&host).await.unwrap();
    assert_eq!(store.list_hosts().await.unwrap(), vec![host]);
}
