//! Who may see and do what.

use aloft_types::Duration;
use aloft_types::api::{CreateTokenRequest, CreateVolumeRequest, MachineRequest};
use aloft_types::machine::MachineConfig;
use reqwest::Method;

use crate::{Api, on_both_backends};

on_both_backends!(
    tokens_are_required_and_checked,
    organizations_see_only_their_own,
    token_scopes_limit_what_a_token_does,
    bad_input_is_a_clear_4xx,
    a_held_lease_guards_mutations
);

fn machine(name: &str) -> MachineRequest {
    MachineRequest {
        name: Some(name.into()),
        skip_launch: true,
        ..MachineRequest::new(MachineConfig {
            image: "busybox:1".into(),
            ..MachineConfig::default()
        })
    }
}

async fn tokens_are_required_and_checked(api: Api) {
    let (status, body) = api.raw(Method::GET, "/v1/apps", None, None).await;
    assert_eq!(status, 401);
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert_eq!(
        api.raw(Method::GET, "/v1/apps", Some("aloft_wrong"), None)
            .await
            .0,
        401
    );
    let (status, _) = api
        .raw(Method::GET, "/v1/apps", Some(&api.token), None)
        .await;
    assert_eq!(status, 200);

    let created = api
        .admin
        .create_token(&CreateTokenRequest {
            kind: "readonly".into(),
            app: None,
            name: Some("ci".into()),
            expiry: None,
        })
        .await
        .unwrap();
    assert!(created.token.starts_with(aloft_control::TOKEN_PREFIX));
    assert_eq!(
        api.client(&created.token)
            .current_token()
            .await
            .unwrap()
            .kind,
        "readonly"
    );
    api.admin.revoke_token(&created.record.id).await.unwrap();
    let revoked = api.client(&created.token).list_apps().await.unwrap_err();
    assert_eq!(revoked.status(), Some(401), "{revoked}");

    let short = api
        .admin
        .create_token(&CreateTokenRequest {
            kind: "org".into(),
            app: None,
            name: None,
            expiry: Some(Duration::from_millis(1)),
        })
        .await
        .unwrap();
    let expired = aloft_testkit::eventually(
        "the short token to expire",
        std::time::Duration::from_secs(10),
        || async {
            api.client(&short.token)
                .list_apps()
                .await
                .err()
                .filter(|e| e.status() == Some(401))
        },
    )
    .await;
    assert!(
        expired.to_string().contains("revoked or expired"),
        "{expired}"
    );
    let listed = api.admin.list_tokens().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|t| t.id == created.record.id && t.revoked_at.is_some())
    );
    assert!(
        !serde_json::to_string(&listed)
            .unwrap()
            .contains(&created.token),
        "listings never show secrets"
    );
}

async fn organizations_see_only_their_own(api: Api) {
    api.admin.create_app("mine", None).await.unwrap();
    let machine = api
        .admin
        .create_machine("mine", &machine("one"))
        .await
        .unwrap();
    // Encrypted as Fly's are: by default, or asked as Fly's clients ask; not when asked
    // not to be.
    for (asked, encrypted) in [(None, true), (Some(true), true), (Some(false), false)] {
        let volume = api
            .admin
            .create_volume(
                "mine",
                &CreateVolumeRequest {
                    encrypted: asked,
                    ..CreateVolumeRequest::named("data")
                },
            )
            .await
            .unwrap();
        assert_eq!(volume.encrypted, encrypted, "asked {asked:?}: {volume:?}");
    }
    let volume = api.admin.list_volumes("mine").await.unwrap().remove(0);

    let other = api
        .admin
        .create_org("other", Some("Other Co"))
        .await
        .unwrap();
    let stranger = api.client(&other.token);
    assert!(stranger.list_apps().await.unwrap().apps.is_empty());
    for error in [
        stranger.app("mine").await.unwrap_err(),
        stranger.machine("mine", &machine.id).await.unwrap_err(),
        stranger.volume("mine", &volume.id).await.unwrap_err(),
        stranger
            .start_machine("mine", &machine.id)
            .await
            .unwrap_err(),
        stranger.org("personal").await.unwrap_err(),
    ] {
        assert_eq!(
            error.status(),
            Some(404),
            "another organization's objects do not exist for it: {error}"
        );
    }
    assert_eq!(
        stranger
            .list_orgs()
            .await
            .unwrap()
            .iter()
            .map(|o| o.slug.as_str())
            .collect::<Vec<_>>(),
        vec!["other"]
    );
    assert_eq!(
        stranger
            .create_app("mine", None)
            .await
            .unwrap_err()
            .status(),
        Some(409),
        "app names are global"
    );
    let backend = api
        .admin
        .create_app_in_network("backend", None, Some("internal"))
        .await
        .unwrap();
    assert_eq!(backend.network, "internal");
    assert_eq!(api.admin.app("mine").await.unwrap().network, "default");
}

