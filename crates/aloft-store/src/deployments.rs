//! Releases and deployments. A release is numbered per app (1, 2, ...) and keeps the image
//! and machine config it rolls out; a deployment rolls one release out and logs every step
//! (with the config a machine had before it was changed), so the control plane can resume
//! or undo it after a restart.

use std::collections::HashMap;

use aloft_types::deploy::{DeployScope, DeploymentStatus, ReleaseStatus, StepKind, Strategy};
use aloft_types::machine::{MachineConfig, MachineGuest};
use aloft_types::{AppId, MachineId};
use sqlx::Row;

use crate::{Store, StoreError, now_ms, random_hex};

/// Attempts at numbering a release when concurrent deploys race for the next number.
const NUMBERING_ATTEMPTS: usize = 8;

/// One release of an app.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseRecord {
    pub id: String,
    pub app_id: AppId,
    pub version: i64,
    pub image: String,
    pub config: MachineConfig,
    pub status: ReleaseStatus,
    pub description: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One deployment of a release.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRecord {
    pub id: String,
    pub app_id: AppId,
    pub release_id: String,
    pub strategy: Strategy,
    /// A fraction of the machines when below 1, a count of machines from 1 up.
    pub max_unavailable: f64,
    pub wait_timeout_ms: i64,
    /// Machines to create when the app has none of the release's process group.
    pub initial_count: i64,
    /// Run once in a temporary machine before any machine changes.
    pub release_command: Option<Vec<String>>,
    pub release_command_timeout_ms: Option<i64>,
    /// The release command machine's guest; `None`: the release's own.
    pub release_command_guest: Option<MachineGuest>,
    /// How long each new machine must keep running without an exit before it counts as
    /// started (smoke checks); 0 turns them off.
    pub smoke_check_ms: i64,
    /// The machines of the group it changes; `None`: all of them.
    pub scope: Option<DeployScope>,
    pub status: DeploymentStatus,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl DeploymentRecord {
    /// Whether the deployment still has work to do.
    pub fn is_active(&self) -> bool {
        self.status.is_active()
    }
}

/// What a deployment did to one machine (or noted for all).
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentStep {
    pub number: i64,
    pub machine_id: Option<MachineId>,
    pub kind: StepKind,
    pub message: String,
    /// For `update`: the machine's config before the change.
    pub previous_config: Option<MachineConfig>,
    pub at: i64,
}

fn parse_config(what: &'static str, id: &str, json: &str) -> Result<MachineConfig, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt(what, id, e))
}

/// A name read from the store as the enum it is (an unknown one is corruption).
fn parse_name<T: std::str::FromStr<Err = aloft_types::deploy::UnknownName>>(
    what: &'static str,
    id: &str,
    name: &str,
) -> Result<T, StoreError> {
    name.parse().map_err(|e| StoreError::corrupt(what, id, e))
}

fn config_text(what: &'static str, id: &str, config: &MachineConfig) -> Result<String, StoreError> {
    serde_json::to_string(config).map_err(|e| StoreError::corrupt(what, id, e))
}

const RELEASE_COLUMNS: &str =
    "id, app_id, version, image, config, status, description, created_by, created_at, updated_at";

fn release_from(row: &sqlx::any::AnyRow) -> Result<ReleaseRecord, StoreError> {
    let id: String =
        row.try_get(0)
            .map_err(StoreError::database("reading a release", "release", "*"))?;
    let read = |e| StoreError::database("reading a release", "release", &id)(e);
    let app: String = row.try_get(1).map_err(read)?;
    let config: String = row.try_get(4).map_err(read)?;
    Ok(ReleaseRecord {
        app_id: app
            .parse()
            .map_err(|e| StoreError::corrupt("release", &id, e))?,
        version: row.try_get(2).map_err(read)?,
        image: row.try_get(3).map_err(read)?,
        config: parse_config("release", &id, &config)?,
        status: parse_name("release", &id, &row.try_get::<String, _>(5).map_err(read)?)?,
        description: row.try_get(6).map_err(read)?,
        created_by: row.try_get(7).map_err(read)?,
        created_at: row.try_get(8).map_err(read)?,
        updated_at: row.try_get(9).map_err(read)?,
        id,
    })
}

/// An optional JSON column of deployment `id`, read.
fn parse_json<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    id: &str,
) -> Result<Option<T>, StoreError> {
    text.map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| StoreError::corrupt("deployment", id, e))
}

