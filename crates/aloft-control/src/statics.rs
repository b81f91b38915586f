//! `[[statics]]` for the edge: a file of a running machine, opened by its host's agent.

use aloft_agent_api::StaticFile;
use aloft_types::{MachineId, MachineState};

use crate::{ApiError, Control};

impl Control {
    /// Opens `path` under `guest_path` in machine `id` for the edge (see
    /// [`aloft_agent_api::HostLink::open_static`]); `None` when the machine has no such
    /// mapping, is not started, or has no such file.
    pub async fn open_static(
        &self,
        id: &MachineId,
        guest_path: &str,
        path: &str,
    ) -> Result<Option<StaticFile>, ApiError> {
        let machine = self.inner.store.machine_by_id(id).await?;
        // Only a mapping of the machine's own config is read, whatever the caller names.
        let mapped = machine
            .config
            .statics
            .iter()
            .any(|s| s.guest_path == guest_path);
        if !mapped || machine.state != MachineState::Started {
            return Ok(None);
        }
        let link = crate::machines::host_link(&self.inner, &machine)?;
        match link.open_static(&machine, guest_path, path).await {
            Ok(file) => Ok(file),
            // Stopped meanwhile: the app's own answer (or its absence) decides.
            Err(aloft_agent_api::LinkError::NotRunning { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}
