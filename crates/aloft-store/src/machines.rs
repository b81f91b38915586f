//! Machines: desired config (every version kept), state and cordons (their events and
//! versions are read in `machine_history.rs`, leases in `leases.rs`).

use aloft_types::machine::MachineConfig;
use aloft_types::{AppId, HostId, MachineId, MachineState, VolumeId};
use sqlx::any::AnyRow;

use crate::{Store, StoreError, column, now_ms, random, typed};

pub use aloft_agent_api::{Desired, Lease, MachineRecord};

/// What [`Store::insert_machine`] needs.
#[derive(Debug, Clone)]
pub struct NewMachine {
    pub app_id: AppId,
    pub name: String,
    pub region: String,
    pub host_id: Option<HostId>,
    pub private_ip: Option<String>,
    pub config: MachineConfig,
    pub state: MachineState,
    pub desired: Desired,
    /// Out of the proxy's rotation from the start.
    pub cordoned: bool,
    /// The volume the machine mounts, attached to it in the same transaction.
    pub volume: Option<VolumeId>,
}

/// Which machines [`Store::list_machines`] returns.
#[derive(Debug, Clone, Default)]
pub struct MachineFilter {
    pub region: Option<String>,
    /// Every `key=value` must be in the config's metadata.
    pub metadata: Vec<(String, String)>,
    /// Include destroyed machines.
    pub include_deleted: bool,
}

const COLUMNS: &str = "id, app_id, name, region, host_id, state, desired, version, instance_id, private_ip, config, \
                       cordoned, lease_nonce, lease_owner, lease_description, lease_expires_at, created_at, updated_at";

/// A new instance id: a ULID (time-ordered, 26 characters of Crockford base32).
fn instance_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let time = u128::try_from(now_ms()).unwrap_or(0) & ((1 << 48) - 1);
    let random: [u8; 10] = random();
    let value = (time << 80)
        | random
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    (0..26)
        .rev()
        .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

fn record_from(row: &AnyRow, now: i64) -> Result<MachineRecord, StoreError> {
    const WHAT: &str = "machine";
    let id: MachineId = typed(row, WHAT, "id")?;
    let config: String = column(row, WHAT, "config")?;
    let config = serde_json::from_str(&config)
        .map_err(|e| StoreError::corrupt("machine config", id.as_str(), e))?;
    let host_id: Option<String> = column(row, WHAT, "host_id")?;
    let lease = match (
        column::<Option<String>>(row, WHAT, "lease_nonce")?,
        column::<Option<i64>>(row, WHAT, "lease_expires_at")?,
    ) {
        (Some(nonce), Some(expires_at)) if expires_at > now => Some(Lease {
            nonce,
            owner: column::<Option<String>>(row, WHAT, "lease_owner")?.unwrap_or_default(),
            description: column::<Option<String>>(row, WHAT, "lease_description")?
                .unwrap_or_default(),
            expires_at,
        }),
        _ => None,
    };
    Ok(MachineRecord {
        app_id: typed(row, WHAT, "app_id")?,
        name: column(row, WHAT, "name")?,
        region: column(row, WHAT, "region")?,
        host_id: host_id.map(|h| crate::parse("host id", &h)).transpose()?,
        state: typed(row, WHAT, "state")?,
        desired: typed(row, WHAT, "desired")?,
        version: column(row, WHAT, "version")?,
        instance_id: column(row, WHAT, "instance_id")?,
        private_ip: column(row, WHAT, "private_ip")?,
        config,
        cordoned: column::<i64>(row, WHAT, "cordoned")? != 0,
        lease,
        created_at: column(row, WHAT, "created_at")?,
        updated_at: column(row, WHAT, "updated_at")?,
        id,
    })
}

fn config_json(id: &MachineId, config: &MachineConfig) -> Result<String, StoreError> {
    serde_json::to_string(config).map_err(|e| StoreError::corrupt("machine config", id.as_str(), e))
}

pub(crate) fn not_found(id: &MachineId) -> StoreError {
    StoreError::NotFound {
        what: "machine",
        id: id.to_string(),
    }
}

/// Limits on live (not destroyed) machines, checked as a machine is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineCaps {
    pub per_app: i64,
    pub per_org: i64,
}

