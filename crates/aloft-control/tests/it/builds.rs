//! Build contexts reach the builder as files written while they arrive, never whole in
//! memory: at most the builder's limit (413 past it, nothing left behind), and gone once
//! the build's answer has ended. The builder here records what it got; the real engine's
//! builds are `aloftd`'s tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_client::BuildRequest;
use aloft_testkit::eventually;
use aloft_testplatform::{Backend, ControlApi, ControlOptions};
use aloft_types::build::{BuildOptions, BuildProgress, BuilderError};
use futures_util::stream::BoxStream;

/// Records each context's bytes (read from its file while the build runs) and builds
/// nothing.
struct Recorder {
    spool: tempfile::TempDir,
    limit: u64,
    seen: Mutex<Vec<(PathBuf, Vec<u8>)>>,
}

impl aloft_control::ImageBuilder for Recorder {
    fn spool_dir(&self) -> &Path {
        self.spool.path()
    }

    fn max_context_bytes(&self) -> u64 {
        self.limit
    }

    fn build(
        &self,
        context: PathBuf,
        _options: BuildOptions,
    ) -> BoxStream<'static, Result<BuildProgress, BuilderError>> {
        let bytes = std::fs::read(&context).unwrap_or_default();
        self.seen.lock().unwrap().push((context, bytes));
        Box::pin(futures_util::stream::iter([
            Ok(BuildProgress::Output("step 1\n".to_owned())),
            Ok(BuildProgress::Built {
                id: "sha256:0123".to_owned(),
            }),
        ]))
    }

    fn resolve<'a>(
        &'a self,
        _image: &'a str,
    ) -> aloft_control::BoxFuture<'a, Result<Option<String>, BuilderError>> {
        Box::pin(async { Ok(None) })
    }

    fn remove_repository<'a>(
        &'a self,
        _repository: &'a str,
    ) -> aloft_control::BoxFuture<'a, Result<usize, BuilderError>> {
        Box::pin(async { Ok(0) })
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

#[tokio::test]
async fn a_context_is_spooled_to_a_file_within_the_limit_and_removed_after_its_build() {
    let recorder = Arc::new(Recorder {
        spool: tempfile::tempdir().unwrap(),
        limit: 256 * 1024,
        seen: Mutex::new(Vec::new()),
    });
    let platform = ControlApi::start(ControlOptions {
        parts: aloft_control::ControlParts {
            builder: Some(recorder.clone()),
            ..aloft_control::ControlParts::default()
        },
        ..ControlOptions::new(Backend::Sqlite)
    })
    .await;
    let client = platform.client.clone();
    client.create_app("spooled", None).await.unwrap();
    let options = BuildRequest {
        dockerfile: "Dockerfile".to_owned(),
        target: None,
        args: Default::default(),
        secrets: Default::default(),
        no_cache: false,
    };

    // Within the limit (the limit itself included): the builder reads exactly what was
    // sent, from a file of the spool directory.
    let context: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let mut output = String::new();
    client
        .build("spooled", context.clone(), &options, |text| {
            output.push_str(text)
        })
        .await
        .unwrap();
    assert_eq!(output, "step 1\n");
    let (path, bytes) = recorder.seen.lock().unwrap()[0].clone();
    assert!(
        path.starts_with(recorder.spool.path()),
        "{}",
        path.display()
    );
    assert!(bytes == context, "the builder read what was sent");
    eventually(
        "the context's file to go with the build's answer",
        Duration::from_secs(10),
        || async { (!path.exists()).then_some(()) },
    )
    .await;

    // One byte past it: 413, nothing built, nothing left behind.
    let larger = vec![7u8; 256 * 1024 + 1];
    let error = client
        .build("spooled", larger, &options, |_| {})
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(413), "{error}");
    assert!(error.to_string().contains("max_context_mb"), "{error}");
    assert_eq!(recorder.seen.lock().unwrap().len(), 1, "nothing built");
    assert_eq!(files_in(recorder.spool.path()), 0, "nothing left behind");
    platform.stop().await;
}
