//! Volumes are filesystems of their size: a machine that fills one gets "No space left"
//! at the volume's size (and the host's disk is spared), an extended volume grows at its
//! machine's restart keeping its files, and a destroyed one leaves no mount, image or
//! loop device behind.

use aloft_types::MachineState;
use aloft_types::api::CreateVolumeRequest;

use crate::{Host, Server};

/// Runs a shell script in a machine: (exit code, stdout + stderr).
async fn run(server: &Server, app: &str, machine: &str, script: &str) -> (i64, String) {
    let output = crate::sh(&server.client, app, machine, script, None).await;
    (
        output.exit_code,
        format!("{}{}", output.stdout, output.stderr),
    )
}

/// The size of the filesystem at `/data` in the machine, in MiB (`df -k`); `None`
/// while the machine cannot run it (restarting).
async fn data_size_mb(server: &Server, app: &str, machine: &str) -> Option<u64> {
    let output = server
        .client
        .exec(
            app,
            machine,
            vec!["sh".into(), "-c".into(), "df -k /data | tail -1".into()],
            None,
        )
        .await
        .ok()?;
    let kb: u64 = output.stdout.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Whether anything is mounted at `path` on this host.
pub(crate) fn mounted(path: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|line| line.split_whitespace().nth(4) == Some(&*path.to_string_lossy()))
}

#[tokio::test]
async fn a_volume_holds_its_size_and_no_more_grows_when_extended_and_leaves_nothing() {
    let host = Host::new();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("sized", None).await.unwrap();
    let volume = client
        .create_volume(
            "sized",
            &CreateVolumeRequest {
                size_gb: Some(1),
                ..CreateVolumeRequest::named("data")
            },
        )
        .await
        .unwrap();
    let machine = crate::data::mounting(&server, "sized", "filler", &volume.id).await;
    let root = server.data_dir.join("volumes").join(&volume.id);
    assert!(
        mounted(&root.join("data")),
        "the volume's filesystem is mounted"
    );
    let size = data_size_mb(&server, "sized", &machine).await;
    assert!(
        size.is_some_and(|mb| (900..=1024).contains(&mb)),
        "a 1 GB volume: {size:?} MiB"
    );

    // The positive control: room is there up to the size...
    let (code, output) = run(
        &server,
        "sized",
        &machine,
        "dd if=/dev/zero of=/data/some bs=1M count=64 2>&1 && echo kept > /data/file",
    )
    .await;
    assert_eq!(code, 0, "{output}");
    // ...and not past it.
    let (code, output) = run(
        &server,
        "sized",
        &machine,
        "dd if=/dev/zero of=/data/more bs=1M count=1200 2>&1",
    )
    .await;
    assert_ne!(code, 0, "1.2 GB into a 1 GB volume: {output}");
    assert!(output.contains("No space left"), "{output}");
    let (_, output) = run(&server, "sized", &machine, "rm /data/more; sync").await;
    assert!(!output.contains("No such"), "{output}");

    // Extended while its machine runs: the room comes with a restart, files kept.
    let extended = client.extend_volume("sized", &volume.id, 2).await.unwrap();
    assert!(extended.needs_restart, "its machine runs on it");
    client.restart_machine("sized", &machine).await.unwrap();
    let size = aloft_testkit::eventually(
        "the restarted machine to see 2 GB",
        std::time::Duration::from_secs(60),
        || async {
            data_size_mb(&server, "sized", &machine)
                .await
                .filter(|mb| *mb > 1024)
        },
    )
    .await;
    assert!((1900..=2048).contains(&size), "a 2 GB volume: {size} MiB");
    client
        .wait("sized", &machine, MachineState::Started, 60)
        .await
        .unwrap();
    let (code, kept) = run(&server, "sized", &machine, "cat /data/file").await;
    assert_eq!((code, kept.trim()), (0, "kept"));

    // Destroyed: no mount, no image.
    client
        .destroy_machine("sized", &machine, true)
        .await
        .unwrap();
    aloft_testkit::eventually(
        "the volume to be free",
        std::time::Duration::from_secs(30),
        || async {
            let volume = client.volume("sized", &volume.id).await.ok()?;
            volume.attached_machine_id.is_none().then_some(())
        },
    )
    .await;
    client.destroy_volume("sized", &volume.id).await.unwrap();
    aloft_testkit::eventually(
        "the volume's filesystem to go",
        std::time::Duration::from_secs(30),
        || async { (!mounted(&root.join("data")) && !root.exists()).then_some(()) },
    )
    .await;
    drop(server);
}

