//! Security: each test tries an attack one tenant could make on another (or on the
//! platform) through the API, after a positive control shows the probe can succeed.

use aloft_client::Client;
use aloft_testplatform::{Backend, ControlApi, ControlOptions};

async fn platform_with_edge() -> ControlApi {
    ControlApi::start(ControlOptions {
        edge: Some(aloft_control::EdgeAddress {
            apps_domain: "apps.example.net".to_owned(),
            https_port: 443,
            public_addresses: Vec::new(),
        }),
        ..ControlOptions::new(Backend::Sqlite)
    })
    .await
}

/// Names under the platform's apps domain are the platform's: `*.<apps_domain>` would take
/// every app's traffic (and removing it would break HTTPS for all), `<other>.<apps_domain>`
/// another app's.
#[tokio::test]
async fn no_app_claims_a_name_under_the_apps_domain() {
    let platform = platform_with_edge().await;
    let admin = &platform.client;
    admin.create_app("mine", None).await.unwrap();
    admin.create_app("theirs", None).await.unwrap();
    // The positive control: a name of the app's own domain is taken.
    admin
        .add_certificate("mine", "www.mine.example.org")
        .await
        .unwrap();
    for name in [
        "*.apps.example.net",
        "theirs.apps.example.net",
        "apps.example.net",
        "*.x.APPS.example.net.",
    ] {
        let error = admin
            .add_certificate("mine", name)
            .await
            .expect_err(name)
            .to_string();
        assert!(error.contains("apps domain"), "{name}: {error}");
    }
    platform.stop().await;
}

/// A wildcard over another tenant's name, or a name under another tenant's wildcard, is
/// theirs: the proxy would send one tenant's requests to the other.
#[tokio::test]
async fn no_app_claims_a_name_that_overlaps_another_apps() {
    let platform = platform_with_edge().await;
    let admin = &platform.client;
    admin.create_app("victim", None).await.unwrap();
    admin
        .add_certificate("victim", "shop.example.org")
        .await
        .unwrap();
    admin
        .add_certificate("victim", "*.victim.example.org")
        .await
        .unwrap();
    let other = admin.create_org("attacker", None).await.unwrap();
    let attacker = Client::new(&platform.url, &other.token);
    attacker.create_app("greedy", None).await.unwrap();
    // The positive control: names nobody has are free, and the owner can add more under
    // its own wildcard.
    attacker
        .add_certificate("greedy", "greedy.example.com")
        .await
        .unwrap();
    admin
        .add_certificate("victim", "api.victim.example.org")
        .await
        .unwrap();
    for name in [
        "shop.example.org",
        "*.example.org",
        "*.victim.example.org",
        "www.victim.example.org",
    ] {
        let error = attacker
            .add_certificate("greedy", name)
            .await
            .expect_err(name)
            .to_string();
        assert!(
            error.contains("another app") || error.contains("409"),
            "{name}: {error}"
        );
    }
    platform.stop().await;
}

fn sink(kind: &str, url: &str) -> aloft_types::api::CreateLogSinkRequest {
    aloft_types::api::CreateLogSinkRequest {
        kind: kind.to_owned(),
        url: url.to_owned(),
        headers: std::collections::BTreeMap::new(),
        app: None,
        ca_pem: None,
    }
}

/// Log sinks are tenants' URLs that the platform connects to: the host's own services
/// (loopback), cloud metadata (link-local), private networks and the machines' network
/// are refused, by address or by a name that resolves to one.
#[tokio::test]
async fn log_sinks_cannot_reach_the_host_metadata_or_private_networks() {
    let platform = platform_with_edge().await;
    let admin = &platform.client;
    // The positive control: a global address is accepted (no log store runs here, so
    // nothing connects to it).
    admin
        .create_log_sink(&sink("http", "http://203.0.113.7:8080/ingest"))
        .await
        .unwrap();
    for (kind, url) in [
        ("http", "http://127.0.0.1:9200/"),
        ("http", "http://localhost:9200/"),
        ("loki", "http://169.254.169.254/latest/meta-data/"),
        ("http", "https://[::1]:443/"),
        ("http", "http://user@10.0.0.5/"),
        ("syslog", "tcp://[fdaa::3]:53"),
        ("syslog", "tls://192.168.1.1:6514"),
        ("syslog", "tcp://0.0.0.0:22"),
    ] {
        let error = admin
            .create_log_sink(&sink(kind, url))
            .await
            .expect_err(url)
            .to_string();
        assert!(error.contains("may not reach"), "{url}: {error}");
    }
    assert_eq!(
        admin.log_sinks().await.unwrap().len(),
        1,
        "nothing else was stored"
    );
    platform.stop().await;
}

