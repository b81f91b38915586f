//! Metrics end to end: a real Prometheus (Debian's) scrapes `aloftd` with the shipped
//! scrape config, and the shipped Grafana dashboard asks only for metrics that exist.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aloft_testkit::eventually;
use aloft_types::api::DeployRequest;
use aloft_types::machine::MachineConfig;

use crate::proxy::proxy_address;
use crate::{Host, Server};

const APP: &str = "metered";

/// Prometheus, stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Prometheus with the shipped scrape config pointed at `target` (scraping every
/// second instead of every 15), with `operator` for the platform's metrics and `token` for
/// the organization's app metrics.
fn prometheus(target: &str, operator: &str, token: &str) -> Prometheus {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/aloft.yml"
    ))
    .unwrap();
    assert!(shipped.contains("127.0.0.1:4280") && shipped.contains("scrape_interval: 15s"));
    let config = shipped
        .replace("127.0.0.1:4280", target)
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    let data = tempfile::tempdir().unwrap();
    let token_file = data.path().join("aloft-token");
    std::fs::write(&token_file, token).unwrap();
    assert!(config.contains("/etc/prometheus/aloft-token"));
    let config = config.replace(
        "/etc/prometheus/aloft-token",
        &token_file.display().to_string(),
    );
    let operator_file = data.path().join("aloft-operator-token");
    std::fs::write(&operator_file, operator).unwrap();
    assert!(config.contains("/etc/prometheus/aloft-operator-token"));
    let config = config.replace(
        "/etc/prometheus/aloft-operator-token",
        &operator_file.display().to_string(),
    );
    let path = data.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let port = aloft_testkit::free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            data.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's prometheus (`cargo xtask test` installs it)");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _data: data,
    }
}

/// The result vector of an instant PromQL query, when it has samples.
async fn query(prometheus: &Prometheus, promql: &str) -> Option<Vec<serde_json::Value>> {
    let answer: serde_json::Value = aloft_testkit::http()
        .get(format!("{}/api/v1/query", prometheus.url))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let result = answer["data"]["result"].as_array()?.clone();
    (!result.is_empty()).then_some(result)
}

/// Every `aloft_*` metric name in the dashboard's queries.
fn dashboard_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/aloft-app.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"].as_str() {
            exprs.push(query.to_owned());
        }
    }
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("aloft_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    assert!(names.len() >= 8, "{names:?}");
    names
}

