//! Per-organization quotas: each request past one is refused with a 422 naming the quota,
//! while an organization with its own larger quota does the same thing (the positive
//! control), and concurrent requests never take more than the quota together.

use std::collections::BTreeMap;

use aloft_control::{Quota, Quotas};
use aloft_testplatform::{Backend, ControlApi, ControlOptions};
use serde_json::{Value, json};

/// `method path` with `token` and a JSON body: (status, body).
async fn call(
    api: &ControlApi,
    token: &str,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = aloft_testkit::http()
        .request(method, format!("{}{path}", api.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn machine(cpus: u32, memory_mb: u32) -> Value {
    json!({ "config": { "image": "busybox", "guest": { "cpu_kind": "shared", "cpus": cpus, "memory_mb": memory_mb } } })
}

#[tokio::test]
async fn an_organization_gets_no_more_than_its_quota_and_another_its_own() {
    let small = Quota {
        apps: 2,
        cpus: 2,
        memory_mb: 1024,
        volume_gb: 3,
        ips: 1,
    };
    let api = ControlApi::start(ControlOptions {
        quotas: Some(Quotas {
            default: small,
            by_org: BTreeMap::from([(
                "roomy".to_owned(),
                Quota {
                    apps: 10,
                    cpus: 16,
                    memory_mb: 16_384,
                    volume_gb: 100,
                    ips: 5,
                },
            )]),
        }),
        ..ControlOptions::new(Backend::Sqlite)
    })
    .await;
    let roomy = api.client.create_org("roomy", None).await.unwrap().token;
    let tight = api.token.clone();

    // One app each first.
    for (token, name) in [(&tight, "t-one"), (&roomy, "r-one")] {
        let (status, body) =
            call(&api, token, "POST", "/v1/apps", json!({ "app_name": name })).await;
        assert_eq!(status, 201, "{body}");
    }
    // Apps: the second fits, the third does not; the roomy organization makes a third.
    let (status, _) = call(
        &api,
        &tight,
        "POST",
        "/v1/apps",
        json!({ "app_name": "t-two" }),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        &api,
        &tight,
        "POST",
        "/v1/apps",
        json!({ "app_name": "t-three" }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let said = body["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        said.contains("2 apps of its quota of 2") && said.contains("[quotas]"),
        "{said}"
    );
    for name in ["r-two", "r-three"] {
        let (status, body) = call(
            &api,
            &roomy,
            "POST",
            "/v1/apps",
            json!({ "app_name": name }),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }

    // Machines: CPUs and memory of live machines.
    let (status, body) = call(
        &api,
        &tight,
        "POST",
        "/v1/apps/t-two/machines",
        machine(2, 512),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let first = body["id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        &api,
        &tight,
        "POST",
        "/v1/apps/t-two/machines",
        machine(1, 256),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("CPUs"), "{body}");
    let (status, body) = call(
        &api,
        &roomy,
        "POST",
        "/v1/apps/r-two/machines",
        machine(4, 2048),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // An update to a bigger size counts only the difference: memory 512 -> 1024 fits,
    // 1024 -> 2048 does not.
    let (status, body) = call(
        &api,
        &tight,
        "POST",
        &format!("/v1/apps/t-two/machines/{first}"),
        machine(2, 1024),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &api,
        &tight,
        "POST",
        &format!("/v1/apps/t-two/machines/{first}"),
        machine(2, 2048),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("MB of memory"),
        "{body}"
    );

    // Volumes: gigabytes, at create and extend.
    let volume = |gb: i64| json!({ "name": "data", "size_gb": gb });
    let (status, body) = call(&api, &tight, "POST", "/v1/apps/t-two/volumes", volume(3)).await;
    assert_eq!(status, 200, "{body}");
    let data = body["id"].as_str().unwrap().to_owned();
    let (status, body) = call(&api, &tight, "POST", "/v1/apps/t-two/volumes", volume(1)).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("GB of volumes"),
        "{body}"
    );
    let (status, body) = call(
        &api,
        &tight,
        "PUT",
        &format!("/v1/apps/t-two/volumes/{data}/extend"),
        json!({ "size_gb": 4 }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = call(&api, &roomy, "POST", "/v1/apps/r-two/volumes", volume(50)).await;
    assert_eq!(status, 200, "{body}");

    // IPs.
    let v4 = json!({ "type": "v4" });
    let (status, body) = call(&api, &tight, "POST", "/v1/apps/t-two/ips", v4.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&api, &tight, "POST", "/v1/apps/t-two/ips", v4.clone()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("IP addresses"),
        "{body}"
    );
    let (status, body) = call(&api, &roomy, "POST", "/v1/apps/r-two/ips", v4.clone()).await;
    assert_eq!(status, 200, "{body}");
    api.stop().await;
}

#[tokio::test]
async fn concurrent_requests_never_take_more_than_the_quota_together() {
    let api = ControlApi::start(ControlOptions {
        quotas: Some(Quotas {
            default: Quota {
                apps: 3,
                ..Quota::default()
            },
            by_org: BTreeMap::new(),
        }),
        ..ControlOptions::new(Backend::Sqlite)
    })
    .await;
    let tries = (0..12).map(|n| {
        let api = &api;
        async move {
            call(
                api,
                &api.token,
                "POST",
                "/v1/apps",
                json!({ "app_name": format!("race-{n}") }),
            )
            .await
            .0
        }
    });
    let statuses = futures_util::future::join_all(tries).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 422).count(),
        9,
        "{statuses:?}"
    );
    api.stop().await;
}
