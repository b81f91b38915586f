//! The store's suite, run against SQLite and PostgreSQL alike: every test exists twice,
//! `<test>::sqlite` and `<test>::postgres`. PostgreSQL tests use a database of their own,
//! dropped afterwards; they fail (never skip) when PostgreSQL is not reachable.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod apps;
mod machines;
mod orgs;
mod secrets_volumes_hosts;

use std::future::Future;

use aloft_store::Store;
use sqlx::Executor as _;
use sqlx::any::install_default_drivers;

/// Where the tests find PostgreSQL (the Debian cluster `cargo xtask test` starts).
pub(crate) const POSTGRES_URL_ENV: &str = "ALOFT_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres:///postgres?host=/var/run/postgresql&user=root";

#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

fn admin_url() -> String {
    std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = base.rsplit_once('/').map_or(base, |(prefix, _)| prefix);
    if query.is_empty() {
        format!("{base}/{database}")
    } else {
        format!("{base}/{database}?{query}")
    }
}

/// Runs `test` against a fresh store on `backend`, cleaning up even when it panics.
pub(crate) async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("state.db").display());
            let store = Store::open(&url).await.unwrap();
            let outcome = tokio::spawn(test(store)).await;
            drop(dir);
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic.into_panic());
            }
        }
        Backend::Postgres => {
            install_default_drivers();
            let admin_url = admin_url();
            let admin = sqlx::AnyPool::connect(&admin_url).await.unwrap_or_else(|error| {
                panic!(
                    "PostgreSQL is not reachable at {admin_url} ({error}); `cargo xtask test` installs and \
                     starts it, or set {POSTGRES_URL_ENV}"
                )
            });
            let database = format!(
                "aloft_test_{}_{}",
                std::process::id(),
                aloft_store::now_ms()
            );
            admin
                .execute(format!("CREATE DATABASE {database}").as_str())
                .await
                .unwrap();
            let store = Store::open(&with_database(&admin_url, &database))
                .await
                .unwrap();
            let outcome = tokio::spawn(test(store.clone())).await;
            store.close().await;
            admin
                .execute(format!("DROP DATABASE {database} WITH (FORCE)").as_str())
                .await
                .unwrap();
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic.into_panic());
            }
        }
    }
}

/// Declares `<test>::sqlite` and `<test>::postgres` for `async fn <test>(store: Store)`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    $crate::run($crate::Backend::Sqlite, super::$test).await;
                }

                #[tokio::test]
                async fn postgres() {
                    $crate::run($crate::Backend::Postgres, super::$test).await;
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;

#[tokio::test]
async fn a_sqlite_store_keeps_its_data_when_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let store = Store::open(&url).await.unwrap();
    store.create_org("personal", "Personal").await.unwrap();
    store.close().await;
    let reopened = Store::open(&url).await.unwrap();
    assert_eq!(
        reopened.org_by_slug("personal").await.unwrap().name,
        "Personal"
    );
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    let error = Store::open("mysql://localhost/db").await.unwrap_err();
    assert!(
        error.to_string().contains("unsupported database URL"),
        "{error}"
    );
}
