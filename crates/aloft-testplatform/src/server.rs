//! `aloftd server` itself, in this process: the API on a free loopback port, its private
//! network in a namespace of its own, SQLite and Docker Engine.

use std::path::Path;
use std::time::Duration;

use aloft_client::Client;
use aloft_testkit::eventually;
use tokio_util::sync::CancellationToken;

/// A running `aloftd server` and an admin client of it.
pub struct ServerPlatform {
    pub client: Client,
    pub url: String,
    pub token: String,
    pub data: tempfile::TempDir,
    /// The private network's namespace; dropped after the server stops.
    netns: aloft_testkit::TestNetns,
    stop: CancellationToken,
    /// The server's task; it ends with its error's text.
    server: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl ServerPlatform {
    /// Starts the server (Docker must run: this fails, never skips, without it);
    /// `adjust` changes its configuration first. `name` names its network namespace.
    pub async fn start(name: &str, adjust: impl FnOnce(&mut aloftd::Config)) -> ServerPlatform {
        aloft_testkit::require_docker();
        let data = tempfile::tempdir().unwrap_or_else(|error| panic!("a temp dir: {error}"));
        let mut config = aloftd::Config::loopback(data.path());
        let netns = aloft_testkit::TestNetns::create(name);
        config.network.namespace = Some(netns.path());
        adjust(&mut config);
        let stop = CancellationToken::new();
        let options = aloftd::ServerOptions {
            shutdown: Some(stop.clone()),
        };
        let server = tokio::spawn(async move {
            aloftd::run_server(config, options)
                .await
                .map_err(|error| format!("{error:#}"))
        });
        let url_file = data.path().join(aloftd::API_URL_FILE);
        let url = eventually("the server to listen", Duration::from_secs(30), || async {
            std::fs::read_to_string(&url_file)
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .await;
        let token = std::fs::read_to_string(data.path().join("admin-token"))
            .unwrap_or_else(|error| panic!("the admin token: {error}"))
            .trim()
            .to_owned();
        // An API that serves HTTPS has a certificate from the platform's CA.
        let client = if url.starts_with("https://") {
            let ca = data.path().join(aloftd::PLATFORM_CA_DIR).join("ca.crt");
            let pem = std::fs::read_to_string(&ca)
                .unwrap_or_else(|error| panic!("{}: {error}", ca.display()));
            Client::with_trust(&url, &token, &aloft_client::Trust::Ca(pem))
                .unwrap_or_else(|error| panic!("a client of {url}: {error}"))
        } else {
            Client::new(&url, &token)
        };
        ServerPlatform {
            client,
            url,
            token,
            data,
            netns,
            stop,
            server: Some(server),
        }
    }

    /// The private network's namespace.
    pub fn netns(&self) -> &aloft_testkit::TestNetns {
        &self.netns
    }

    /// Shuts the server down as SIGTERM would, waits for it, and removes the containers
    /// its host made.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
        remove_host_containers(self.data.path());
        aloft_testkit::unmount_under(self.data.path());
    }
}

impl Drop for ServerPlatform {
    /// As [`ServerPlatform::stop`], for a test that ends without it (a panic): its agent
    /// may be creating a container right now, so the server is waited for before the
    /// removal (aborting it left containers behind). Needs the multi-thread runtime.
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    // A server that does not stop in time is left to the runtime's
                    // shutdown; its containers are removed below either way.
                    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
                });
            });
            remove_host_containers(self.data.path());
            aloft_testkit::unmount_under(self.data.path());
        }
    }
}

fn remove_host_containers(data: &Path) {
    if let Ok(host) = std::fs::read_to_string(data.join(aloftd::HOST_ID_FILE)) {
        aloft_testkit::remove_containers_labelled("dev.aloft.host", host.trim());
    }
}

impl std::fmt::Debug for ServerPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPlatform").finish_non_exhaustive()
    }
}