/// An optional value of deployment `id` as its JSON column.
fn json_text<T: serde::Serialize>(
    value: Option<&T>,
    id: &str,
) -> Result<Option<String>, StoreError> {
    value
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::corrupt("deployment", id, e))
}

const DEPLOYMENT_COLUMNS: &str = "id, app_id, release_id, strategy, max_unavailable, wait_timeout_ms, initial_count, status, error, created_at, updated_at, release_command, release_command_timeout_ms, smoke_check_ms, release_command_guest, scope";

fn deployment_from(row: &sqlx::any::AnyRow) -> Result<DeploymentRecord, StoreError> {
    let id: String = row.try_get(0).map_err(StoreError::database(
        "reading a deployment",
        "deployment",
        "*",
    ))?;
    let read = |e| StoreError::database("reading a deployment", "deployment", &id)(e);
    let app: String = row.try_get(1).map_err(read)?;
    // The optional JSON columns: the release command, its guest, the scope.
    let json =
        |index: usize| -> Result<Option<String>, StoreError> { row.try_get(index).map_err(read) };
    let release_command = parse_json(json(11)?, &id)?;
    let release_command_guest = parse_json(json(14)?, &id)?;
    let scope = parse_json(json(15)?, &id)?;
    Ok(DeploymentRecord {
        scope,
        app_id: app
            .parse()
            .map_err(|e| StoreError::corrupt("deployment", &id, e))?,
        release_id: row.try_get(2).map_err(read)?,
        strategy: parse_name(
            "deployment",
            &id,
            &row.try_get::<String, _>(3).map_err(read)?,
        )?,
        max_unavailable: row.try_get(4).map_err(read)?,
        wait_timeout_ms: row.try_get(5).map_err(read)?,
        initial_count: row.try_get(6).map_err(read)?,
        status: parse_name(
            "deployment",
            &id,
            &row.try_get::<String, _>(7).map_err(read)?,
        )?,
        error: row.try_get(8).map_err(read)?,
        created_at: row.try_get(9).map_err(read)?,
        updated_at: row.try_get(10).map_err(read)?,
        release_command,
        release_command_timeout_ms: row.try_get(12).map_err(read)?,
        release_command_guest,
        smoke_check_ms: row.try_get(13).map_err(read)?,
        id,
    })
}

/// What a new deployment rolls out, and how.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub app_id: AppId,
    pub image: String,
    pub config: MachineConfig,
    pub description: String,
    pub created_by: String,
    pub strategy: Strategy,
    pub max_unavailable: f64,
    pub wait_timeout_ms: i64,
    pub initial_count: i64,
    pub release_command: Option<Vec<String>>,
    pub release_command_timeout_ms: Option<i64>,
    /// See [`DeploymentRecord::release_command_guest`].
    pub release_command_guest: Option<MachineGuest>,
    /// See [`DeploymentRecord::smoke_check_ms`].
    pub smoke_check_ms: i64,
    /// See [`DeploymentRecord::scope`].
    pub scope: Option<DeployScope>,
    /// The fly.toml the release is deployed from, when the client sent it.
    pub fly_toml: Option<String>,
}

