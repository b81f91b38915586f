//! Image builds on this host's Docker Engine, as the control plane's `ImageBuilder`.

use aloft_runtime::DockerRuntime;
use aloft_types::build::BuilderError;

/// Builds images with the Docker Engine of this host.
#[derive(Debug)]
pub(crate) struct EngineBuilder(pub(crate) DockerRuntime);

impl aloft_control::ImageBuilder for EngineBuilder {
    fn build(
        &self,
        context: bytes::Bytes,
        options: aloft_runtime::BuildOptions,
    ) -> futures_util::stream::BoxStream<'static, Result<aloft_runtime::BuildProgress, BuilderError>>
    {
        use futures_util::StreamExt as _;
        self.0
            .build_image(context, &options)
            .map(|progress| progress.map_err(BuilderError::new))
            .boxed()
    }

    fn resolve<'a>(
        &'a self,
        image: &'a str,
    ) -> aloft_control::BoxFuture<'a, Result<Option<String>, BuilderError>> {
        Box::pin(async move { self.0.image_id(image).await.map_err(BuilderError::new) })
    }

    fn remove_repository<'a>(
        &'a self,
        repository: &'a str,
    ) -> aloft_control::BoxFuture<'a, Result<usize, BuilderError>> {
        Box::pin(async move {
            self.0
                .remove_repository(repository)
                .await
                .map_err(BuilderError::new)
        })
    }
}