async fn token_scopes_limit_what_a_token_does(api: Api) {
    api.admin.create_app("web", None).await.unwrap();
    api.admin.create_app("api", None).await.unwrap();
    let readonly = api
        .admin
        .create_token(&CreateTokenRequest {
            kind: "readonly".into(),
            app: None,
            name: None,
            expiry: None,
        })
        .await
        .unwrap();
    let reader = api.client(&readonly.token);
    assert_eq!(reader.list_apps().await.unwrap().total_apps, 2);
    assert_eq!(
        reader
            .create_machine("web", &machine("x"))
            .await
            .unwrap_err()
            .status(),
        Some(403)
    );
    assert_eq!(
        reader.create_app("new", None).await.unwrap_err().status(),
        Some(403)
    );

    let deploy = api
        .admin
        .create_token(&CreateTokenRequest {
            kind: "deploy".into(),
            app: Some("web".into()),
            name: None,
            expiry: None,
        })
        .await
        .unwrap();
    let deployer = api.client(&deploy.token);
    deployer.create_machine("web", &machine("x")).await.unwrap();
    assert_eq!(
        deployer.app("api").await.unwrap_err().status(),
        Some(404),
        "a deploy token sees only its app"
    );
    assert_eq!(
        deployer
            .list_apps()
            .await
            .unwrap()
            .apps
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        vec!["web"]
    );
    assert_eq!(
        deployer.list_tokens().await.unwrap_err().status(),
        Some(403)
    );
    let missing_app = api
        .admin
        .create_token(&CreateTokenRequest {
            kind: "deploy".into(),
            app: None,
            name: None,
            expiry: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing_app.status(), Some(400));
}

async fn bad_input_is_a_clear_4xx(api: Api) {
    let token = Some(api.token.as_str());
    api.admin.create_app("web", None).await.unwrap();
    let cases: &[(Method, &str, &str, u16, &str)] = &[
        (
            Method::POST,
            "/v1/apps",
            "{\"app_name\": ",
            400,
            "malformed JSON",
        ),
        (
            Method::POST,
            "/v1/apps/web/ips",
            "{\"type\": \"v6\"}",
            400,
            "use \\\"v4\\\"",
        ),
        (
            Method::POST,
            "/v1/apps/web/ips",
            "{\"type\": \"v4\", \"region\": \"Europe\"}",
            400,
            "region",
        ),
        (
            Method::POST,
            "/v1/apps",
            "{\"app_name\": \"Bad_Name\"}",
            400,
            "app_name",
        ),
        (
            Method::POST,
            "/v1/apps",
            "",
            400,
            "request body is required",
        ),
        (
            Method::POST,
            "/v1/apps/web/machines",
            "{\"config\": {}}",
            422,
            "config.image is required",
        ),
        (
            Method::POST,
            "/v1/apps/web/machines",
            "{\"config\": {\"image\": \"x\"}, \"region\": \"Mars Base\"}",
            400,
            "region",
        ),
        (
            Method::POST,
            "/v1/apps/web/machines",
            "{\"config\": {\"image\": \"x\", \"guest\": {\"cpus\": \"two\"}}}",
            400,
            "cpus",
        ),
        (
            Method::POST,
            "/v1/apps/web/machines",
            "{\"config\": {\"image\": \"x\"}, \"name\": \"UPPER\"}",
            400,
            "name",
        ),
        (
            Method::POST,
            "/v1/apps/web/volumes",
            "{\"name\": \"data\", \"snapshot_id\": \"vol_x\"}",
            404,
            "snapshot vol_x not found",
        ),
        (
            Method::GET,
            "/v1/apps/web/volumes/vol_1/snapshots",
            "",
            404,
            "volume vol_1",
        ),
        (
            Method::PUT,
            "/v1/apps/web/volumes/vol_1",
            "{\"snapshot_retention\": 5}",
            404,
            "volume vol_1",
        ),
        (
            Method::POST,
            "/v1/apps/web/volumes",
            "{\"name\": \"data\", \"fstype\": \"raw\"}",
            422,
            "only \\\"ext4\\\" is supported",
        ),
        (
            Method::POST,
            "/v1/apps/web/volumes",
            "{\"name\": \"data\", \"snapshot_id\": \"vs_aaaaaaaaaaaaaaaa\"}",
            404,
            "snapshot vs_aaaaaaaaaaaaaaaa not found",
        ),
        (
            Method::POST,
            "/v1/apps/web/volumes",
            "{\"name\": \"data\", \"source_volume_id\": \"vol_1\"}",
            422,
            "forking a volume is not supported",
        ),
        (
            Method::GET,
            "/v1/apps/web/machines/not-an-id",
            "",
            404,
            "machine not-an-id not found",
        ),
        (
            Method::GET,
            "/v1/apps/nope/machines",
            "",
            404,
            "app nope not found",
        ),
        (
            Method::POST,
            "/v1/apps/web/volumes",
            "{\"name\": \"data\", \"size_gb\": 900}",
            400,
            "1 to 500 GB",
        ),
        (
            Method::POST,
            "/v1/apps/web/secrets",
            "{\"values\": {\"FLY_X\": \"1\"}}",
            400,
            "reserved",
        ),
        (
            Method::POST,
            "/v1/tokens",
            "{\"kind\": \"god\"}",
            400,
            "expected org, deploy, readonly, ssh or operator",
        ),
        (Method::GET, "/v1/nothing-here", "", 404, "route not found"),
    ];
    for (method, path, body, status, needle) in cases {
        let (got, text) = api
            .raw(
                method.clone(),
                path,
                token,
                (!body.is_empty()).then_some(*body),
            )
            .await;
        assert_eq!(got, *status, "{method} {path} {body}: {text}");
        assert!(
            text.contains(needle),
            "{method} {path}: {text:?} should mention {needle:?}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert!(json["error"].is_string(), "{text}");
    }
    let created = api
        .admin
        .create_machine("web", &machine("waiting"))
        .await
        .unwrap();
    let (status, text) = api
        .raw(
            Method::GET,
            &format!("/v1/apps/web/machines/{}/wait?timeout=61", created.id),
            token,
            None,
        )
        .await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = api
        .raw(
            Method::GET,
            &format!(
                "/v1/apps/web/machines/{}/wait?state=started&timeout=1",
                created.id
            ),
            token,
            None,
        )
        .await;
    assert_eq!(status, 408, "{text}");
}

async fn a_held_lease_guards_mutations(api: Api) {
    let token = Some(api.token.as_str());
    api.admin.create_app("web", None).await.unwrap();
    let created = api
        .admin
        .create_machine("web", &machine("leased"))
        .await
        .unwrap();
    let path = format!("/v1/apps/web/machines/{}", created.id);
    let (status, body) = api
        .raw(
            Method::POST,
            &format!("{path}/lease"),
            token,
            Some("{\"ttl\": 60, \"description\": \"deploy\"}"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let lease: serde_json::Value = serde_json::from_str(&body).unwrap();
    let nonce = lease["data"]["nonce"].as_str().unwrap().to_owned();

    let (status, body) = api
        .raw(Method::POST, &format!("{path}/cordon"), token, None)
        .await;
    assert_eq!(
        status, 412,
        "a mutation without the nonce is refused: {body}"
    );
    assert!(body.contains("fly-machine-lease-nonce"), "{body}");
    let (status, _) = api
        .raw(Method::POST, &format!("{path}/lease"), token, Some("{}"))
        .await;
    assert_eq!(status, 409, "a second lease is refused while one is held");

    let http = aloft_testkit::http();
    let with_nonce = |method: Method, url: String| {
        http.request(method, url)
            .bearer_auth(&api.token)
            .header("fly-machine-lease-nonce", &nonce)
    };
    let response = with_nonce(Method::POST, format!("{}{path}/cordon", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "the holder may change it");
    let response = with_nonce(Method::DELETE, format!("{}{path}/lease", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (status, body) = api
        .raw(Method::POST, &format!("{path}/uncordon"), token, None)
        .await;
    assert_eq!(status, 200, "released: anyone may change it again: {body}");

    let versions = api.admin.versions("web", &created.id).await.unwrap();
    assert_eq!(versions.len(), 1);
    let events: Vec<String> = api
        .admin
        .events("web", &created.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(events, vec!["uncordon", "cordon", "launch"], "newest first");
}

/// A host that cannot encrypt (its volumes are directories, or its kernel lacks ext4
/// encryption): a volume asked to be encrypted is refused with the reason, never made in
/// the clear while claiming otherwise; by default it is made, and says it is not.
#[tokio::test]
async fn encryption_a_host_cannot_give_is_refused() {
    let api = aloft_testplatform::ControlApi::start(aloft_testplatform::ControlOptions {
        encrypts_volumes: false,
        ..aloft_testplatform::ControlOptions::new(aloft_testplatform::Backend::Sqlite)
    })
    .await;
    api.client.create_app("plain", None).await.unwrap();
    let asked = CreateVolumeRequest {
        encrypted: Some(true),
        ..CreateVolumeRequest::named("data")
    };
    match api.client.create_volume("plain", &asked).await {
        Err(aloft_client::ClientError::Api { status, message }) => {
            assert_eq!(status, 422, "{message}");
            assert!(
                message.contains("encrypted: host") && message.contains("--no-encryption"),
                "{message}"
            );
        }
        other => panic!("an encrypted volume on a host that cannot encrypt: {other:?}"),
    }
    for asked in [None, Some(false)] {
        let volume = api
            .client
            .create_volume(
                "plain",
                &CreateVolumeRequest {
                    encrypted: asked,
                    ..CreateVolumeRequest::named("data")
                },
            )
            .await
            .unwrap();
        assert!(!volume.encrypted, "asked {asked:?}: {volume:?}");
    }
}
