//! What every `aloftd` benchmark starts with: `aloftd server` in this process (API on a
//! free port, its private network in a namespace of its own), an admin client, and a
//! clean stop that removes the containers it made.

use std::time::Duration;

use aloft_client::Client;
use aloft_testkit::eventually;
use tokio_util::sync::CancellationToken;

#[allow(dead_code, reason = "each benchmark uses what it needs")]
pub(crate) struct Platform {
    pub(crate) client: Client,
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) data: tempfile::TempDir,
    _netns: aloft_testkit::TestNetns,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Platform {
    /// Starts the server; `adjust` changes its configuration first.
    pub(crate) async fn start(name: &str, adjust: impl FnOnce(&mut aloftd::Config)) -> Platform {
        aloft_testkit::require_docker();
        // RUST_LOG=aloft_agent=debug shows the platform's side of a run.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
        let data = tempfile::tempdir().unwrap();
        let mut config = aloftd::Config::loopback(data.path());
        let netns = aloft_testkit::TestNetns::create(name);
        config.network.namespace = Some(netns.path());
        adjust(&mut config);
        let stop = CancellationToken::new();
        let server = tokio::spawn(aloftd::run_server(
            config,
            aloftd::ServerOptions {
                shutdown: Some(stop.clone()),
            },
        ));
        let url = eventually("the server", Duration::from_secs(30), || async {
            std::fs::read_to_string(data.path().join(aloftd::API_URL_FILE))
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .await;
        let token = std::fs::read_to_string(data.path().join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        Platform {
            client: Client::new(&url, &token),
            url,
            token,
            data,
            _netns: netns,
            stop,
            server,
        }
    }

    /// Stops the server and removes the containers it made.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
        let host = std::fs::read_to_string(self.data.path().join(aloftd::HOST_ID_FILE))
            .unwrap_or_default();
        aloft_testkit::remove_containers_labelled("dev.aloft.host", host.trim());
    }
}
