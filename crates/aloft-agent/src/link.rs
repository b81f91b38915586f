//! The host link: what the control plane asks of this host directly (exec, SSH, a
//! container's last log lines, processes, `[[statics]]` files).

use std::sync::Arc;
use std::time::Duration;

use aloft_agent_api::{
    BoxFuture, HostLink, LinkError, MachineRecord, SnapshotTaken, SshStream, StaticFile,
};
use aloft_runtime::{ContainerState, ExecOptions, Runtime};
use aloft_types::api::ExecResponse;

use super::Shared;
use crate::{LABEL_INSTANCE, error_chain, ssh};

/// A host-side failure as the contract's error, with its whole chain of causes.
pub(super) fn failed<E: std::error::Error>(operation: &'static str) -> impl Fn(E) -> LinkError {
    move |error| LinkError::Failed {
        operation,
        message: error_chain(&error),
    }
}

/// Runs file work off the async threads, its failure as the contract's error.
async fn blocking<T: Send + 'static>(
    operation: &'static str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, LinkError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| LinkError::Failed {
            operation,
            message: error.to_string(),
        })?
        .map_err(failed(operation))
}

/// The control plane's way into this host: runs commands in machines.
pub struct RuntimeLink<R: Runtime + 'static> {
    pub(super) shared: Arc<Shared<R>>,
}

impl<R: Runtime + 'static> std::fmt::Debug for RuntimeLink<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeLink")
            .field("host", &self.shared.config.host_id)
            .finish()
    }
}

impl<R: Runtime + 'static> RuntimeLink<R> {
    /// The running container of the machine's current version.
    async fn running_container(
        &self,
        machine: &MachineRecord,
    ) -> Result<aloft_runtime::ContainerInfo, LinkError> {
        let containers = self
            .shared
            .containers_of(&machine.id)
            .await
            .map_err(failed("listing the machine's containers"))?;
        containers
            .into_iter()
            .find(|c| {
                c.labels.get(LABEL_INSTANCE) == Some(&machine.instance_id)
                    && c.state == ContainerState::Running
            })
            .ok_or_else(|| LinkError::NotRunning {
                machine: machine.id.clone(),
                why: "has no running container".to_owned(),
            })
    }
}

