//! Scheduled machines (config `schedule`: `hourly`, `daily`, `weekly` or `monthly`), as
//! Fly's flyd runs them: the machine starts when it is created, does its work and exits
//! (its restart policy, `on-failure` unless set, leaves a clean exit stopped), and is
//! started again once its period has passed since its last start. Fly's timing is fuzzy
//! within the period; here it is the period after the last start, looked at every
//! [`EVERY`]. The start is a `flyd` event with reason `schedule`. A machine that is
//! running when its period comes is left alone (it is not started twice).

use std::sync::Arc;
use std::time::Duration;

use aloft_store::{Desired, MachineRecord};
use aloft_types::{EventKind, MachineState};

use crate::machines::PlatformReason;
use crate::{ApiError, Inner};

/// How often scheduled machines are looked at.
const EVERY: Duration = Duration::from_secs(10);

/// The schedules Fly knows, with their periods (a month is 30 days).
pub(crate) const SCHEDULES: [(&str, Duration); 4] = [
    ("hourly", Duration::from_secs(3600)),
    ("daily", Duration::from_secs(24 * 3600)),
    ("weekly", Duration::from_secs(7 * 24 * 3600)),
    ("monthly", Duration::from_secs(30 * 24 * 3600)),
];

/// The period of `schedule`, or `None` when it is not one of [`SCHEDULES`].
pub(crate) fn period(schedule: &str) -> Option<Duration> {
    SCHEDULES
        .iter()
        .find(|(name, _)| *name == schedule)
        .map(|(_, period)| *period)
}

/// Refuses a `schedule` that is not one of Fly's, naming the field and the choices.
pub(crate) fn validate(schedule: Option<&str>) -> Result<(), ApiError> {
    match schedule.filter(|s| !s.is_empty()) {
        Some(name) if period(name).is_none() => Err(ApiError::BadRequest(format!(
            "config.schedule {name:?} is not a schedule: use hourly, daily, weekly or monthly"
        ))),
        _ => Ok(()),
    }
}

/// Starts scheduled machines whose time has come, until the control plane stops.
pub(crate) async fn watch(inner: Arc<Inner>) {
    crate::periodic::every(
        inner,
        EVERY,
        "starting scheduled machines",
        |inner| async move { pass(&inner).await },
    )
    .await;
}

/// When `machine` last started (its latest start request, else its creation), in Unix
/// milliseconds.
async fn last_start(inner: &Inner, machine: &MachineRecord) -> Result<i64, ApiError> {
    let events = inner.store.events(&machine.id).await?;
    Ok(events
        .iter()
        .filter(|e| e.kind == EventKind::Start)
        .map(|e| e.at)
        .max()
        .unwrap_or(machine.created_at))
}

/// One look at every scheduled machine.
async fn pass(inner: &Arc<Inner>) -> Result<(), ApiError> {
    let now = aloft_store::now_ms();
    for machine in inner.store.live_machines().await? {
        let Some(period) = machine.config.schedule.as_deref().and_then(period) else {
            continue;
        };
        // Resting: stopped on its own (or by its user) and not asked to start.
        if machine.state != MachineState::Stopped || machine.desired != Desired::Stopped {
            continue;
        }
        let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(last_start(inner, &machine).await?) < period_ms {
            continue;
        }
        tracing::info!(machine = %machine.id, schedule = ?machine.config.schedule, "a scheduled machine's time has come");
        crate::machines::platform_power(inner, &machine.id, true, PlatformReason::Schedule).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flys_four_schedules_have_their_periods_and_nothing_else_is_one() {
        assert_eq!(period("hourly"), Some(Duration::from_secs(3600)));
        assert_eq!(period("monthly"), Some(Duration::from_secs(2_592_000)));
        assert_eq!(period("Daily"), None);
        assert!(validate(Some("weekly")).is_ok());
        assert!(validate(None).is_ok());
        assert!(validate(Some("")).is_ok());
        let refused = validate(Some("every 5 minutes")).unwrap_err().to_string();
        assert!(
            refused.contains("config.schedule \"every 5 minutes\""),
            "{refused}"
        );
    }
}
