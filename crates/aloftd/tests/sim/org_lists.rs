//! Fly's organization-wide lists (`GET /v1/orgs/{org}/machines` and `.../volumes`): every
//! app's machines and volumes, oldest change first, filtered, a page at a time with a
//! cursor; another organization's token sees none of them.

use aloft_client::Client;
use aloft_testplatform::SimPlatform;
use aloft_types::MachineState;
use aloft_types::api::{CreateVolumeRequest, MachineRequest};
use aloft_types::machine::MachineConfig;
use serde_json::Value;

async fn get(base: &str, token: &str, path: &str) -> (u16, Value) {
    let response = aloft_testkit::http()
        .get(format!("{base}/v1{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_organization_lists_its_machines_and_volumes_a_page_at_a_time() {
    let platform = SimPlatform::start(1).await;
    let (base, token) = platform.api();
    let client = Client::new(&base, &token);
    let mut made = Vec::new();
    for (app, count) in [("one", 2), ("two", 1)] {
        client.create_app(app, None).await.unwrap();
        for _ in 0..count {
            let machine = client
                .create_machine(
                    app,
                    &MachineRequest::new(MachineConfig {
                        image: "sim/idle:1".to_owned(),
                        ..MachineConfig::default()
                    }),
                )
                .await
                .unwrap();
            client
                .wait(app, &machine.id, MachineState::Started, 60)
                .await
                .unwrap();
            made.push(machine.id);
        }
    }
    let volume = client
        .create_volume("two", &CreateVolumeRequest::named("data"))
        .await
        .unwrap();

    let (status, all) = get(&base, &token, "/orgs/personal/machines").await;
    assert_eq!(status, 200, "{all}");
    let mut listed = ids(&all, "machines");
    assert_eq!(listed.len(), 3, "{all}");
    let times: Vec<&str> = all["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["updated_at"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest change first: {times:?}"
    );
    let first = &all["machines"][0];
    assert_eq!(first["config"]["image"], "sim/idle:1", "{first}");
    assert!(
        ["one", "two"].contains(&first["app_name"].as_str().unwrap()),
        "{first}"
    );
    assert_eq!(all["error_regions"], serde_json::json!([]));
    assert!(all.get("next_cursor").is_none(), "one page: {all}");
    listed.sort();
    let mut expected = made.clone();
    expected.sort();
    assert_eq!(listed, expected);

    // Two pages of two and one, by the cursor; the union is everything, once.
    let (_, page1) = get(&base, &token, "/orgs/personal/machines?limit=2").await;
    let cursor = page1["next_cursor"].as_str().expect("a cursor").to_owned();
    assert_eq!(
        page1["last_machine_id"], page1["machines"][1]["id"],
        "{page1}"
    );
    let (_, page2) = get(
        &base,
        &token,
        &format!("/orgs/personal/machines?limit=2&cursor={cursor}"),
    )
    .await;
    assert!(page2.get("next_cursor").is_none(), "{page2}");
    let mut paged = ids(&page1, "machines");
    paged.extend(ids(&page2, "machines"));
    paged.sort();
    assert_eq!(paged, expected);

    // Filters: summary leaves the config out; state; updated_after; region.
    let (_, summary) = get(&base, &token, "/orgs/personal/machines?summary=true").await;
    assert!(summary["machines"][0].get("config").is_none(), "{summary}");
    let (_, started) = get(
        &base,
        &token,
        "/orgs/personal/machines?state=started,stopped",
    )
    .await;
    assert_eq!(ids(&started, "machines").len(), 3, "{started}");
    let (_, stopped) = get(&base, &token, "/orgs/personal/machines?state=stopped").await;
    assert_eq!(ids(&stopped, "machines").len(), 0, "{stopped}");
    let (_, later) = get(
        &base,
        &token,
        "/orgs/personal/machines?updated_after=2200-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(ids(&later, "machines").len(), 0, "{later}");
    let (_, since) = get(
        &base,
        &token,
        "/orgs/personal/machines?updated_after=2000-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(ids(&since, "machines").len(), 3, "{since}");
    let (_, elsewhere) = get(&base, &token, "/orgs/personal/machines?region=nowhere").await;
    assert_eq!(ids(&elsewhere, "machines").len(), 0, "{elsewhere}");

    // A destroyed machine shows with include_deleted only.
    client.destroy_machine("one", &made[0], true).await.unwrap();
    client
        .wait("one", &made[0], MachineState::Destroyed, 60)
        .await
        .unwrap();
    let (_, live) = get(&base, &token, "/orgs/personal/machines").await;
    assert!(!ids(&live, "machines").contains(&made[0]), "{live}");
    let (_, with_deleted) = get(
        &base,
        &token,
        "/orgs/personal/machines?include_deleted=true&state=destroyed",
    )
    .await;
    assert_eq!(ids(&with_deleted, "machines"), vec![made[0].clone()]);

    // Volumes: the app's name with Fly's volume fields.
    let (status, volumes) = get(&base, &token, "/orgs/personal/volumes").await;
    assert_eq!(status, 200, "{volumes}");
    assert_eq!(ids(&volumes, "volumes"), vec![volume.id.clone()]);
    assert_eq!(volumes["volumes"][0]["app_name"], "two", "{volumes}");
    assert_eq!(volumes["volumes"][0]["size_gb"], 1, "{volumes}");
    assert_eq!(volumes["last_volume_id"], volume.id.as_str(), "{volumes}");
    client.destroy_volume("two", &volume.id).await.unwrap();
    let (_, gone) = get(&base, &token, "/orgs/personal/volumes").await;
    assert_eq!(ids(&gone, "volumes").len(), 0, "{gone}");
    let (_, kept) = get(&base, &token, "/orgs/personal/volumes?include_deleted=true").await;
    assert_eq!(kept["volumes"][0]["state"], "destroyed", "{kept}");

    // Bad queries say what is wrong.
    for (path, says) in [
        ("/orgs/personal/machines?limit=0", "limit"),
        ("/orgs/personal/machines?cursor=nope", "cursor"),
        (
            "/orgs/personal/machines?updated_after=yesterday",
            "updated_after",
        ),
        (
            "/orgs/personal/volumes?include_deleted=maybe",
            "include_deleted",
        ),
    ] {
        let (status, error) = get(&base, &token, path).await;
        assert_eq!(status, 400, "{path}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{path}: {error}"
        );
    }

    // Another organization sees its own (nothing) and never ours.
    let other = client.create_org("other", None).await.unwrap();
    let (status, theirs) = get(&base, &other.token, "/orgs/personal/machines").await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(ids(&theirs, "machines").len(), 0, "{theirs}");
    let (_, ours) = get(&base, &token, "/orgs").await;
    let slug = ours[0]["slug"].as_str().unwrap().to_owned();
    // (`personal` names the caller's own organization, so ours is asked by its slug
    // unless it is that very word.)
    if slug != "personal" {
        for list in ["machines", "volumes"] {
            let (status, _) = get(&base, &other.token, &format!("/orgs/{slug}/{list}")).await;
            assert_eq!(status, 404, "{list}");
        }
    }
    let (status, _) = get(&base, &token, "/orgs/no-such-org/machines").await;
    assert_eq!(status, 404);
}

/// `POST /v1/apps/{app}/deploy_token` (Fly's): a token for that one app, for its `expiry`
/// (Fly's 20 years without one).
#[tokio::test]
async fn a_deploy_token_is_for_its_app_alone() {
    let platform = SimPlatform::start(1).await;
    let (base, token) = platform.api();
    let client = Client::new(&base, &token);
    for app in ["mine", "theirs"] {
        client.create_app(app, None).await.unwrap();
    }
    let post = |path: &str, body: Value| {
        aloft_testkit::http()
            .post(format!("{base}/v1{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let answer = post(
        "/apps/mine/deploy_token",
        serde_json::json!({"expiry": "720h"}),
    )
    .await
    .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let created: Value = answer.json().await.unwrap();
    let deploy = created["token"].as_str().expect("a token").to_owned();
    let (status, app) = get(&base, &deploy, "/apps/mine").await;
    assert_eq!(status, 200, "{app}");
    let (status, _) = get(&base, &deploy, "/apps/theirs").await;
    assert_eq!(
        status, 404,
        "another app of the organization is not the token's"
    );
    let (_, current) = get(&base, &deploy, "/tokens/current").await;
    assert_eq!(current["kind"], "deploy", "{current}");
    assert_eq!(current["app"], "mine", "{current}");
    let expires = current["expires_at"]
        .as_str()
        .expect("an expiry")
        .to_owned();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let days = (aloft_types::time::parse_rfc3339_ns(&expires).unwrap() - now_ns)
        / (86_400 * 1_000_000_000);
    assert_eq!(days, 29, "720 hours from now: {expires}");
    // Without an expiry: Fly's twenty years.
    let lasting: Value = post("/apps/mine/deploy_token", serde_json::json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, long) = get(&base, lasting["token"].as_str().unwrap(), "/tokens/current").await;
    let year: i32 = long["expires_at"].as_str().unwrap()[..4].parse().unwrap();
    assert!(year >= 2045, "{long}");
    let refused = post(
        "/apps/mine/deploy_token",
        serde_json::json!({"expiry": "soon"}),
    )
    .await
    .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let unknown = post("/apps/nope/deploy_token", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}
