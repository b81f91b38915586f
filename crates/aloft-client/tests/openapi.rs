//! The client and the checked-in OpenAPI document cannot drift: every request a client
//! method sends is an operation of `openapi/aloft.json` (same method, same path), and
//! every operation of the document is sent by some method, but for the Fly-compatibility
//! endpoints that only Fly's clients use (listed below, with the test that covers them).
//! Request and response bodies are one source already: the server, the document (its
//! schemas are generated from them) and the client all use `aloft_types::api`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use aloft_client::{BuildRequest, Client, LogsRequest};
use aloft_types::api::MachineRequest;
use aloft_types::machine::MachineConfig;
use aloft_types::{MachineState, Signal};
use serde_json::json;

/// Operations no client method sends: Fly's Machines API, for Fly's own clients; the
/// `flygo` contract test of `aloftd`'s sim suite sends each one as fly-go does.
const FLY_ONLY: [&str; 16] = [
    "Machines_metadata_get",
    "Machines_metadata_set",
    "Machines_metadata_delete",
    "Machines_metadata_get_key",
    "Machines_metadata_update_put",
    "Machines_metadata_update",
    "Machines_reclaim_memory",
    "Machines_org_list",
    "Volumes_org_list",
    "Apps_create_deploy_token",
    "Secrets_set_one",
    "Secrets_unset_one",
    "Secrets_show_one",
    // Fly's shape of `/ips`, which the CLI uses.
    "IpAssignments_list",
    "IpAssignments_create",
    "IpAssignments_delete",
];

/// Operations no client method sends because Prometheus reads them.
const SCRAPED: [&str; 1] = ["Orgs_app_metrics"];

/// (method, path template) → operation id.
fn operations() -> BTreeMap<(String, String), String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/aloft.json");
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut found = BTreeMap::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if let Some(id) = operation["operationId"].as_str() {
                found.insert((method.to_uppercase(), template.clone()), id.to_owned());
            }
        }
    }
    found
}

