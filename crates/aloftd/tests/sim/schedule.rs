//! Scheduled machines in virtual time: a machine with `schedule` runs when it is created,
//! exits and rests, and is started again by the platform once its period has passed (an
//! hourly one after an hour, a daily one not yet); a schedule Fly does not know is refused.

use std::time::Duration;

use aloft_client::Client;
use aloft_testplatform::SimPlatform;
use aloft_types::api::MachineRequest;
use aloft_types::machine::MachineConfig;

use super::{paused_runtime, within};

const APP: &str = "cron";

/// A machine that works for a second and exits 0, on `schedule`.
fn scheduled(schedule: &str) -> MachineRequest {
    let mut config = MachineConfig {
        image: "sim:1".to_owned(),
        schedule: Some(schedule.to_owned()),
        ..MachineConfig::default()
    };
    config.env.insert("SIM_EXIT_CODE".into(), "0".into());
    config.env.insert("SIM_EXIT_AFTER_MS".into(), "1000".into());
    MachineRequest::new(config)
}

/// The machine's starts: (source, reason) of each start request.
async fn starts(client: &Client, id: &str) -> Vec<(String, String)> {
    let events = client.events(APP, id).await.unwrap_or_default();
    events
        .into_iter()
        .filter(|e| e.kind == "start" && e.status == "requested")
        .map(|e| {
            let reason = e.request.get("reason").and_then(|r| r.as_str());
            (e.source, reason.unwrap_or_default().to_owned())
        })
        .collect()
}

async fn state(client: &Client, id: &str) -> String {
    client.machine(APP, id).await.unwrap().state
}

#[test]
fn a_scheduled_machine_runs_again_once_its_period_has_passed() {
    paused_runtime().block_on(async {
        let platform = SimPlatform::start(1).await;
        let client = &platform.client;
        client.create_app(APP, None).await.unwrap();
        let hourly = client
            .create_machine(APP, &scheduled("hourly"))
            .await
            .unwrap()
            .id;
        let daily = client
            .create_machine(APP, &scheduled("daily"))
            .await
            .unwrap()
            .id;
        // Each ran at its creation, did its work and rests (a clean exit is not restarted).
        within(
            "both machines to run and rest",
            Duration::from_secs(60),
            || async {
                let runs = platform.runtime(0).runs();
                (state(client, &hourly).await == "stopped"
                    && state(client, &daily).await == "stopped"
                    && runs.get(&hourly) == Some(&1)
                    && runs.get(&daily) == Some(&1))
                .then_some(())
            },
        )
        .await
        .unwrap();

        // Most of an hour later, neither has run again.
        tokio::time::sleep(Duration::from_secs(50 * 60)).await;
        assert_eq!(platform.runtime(0).runs().get(&hourly), Some(&1));
        // An hour after its start, the hourly one runs again, started by the platform.
        let schedule = ("flyd".to_owned(), "schedule".to_owned());
        within(
            "the hourly machine to run again",
            Duration::from_secs(15 * 60),
            || async { (platform.runtime(0).runs().get(&hourly) == Some(&2)).then_some(()) },
        )
        .await
        .unwrap();
        assert!(starts(client, &hourly).await.contains(&schedule));
        within("it to rest again", Duration::from_secs(60), || async {
            (state(client, &hourly).await == "stopped").then_some(())
        })
        .await
        .unwrap();
        // The daily one waits for its day.
        assert_eq!(platform.runtime(0).runs().get(&daily), Some(&1));
        assert!(!starts(client, &daily).await.contains(&schedule));

        let refused = client
            .create_machine(APP, &scheduled("every minute"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("config.schedule \"every minute\" is not a schedule"),
            "{refused}"
        );
        platform.stop().await;
    });
}
