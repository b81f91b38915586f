//! From a machine's config to the container that runs it.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use aloft_agent_api::MachineRecord;
use aloft_runtime::{BindMount, ContainerSpec};
use aloft_types::machine::{DnsConfig, METADATA_PROCESS_GROUP};
use aloft_types::{AppName, MachineId, Signal};
use base64::Engine as _;

use crate::AgentConfig;
use crate::env;

/// Every container the agent creates carries this label.
pub const LABEL_MANAGED: &str = "dev.aloft.managed";
/// The host whose agent owns the container.
pub const LABEL_HOST: &str = "dev.aloft.host";
/// The machine the container runs.
pub const LABEL_MACHINE: &str = "dev.aloft.machine";
/// The machine version (instance id) the container runs.
pub const LABEL_INSTANCE: &str = "dev.aloft.instance";

/// Why a machine's container could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("[[files]] {guest_path}: raw_value is not base64")]
    FileEncoding { guest_path: String },
    #[error("[[files]] {guest_path}: the app has no secret {secret}")]
    SecretFile { guest_path: String, secret: String },
    #[error("[[files]] guest_path {guest_path:?} must be an absolute path")]
    FilePath { guest_path: String },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a volume's data lives on the host.
pub(crate) fn volume_dir(data_dir: &Path, volume: &str) -> PathBuf {
    data_dir.join("volumes").join(volume).join("data")
}

/// Where a machine's files live on the host.
pub(crate) fn machine_dir(data_dir: &Path, machine: &MachineId) -> PathBuf {
    data_dir.join("machines").join(machine.as_str())
}

/// Sets `path`'s permission bits to `mode`, whatever the umask made them.
fn private(path: &Path, mode: u32) -> Result<(), SpecError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        SpecError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// A machine's `/etc/resolv.conf`: `fdaa::3`, unless its config names other servers.
pub(crate) fn resolv_conf(dns: Option<&DnsConfig>) -> String {
    let mut text = String::new();
    let servers = dns.map(|d| d.nameservers.as_slice()).unwrap_or_default();
    if servers.is_empty() {
        text.push_str(&format!("nameserver {}\n", aloft_net::DNS_ADDRESS));
    }
    for server in servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if let Some(searches) = dns.map(|d| &d.searches).filter(|s| !s.is_empty()) {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    text
}

/// A machine's `/etc/hosts`: loopback, then its 6PN address as `fly-local-6pn`, as
/// `fly-global-services` (where UDP services' packets arrive: Fly's apps bind
/// `fly-global-services:PORT`) and as its own name (its id, which is also its hostname).
pub(crate) fn hosts(private_ip: Ipv6Addr, machine: &MachineId) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{private_ip}\tfly-local-6pn\n{private_ip}\tfly-global-services\n{private_ip}\t{machine}\n"
    )
}

