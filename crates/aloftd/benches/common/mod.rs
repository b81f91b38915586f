//! What every `aloftd` benchmark starts with: `aloftd server` in this process
//! ([`aloft_testplatform::ServerPlatform`]), with `RUST_LOG` showing its side of a run.

pub(crate) struct Platform;

impl Platform {
    /// Starts the server; `adjust` changes its configuration first.
    pub(crate) async fn start(
        name: &str,
        adjust: impl FnOnce(&mut aloftd::Config),
    ) -> aloft_testplatform::ServerPlatform {
        // RUST_LOG=aloft_agent=debug shows the platform's side of a run.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
        aloft_testplatform::ServerPlatform::start(name, adjust).await
    }
}
