//! The store's suite, run against SQLite and PostgreSQL alike: every test exists twice,
//! `<test>::sqlite` and `<test>::postgres`. PostgreSQL tests use a database of their own,
//! dropped afterwards; they fail (never skip) when PostgreSQL is not reachable.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod apps;
mod checks;
mod deployments;
mod machines;
mod networks;
mod orgs;
mod secrets_volumes_hosts;

use std::future::Future;

use aloft_store::Store;
use aloft_testkit::postgres::TestDatabase;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `test` against a fresh store on `backend`, cleaning up even when it panics.
pub(crate) async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let (store, database) = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("state.db").display());
            (Store::open(&url).await.unwrap(), None)
        }
        Backend::Postgres => {
            let database = TestDatabase::create("aloft_test").await;
            (Store::open(&database.url).await.unwrap(), Some(database))
        }
    };
    let outcome = tokio::spawn(test(store.clone())).await;
    store.close().await;
    if let Some(database) = database {
        database.drop_database().await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
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
