//! The Machines API over real HTTP, with a store on SQLite and on PostgreSQL: tokens,
//! organization isolation, scopes, bad input, and generated bodies that must never cause
//! a 5xx. No agent runs here; machines stay as the API leaves them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod access;
mod bodies;
mod logs;
mod openapi;
mod ssh;

use std::future::Future;

use aloft_client::Client;
use aloft_control::{Control, ControlConfig, SecretsKey};
use aloft_store::{Host, Store, now_ms};
use aloft_testkit::postgres::TestDatabase;
use aloft_types::HostId;

/// The API on a port of its own, with an admin token of the `personal` organization.
pub(crate) struct Api {
    pub(crate) url: String,
    pub(crate) admin: Client,
    pub(crate) token: String,
}

impl Api {
    pub(crate) fn client(&self, token: &str) -> Client {
        Client::new(&self.url, token)
    }

    pub(crate) async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let http = reqwest::Client::new();
        let mut request = http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `test` against a fresh API on `backend`, cleaning up even when it panics.
pub(crate) async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Api) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let (store, database) = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("state.db").display());
            (Store::open(&url).await.unwrap(), None)
        }
        Backend::Postgres => {
            let database = TestDatabase::create("aloft_api_test").await;
            (Store::open(&database.url).await.unwrap(), Some(database))
        }
    };
    // A host record, so machines and volumes can be placed (no agent runs in these tests).
    let host = Host {
        id: HostId::generate([1; 8]),
        region: "local".into(),
        cpus: 2,
        memory_mb: 2048,
        address: None,
        last_heartbeat: now_ms(),
    };
    store.upsert_host(&host).await.unwrap();
    let config = ControlConfig {
        default_region: "local".into(),
        secrets_key: SecretsKey::from_bytes([9; 32]),
        ipv4_pool: aloft_net::DEFAULT_IPV4_POOL.parse().unwrap(),
        edge: None,
        machine_caps: aloft_store::MachineCaps::NONE,
    };
    let control = Control::new(
        store.clone(),
        config,
        aloft_control::ControlParts::default(),
    );
    let token = control.bootstrap(dir.path()).await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, control.router()).await });
    let api = Api {
        admin: Client::new(&url, &token),
        url,
        token,
    };
    let outcome = tokio::spawn(test(api)).await;
    server.abort();
    store.close().await;
    if let Some(database) = database {
        database.drop_database().await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

/// Declares `<test>::sqlite` and `<test>::postgres` for `async fn <test>(api: Api)`.
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