impl Store {
    /// Numbers a new release of the app (one more than its last) and records a running
    /// deployment of it.
    pub async fn insert_deployment(
        &self,
        new: NewDeployment,
    ) -> Result<(ReleaseRecord, DeploymentRecord), StoreError> {
        let app = new.app_id.as_str();
        for _ in 0..NUMBERING_ATTEMPTS {
            let last: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM releases WHERE app_id = $1")
                    .bind(app)
                    .fetch_one(self.pool())
                    .await
                    .map_err(StoreError::database("numbering a release", "app", app))?;
            let now = now_ms();
            let release = ReleaseRecord {
                id: random_hex(),
                app_id: new.app_id.clone(),
                version: last.unwrap_or(0) + 1,
                image: new.image.clone(),
                config: new.config.clone(),
                status: ReleaseStatus::Running,
                description: new.description.clone(),
                created_by: new.created_by.clone(),
                created_at: now,
                updated_at: now,
            };
            let deployment = DeploymentRecord {
                id: random_hex(),
                app_id: new.app_id.clone(),
                release_id: release.id.clone(),
                strategy: new.strategy,
                max_unavailable: new.max_unavailable,
                wait_timeout_ms: new.wait_timeout_ms,
                initial_count: new.initial_count,
                release_command: new.release_command.clone(),
                release_command_timeout_ms: new.release_command_timeout_ms,
                release_command_guest: new.release_command_guest.clone(),
                smoke_check_ms: new.smoke_check_ms,
                scope: new.scope.clone(),
                status: DeploymentStatus::Running,
                error: None,
                created_at: now,
                updated_at: now,
            };
            let config = config_text("release", &release.id, &release.config)?;
            let release_command = json_text(deployment.release_command.as_ref(), &deployment.id)?;
            let release_command_guest =
                json_text(deployment.release_command_guest.as_ref(), &deployment.id)?;
            let scope = json_text(deployment.scope.as_ref(), &deployment.id)?;
            let mut tx = self.pool().begin().await.map_err(StoreError::database(
                "starting a transaction",
                "app",
                app,
            ))?;
            let inserted = sqlx::query(&format!(
                "INSERT INTO releases ({RELEASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(&release.id)
            .bind(app)
            .bind(release.version)
            .bind(&release.image)
            .bind(&config)
            .bind(release.status.as_str())
            .bind(&release.description)
            .bind(&release.created_by)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database("recording a release", "app", app));
            match inserted {
                Ok(_) => {}
                // Another deploy took this number first.
                Err(StoreError::Conflict { .. }) => continue,
                Err(error) => return Err(error),
            }
            sqlx::query(&format!(
                "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10, $11, $12, $13, $14, $15)"
            ))
            .bind(&deployment.id)
            .bind(app)
            .bind(&deployment.release_id)
            .bind(deployment.strategy.as_str())
            .bind(deployment.max_unavailable)
            .bind(deployment.wait_timeout_ms)
            .bind(deployment.initial_count)
            .bind(deployment.status.as_str())
            .bind(now)
            .bind(now)
            .bind(release_command)
            .bind(deployment.release_command_timeout_ms)
            .bind(deployment.smoke_check_ms)
            .bind(release_command_guest)
            .bind(scope)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database("recording a deployment", "app", app))?;
            if let Some(text) = &new.fly_toml {
                crate::release_configs::insert(&mut tx, &release.id, app, text, now).await?;
            }
            tx.commit().await.map_err(StoreError::database(
                "recording a deployment",
                "app",
                app,
            ))?;
            return Ok((release, deployment));
        }
        Err(StoreError::Conflict {
            what: "app",
            id: app.to_owned(),
            reason: "concurrent deploys kept taking the next release number; try again".to_owned(),
        })
    }

