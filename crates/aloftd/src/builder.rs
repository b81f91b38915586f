//! Image builds on this host's Docker Engine, as the control plane's `ImageBuilder`,
//! in a sandbox put in place again before every build (so that a flushed table or a
//! reset cgroup does not stay so): the fence of `aloft_net::build_fence` around the
//! engine's bridge, and `[build]`'s limits on the engine's build cgroup.

use std::path::{Path, PathBuf};

use aloft_runtime::{BuildLimits, BuildProgress, DockerRuntime};
use aloft_types::build::BuilderError;
use futures_util::StreamExt as _;

/// Where the resolvers the engine gives build steps come from: the host's
/// `resolv.conf`, or systemd-resolved's upstream list when that one is its stub.
const RESOLV_CONFS: [&str; 2] = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"];

/// The cgroup filesystem.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What fences builds in: the networks they may not reach and what they may use.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    pub(crate) fence: aloft_net::Egress,
    pub(crate) limits: BuildLimits,
}

/// Builds images with the Docker Engine of this host.
#[derive(Debug)]
pub(crate) struct EngineBuilder {
    pub(crate) runtime: DockerRuntime,
    /// Where contexts are written while they arrive (emptied at each start).
    pub(crate) spool: PathBuf,
    pub(crate) max_context_bytes: u64,
    /// `None` with `[build] isolate = false`.
    pub(crate) sandbox: Option<Sandbox>,
}

/// Why a build could not be fenced in.
#[derive(Debug, thiserror::Error)]
#[error("the build sandbox could not be put in place, so nothing was built: {0}")]
struct SandboxError(String);

impl EngineBuilder {
    /// The image builder on this host's engine (with `host_memory_mb` of memory),
    /// sandboxed as `[build]` says.
    pub(crate) fn of(
        config: &crate::Config,
        runtime: DockerRuntime,
        host_memory_mb: u64,
    ) -> anyhow::Result<EngineBuilder> {
        use anyhow::Context as _;
        let sandbox = if config.build.isolate {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            Some(Sandbox {
                fence: config
                    .network
                    .fence()
                    .context("reading [network] machine_ipv4 and egress_denied_networks")?,
                limits: config
                    .build
                    .limits(host_memory_mb, u32::try_from(cpus).unwrap_or(1)),
            })
        } else {
            None
        };
        Ok(EngineBuilder {
            runtime,
            spool: config.data_dir.join("builds"),
            max_context_bytes: config.build.max_context_mb.saturating_mul(1024 * 1024),
            sandbox,
        })
    }

    /// Prepares the spool directory (removing contexts a crash left) and, without a
    /// sandbox, takes an earlier start's fence away.
    pub(crate) async fn prepare(&self) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let _ = std::fs::remove_dir_all(&self.spool);
        std::fs::create_dir_all(&self.spool)
            .with_context(|| format!("creating {}", self.spool.display()))?;
        if self.sandbox.is_none() {
            aloft_net::build_fence::unfence_builds()
                .await
                .context("removing the build fence ([build] isolate = false)")?;
        }
        Ok(())
    }

    /// Puts the sandbox in place: the fence must hold (else nothing is built); limits
    /// the engine's cgroups do not allow come back as a warning for the build's output.
    async fn fence(
        runtime: &DockerRuntime,
        sandbox: &Sandbox,
    ) -> Result<Option<String>, SandboxError> {
        let host = runtime
            .build_host()
            .await
            .map_err(|e| SandboxError(format!("asking the engine for its bridge: {e}")))?;
        let mut resolvers = Vec::new();
        for path in RESOLV_CONFS {
            if let Ok(text) = std::fs::read_to_string(path) {
                for resolver in aloft_net::build_fence::resolvers_of(&text) {
                    if !resolvers.contains(&resolver) {
                        resolvers.push(resolver);
                    }
                }
            }
        }
        aloft_net::build_fence::fence_builds(&host.bridge, &resolvers, &sandbox.fence)
            .await
            .map_err(|e| SandboxError(format!("fencing {}: {e}", host.bridge)))?;
        let limits = sandbox.limits;
        let applied = tokio::task::spawn_blocking(move || {
            aloft_runtime::apply_build_limits(Path::new(CGROUP_ROOT), &host, &limits)
        })
        .await;
        Ok(match applied {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => {
                tracing::warn!(%error, "build limits not applied");
                Some(format!(
                    "(warning: this host's build limits are not applied: {error})\n"
                ))
            }
            Err(error) => Some(format!("(warning: build limits: {error})\n")),
        })
    }
}

impl aloft_control::ImageBuilder for EngineBuilder {
    fn spool_dir(&self) -> &Path {
        &self.spool
    }

    fn max_context_bytes(&self) -> u64 {
        self.max_context_bytes
    }

    fn build(
        &self,
        context: PathBuf,
        options: aloft_runtime::BuildOptions,
    ) -> futures_util::stream::BoxStream<'static, Result<BuildProgress, BuilderError>> {
        let runtime = self.runtime.clone();
        let sandbox = self.sandbox.clone();
        let fenced = async move {
            let warning = match &sandbox {
                Some(sandbox) => Self::fence(&runtime, sandbox)
                    .await
                    .map_err(BuilderError::new)?,
                None => None,
            };
            Ok::<_, BuilderError>((runtime, warning))
        };
        futures_util::stream::once(fenced)
            .flat_map(move |fenced| match fenced {
                Ok((runtime, warning)) => {
                    let warning = futures_util::stream::iter(
                        warning.map(|text| Ok(BuildProgress::Output(text))),
                    );
                    let build = runtime
                        .build_image(context.clone(), &options)
                        .map(|progress| progress.map_err(BuilderError::new));
                    warning.chain(build).boxed()
                }
                Err(error) => futures_util::stream::iter([Err(error)]).boxed(),
            })
            .boxed()
    }

    fn resolve<'a>(
        &'a self,
        image: &'a str,
    ) -> aloft_control::BoxFuture<'a, Result<Option<String>, BuilderError>> {
        Box::pin(async move {
            self.runtime
                .image_id(image)
                .await
                .map_err(BuilderError::new)
        })
    }

    fn remove_repository<'a>(
        &'a self,
        repository: &'a str,
    ) -> aloft_control::BoxFuture<'a, Result<usize, BuilderError>> {
        Box::pin(async move {
            self.runtime
                .remove_repository(repository)
                .await
                .map_err(BuilderError::new)
        })
    }
}
