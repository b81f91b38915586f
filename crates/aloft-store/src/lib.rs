//! Aloft's desired state, behind one interface over SQLite (the embedded default: one file
//! in the data directory, WAL) and PostgreSQL (many hosts).
//!
//! Invariants:
//! - Every statement is portable SQL run through sqlx's `Any` driver, so both backends run
//!   the same code and the same test suite.
//! - A machine's `version` only grows; every version's config is kept
//!   (`machine_versions`), and its events are numbered per machine without gaps.
//! - The store keeps secrets as the ciphertext and digest it is given; it never sees
//!   plaintext (encryption is the control plane's, with a key kept outside the database).
//! - Errors say which object and which operation: `NotFound`, `Conflict` (unique names,
//!   stale versions, held leases) and `Database` for the backend's own failures.
//!
//! Main types: [`Store`], the records [`Org`], [`Token`], [`App`], [`MachineRecord`],
//! [`MachineEvent`], [`CheckRecord`], [`SecretRecord`], [`VolumeRecord`], [`Host`], [`Network`].

mod apps;
mod busy;
mod certificates;
mod checks;
mod deployments;
mod hosts;
mod ips;
mod leases;
mod machine_history;
mod machines;
mod networks;
mod orgs;
mod release_configs;
mod secrets;
mod sinks;
mod snapshots;
mod ssh;
mod volumes;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use apps::App;
pub use certificates::{AcmeFailure, AcmeState, AcmeStatus, CertificateRecord};
pub use checks::CheckRecord;
pub use deployments::{DeploymentRecord, DeploymentStep, NewDeployment, ReleaseRecord};
pub use hosts::{Host, HostRecord};
pub use ips::IpRecord;
pub use machine_history::{MachineEvent, MachineVersion};
pub use machines::{Desired, Lease, MachineCaps, MachineFilter, MachineRecord, NewMachine};
pub use networks::{AppNetwork, Network};
pub use orgs::{Org, Token, TokenKind};
pub use secrets::SecretRecord;
pub use sinks::SinkRecord;
pub use snapshots::{SnapshotRecord, SnapshotStatus};
pub use ssh::SshAuthority;
pub use volumes::{NewVolume, VolumeRecord, VolumeState};

/// Which database holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} {id}: {reason}")]
    Conflict {
        what: &'static str,
        id: String,
        reason: String,
    },
    #[error("unsupported database URL {url:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl { url: String },
    #[error("stored {what} {id} cannot be read back")]
    Corrupt {
        what: &'static str,
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{operation}")]
    Database {
        operation: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("running migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A new machine would pass a limit on live machines.
    #[error("the {scope} already has {count} machines, its limit of {limit}")]
    LimitReached {
        /// `app` or `organization`.
        scope: &'static str,
        count: i64,
        limit: i64,
    },
}

impl StoreError {
    /// Wraps a backend error, turning unique violations into [`StoreError::Conflict`].
    pub(crate) fn database(
        operation: impl Into<String>,
        what: &'static str,
        id: &str,
    ) -> impl FnOnce(sqlx::Error) -> StoreError {
        let operation = operation.into();
        let id = id.to_owned();
        move |source| {
            let unique = source
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation());
            if unique {
                StoreError::Conflict {
                    what,
                    id,
                    reason: "already exists".to_owned(),
                }
            } else {
                StoreError::Database { operation, source }
            }
        }
    }

    pub(crate) fn corrupt(
        what: &'static str,
        id: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Corrupt {
            what,
            id: id.to_owned(),
            source: Box::new(source),
        }
    }
}

/// The state store. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Opens (creating when missing) the database at `url` and brings its schema up to
    /// date. `sqlite://PATH` is a file; `postgres://...` a PostgreSQL database.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        // Connecting and migrating work on the database's threads (see [`busy`]).
        let _busy = aloft_agent_api::clock::Busy::new();
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl {
                url: url.to_owned(),
            });
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let connect = StoreError::database("connecting to the database", "database", "");
        let pool = AnyPoolOptions::new()
            // SQLite writes one at a time whatever the number of connections, and each
            // connection is a thread of its own: every query on one thread took a fifth
            // less CPU than spread over four (the deploy property suite, 105 s against
            // 86 s), and no transaction meets another connection's write lock (busy).
            // Nothing in the store holds a connection while it asks for another.
            .max_connections(match backend {
                Backend::Sqlite => 1,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30))
            // A SQLite connection is a local file: pinging it before each use costs a
            // round trip to its thread and proves nothing.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        connection.execute("PRAGMA foreign_keys = ON").await?;
                        connection.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(connect)?;
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL")
                .await
                .map_err(StoreError::database("enabling WAL", "database", ""))?;
        }
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        tracing::debug!(?backend, "store opened");
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for one query or transaction (see [`busy`]).
    pub(crate) fn pool(&self) -> busy::Pooled<'_> {
        busy::Pooled::new(&self.pool)
    }

    /// Closes every connection (waiting for those in use).
    pub async fn close(&self) {
        let _busy = aloft_agent_api::clock::Busy::new();
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch (the contract's clock).
pub fn now_ms() -> i64 {
    aloft_agent_api::clock::now_ms()
}

/// Random bytes from the operating system, for ids, tokens, keys and nonces.
pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source failing is not something a store can recover from or work around.
    #[allow(
        clippy::expect_used,
        reason = "the OS random source is always available on Linux"
    )]
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes
}

/// 16 random hex digits: ids of releases and deployments, lease nonces.
pub fn random_hex() -> String {
    random::<8>().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads column `name` of a row of `what`.
pub(crate) fn column<'r, T>(
    row: &'r sqlx::any::AnyRow,
    what: &'static str,
    name: &str,
) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    use sqlx::Row as _;
    row.try_get(name).map_err(|source| StoreError::Database {
        operation: format!("reading {what}.{name}"),
        source,
    })
}

/// Reads a text column holding a typed value (an id, a state).
pub(crate) fn typed<T: FromStr>(
    row: &sqlx::any::AnyRow,
    what: &'static str,
    name: &str,
) -> Result<T, StoreError>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text: String = column(row, what, name)?;
    parse(what, &text)
}

/// Parses a stored value of a typed column (an id, a state).
pub(crate) fn parse<T: FromStr>(what: &'static str, value: &str) -> Result<T, StoreError>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .map_err(|error| StoreError::corrupt(what, value, error))
}