#[tokio::test]
async fn prometheus_scrapes_every_role_and_the_apps_metrics_with_the_shipped_config() {
    let host = Host::new();
    let image = aloft_testkit::testapp_image();
    let server = Server::start(&host).await;
    let client = &server.client;
    client.create_app(APP, None).await.unwrap();
    let deployment = client
        .deploy(
            APP,
            &DeployRequest {
                image,
                config: MachineConfig {
                    services: vec![crate::checks::checked_service()],
                    metrics: Some(aloft_types::machine::MachineMetrics {
                        port: 8080,
                        path: "/metrics".to_owned(),
                        https: false,
                    }),
                    ..MachineConfig::default()
                },
                strategy: None,
                max_unavailable: None,
                wait_timeout: Some(60),
                initial_count: Some(1),
                description: None,
                release_command: None,
                release_command_timeout: None,
                release_command_guest: None,
                smoke_checks: None,
                smoke_check_seconds: None,
                only_machines: None,
                regions: None,
                fly_toml: None,
            },
        )
        .await
        .unwrap();
    eventually("the deploy", Duration::from_secs(90), || async {
        let current = client.deployment(APP, &deployment.id).await.ok()?;
        (current.status == "succeeded").then_some(())
    })
    .await;
    let machine = client.list_machines(APP).await.unwrap().remove(0);

    client
        .dig(APP, &format!("{APP}.internal"), "AAAA")
        .await
        .unwrap();
    let target = client.base_url().trim_start_matches("http://").to_owned();
    // The first start's token is the operator's (the platform's metrics); the apps' own
    // metrics take a readonly token of the organization, as the shipped config says.
    let operator = std::fs::read_to_string(host.data().join("admin-token")).unwrap();
    let readonly = client
        .create_token(&aloft_types::api::CreateTokenRequest {
            kind: "readonly".to_owned(),
            app: None,
            name: Some("prometheus".to_owned()),
            expiry: None,
        })
        .await
        .unwrap()
        .token;
    let prometheus = prometheus(&target, operator.trim(), &readonly);
    let proxy = proxy_address(&host);
    let http = aloft_testkit::http();
    let rate = format!("sum(rate(aloft_proxy_requests_total{{app=\"{APP}\"}}[30s]))");
    let requests = eventually(
        "the app's request rate in Prometheus",
        Duration::from_secs(90),
        || async {
            for _ in 0..20 {
                let _ =
                    crate::proxy::get(&http, proxy, &format!("{APP}.aloft.localhost"), "/").await;
            }
            query(&prometheus, &rate).await.filter(|r| {
                r[0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            })
        },
    )
    .await;
    eprintln!("request rate: {requests:?}");
    let memory = format!("aloft_machine_memory_bytes{{machine=\"{}\"}}", machine.id);
    let used = eventually(
        "the machine's memory in Prometheus",
        Duration::from_secs(90),
        || async { query(&prometheus, &memory).await },
    )
    .await;
    let bytes: f64 = used[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(bytes > 0.0, "{used:?}");
    assert_eq!(used[0]["metric"]["app"], APP);
    let up = query(&prometheus, "up{job=\"aloft\"}").await.unwrap();
    assert_eq!(up[0]["value"][1], "1");
    assert!(
        query(&prometheus, "aloft_api_requests_total")
            .await
            .is_some()
    );
    assert!(query(&prometheus, "aloft_logs_lines_total").await.is_some());
    let dns = query(
        &prometheus,
        "aloft_dns_queries_total{type=\"AAAA\",handled=\"answered\"}",
    )
    .await;
    assert!(dns.is_some(), "the DNS server's counters");

    // The app's own metrics, through the organization's federation endpoint.
    let own = format!(
        "testapp_requests_total{{app=\"{APP}\",machine=\"{}\"}}",
        machine.id
    );
    let served = eventually(
        "the app's own metrics in Prometheus",
        Duration::from_secs(90),
        || async { query(&prometheus, &own).await },
    )
    .await;
    assert_eq!(served[0]["metric"]["job"], "aloft-apps", "{served:?}");
    assert_eq!(served[0]["metric"]["region"], "local", "{served:?}");
    let refused = aloft_testkit::http()
        .get(format!("{}/v1/orgs/personal/metrics", client.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the app metrics need a token");

    // The platform's metrics name every organization's apps: the operator's token only
    // (Prometheus, with it, scraped them above: `up` is 1).
    let platform = |token: Option<String>| {
        let mut request = aloft_testkit::http().get(format!("{}/metrics", client.base_url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(platform(None).await.unwrap().status(), 401);
    let by_org_token = platform(Some(readonly.clone())).await.unwrap();
    assert_eq!(by_org_token.status(), 403, "an organization's token");
    let by_operator = platform(Some(operator.trim().to_owned())).await.unwrap();
    assert_eq!(by_operator.status(), 200);
    assert!(
        by_operator
            .text()
            .await
            .unwrap()
            .contains("aloft_api_requests_total")
    );

    // Every metric the dashboard asks for is a family the scrape announced.
    let metadata: serde_json::Value = aloft_testkit::http()
        .get(format!("{}/api/v1/targets/metadata", prometheus.url))
        .query(&[("match_target", "{job=\"aloft\"}")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let families: BTreeSet<String> = metadata["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metric"].as_str().unwrap().to_owned())
        .collect();
    for name in dashboard_metrics() {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            families.contains(family) || families.contains(&name),
            "the dashboard asks for {name}, which aloftd does not expose; it has {families:?}"
        );
    }
}
