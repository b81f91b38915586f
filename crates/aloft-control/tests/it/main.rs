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
mod builds;
mod certificates;
mod logs;
mod openapi;
mod quotas;
mod security;
mod ssh;

use std::future::Future;

use aloft_client::Client;
use aloft_testplatform::{ControlApi, ControlOptions};

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
        let http = aloft_testkit::http();
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

pub(crate) use aloft_testplatform::Backend;

/// Runs `test` against a fresh API on `backend` (with one idle host, so machines can be
/// placed), cleaning up even when it panics.
pub(crate) async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Api) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let platform = ControlApi::start(ControlOptions::new(backend)).await;
    let api = Api {
        admin: platform.client.clone(),
        url: platform.url.clone(),
        token: platform.token.clone(),
    };
    let outcome = tokio::spawn(test(api)).await;
    platform.stop().await;
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
