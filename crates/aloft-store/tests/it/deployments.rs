use aloft_store::{NewDeployment, NewMachine, Store, StoreError};
use aloft_types::MachineState;
use aloft_types::deploy::{DeploymentStatus, ReleaseStatus, StepKind, Strategy};
use aloft_types::machine::MachineConfig;

use crate::on_both_backends;

on_both_backends!(releases_are_numbered_per_app_and_deployments_log_their_steps);

fn deploy(app: &aloft_types::AppId, image: &str) -> NewDeployment {
    NewDeployment {
        app_id: app.clone(),
        image: image.to_owned(),
        config: MachineConfig {
            image: image.to_owned(),
            ..MachineConfig::default()
        },
        description: format!("deploy {image}"),
        created_by: "ci".to_owned(),
        strategy: Strategy::Rolling,
        max_unavailable: 0.33,
        wait_timeout_ms: 300_000,
        initial_count: 2,
        release_command: None,
        release_command_timeout_ms: None,
        release_command_guest: None,
        smoke_check_ms: 10_000,
        scope: None,
        fly_toml: Some(format!("app = \"x\"\n# {image}\n")),
    }
}

async fn releases_are_numbered_per_app_and_deployments_log_their_steps(store: Store) {
    let org = store.create_org("acme", "Acme").await.unwrap();
    let web = store
        .create_app(&"web".parse().unwrap(), &org.id, "default")
        .await
        .unwrap();
    let api = store
        .create_app(&"api".parse().unwrap(), &org.id, "default")
        .await
        .unwrap();

    let (first, deployment) = store
        .insert_deployment(deploy(&web.id, "one"))
        .await
        .unwrap();
    let mut with_command = deploy(&web.id, "two");
    with_command.release_command = Some(vec!["migrate".to_owned(), "--all".to_owned()]);
    with_command.release_command_timeout_ms = Some(60_000);
    with_command.release_command_guest =
        aloft_types::machine::MachineGuest::preset("shared-cpu-2x");
    assert!(with_command.release_command_guest.is_some());
    with_command.scope = Some(aloft_types::deploy::DeployScope {
        machines: vec!["d8e0f1a2b3c4d5".to_owned()],
        regions: vec!["ams".to_owned()],
    });
    let (second, commanded) = store.insert_deployment(with_command).await.unwrap();
    assert_eq!(
        store.deployment(&web.id, &commanded.id).await.unwrap(),
        commanded,
        "the release command, its timeout and its guest, and the scope, are kept"
    );
    let (other, _) = store
        .insert_deployment(deploy(&api.id, "three"))
        .await
        .unwrap();
    assert_eq!((first.version, second.version, other.version), (1, 2, 1));
    assert_eq!(first.config.image, "one");
    let releases = store.releases_of(&web.id).await.unwrap();
    assert_eq!(
        releases.iter().map(|r| r.version).collect::<Vec<_>>(),
        [2, 1],
        "newest first"
    );
    assert_eq!(store.release(&first.id).await.unwrap(), first);
    // Each release keeps the fly.toml it was deployed from; with none complete, the app's
    // is its newest release's.
    assert_eq!(
        store.release_fly_toml(&first.id).await.unwrap().as_deref(),
        Some("app = \"x\"\n# one\n")
    );
    assert_eq!(
        store.app_fly_toml(&web.id).await.unwrap(),
        Some((2, "app = \"x\"\n# two\n".to_owned()))
    );
    let mut bare = deploy(&api.id, "four");
    bare.fly_toml = None;
    let (unsent, _) = store.insert_deployment(bare).await.unwrap();
    assert_eq!(store.release_fly_toml(&unsent.id).await.unwrap(), None);
    assert_eq!(
        store.app_fly_toml(&api.id).await.unwrap(),
        Some((1, "app = \"x\"\n# three\n".to_owned())),
        "a release deployed without its file leaves the last one sent"
    );

    assert_eq!(store.active_deployments().await.unwrap().len(), 4);
    let read = store.deployment(&web.id, &deployment.id).await.unwrap();
    assert_eq!(read, deployment);
    assert!(read.is_active());
    assert!(
        store.deployment(&api.id, &deployment.id).await.is_err(),
        "another app's deployment is not found"
    );

    let machine = store
        .insert_machine(NewMachine {
            app_id: web.id.clone(),
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
    let before = MachineConfig {
        image: "zero".to_owned(),
        ..MachineConfig::default()
    };
    store
        .append_step(
            &deployment.id,
            None,
            StepKind::Note,
            "rolling 1 machine",
            None,
        )
        .await
        .unwrap();
    let update = store
        .append_step(
            &deployment.id,
            Some(&machine.id),
            StepKind::Update,
            "to release 1",
            Some(&before),
        )
        .await
        .unwrap();
    let steps = store.steps_of(&deployment.id).await.unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1], update);
    assert_eq!(steps[1].number, 2);
    assert_eq!(steps[1].previous_config.as_ref(), Some(&before));
    assert_eq!(steps[0].machine_id, None);
    // Every deployment's steps of an app in one read, numbered per deployment; another
    // app's are not among them.
    let other_deployment = store.deployments_of(&api.id).await.unwrap().remove(0);
    store
        .append_step(&other_deployment.id, None, StepKind::Note, "api", None)
        .await
        .unwrap();
    store
        .append_step(&commanded.id, None, StepKind::Note, "second", None)
        .await
        .unwrap();
    let by_deployment = store.steps_of_app(&web.id).await.unwrap();
    assert_eq!(by_deployment.len(), 2, "{by_deployment:?}");
    assert_eq!(by_deployment[&deployment.id], steps);
    assert_eq!(
        by_deployment[&commanded.id]
            .iter()
            .map(|s| (s.number, s.message.as_str()))
            .collect::<Vec<_>>(),
        [(1, "second")]
    );
    assert_eq!(
        store.steps_of_app(&api.id).await.unwrap()[&other_deployment.id].len(),
        1
    );

    // Only a rollback ends rolled back: a running deployment cannot skip it, and a
    // refused change leaves the deployment as it was.
    let skipped = store
        .set_deployment_status(&deployment.id, DeploymentStatus::RolledBack, None)
        .await;
    assert!(
        matches!(&skipped, Err(StoreError::Conflict { reason, .. })
            if reason == "the deployment is running; it cannot become rolled_back"),
        "{skipped:?}"
    );
    assert_eq!(
        store.deployment(&web.id, &deployment.id).await.unwrap(),
        read
    );
    for status in [
        DeploymentStatus::RollingBack,
        DeploymentStatus::RollingBack,
        DeploymentStatus::RolledBack,
    ] {
        store
            .set_deployment_status(&deployment.id, status, Some("machine x failed"))
            .await
            .unwrap();
    }
    store
        .set_release_status(&first.id, ReleaseStatus::Failed)
        .await
        .unwrap();
    // A final status stays final.
    let revived = store
        .set_deployment_status(&deployment.id, DeploymentStatus::Running, None)
        .await;
    assert!(
        matches!(revived, Err(StoreError::Conflict { .. })),
        "{revived:?}"
    );
    let completed = store
        .set_release_status(&first.id, ReleaseStatus::Complete)
        .await;
    assert!(
        matches!(completed, Err(StoreError::Conflict { .. })),
        "{completed:?}"
    );
    assert!(matches!(
        store
            .set_release_status("nope", ReleaseStatus::Failed)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    let done = store.deployment(&web.id, &deployment.id).await.unwrap();
    assert_eq!(done.status, "rolled_back");
    assert_eq!(done.error.as_deref(), Some("machine x failed"));
    assert!(!done.is_active());
    assert_eq!(store.active_deployments().await.unwrap().len(), 3);
    assert_eq!(store.release(&first.id).await.unwrap().status, "failed");

    // A complete release's file wins over a newer one still deploying (or failed).
    store
        .set_release_status(&second.id, ReleaseStatus::Complete)
        .await
        .unwrap();
    store
        .insert_deployment(deploy(&web.id, "five"))
        .await
        .unwrap();
    assert_eq!(
        store.app_fly_toml(&web.id).await.unwrap(),
        Some((2, "app = \"x\"\n# two\n".to_owned()))
    );
}