    /// An app's releases, newest first.
    pub async fn releases_of(&self, app: &AppId) -> Result<Vec<ReleaseRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE app_id = $1 ORDER BY version DESC"
        ))
        .bind(app.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing releases",
            "app",
            app.as_str(),
        ))?;
        rows.iter().map(release_from).collect()
    }

    /// One release by its id.
    pub async fn release(&self, id: &str) -> Result<ReleaseRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database("reading a release", "release", id))?
        .ok_or_else(|| StoreError::NotFound {
            what: "release",
            id: id.to_owned(),
        })?;
        release_from(&row)
    }

    /// Moves a release to `status`, if its current status allows it
    /// ([`ReleaseStatus::can_become`]); otherwise a conflict naming both.
    pub async fn set_release_status(
        &self,
        id: &str,
        status: ReleaseStatus,
    ) -> Result<(), StoreError> {
        let from = predecessors(ReleaseStatus::ALL, |from| from.can_become(status));
        let done = sqlx::query(&format!(
            "UPDATE releases SET status = $1, updated_at = $2 WHERE id = $3 AND status IN ({from})"
        ))
        .bind(status.as_str())
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(StoreError::database("updating a release", "release", id))?;
        if done.rows_affected() == 0 {
            let current = self.release(id).await?.status;
            return Err(refused("release", id, current, status));
        }
        Ok(())
    }

    /// One deployment of an app.
    pub async fn deployment(&self, app: &AppId, id: &str) -> Result<DeploymentRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1 AND app_id = $2"
        ))
        .bind(id)
        .bind(app.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database(
            "reading a deployment",
            "deployment",
            id,
        ))?
        .ok_or_else(|| StoreError::NotFound {
            what: "deployment",
            id: id.to_owned(),
        })?;
        deployment_from(&row)
    }

    /// An app's deployments, newest first.
    pub async fn deployments_of(&self, app: &AppId) -> Result<Vec<DeploymentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE app_id = $1 ORDER BY created_at DESC, id"
        ))
        .bind(app.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing deployments",
            "app",
            app.as_str(),
        ))?;
        rows.iter().map(deployment_from).collect()
    }

    /// Deployments with work left (running or rolling back), oldest first: what a control
    /// plane resumes when it starts.
    pub async fn active_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE status IN ('running', 'rolling_back') ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing active deployments",
            "deployment",
            "*",
        ))?;
        rows.iter().map(deployment_from).collect()
    }

    /// Moves a deployment to `status` (and says why it failed), if its current status
    /// allows it ([`DeploymentStatus::can_become`]); otherwise a conflict naming both.
    pub async fn set_deployment_status(
        &self,
        id: &str,
        status: DeploymentStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let from = predecessors(DeploymentStatus::ALL, |from| from.can_become(status));
        let done = sqlx::query(&format!(
            "UPDATE deployments SET status = $1, error = $2, updated_at = $3 WHERE id = $4 AND status IN ({from})"
        ))
        .bind(status.as_str())
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(StoreError::database(
            "updating a deployment",
            "deployment",
            id,
        ))?;
        if done.rows_affected() == 0 {
            let current =
                sqlx::query_scalar::<_, String>("SELECT status FROM deployments WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(StoreError::database(
                        "reading a deployment",
                        "deployment",
                        id,
                    ))?
                    .ok_or_else(|| StoreError::NotFound {
                        what: "deployment",
                        id: id.to_owned(),
                    })?;
            return Err(refused("deployment", id, current, status));
        }
        Ok(())
    }

    /// Appends a step to a deployment's log.
    pub async fn append_step(
        &self,
        deployment: &str,
        machine: Option<&MachineId>,
        kind: StepKind,
        message: &str,
        previous_config: Option<&MachineConfig>,
    ) -> Result<DeploymentStep, StoreError> {
        let previous = previous_config
            .map(|c| config_text("deployment", deployment, c))
            .transpose()?;
        let at = now_ms();
        // Numbered after the last step in the same statement: one round trip, and two
        // writers could not take one number (the primary key would refuse the second).
        let number: i64 = sqlx::query_scalar(
            "INSERT INTO deployment_steps (deployment_id, number, machine_id, kind, message, previous_config, at) \
             SELECT $1, COALESCE(MAX(number), 0) + 1, $2, $3, $4, $5, $6 FROM deployment_steps \
             WHERE deployment_id = $1 RETURNING number",
        )
        .bind(deployment)
        .bind(machine.map(MachineId::as_str))
        .bind(kind.as_str())
        .bind(message)
        .bind(previous)
        .bind(at)
        .fetch_one(self.pool())
        .await
        .map_err(StoreError::database(
            "recording a deployment step",
            "deployment",
            deployment,
        ))?;
        let step = DeploymentStep {
            number,
            machine_id: machine.cloned(),
            kind,
            message: message.to_owned(),
            previous_config: previous_config.cloned(),
            at,
        };
        Ok(step)
    }

    /// A deployment's steps, in order.
    pub async fn steps_of(&self, deployment: &str) -> Result<Vec<DeploymentStep>, StoreError> {
        let rows = sqlx::query(
            "SELECT number, machine_id, kind, message, previous_config, at FROM deployment_steps \
             WHERE deployment_id = $1 ORDER BY number",
        )
        .bind(deployment)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing deployment steps",
            "deployment",
            deployment,
        ))?;
        rows.iter().map(|row| step_from(deployment, row)).collect()
    }

    /// The steps of every deployment of an app, by deployment id, each in order: one
    /// query for a list of deployments, not one per deployment.
    pub async fn steps_of_app(
        &self,
        app: &AppId,
    ) -> Result<HashMap<String, Vec<DeploymentStep>>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.number, s.machine_id, s.kind, s.message, s.previous_config, s.at, \
             s.deployment_id FROM deployment_steps s JOIN deployments d \
             ON d.id = s.deployment_id WHERE d.app_id = $1 ORDER BY s.deployment_id, s.number",
        )
        .bind(app.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(
            "listing deployment steps",
            "app",
            app.as_str(),
        ))?;
        let mut steps: HashMap<String, Vec<DeploymentStep>> = HashMap::new();
        for row in &rows {
            let deployment: String = row.try_get(6).map_err(|e| {
                StoreError::database("reading a deployment step", "app", app.as_str())(e)
            })?;
            let step = step_from(&deployment, row)?;
            steps.entry(deployment).or_default().push(step);
        }
        Ok(steps)
    }
}