impl MachineCaps {
    /// No limit.
    pub const NONE: MachineCaps = MachineCaps {
        per_app: i64::MAX,
        per_org: i64::MAX,
    };
}

/// Live machines of an app (`$1`).
const LIVE_OF_APP: &str =
    "(SELECT COUNT(*) FROM machines WHERE app_id = $1 AND state <> 'destroyed')";
/// Live machines of the organization of an app (`$1`).
const LIVE_OF_ORG: &str = "(SELECT COUNT(*) FROM machines m JOIN apps a ON a.id = m.app_id \
     WHERE a.org_id = (SELECT org_id FROM apps WHERE id = $1) AND m.state <> 'destroyed')";

impl Store {
    /// Stores a new machine at version 1.
    pub async fn insert_machine(&self, new: NewMachine) -> Result<MachineRecord, StoreError> {
        self.insert_machine_within(new, MachineCaps::NONE).await
    }

    /// Stores a new machine at version 1 unless its app or organization already has as
    /// many live machines as `caps` allow ([`StoreError::LimitReached`]). The count and
    /// the insert are one statement; the machine, its first version and its volume's
    /// attachment are one transaction (a crash leaves all or none of them, and a volume
    /// another machine took meanwhile refuses the machine: [`StoreError::Conflict`]).
    pub async fn insert_machine_within(
        &self,
        new: NewMachine,
        caps: MachineCaps,
    ) -> Result<MachineRecord, StoreError> {
        let id = MachineId::generate(random());
        let now = now_ms();
        let instance = instance_id();
        let config = config_json(&id, &new.config)?;
        let mut tx = self.pool().begin().await.map_err(StoreError::database(
            "starting a transaction",
            "machine",
            id.as_str(),
        ))?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO machines (app_id, id, name, region, host_id, state, desired, version, instance_id, private_ip, \
             config, cordoned, event_seq, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $14, 0, $11, $11 \
             WHERE {LIVE_OF_APP} < $12 AND {LIVE_OF_ORG} < $13"
        ))
        .bind(new.app_id.as_str())
        .bind(id.as_str())
        .bind(&new.name)
        .bind(&new.region)
        .bind(new.host_id.as_ref().map(|h| h.to_string()))
        .bind(new.state.as_str())
        .bind(new.desired.as_str())
        .bind(&instance)
        .bind(new.private_ip.clone())
        .bind(&config)
        .bind(now)
        .bind(caps.per_app)
        .bind(caps.per_org)
        .bind(i64::from(new.cordoned))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::database("creating a machine", "machine name", &new.name))?;
        if inserted.rows_affected() == 0 {
            let (app, org): (i64, i64) =
                sqlx::query_as(&format!("SELECT {LIVE_OF_APP}, {LIVE_OF_ORG}"))
                    .bind(new.app_id.as_str())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::database(
                        "counting machines",
                        "app",
                        new.app_id.as_str(),
                    ))?;
            return Err(if app >= caps.per_app {
                StoreError::LimitReached {
                    scope: "app",
                    count: app,
                    limit: caps.per_app,
                }
            } else {
                StoreError::LimitReached {
                    scope: "organization",
                    count: org,
                    limit: caps.per_org,
                }
            });
        }
        sqlx::query("INSERT INTO machine_versions (machine_id, version, instance_id, config, created_at) VALUES ($1, 1, $2, $3, $4)")
            .bind(id.as_str())
            .bind(&instance)
            .bind(&config)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database("recording a machine version", "machine", id.as_str()))?;
        if let Some(volume) = &new.volume {
            let attached = sqlx::query(
                "UPDATE volumes SET attached_machine_id = $1, updated_at = $4 WHERE id = $2 AND app_id = $3 \
                 AND state NOT IN ('destroyed', 'restoring') AND attached_machine_id IS NULL",
            )
            .bind(id.as_str())
            .bind(volume.as_str())
            .bind(new.app_id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database("attaching a volume", "volume", volume.as_str()))?;
            if attached.rows_affected() == 0 {
                drop(tx);
                return Err(self.attach_refused(&new.app_id, volume).await);
            }
        }
        tx.commit().await.map_err(StoreError::database(
            "creating a machine",
            "machine",
            id.as_str(),
        ))?;
        Ok(MachineRecord {
            id,
            app_id: new.app_id,
            name: new.name,
            region: new.region,
            host_id: new.host_id,
            state: new.state,
            desired: new.desired,
            version: 1,
            instance_id: instance,
            private_ip: new.private_ip,
            config: new.config,
            cordoned: new.cordoned,
            lease: None,
            created_at: now,
            updated_at: now,
        })
    }

    /// A machine of `app_id` (destroyed ones too).
    pub async fn machine(
        &self,
        app_id: &AppId,
        id: &MachineId,
    ) -> Result<MachineRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM machines WHERE id = $1 AND app_id = $2"
        ))
        .bind(id.as_str())
        .bind(app_id.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database(
            "finding a machine",
            "machine",
            id.as_str(),
        ))?;
        row.as_ref()
            .map(|r| record_from(r, now_ms()))
            .transpose()?
            .ok_or_else(|| not_found(id))
    }

    /// A machine by id alone (for host agents, which act on their own machines).
    pub async fn machine_by_id(&self, id: &MachineId) -> Result<MachineRecord, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM machines WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database(
                "finding a machine",
                "machine",
                id.as_str(),
            ))?;
        row.as_ref()
            .map(|r| record_from(r, now_ms()))
            .transpose()?
            .ok_or_else(|| not_found(id))
    }

    /// The machines of an app, oldest first.
    pub async fn list_machines(
        &self,
        app_id: &AppId,
        filter: &MachineFilter,
    ) -> Result<Vec<MachineRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM machines WHERE app_id = $1 ORDER BY created_at, id"
        ))
        .bind(app_id.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing machines",
            "app",
            app_id.as_str(),
        ))?;
        let now = now_ms();
        let mut machines = Vec::with_capacity(rows.len());
        for row in &rows {
            let machine = record_from(row, now)?;
            let wanted = (filter.include_deleted || machine.state != MachineState::Destroyed)
                && filter
                    .region
                    .as_ref()
                    .is_none_or(|region| *region == machine.region)
                && filter
                    .metadata
                    .iter()
                    .all(|(key, value)| machine.config.metadata.get(key) == Some(value));
            if wanted {
                machines.push(machine);
            }
        }
        Ok(machines)
    }

    /// The machines placed on a host that are not destroyed.
    pub async fn machines_on_host(
        &self,
        host_id: &HostId,
    ) -> Result<Vec<MachineRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM machines WHERE host_id = $1 AND state <> 'destroyed' ORDER BY created_at, id"))
            .bind(host_id.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(StoreError::database("listing a host's machines", "host", host_id.as_str()))?;
        let now = now_ms();
        rows.iter().map(|r| record_from(r, now)).collect()
    }

    /// Every machine that is not destroyed, of every app (for the catalog).
    pub async fn live_machines(&self) -> Result<Vec<MachineRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM machines WHERE state <> 'destroyed' ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("listing machines", "machine", "*"))?;
        let now = now_ms();
        rows.iter().map(|r| record_from(r, now)).collect()
    }

    /// Replaces a machine's config with a new version; when `expected_version` is given it
    /// must be the current one (optimistic concurrency).
    /// Sets (`Some`) or removes (`None`) one metadata key of a machine's current config,
    /// in place: no new version, so the machine does not restart (Fly's metadata
    /// endpoints). Returns the machine as it is afterwards.
    pub async fn set_machine_metadata(
        &self,
        app_id: &AppId,
        id: &MachineId,
        key: &str,
        value: Option<&str>,
    ) -> Result<MachineRecord, StoreError> {
        self.change_machine_metadata(app_id, id, &[(key, value)], None)
            .await
    }

    /// Sets (`Some`) and removes (`None`) metadata keys of a machine at once, in place (no
    /// new version). With `expected_version`, only while the machine is at that version.
    pub async fn change_machine_metadata(
        &self,
        app_id: &AppId,
        id: &MachineId,
        changes: &[(&str, Option<&str>)],
        expected_version: Option<i64>,
    ) -> Result<MachineRecord, StoreError> {
        let mut current = self.machine(app_id, id).await?;
        if current.state.is_terminal() {
            return Err(StoreError::Conflict {
                what: "machine",
                id: id.to_string(),
                reason: format!("it is {}", current.state),
            });
        }
        if let Some(expected) = expected_version.filter(|v| *v != current.version) {
            return Err(StoreError::Conflict {
                what: "machine",
                id: id.to_string(),
                reason: format!("it is at version {}, not {expected}", current.version),
            });
        }
        for (key, value) in changes {
            match value {
                Some(value) => {
                    current
                        .config
                        .metadata
                        .insert((*key).to_owned(), (*value).to_owned());
                }
                None => {
                    current.config.metadata.remove(*key);
                }
            }
        }
        let json = config_json(id, &current.config)?;
        let mut tx = self.pool().begin().await.map_err(StoreError::database(
            "starting a transaction",
            "machine",
            id.as_str(),
        ))?;
        let updated = sqlx::query(
            "UPDATE machines SET config = $1 WHERE id = $2 AND app_id = $3 AND version = $4",
        )
        .bind(&json)
        .bind(id.as_str())
        .bind(app_id.as_str())
        .bind(current.version)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::database(
            "setting metadata",
            "machine",
            id.as_str(),
        ))?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::Conflict {
                what: "machine",
                id: id.to_string(),
                reason: "it changed meanwhile; try again".to_owned(),
            });
        }
        sqlx::query(
            "UPDATE machine_versions SET config = $1 WHERE machine_id = $2 AND version = $3",
        )
        .bind(&json)
        .bind(id.as_str())
        .bind(current.version)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::database(
            "setting metadata",
            "machine",
            id.as_str(),
        ))?;
        tx.commit().await.map_err(StoreError::database(
            "setting metadata",
            "machine",
            id.as_str(),
        ))?;
        Ok(current)
    }

    pub async fn update_machine_config(
        &self,
        app_id: &AppId,
        id: &MachineId,
        config: &MachineConfig,
        expected_version: Option<i64>,
    ) -> Result<MachineRecord, StoreError> {
        let current = self.machine(app_id, id).await?;
        if current.state.is_terminal() {
            return Err(StoreError::Conflict {
                what: "machine",
                id: id.to_string(),
                reason: format!("it is {}", current.state),
            });
        }
        let expected = expected_version.unwrap_or(current.version);
        let now = now_ms();
        let instance = instance_id();
        let json = config_json(id, config)?;
        let mut tx = self.pool().begin().await.map_err(StoreError::database(
            "starting a transaction",
            "machine",
            id.as_str(),
        ))?;
        let updated = sqlx::query(
            "UPDATE machines SET version = version + 1, instance_id = $1, config = $2, updated_at = $3 \
             WHERE id = $4 AND app_id = $5 AND version = $6",
        )
        .bind(&instance)
        .bind(&json)
        .bind(now)
        .bind(id.as_str())
        .bind(app_id.as_str())
        .bind(expected)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::database("updating a machine", "machine", id.as_str()))?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::Conflict {
                what: "machine",
                id: id.to_string(),
                reason: format!("version {expected} is not the current version"),
            });
        }
        sqlx::query("INSERT INTO machine_versions (machine_id, version, instance_id, config, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id.as_str())
            .bind(expected + 1)
            .bind(&instance)
            .bind(&json)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database("recording a machine version", "machine", id.as_str()))?;
        tx.commit().await.map_err(StoreError::database(
            "updating a machine",
            "machine",
            id.as_str(),
        ))?;
        self.machine(app_id, id).await
    }

    /// Moves a machine to `next`, if the platform allows it from the current state.
    pub async fn set_machine_state(
        &self,
        id: &MachineId,
        next: MachineState,
    ) -> Result<MachineRecord, StoreError> {
        let current = self.machine_by_id(id).await?;
        self.move_machine(current, next).await
    }

    /// Moves a machine just read (`current`) to `next`, if the platform allows it from
    /// the state it was read in and nothing changed that state meanwhile (else a conflict);
    /// `current` with its new state and time (one write, no read).
    pub async fn move_machine(
        &self,
        current: MachineRecord,
        next: MachineState,
    ) -> Result<MachineRecord, StoreError> {
        let id = &current.id;
        if !current.state.can_become(next) {
            return Err(StoreError::Conflict {
                what: "machine",
                id: id.to_string(),
                reason: format!("cannot go from {} to {next}", current.state),
            });
        }
        let at = now_ms();
        let updated = sqlx::query(
            "UPDATE machines SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4",
        )
        .bind(next.as_str())
        .bind(at)
        .bind(id.as_str())
        .bind(current.state.as_str())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "changing a machine's state",
            "machine",
            id.as_str(),
        ))?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::Conflict {
                what: "machine",
                id: id.to_string(),
                reason: "its state changed meanwhile".to_owned(),
            });
        }
        Ok(MachineRecord {
            state: next,
            updated_at: at,
            ..current
        })
    }

    /// Sets what the agent should make of a machine.
    pub async fn set_desired(&self, id: &MachineId, desired: Desired) -> Result<(), StoreError> {
        let updated =
            sqlx::query("UPDATE machines SET desired = $1, updated_at = $2 WHERE id = $3")
                .bind(desired.as_str())
                .bind(now_ms())
                .bind(id.as_str())
                .execute(self.pool())
                .await
                .map_err(StoreError::database(
                    "setting a machine's desired state",
                    "machine",
                    id.as_str(),
                ))?;
        if updated.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// A machine whose process ended and that its policy does not restart rests: wanted
    /// started, it is now wanted stopped. Wanted stopped or destroyed meanwhile (a destroy
    /// that raced the exit), it stays as it is: a rest never brings a machine back. Only
    /// the run of `instance` (the config the exited process ran) rests it: a machine given
    /// a new config meanwhile (a rollback restoring it while the failed release's run
    /// crashed) stays wanted started. Whether it rests now.
    pub async fn rest_machine(&self, id: &MachineId, instance: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE machines SET desired = $1, updated_at = $2 WHERE id = $3 AND desired = $4 AND instance_id = $5",
        )
        .bind(Desired::Stopped.as_str())
        .bind(now_ms())
        .bind(id.as_str())
        .bind(Desired::Started.as_str())
        .bind(instance)
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "resting a machine",
            "machine",
            id.as_str(),
        ))?;
        if updated.rows_affected() == 0 {
            // Not there at all, or no longer wanted started or on that config (fine).
            self.machine_by_id(id).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Places a machine on a host (or takes it off one), with its private address.
    pub async fn place_machine(
        &self,
        id: &MachineId,
        host_id: Option<&HostId>,
        private_ip: Option<&str>,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE machines SET host_id = $1, private_ip = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(host_id.map(|h| h.to_string()))
        .bind(private_ip.map(str::to_owned))
        .bind(now_ms())
        .bind(id.as_str())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "placing a machine",
            "machine",
            id.as_str(),
        ))?;
        if updated.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// Cordons (no traffic) or uncordons a machine.
    /// Cordons (or uncordons) every machine of `ids` in one transaction: readers see all
    /// of them changed or none.
    pub async fn set_cordoned_all(
        &self,
        app_id: &AppId,
        ids: &[MachineId],
        cordoned: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::database(
            "starting a transaction",
            "app",
            app_id.as_str(),
        ))?;
        let now = now_ms();
        for id in ids {
            sqlx::query(
                "UPDATE machines SET cordoned = $1, updated_at = $2 WHERE id = $3 AND app_id = $4",
            )
            .bind(i64::from(cordoned))
            .bind(now)
            .bind(id.as_str())
            .bind(app_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database(
                "cordoning machines",
                "machine",
                id.as_str(),
            ))?;
        }
        tx.commit().await.map_err(StoreError::database(
            "cordoning machines",
            "app",
            app_id.as_str(),
        ))
    }

    pub async fn set_cordoned(
        &self,
        app_id: &AppId,
        id: &MachineId,
        cordoned: bool,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE machines SET cordoned = $1, updated_at = $2 WHERE id = $3 AND app_id = $4",
        )
        .bind(i64::from(cordoned))
        .bind(now_ms())
        .bind(id.as_str())
        .bind(app_id.as_str())
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "cordoning a machine",
            "machine",
            id.as_str(),
        ))?;
        if updated.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_ulids() {
        let id = instance_id();
        assert_eq!(id.len(), 26);
        assert!(
            id.bytes()
                .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)),
            "{id}"
        );
        assert_ne!(instance_id(), instance_id());
    }
}