impl<R: Runtime + 'static> HostLink for RuntimeLink<R> {
    fn exec<'a>(
        &'a self,
        machine: &'a MachineRecord,
        command: Vec<String>,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResponse, LinkError>> {
        Box::pin(async move {
            let container = self.running_container(machine).await?;
            let options = ExecOptions {
                tty: false,
                stdin,
                timeout: Some(timeout),
            };
            let output = self
                .shared
                .runtime
                .exec(&container.id, &command, &options)
                .await
                .map_err(failed("running the command"))?;
            Ok(ExecResponse {
                exit_code: output.exit_code,
                exit_signal: None,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        })
    }

    fn processes<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<Vec<aloft_types::api::ProcessStat>, LinkError>> {
        Box::pin(async move {
            let container = self.running_container(machine).await?;
            // A runtime that shows no host process (the simulated one) runs none to list.
            let Some(main) = container.pid else {
                return Ok(Vec::new());
            };
            tokio::task::spawn_blocking(move || {
                let proc = std::path::Path::new("/proc");
                crate::ps::read(proc, &crate::ps::pids_of(proc, main)?)
            })
            .await
            .map_err(failed("reading the machine's processes"))?
            .map_err(failed("reading the machine's processes"))
        })
    }

    fn open_static<'a>(
        &'a self,
        machine: &'a MachineRecord,
        guest_path: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<StaticFile>, LinkError>> {
        Box::pin(async move {
            let roots = &self.shared.roots;
            let main = match roots.get(&machine.instance_id) {
                Some(main) => main,
                None => {
                    let container = self.running_container(machine).await?;
                    // A runtime that shows no host process (the simulated one) has no
                    // files here.
                    let Some(main) = container.pid else {
                        return Ok(None);
                    };
                    roots.remember(&machine.instance_id, main);
                    main
                }
            };
            let root = std::path::PathBuf::from(format!("/proc/{main}/root"));
            let (guest_path, path) = (guest_path.to_owned(), path.to_owned());
            let opened = tokio::task::spawn_blocking(move || {
                crate::statics::open(&root, &guest_path, &path)
            })
            .await
            .map_err(failed("opening a static file"))?
            .map_err(failed("opening a static file"))?;
            Ok(opened.map(|(file, length)| StaticFile {
                length,
                body: Box::new(tokio::fs::File::from_std(file)),
            }))
        })
    }

    fn memory_limit<'a>(
        &'a self,
        machine: &'a MachineRecord,
    ) -> BoxFuture<'a, Result<u64, LinkError>> {
        Box::pin(async move {
            let container = self.running_container(machine).await?;
            let usage = self
                .shared
                .runtime
                .usage(&container.id)
                .await
                .map_err(failed("reading the machine's memory"))?;
            Ok(usage.memory_limit_bytes / (1024 * 1024))
        })
    }

    fn set_memory_limit<'a>(
        &'a self,
        machine: &'a MachineRecord,
        memory_mb: u64,
    ) -> BoxFuture<'a, Result<(), LinkError>> {
        Box::pin(async move {
            let container = self.running_container(machine).await?;
            self.shared
                .runtime
                .set_memory_limit(&container.id, memory_mb)
                .await
                .map_err(failed("changing the machine's memory limit"))?;
            tracing::info!(machine = %machine.id, memory_mb, "changed a machine's memory limit");
            Ok(())
        })
    }

    fn snapshot_volume<'a>(
        &'a self,
        volume: &'a aloft_types::VolumeId,
        key: Option<&'a aloft_agent_api::VolumeKey>,
        snapshot: &'a aloft_types::SnapshotId,
    ) -> BoxFuture<'a, Result<SnapshotTaken, LinkError>> {
        let data_dir = self.shared.config.data_dir.clone();
        let (volume, snapshot, key) = (volume.to_string(), snapshot.to_string(), key.cloned());
        Box::pin(async move {
            let (size, digest) = blocking("writing the snapshot", move || {
                crate::snapshots::take(&data_dir, &volume, key.as_ref(), &snapshot)
            })
            .await?;
            Ok(SnapshotTaken { size, digest })
        })
    }

    fn restore_volume<'a>(
        &'a self,
        snapshot: &'a aloft_types::SnapshotId,
        from: Option<&'a aloft_agent_api::VolumeKey>,
        volume: &'a aloft_types::VolumeId,
        into: &'a aloft_agent_api::VolumeFacts,
    ) -> BoxFuture<'a, Result<(), LinkError>> {
        let (data_dir, backing) = (
            self.shared.config.data_dir.clone(),
            self.shared.config.volumes,
        );
        let (volume, snapshot) = (volume.to_string(), snapshot.to_string());
        let (from, into) = (from.cloned(), into.clone());
        Box::pin(blocking("restoring the snapshot", move || {
            crate::snapshots::restore(&data_dir, backing, &snapshot, from.as_ref(), &volume, &into)
        }))
    }

    fn delete_volume<'a>(
        &'a self,
        volume: &'a aloft_types::VolumeId,
    ) -> BoxFuture<'a, Result<(), LinkError>> {
        let data_dir = self.shared.config.data_dir.clone();
        let volume = volume.to_string();
        Box::pin(blocking("deleting the volume's files", move || {
            crate::snapshots::delete_volume(&data_dir, &volume)
        }))
    }

    fn delete_snapshot<'a>(
        &'a self,
        snapshot: &'a aloft_types::SnapshotId,
    ) -> BoxFuture<'a, Result<(), LinkError>> {
        let data_dir = self.shared.config.data_dir.clone();
        let snapshot = snapshot.to_string();
        Box::pin(blocking("deleting the snapshot", move || {
            crate::snapshots::delete(&data_dir, &snapshot)
        }))
    }

    fn ssh<'a>(
        &'a self,
        machine: &'a MachineRecord,
        stream: Box<dyn SshStream>,
    ) -> BoxFuture<'a, Result<(), LinkError>> {
        Box::pin(async move {
            let config = self
                .shared
                .ssh_config()
                .await
                .map_err(|error| LinkError::Failed {
                    operation: "starting the SSH server",
                    message: error.to_string(),
                })?;
            ssh::serve(
                self.shared.clone(),
                config,
                stream,
                ssh::Via::Tunnel(Box::new(machine.clone())),
                None,
            )
            .await
            .map_err(|error| LinkError::Failed {
                operation: "serving the SSH session",
                message: error.to_string(),
            })
        })
    }

    fn last_lines<'a>(
        &'a self,
        machine: &'a MachineRecord,
        lines: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, LinkError>> {
        Box::pin(async move {
            let containers = self
                .shared
                .containers_of(&machine.id)
                .await
                .map_err(failed("listing the machine's containers"))?;
            // The newest run of the machine's current instance (or of any, when it has
            // none yet).
            let Some(container) = containers
                .iter()
                .filter(|c| c.labels.get(LABEL_INSTANCE) == Some(&machine.instance_id))
                .max_by(|a, b| a.started_at.cmp(&b.started_at))
                .or_else(|| {
                    containers
                        .iter()
                        .max_by(|a, b| a.started_at.cmp(&b.started_at))
                })
            else {
                return Ok(Vec::new());
            };
            let mut stream = self
                .shared
                .runtime
                .logs(&container.id, false, Some(lines), None);
            let mut shown = Vec::new();
            while let Some(line) = futures_util::StreamExt::next(&mut stream).await {
                let line = line.map_err(failed("reading the machine's log"))?;
                shown.push(line.text);
            }
            Ok(shown)
        })
    }
}
