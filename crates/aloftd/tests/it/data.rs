use std::collections::BTreeMap;

use aloft_types::MachineState;
use aloft_types::api::{CreateVolumeRequest, MachineRequest};
use aloft_types::machine::{MachineFile, MachineMount};

use crate::{Host, Server};

fn sleeper(name: &str) -> MachineRequest {
    MachineRequest {
        name: Some(name.to_owned()),
        ..MachineRequest::new(crate::sleeper())
    }
}

async fn sh(server: &Server, app: &str, machine: &str, script: &str) -> String {
    let output = crate::sh(&server.client, app, machine, script, None).await;
    assert_eq!(output.exit_code, 0, "{script}: {}", output.stderr);
    output.stdout
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if aloft_testkit::file_holds(&path, needle) {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn secrets_reach_the_machine_and_are_never_stored_in_the_clear() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("secretive", None).await.unwrap();
    let marker = format!("plaintext-marker-{}", std::process::id());
    let values = BTreeMap::from([
        ("DB_PASSWORD".to_owned(), Some(marker.clone())),
        // base64 of "file from a secret"
        (
            "TLS_FILE".to_owned(),
            Some("ZmlsZSBmcm9tIGEgc2VjcmV0".to_owned()),
        ),
    ]);
    assert_eq!(
        client
            .update_secrets("secretive", values)
            .await
            .unwrap()
            .version,
        1
    );
    let listed = client.list_secrets("secretive").await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        vec!["DB_PASSWORD", "TLS_FILE"]
    );
    assert!(
        listed
            .iter()
            .all(|s| !s.digest.is_empty() && !s.digest.contains(&marker))
    );

    let mut request = sleeper("reader");
    request
        .config
        .env
        .insert("DB_PASSWORD".into(), "from-env".into());
    request.config.env.insert("PLAIN".into(), "visible".into());
    request.config.files.push(MachineFile {
        guest_path: "/etc/tls.pem".into(),
        secret_name: Some("TLS_FILE".into()),
        ..MachineFile::default()
    });
    request.min_secrets_version = Some(1);
    let machine = client.create_machine("secretive", &request).await.unwrap();
    client
        .wait("secretive", &machine.id, MachineState::Started, 60)
        .await
        .unwrap();
    assert_eq!(
        sh(
            &server,
            "secretive",
            &machine.id,
            "echo \"$DB_PASSWORD $PLAIN\""
        )
        .await,
        format!("{marker} visible\n"),
        "secrets override env"
    );
    assert_eq!(
        sh(&server, "secretive", &machine.id, "cat /etc/tls.pem").await,
        "file from a secret"
    );

    let too_new = MachineRequest {
        min_secrets_version: Some(2),
        ..sleeper("early")
    };
    assert_eq!(
        client
            .create_machine("secretive", &too_new)
            .await
            .unwrap_err()
            .status(),
        Some(412)
    );

    let leaks = files_containing(&server.data_dir, marker.as_bytes());
    assert!(leaks.is_empty(), "the secret's plaintext is in {leaks:?}");
}

#[tokio::test]
async fn volume_data_survives_stop_start_update_and_a_daemon_restart() {
    let host = Host::new();
    let mut server = Server::start(&host).await;
    server.client.create_app("stateful", None).await.unwrap();
    let volume = server
        .client
        .create_volume(
            "stateful",
            &CreateVolumeRequest {
                size_gb: Some(1),
                ..CreateVolumeRequest::named("data")
            },
        )
        .await
        .unwrap();
    let mut request = sleeper("writer");
    request.config.mounts.push(MachineMount {
        volume: volume.id.clone(),
        path: "/data".into(),
        ..MachineMount::default()
    });
    let machine = server
        .client
        .create_machine("stateful", &request)
        .await
        .unwrap();
    server
        .client
        .wait("stateful", &machine.id, MachineState::Started, 60)
        .await
        .unwrap();
    sh(&server, "stateful", &machine.id, "echo kept > /data/file").await;
    assert_eq!(
        server
            .client
            .volume("stateful", &volume.id)
            .await
            .unwrap()
            .attached_machine_id
            .as_deref(),
        Some(machine.id.as_str())
    );

    server
        .client
        .stop_machine("stateful", &machine.id, None, None)
        .await
        .unwrap();
    server
        .client
        .wait("stateful", &machine.id, MachineState::Stopped, 30)
        .await
        .unwrap();
    server
        .client
        .start_machine("stateful", &machine.id)
        .await
        .unwrap();
    server
        .client
        .wait("stateful", &machine.id, MachineState::Started, 60)
        .await
        .unwrap();
    assert_eq!(
        sh(&server, "stateful", &machine.id, "cat /data/file").await,
        "kept\n",
        "after stop and start"
    );

    let mut update = request.clone();
    update.config.image = aloft_testkit::busybox_image_v2().to_owned();
    update.config.env.insert("VERSION".into(), "2".into());
    let updated = server
        .client
        .update_machine("stateful", &machine.id, &update)
        .await
        .unwrap();
    assert_eq!(updated.version, "2");
    crate::machines_wait_version(&server, "stateful", &machine.id, &updated.instance_id).await;
    assert_eq!(
        sh(
            &server,
            "stateful",
            &machine.id,
            "cat /data/file; echo $VERSION"
        )
        .await,
        "kept\n2\n",
        "after an update"
    );

    let refused = server
        .client
        .destroy_volume("stateful", &volume.id)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");

    server.kill();
    let server = Server::start(&host).await;
    server
        .client
        .wait("stateful", &machine.id, MachineState::Started, 60)
        .await
        .unwrap();
    assert_eq!(
        sh(&server, "stateful", &machine.id, "cat /data/file").await,
        "kept\n",
        "after an aloftd restart"
    );

    server
        .client
        .destroy_machine("stateful", &machine.id, true)
        .await
        .unwrap();
    server
        .client
        .wait("stateful", &machine.id, MachineState::Destroyed, 30)
        .await
        .unwrap();
    let files = server.data_dir.join("volumes").join(&volume.id);
    assert!(
        files.join("data/files/file").exists(),
        "{}",
        files.display()
    );
    server
        .client
        .destroy_volume("stateful", &volume.id)
        .await
        .unwrap();
    assert!(
        !files.exists(),
        "a destroyed volume's files are deleted from the host: {}",
        files.display()
    );
    assert!(
        server
            .client
            .list_volumes("stateful")
            .await
            .unwrap()
            .is_empty()
    );
}