/// Volumes are encrypted at rest by default: what a machine writes (a file's text and
/// its name) is ciphertext in the volume's image on the host's disk and in its
/// snapshot's archive. A volume asked not to be encrypted is the positive control: its
/// image and archive show the text. After a host restart (aloftd down, the filesystems
/// unmounted, so the kernel forgot the keys) the control plane hands the key again and
/// the files read back; a volume restored from the snapshot is encrypted too.
#[tokio::test]
async fn volumes_are_encrypted_at_rest_and_read_back_after_a_host_restart() {
    let host = Host::new();
    let mut server = Server::start(&host).await;
    let client = &server.client;
    client.create_app("vault", None).await.unwrap();
    let sealed = client
        .create_volume("vault", &CreateVolumeRequest::named("sealed"))
        .await
        .unwrap();
    let plain = client
        .create_volume(
            "vault",
            &CreateVolumeRequest {
                encrypted: Some(false),
                ..CreateVolumeRequest::named("plain")
            },
        )
        .await
        .unwrap();
    assert!(sealed.encrypted && !plain.encrypted, "{sealed:?} {plain:?}");
    let marker = format!("volume-plaintext-{}", std::process::id());
    let mut machines = Vec::new();
    for volume in [&sealed, &plain] {
        let machine = crate::data::mounting(&server, "vault", &volume.name, &volume.id).await;
        let (code, output) = run(
            &server,
            "vault",
            &machine,
            &format!("echo {marker} > /data/{marker}.txt && sync && cat /data/{marker}.txt"),
        )
        .await;
        assert_eq!((code, output.trim()), (0, marker.as_str()));
        machines.push(machine);
    }
    let mut archives = Vec::new();
    for volume in [&sealed, &plain] {
        let snapshot = client
            .create_volume_snapshot("vault", &volume.id)
            .await
            .unwrap();
        let archive = server
            .data_dir
            .join("snapshots")
            .join(format!("{}.tar", snapshot.id));
        archives.push((snapshot.id, archive));
    }
    assert!(!aloft_testkit::file_holds(
        &archives[0].1,
        marker.as_bytes()
    ));
    assert!(
        aloft_testkit::file_holds(&archives[1].1, marker.as_bytes()),
        "the plain volume's archive shows the text (the probe works)"
    );

    for machine in &machines {
        client
            .stop_machine("vault", machine, None, None)
            .await
            .unwrap();
        client
            .wait("vault", machine, MachineState::Stopped, 30)
            .await
            .unwrap();
    }
    // The host restarts: aloftd goes, and its filesystems are unmounted.
    server.kill();
    for volume in [&sealed, &plain] {
        let data = server
            .data_dir
            .join("volumes")
            .join(&volume.id)
            .join("data");
        let status = std::process::Command::new("umount")
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success() && !mounted(&data), "{}", data.display());
    }
    let image = |volume: &aloft_types::api::VolumeResponse| {
        server
            .data_dir
            .join("volumes")
            .join(&volume.id)
            .join("disk.ext4")
    };
    assert!(
        !aloft_testkit::file_holds(&image(&sealed), marker.as_bytes()),
        "the encrypted volume's image shows its file's text"
    );
    assert!(
        aloft_testkit::file_holds(&image(&plain), marker.as_bytes()),
        "the plain volume's image shows the text (the probe works)"
    );

    let server = Server::start(&host).await;
    let client = &server.client;
    client.start_machine("vault", &machines[0]).await.unwrap();
    client
        .wait("vault", &machines[0], MachineState::Started, 60)
        .await
        .unwrap();
    let (code, output) = run(
        &server,
        "vault",
        &machines[0],
        &format!("cat /data/{marker}.txt"),
    )
    .await;
    assert_eq!(
        (code, output.trim()),
        (0, marker.as_str()),
        "after the restart"
    );

    let copy = client
        .create_volume(
            "vault",
            &CreateVolumeRequest {
                snapshot_id: Some(archives[0].0.clone()),
                ..CreateVolumeRequest::named("copy")
            },
        )
        .await
        .unwrap();
    assert!(copy.encrypted, "{copy:?}");
    let reader = crate::data::mounting(&server, "vault", "reader", &copy.id).await;
    let (code, output) = run(
        &server,
        "vault",
        &reader,
        &format!("cat /data/{marker}.txt"),
    )
    .await;
    assert_eq!(
        (code, output.trim()),
        (0, marker.as_str()),
        "the restored copy"
    );
    client.delete_app("vault").await.unwrap();
}