/// Whether `path` (no query) fits `template`: `{name}` stands for one segment.
fn fits(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

/// A server that answers every request 404 and records its method and path.
async fn recorder() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push((
                request.method().to_string(),
                request.uri().path().to_owned(),
            ));
            (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(json!({ "error": "recorded" })),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// Calls every method of the client once (each answer is a 404, which is fine).
async fn call_everything(c: &Client) {
    let (a, m) = ("web", "148e21ea7d2e89");
    let logs = LogsRequest::default();
    let machine = MachineRequest::new(MachineConfig::default());
    let _ = c.create_app(a, None).await;
    let _ = c
        .create_app_in_network(a, Some("personal"), Some("blue"))
        .await;
    let _ = c.list_apps().await;
    let _ = c.app(a).await;
    let _ = c.app_config(a).await;
    let _ = c.delete_app(a).await;
    let _ = c.create_machine(a, &machine).await;
    let _ = c.update_machine(a, m, &machine).await;
    let _ = c
        .create_log_sink(&from(
            json!({"kind": "http", "url": "http://127.0.0.1:9/", "headers": {}, "app": null}),
        ))
        .await;
    let _ = c.log_sinks().await;
    let _ = c.remove_log_sink("s1").await;
    let _ = c.logs(a, &logs).await;
    let _ = c.follow_logs(a, &logs, |_| false).await;
    let _ = c
        .build(a, Vec::new(), &BuildRequest::default(), |_| {})
        .await;
    let _ = c
        .deploy(a, &from(json!({"image": "web:1", "config": {}})))
        .await;
    let _ = c.rollback(a, 1).await;
    let _ = c.deployment(a, "d1").await;
    let _ = c.deployments(a).await;
    let _ = c.releases(a).await;
    let _ = c.local_ca().await;
    let _ = c.dig(a, "web.internal", "AAAA").await;
    let _ = c.list_certificates(a).await;
    let _ = c.add_certificate(a, "www.example.com").await;
    let _ = c
        .import_certificate(
            a,
            &from(json!({"hostname": "www.example.com", "fullchain": "", "private_key": ""})),
        )
        .await;
    let _ = c.remove_certificate(a, "www.example.com").await;
    let _ = c.add_acme_certificate(a, "www.example.com").await;
    let _ = c.certificate(a, "www.example.com").await;
    let _ = c.check_certificate(a, "www.example.com").await;
    let _ = c
        .certificates_page(a, Some("www"), Some("a.example.com"), Some(2))
        .await;
    let _ = c
        .remove_certificate_kind(a, "www.example.com", "acme")
        .await;
    let _ = c
        .remove_certificate_kind(a, "www.example.com", "custom")
        .await;
    let _ = c.list_ips(a).await;
    let _ = c.allocate_ipv4(a, None).await;
    let _ = c.release_ip(a, "203.0.113.7").await;
    let _ = c.platform_regions().await;
    let _ = c.platform_hosts().await;
    for action in [
        aloft_client::HostAction::Cordon,
        aloft_client::HostAction::Uncordon,
        aloft_client::HostAction::Drain,
    ] {
        let _ = c.set_host_state("0123456789abcdef", action).await;
    }
    let _ = c
        .placements(&aloft_types::api::PlacementsRequest::default())
        .await;
    let _ = c.list_machines(a).await;
    let _ = c.machine(a, m).await;
    let _ = c.machine_processes(a, m).await;
    let _ = c
        .metrics_history(a, aloft_types::history::HistoryRange::Day)
        .await;
    let _ = c.start_machine(a, m).await;
    let _ = c.stop_machine(a, m, Some(Signal::Term), None).await;
    let _ = c.restart_machine(a, m).await;
    let _ = c.signal_machine(a, m, Signal::Usr1).await;
    let _ = c.destroy_machine(a, m, true).await;
    let _ = c.cordon_machine(a, m, true).await;
    let _ = c.cordon_machine(a, m, false).await;
    let _ = c.machine_memory(a, m).await;
    let _ = c.set_machine_memory(a, m, 128).await;
    let _ = c.exec(a, m, vec!["true".to_owned()], None).await;
    let _ = c.wait(a, m, MachineState::Started, 1).await;
    let _ = c.acquire_lease(a, m, 60, "test").await;
    let _ = c.machine_lease(a, m).await;
    let _ = c.release_lease(a, m, "nonce").await;
    let _ = c.suspend_machine(a, m).await;
    let _ = c.events(a, m).await;
    let _ = c.versions(a, m).await;
    let _ = c
        .ssh_certificate("personal", &from(json!({"public_key": "ssh-ed25519 AAAA"})))
        .await;
    let _ = c.ssh_tunnel(a, m).await;
    let _ = c.list_orgs().await;
    let _ = c.create_org("acme", None).await;
    let _ = c.org("acme").await;
    let _ = c.delete_org("acme").await;
    let _ = c.create_token(&from(json!({"kind": "org"}))).await;
    let _ = c.list_tokens().await;
    let _ = c.current_token().await;
    let _ = c.revoke_token("t1").await;
    let _ = c
        .update_secrets(
            a,
            BTreeMap::from([("KEY".to_owned(), Some("value".to_owned()))]),
        )
        .await;
    let _ = c.list_secrets(a).await;
    let _ = c.create_volume(a, &from(json!({"name": "data"}))).await;
    let _ = c.list_volumes(a).await;
    let _ = c.volume(a, "vol_1").await;
    let _ = c.extend_volume(a, "vol_1", 2).await;
    let _ = c.update_volume(a, "vol_1", &Default::default()).await;
    let _ = c.volume_snapshots(a, "vol_1").await;
    let _ = c.create_volume_snapshot(a, "vol_1").await;
    let _ = c.destroy_volume(a, "vol_1").await;
}

#[tokio::test]
async fn every_client_request_is_a_documented_operation_and_every_operation_is_sent() {
    let operations = operations();
    assert!(
        operations.len() > 50,
        "the document was read: {operations:?}"
    );
    let (url, seen) = recorder().await;
    call_everything(&Client::new(&url, "aloft_token")).await;
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the recorder saw the client's requests");

    let mut sent = BTreeSet::new();
    let mut undocumented = Vec::new();
    for (method, path) in &seen {
        let matched: Vec<&String> = operations
            .iter()
            .filter(|((m, template), _)| m == method && fits(template, path))
            // A literal segment wins over a `{name}` one (`/certificates/local`).
            .min_by_key(|((_, template), _)| template.matches('{').count())
            .map(|(_, id)| id)
            .into_iter()
            .collect();
        match matched.first() {
            Some(id) => {
                sent.insert((*id).clone());
            }
            None => undocumented.push(format!("{method} {path}")),
        }
    }
    assert!(
        undocumented.is_empty(),
        "the client sends requests the document does not have: {undocumented:#?}"
    );
    let exempt: BTreeSet<&str> = FLY_ONLY.iter().chain(&SCRAPED).copied().collect();
    let unsent: Vec<&String> = operations
        .values()
        .filter(|id| !sent.contains(*id) && !exempt.contains(id.as_str()))
        .collect();
    assert!(
        unsent.is_empty(),
        "operations of the document that no client method sends: {unsent:#?}"
    );
    let stale: Vec<&&str> = exempt.iter().filter(|id| sent.contains(**id)).collect();
    assert!(
        stale.is_empty(),
        "exempt, yet the client sends them: {stale:?}"
    );
    let missing: Vec<&&str> = exempt
        .iter()
        .filter(|id| !operations.values().any(|o| o == **id))
        .collect();
    assert!(
        missing.is_empty(),
        "exempt operations the document lacks: {missing:?}"
    );
}

#[test]
fn templates_fit_paths_segment_by_segment() {
    assert!(fits(
        "/v1/apps/{app}/machines/{id}",
        "/v1/apps/web/machines/m1"
    ));
    assert!(!fits(
        "/v1/apps/{app}/machines/{id}",
        "/v1/apps/web/machines"
    ));
    assert!(!fits("/v1/apps/{app}", "/v1/apps/"));
    assert!(!fits("/v1/apps/{app}/ips", "/v1/apps/web/volumes"));
}
