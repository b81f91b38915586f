//! Health-check results: the latest status and output of each check of a machine's
//! current run. A new run replaces the whole set; each result then updates one row.

use aloft_types::{AppId, MachineId};
use sqlx::Row;

use crate::{Store, StoreError};

pub use aloft_agent_api::CheckRecord;

const COLUMNS: &str = "c.machine_id, c.name, c.service, c.status, c.output, c.updated_at";

fn record_from(row: &sqlx::any::AnyRow) -> Result<CheckRecord, StoreError> {
    let machine: String =
        row.try_get(0)
            .map_err(StoreError::database("reading a check", "check", "*"))?;
    let name: String =
        row.try_get(1)
            .map_err(StoreError::database("reading a check", "check", &machine))?;
    let service: Option<i64> =
        row.try_get(2)
            .map_err(StoreError::database("reading a check", "check", &name))?;
    let status: String =
        row.try_get(3)
            .map_err(StoreError::database("reading a check", "check", &name))?;
    Ok(CheckRecord {
        machine_id: machine
            .parse()
            .map_err(|e| StoreError::corrupt("check", &name, e))?,
        service: service
            .map(usize::try_from)
            .transpose()
            .map_err(|e| StoreError::corrupt("check", &name, e))?,
        status: status
            .parse()
            .map_err(|e| StoreError::corrupt("check", &name, e))?,
        output: row
            .try_get(4)
            .map_err(StoreError::database("reading a check", "check", &name))?,
        updated_at: row.try_get(5).map_err(StoreError::database(
            "reading a check",
            "check",
            &name,
        ))?,
        name,
    })
}

fn service_column(record: &CheckRecord) -> Result<Option<i64>, StoreError> {
    record
        .service
        .map(i64::try_from)
        .transpose()
        .map_err(|e| StoreError::corrupt("check", &record.name, e))
}

impl Store {
    /// Replaces every check result of `machine` with `records` (a new run's checks).
    pub async fn replace_checks(
        &self,
        machine: &MachineId,
        records: &[CheckRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::database(
            "starting a transaction",
            "machine",
            machine.as_str(),
        ))?;
        sqlx::query("DELETE FROM machine_checks WHERE machine_id = $1")
            .bind(machine.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database(
                "clearing checks",
                "machine",
                machine.as_str(),
            ))?;
        for record in records {
            sqlx::query(
                "INSERT INTO machine_checks (machine_id, name, service, status, output, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(machine.as_str())
            .bind(&record.name)
            .bind(service_column(record)?)
            .bind(record.status.as_str())
            .bind(&record.output)
            .bind(record.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database("recording a check", "check", &record.name))?;
        }
        tx.commit().await.map_err(StoreError::database(
            "recording checks",
            "machine",
            machine.as_str(),
        ))
    }

    /// Records one check's result (inserting the check when the run had not named it).
    pub async fn record_check(&self, record: &CheckRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO machine_checks (machine_id, name, service, status, output, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (machine_id, name) DO UPDATE SET service = excluded.service, \
             status = excluded.status, output = excluded.output, updated_at = excluded.updated_at",
        )
        .bind(record.machine_id.as_str())
        .bind(&record.name)
        .bind(service_column(record)?)
        .bind(record.status.as_str())
        .bind(&record.output)
        .bind(record.updated_at)
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "recording a check",
            "check",
            &record.name,
        ))?;
        Ok(())
    }

    /// One machine's checks, by name.
    pub async fn checks_of(&self, machine: &MachineId) -> Result<Vec<CheckRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM machine_checks c WHERE c.machine_id = $1 ORDER BY c.name"
        ))
        .bind(machine.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing checks",
            "machine",
            machine.as_str(),
        ))?;
        rows.iter().map(record_from).collect()
    }

    /// The checks of an app's machines, by machine and name.
    pub async fn checks_of_app(&self, app: &AppId) -> Result<Vec<CheckRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM machine_checks c JOIN machines m ON m.id = c.machine_id \
             WHERE m.app_id = $1 ORDER BY c.machine_id, c.name"
        ))
        .bind(app.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("listing checks", "app", app.as_str()))?;
        rows.iter().map(record_from).collect()
    }

    /// The checks of every machine that is not destroyed (for the catalog).
    pub async fn live_checks(&self) -> Result<Vec<CheckRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM machine_checks c JOIN machines m ON m.id = c.machine_id \
             WHERE m.state <> 'destroyed' ORDER BY c.machine_id, c.name"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database("listing checks", "check", "*"))?;
        rows.iter().map(record_from).collect()
    }
}
