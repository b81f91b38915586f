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
