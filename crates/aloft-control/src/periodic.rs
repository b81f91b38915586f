//! Work the control plane does on a timer (watching hosts, starting scheduled machines).

use std::sync::Arc;
use std::time::Duration;

use crate::{ApiError, Inner};

/// Runs `pass` every `period` until the control plane stops; a pass that fails is logged
/// (`what` names the work) and the next one tries again.
pub(crate) async fn every<F, Fut>(
    inner: Arc<Inner>,
    period: Duration,
    what: &'static str,
    mut pass: F,
) where
    F: FnMut(Arc<Inner>) -> Fut,
    Fut: Future<Output = Result<(), ApiError>>,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.stopping.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(error) = pass(inner.clone()).await {
            tracing::warn!(%error, "{what} failed; will retry");
        }
    }
}