/// The platform is the operator's: an organization's token does not create organizations,
/// mint operator tokens, list the hosts, nor (for one app's deploy or ssh token) read the
/// whole organization's metrics. The first start's token is the operator's and does all
/// of it (the positive control).
#[tokio::test]
async fn only_the_operator_creates_organizations_and_sees_the_platform() {
    let platform = ControlApi::start(ControlOptions::new(Backend::Sqlite)).await;
    let operator = &platform.client;
    assert_eq!(operator.current_token().await.unwrap().kind, "operator");
    // The positive controls: the operator creates an organization and lists the hosts.
    let tenant = operator.create_org("tenant", None).await.unwrap();
    operator.platform_hosts().await.unwrap();
    let tenant = Client::new(&platform.url, &tenant.token);
    assert_eq!(tenant.current_token().await.unwrap().kind, "org");
    tenant.create_app("web", None).await.unwrap();

    let refused = tenant.create_org("another", None).await.unwrap_err();
    assert_eq!(refused.status(), Some(403), "{refused}");
    assert!(refused.to_string().contains("operator"), "{refused}");
    let refused = tenant.platform_hosts().await.unwrap_err();
    assert_eq!(refused.status(), Some(403), "{refused}");
    let token = |kind: &str, app: Option<&str>| aloft_types::api::CreateTokenRequest {
        kind: kind.to_owned(),
        app: app.map(str::to_owned),
        name: None,
        expiry: None,
    };
    let refused = tenant
        .create_token(&token("operator", None))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(403), "{refused}");
    operator
        .create_token(&token("operator", None))
        .await
        .unwrap();

    // The organization's metrics: its org and readonly tokens, not one app's tokens.
    let metrics = |secret: &str| {
        aloft_testkit::http()
            .get(format!("{}/v1/orgs/tenant/metrics", platform.url))
            .bearer_auth(secret.to_owned())
            .send()
    };
    let readonly = tenant.create_token(&token("readonly", None)).await.unwrap();
    assert_eq!(metrics(&readonly.token).await.unwrap().status(), 200);
    // The operator reads every organization's; a tenant never another's (404).
    assert_eq!(metrics(&platform.token).await.unwrap().status(), 200);
    let personal = aloft_testkit::http()
        .get(format!("{}/v1/orgs/personal/metrics", platform.url))
        .bearer_auth(readonly.token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        personal.status(),
        404,
        "a tenant read another organization's metrics"
    );
    for kind in ["deploy", "ssh"] {
        let scoped = tenant
            .create_token(&token(kind, Some("web")))
            .await
            .unwrap();
        let answer = metrics(&scoped.token).await.unwrap();
        assert_eq!(
            answer.status(),
            403,
            "a {kind} token read the org's metrics"
        );
    }
    platform.stop().await;
}

/// Nobody locks the platform out: the operator's organization cannot be deleted (its
/// tokens would go with it), nor the last operator token revoked; an organization with
/// apps is not deleted under them. Each refusal beside the same call that goes through
/// once the reason is gone.
#[tokio::test]
async fn the_operator_cannot_be_locked_out_and_apps_are_not_orphaned() {
    let platform = ControlApi::start(ControlOptions::new(Backend::Sqlite)).await;
    let operator = &platform.client;
    let refused = operator.delete_org("personal").await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert!(refused.to_string().contains("operator"), "{refused}");
    let own = operator.current_token().await.unwrap();
    let refused = operator.revoke_token(&own.id).await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert!(
        refused.to_string().contains("last operator token"),
        "{refused}"
    );
    // With a second operator token, the first may go.
    let second = operator
        .create_token(&aloft_types::api::CreateTokenRequest {
            kind: "operator".to_owned(),
            app: None,
            name: Some("second".to_owned()),
            expiry: None,
        })
        .await
        .unwrap();
    operator.revoke_token(&own.id).await.unwrap();
    let operator = Client::new(&platform.url, &second.token);
    assert_eq!(operator.current_token().await.unwrap().kind, "operator");

    // A tenant with an app: refused until the app is gone.
    let tenant = operator.create_org("tenant", None).await.unwrap();
    let tenant = Client::new(&platform.url, &tenant.token);
    tenant.create_app("web", None).await.unwrap();
    let refused = tenant.delete_org("tenant").await.unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    assert!(refused.to_string().contains("1 app"), "{refused}");
    tenant.delete_app("web").await.unwrap();
    tenant.delete_org("tenant").await.unwrap();
    platform.stop().await;
}

/// A path parameter that does not parse (a release number past i64) is a 400 in the
/// API's JSON shape, as the OpenAPI document says, not axum's plain text.
#[tokio::test]
async fn rejections_of_the_framework_are_json_too() {
    let platform = ControlApi::start(ControlOptions::new(Backend::Sqlite)).await;
    platform.client.create_app("web", None).await.unwrap();
    let answer = aloft_testkit::http()
        .post(format!(
            "{}/v1/apps/web/releases/9223372036854775808/rollback",
            platform.url
        ))
        .bearer_auth(platform.token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("9223372036854775808"),
        "{body}"
    );
    platform.stop().await;
}