/// A machine of `app` that mounts `volume` at `/data`, started.
pub(crate) async fn mounting(server: &Server, app: &str, name: &str, volume: &str) -> String {
    let mut request = sleeper(name);
    request.config.mounts.push(MachineMount {
        volume: volume.to_owned(),
        path: "/data".into(),
        ..MachineMount::default()
    });
    let machine = server.client.create_machine(app, &request).await.unwrap();
    server
        .client
        .wait(app, &machine.id, MachineState::Started, 60)
        .await
        .unwrap();
    machine.id
}

#[tokio::test]
async fn a_snapshot_restores_into_a_new_volume_with_its_files_and_their_owners() {
    let host = Host::new();
    let server = Server::start(&host).await;
    server.client.create_app("snapping", None).await.unwrap();
    let volume = server
        .client
        .create_volume("snapping", &CreateVolumeRequest::named("data"))
        .await
        .unwrap();
    let writer = mounting(&server, "snapping", "writer", &volume.id).await;
    sh(
        &server,
        "snapping",
        &writer,
        "mkdir -p /data/pg && echo rows > /data/pg/table && chown -R 999:999 /data/pg && chmod 700 /data/pg",
    )
    .await;

    let snapshot = server
        .client
        .create_volume_snapshot("snapping", &volume.id)
        .await
        .unwrap();
    assert_eq!(snapshot.status, "created", "{snapshot:?}");
    assert!(snapshot.digest.starts_with("sha256:"), "{snapshot:?}");
    assert!(snapshot.size > 0, "{snapshot:?}");
    // Written after the snapshot: the copy must not have it.
    sh(&server, "snapping", &writer, "echo later > /data/later").await;
    let listed = server
        .client
        .volume_snapshots("snapping", &volume.id)
        .await
        .unwrap();
    assert_eq!(listed, vec![snapshot.clone()]);

    // A volume made from it: on the same host, as big as the snapshot's volume.
    let restored = server
        .client
        .create_volume(
            "snapping",
            &CreateVolumeRequest {
                snapshot_id: Some(snapshot.id.clone()),
                ..CreateVolumeRequest::named("copy")
            },
        )
        .await
        .unwrap();
    assert_eq!(restored.state, "created");
    assert_eq!(restored.size_gb, volume.size_gb);
    let reader = mounting(&server, "snapping", "reader", &restored.id).await;
    assert_eq!(
        sh(
            &server,
            "snapping",
            &reader,
            // A volume is an ext4 filesystem: mkfs's lost+found is there too.
            "cat /data/pg/table; stat -c '%u:%g %a' /data/pg; ls /data | grep -v lost+found"
        )
        .await,
        "rows\n999:999 700\npg\n",
        "the copy holds the snapshot's files, owners and modes, and nothing written later"
    );
    // The original still has both (positive control of the `later` probe).
    assert_eq!(
        sh(
            &server,
            "snapping",
            &writer,
            "ls /data | grep -v lost+found"
        )
        .await,
        "later\npg\n"
    );

    // Deleting the app deletes its volumes' files and its snapshots' archives from the
    // host (each seen there first).
    let on_host = [
        server.data_dir.join("volumes").join(&volume.id),
        server.data_dir.join("volumes").join(&restored.id),
        server
            .data_dir
            .join("snapshots")
            .join(format!("{}.tar", snapshot.id)),
    ];
    for path in &on_host {
        assert!(path.exists(), "{}", path.display());
    }
    server.client.delete_app("snapping").await.unwrap();
    for path in &on_host {
        assert!(!path.exists(), "left behind: {}", path.display());
    }
}