/// A step from a row whose first six columns are `number, machine_id, kind, message,
/// previous_config, at`.
fn step_from(deployment: &str, row: &sqlx::any::AnyRow) -> Result<DeploymentStep, StoreError> {
    let read = |e| StoreError::database("reading a deployment step", "deployment", deployment)(e);
    let machine: Option<String> = row.try_get(1).map_err(read)?;
    let previous: Option<String> = row.try_get(4).map_err(read)?;
    Ok(DeploymentStep {
        number: row.try_get(0).map_err(read)?,
        machine_id: machine
            .map(|m| m.parse())
            .transpose()
            .map_err(|e| StoreError::corrupt("deployment", deployment, e))?,
        kind: parse_name(
            "deployment",
            deployment,
            &row.try_get::<String, _>(2).map_err(read)?,
        )?,
        message: row.try_get(3).map_err(read)?,
        previous_config: previous
            .map(|p| parse_config("deployment", deployment, &p))
            .transpose()?,
        at: row.try_get(5).map_err(read)?,
    })
}

/// The SQL list of the statuses (fixed names, no input) that may move to a new one.
fn predecessors<T: Copy + std::fmt::Display>(all: &[T], allowed: impl Fn(T) -> bool) -> String {
    all.iter()
        .copied()
        .filter(|from| allowed(*from))
        .map(|from| format!("'{from}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A status change that the current status does not allow.
fn refused(
    what: &'static str,
    id: &str,
    current: impl std::fmt::Display,
    next: impl std::fmt::Display,
) -> StoreError {
    StoreError::Conflict {
        what,
        id: id.to_owned(),
        reason: format!("the {what} is {current}; it cannot become {next}"),
    }
}