/// The container for the current version of `machine`. Writes the machine's `[[files]]`
/// under the data directory and mounts each, read-only, at its guest path.
pub fn container_spec(
    machine: &MachineRecord,
    app: &AppName,
    secrets: &BTreeMap<String, String>,
    private_ip: Ipv6Addr,
    config: &AgentConfig,
) -> Result<ContainerSpec, SpecError> {
    let machine_config = &machine.config;
    let init = &machine_config.init;
    let (entrypoint, cmd) = if !init.exec.is_empty() {
        (Some(init.exec.clone()), Some(Vec::new()))
    } else {
        (
            (!init.entrypoint.is_empty()).then(|| init.entrypoint.clone()),
            (!init.cmd.is_empty()).then(|| init.cmd.clone()),
        )
    };

    // A machine always runs within limits: what its guest leaves out is Fly's default size.
    let limits = aloft_types::machine::MachineGuest::limits(machine_config.guest.as_ref());
    let mut environment: BTreeMap<String, String> = machine_config.env.clone();
    let mut platform = vec![
        (env::FLY_APP_NAME, app.to_string()),
        (env::FLY_MACHINE_ID, machine.id.to_string()),
        (env::FLY_ALLOC_ID, machine.id.to_string()),
        (env::FLY_REGION, machine.region.clone()),
        (env::FLY_IMAGE_REF, machine_config.image.clone()),
        (env::FLY_MACHINE_VERSION, machine.instance_id.clone()),
        (
            env::FLY_PROCESS_GROUP,
            machine_config
                .metadata
                .get(METADATA_PROCESS_GROUP)
                .cloned()
                .unwrap_or_else(|| "app".to_owned()),
        ),
    ];
    platform.push((env::FLY_VM_MEMORY_MB, limits.memory_mb.to_string()));
    platform.push((env::FLY_PRIVATE_IP, private_ip.to_string()));
    for (name, value) in platform {
        if let Some(twin) = env::aloft_twin(name) {
            environment.insert(twin, value.clone());
        }
        environment.insert(name.to_owned(), value);
    }
    environment
        .entry(env::PRIMARY_REGION.to_owned())
        .or_insert_with(|| machine.region.clone());
    // Secrets override env of the same name.
    for (name, value) in secrets {
        environment.insert(name.clone(), value.clone());
    }

    let mut mounts = Vec::new();
    let files_dir = machine_dir(&config.data_dir, &machine.id)
        .join("files")
        .join(&machine.instance_id);
    for (index, file) in machine_config.files.iter().enumerate() {
        if !file.guest_path.starts_with('/') {
            return Err(SpecError::FilePath {
                guest_path: file.guest_path.clone(),
            });
        }
        let content = match (&file.raw_value, &file.secret_name) {
            (Some(raw), _) => base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|_| SpecError::FileEncoding {
                    guest_path: file.guest_path.clone(),
                })?,
            (None, Some(secret)) => {
                let value = secrets.get(secret).ok_or_else(|| SpecError::SecretFile {
                    guest_path: file.guest_path.clone(),
                    secret: secret.clone(),
                })?;
                base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .map_err(|_| SpecError::FileEncoding {
                        guest_path: file.guest_path.clone(),
                    })?
            }
            (None, None) => Vec::new(),
        };
        std::fs::create_dir_all(&files_dir).map_err(|source| SpecError::Write {
            path: files_dir.clone(),
            source,
        })?;
        // Only the machine reads its files (secrets among them): nobody else on the host.
        for dir in [files_dir.parent().unwrap_or(&files_dir), &files_dir] {
            private(dir, 0o700)?;
        }
        let path = files_dir.join(index.to_string());
        std::fs::write(&path, content).map_err(|source| SpecError::Write {
            path: path.clone(),
            source,
        })?;
        // Its mode in the machine: the config's (`chmod`'s bits), else 0644.
        private(&path, file.mode.map_or(0o644, |mode| mode & 0o7777))?;
        mounts.push(BindMount {
            source: path,
            target: file.guest_path.clone(),
            read_only: true,
        });
    }

    // The private network's names: resolv.conf points at fdaa::3 (or the config's own
    // name servers) and /etc/hosts knows the machine's address.
    let etc_dir = machine_dir(&config.data_dir, &machine.id).join("etc");
    std::fs::create_dir_all(&etc_dir).map_err(|source| SpecError::Write {
        path: etc_dir.clone(),
        source,
    })?;
    for (name, content) in [
        ("resolv.conf", resolv_conf(machine_config.dns.as_ref())),
        ("hosts", hosts(private_ip, &machine.id)),
    ] {
        let path = etc_dir.join(name);
        std::fs::write(&path, content).map_err(|source| SpecError::Write {
            path: path.clone(),
            source,
        })?;
        mounts.push(BindMount {
            source: path,
            target: format!("/etc/{name}"),
            read_only: false,
        });
    }

    for mount in &machine_config.mounts {
        let source = crate::volumes::bind_source(&volume_dir(&config.data_dir, &mount.volume));
        std::fs::create_dir_all(&source).map_err(|error| SpecError::Write {
            path: source.clone(),
            source: error,
        })?;
        mounts.push(BindMount {
            source,
            target: mount.path.clone(),
            read_only: false,
        });
    }

    let labels = BTreeMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_HOST.to_owned(), config.host_id.to_string()),
        (LABEL_MACHINE.to_owned(), machine.id.to_string()),
        (LABEL_INSTANCE.to_owned(), machine.instance_id.clone()),
    ]);
    Ok(ContainerSpec {
        name: format!("aloft-{}-{}", machine.id, machine.version),
        image: machine_config.image.clone(),
        entrypoint,
        cmd,
        env: environment,
        labels,
        hostname: Some(machine.id.to_string()),
        cpus: Some(f64::from(limits.cpus)),
        memory_mb: Some(u64::from(limits.memory_mb)),
        pids: Some(i64::from(limits.pids)),
        mounts,
        stop_signal: machine_config
            .stop_config
            .as_ref()
            .and_then(|s| s.signal)
            .unwrap_or(Signal::DEFAULT),
        tty: init.tty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_points_at_fdaa_3_unless_the_config_names_servers() {
        assert_eq!(resolv_conf(None), "nameserver fdaa::3\n");
        let custom = DnsConfig {
            nameservers: vec!["1.1.1.1".to_owned()],
            searches: vec!["internal".to_owned(), "example.com".to_owned()],
            ..DnsConfig::default()
        };
        assert_eq!(
            resolv_conf(Some(&custom)),
            "nameserver 1.1.1.1\nsearch internal example.com\n"
        );
    }

    #[test]
    fn hosts_name_the_machine_and_fly_local_6pn() {
        let id: MachineId = "3d8d9e3ec36689".parse().expect("a machine id");
        let text = hosts("fdaa:0:1:0:2:0:3:2".parse().expect("an address"), &id);
        assert!(text.contains("fdaa:0:1:0:2:0:3:2\tfly-local-6pn\n"));
        assert!(text.contains("fdaa:0:1:0:2:0:3:2\tfly-global-services\n"));
        assert!(text.contains("fdaa:0:1:0:2:0:3:2\t3d8d9e3ec36689\n"));
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
    }
}
