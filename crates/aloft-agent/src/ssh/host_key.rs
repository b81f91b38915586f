//! The SSH server's settings and its host key (made on first use, kept in the agent's
//! data directory, readable by root only).

use std::sync::Arc;
use std::time::Duration;

use aloft_ssh::ca;
use aloft_ssh::russh::server;
use aloft_ssh::russh::{self, MethodKind, MethodSet};

use super::SshError;

/// Where the host key is kept in the agent's data directory.
pub(crate) const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// The server's settings, with the host key (made on first use, kept in the data dir).
pub(crate) fn server_config(data_dir: &std::path::Path) -> Result<Arc<server::Config>, SshError> {
    let path = data_dir.join(HOST_KEY_FILE);
    let key = match std::fs::read_to_string(&path) {
        Ok(text) => ca::private_from_openssh(&text).map_err(|e| SshError::HostKey {
            path: path.clone(),
            reason: e.to_string(),
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = crate::random();
            let key = ca::ed25519_from_seed(&seed);
            let text = ca::private_to_openssh(&key).map_err(|e| SshError::HostKey {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            write_private(&path, &text).map_err(|source| SshError::HostKeyFile {
                path: path.clone(),
                source,
            })?;
            key
        }
        Err(source) => return Err(SshError::HostKeyFile { path, source }),
    };
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    Ok(Arc::new(server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-aloft".into()),
        methods,
        keys: vec![key],
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        channel_buffer_size: aloft_ssh::CHANNEL_QUEUE,
        ..server::Config::default()
    }))
}

/// The host key, whole or not at all: a start killed while writing it leaves none, and
/// the next start makes one.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    aloft_crash::write_file(path, text.as_bytes(), 0o600)
}
