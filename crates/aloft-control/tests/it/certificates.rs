//! Fly's Certificates resource: its shapes, paging, status codes, and what is refused
//! before anything is ordered. Issuing against a real ACME directory is `aloftd`'s test
//! (`acme`, against Pebble).

use aloft_testplatform::{Backend, ControlApi, ControlOptions};

fn edge() -> Option<aloft_control::EdgeAddress> {
    Some(aloft_control::EdgeAddress {
        apps_domain: "apps.example.net".to_owned(),
        https_port: 443,
        public_addresses: vec![
            "198.51.100.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ],
    })
}

async fn raw(
    platform: &ControlApi,
    method: reqwest::Method,
    path: &str,
) -> (u16, serde_json::Value) {
    let response = aloft_testkit::http()
        .request(method, format!("{}{path}", platform.url))
        .bearer_auth(&platform.token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn certificates_are_listed_in_pages_and_shown_as_fly_shows_them() {
    let platform = ControlApi::start(ControlOptions {
        edge: edge(),
        ..ControlOptions::new(Backend::Sqlite)
    })
    .await;
    let client = &platform.client;
    client.create_app("web", None).await.unwrap();
    for name in ["a.example.org", "b.example.org", "c.example.org"] {
        let added = client.add_certificate("web", name).await.unwrap();
        assert_eq!((added.status.as_str(), added.configured), ("active", true));
    }
    let first = client
        .certificates_page("web", None, None, Some(2))
        .await
        .unwrap();
    assert_eq!(first.total_count, 3);
    assert_eq!(first.certificates.len(), 2);
    let cursor = first.next_cursor.clone().expect("a second page");
    let second = client
        .certificates_page("web", None, Some(&cursor), Some(2))
        .await
        .unwrap();
    assert_eq!(second.certificates.len(), 1);
    assert_eq!(second.certificates[0].hostname, "c.example.org");
    assert!(second.next_cursor.is_none());
    let filtered = client
        .certificates_page("web", Some("b.ex"), None, None)
        .await
        .unwrap();
    assert_eq!((filtered.total_count, filtered.certificates.len()), (1, 1));
    assert_eq!(client.list_certificates("web").await.unwrap().len(), 3);

    // Fly's field names, as a client written for Fly reads them.
    let (status, list) = raw(&platform, reqwest::Method::GET, "/v1/apps/web/certificates").await;
    assert_eq!(status, 200);
    for key in ["certificates", "total_count"] {
        assert!(list.get(key).is_some(), "{key}: {list}");
    }
    let (status, one) = raw(
        &platform,
        reqwest::Method::GET,
        "/v1/apps/web/certificates/a.example.org",
    )
    .await;
    assert_eq!(status, 200);
    for key in [
        "hostname",
        "configured",
        "acme_requested",
        "status",
        "certificates",
        "validation",
        "dns_requirements",
        "validation_errors",
        "rate_limited_until",
    ] {
        assert!(one.get(key).is_some(), "{key}: {one}");
    }
    let detail = client.certificate("web", "a.example.org").await.unwrap();
    assert_eq!(detail.certificates[0].source, "local");
    assert_eq!(detail.dns_requirements.a, ["198.51.100.10"]);
    assert_eq!(detail.dns_requirements.aaaa, ["2001:db8::10"]);
    assert_eq!(detail.dns_requirements.cname, "web.apps.example.net");

    // No ACME directory here: asking for one says so, and changes nothing.
    let (status, body) = raw(
        &platform,
        reqwest::Method::POST,
        "/v1/apps/web/certificates/b.example.org/check",
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let refused = client
        .add_acme_certificate("web", "d.example.org")
        .await
        .expect_err("no directory")
        .to_string();
    assert!(refused.contains("no ACME directory"), "{refused}");
    assert_eq!(client.list_certificates("web").await.unwrap().len(), 3);

    // Deleting a hostname is Fly's 204; an unknown one is a 404.
    let (status, _) = raw(
        &platform,
        reqwest::Method::DELETE,
        "/v1/apps/web/certificates/a.example.org",
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = raw(
        &platform,
        reqwest::Method::DELETE,
        "/v1/apps/web/certificates/a.example.org",
    )
    .await;
    assert_eq!(status, 404);
    platform.stop().await;
}

#[tokio::test]
async fn an_acme_hostname_is_not_served_before_its_certificate_and_wildcards_are_refused() {
    let platform = ControlApi::start(ControlOptions {
        edge: edge(),
        acme: Some(aloft_control::AcmeSettings {
            directory: aloft_acme::Directory {
                url: "https://127.0.0.1:9/dir".to_owned(),
                root: None,
                contact: Vec::new(),
            },
            resolvers: vec!["127.0.0.1:9".parse().unwrap()],
            challenges: vec![aloft_types::catalog::AcmeChallengeKind::TlsAlpn01],
            renew_before: std::time::Duration::from_secs(30 * 86_400),
        }),
        ..ControlOptions::new(Backend::Sqlite)
    })
    .await;
    let client = &platform.client;
    client.create_app("shop", None).await.unwrap();
    // The positive control: a local hostname is in the catalog (served) at once.
    client
        .add_certificate("shop", "local.example.org")
        .await
        .unwrap();
    let added = client
        .add_acme_certificate("shop", "www.example.org")
        .await
        .unwrap();
    assert_eq!(added.status, "pending_ownership");
    assert!(added.acme_requested && !added.configured);
    assert_eq!(added.certificates[0].source, "fly");
    assert!(added.certificates[0].issued.is_empty());
    let catalog = platform.control.catalog_now().await.unwrap();
    let names: Vec<&str> = catalog
        .apps
        .iter()
        .flat_map(|a| a.hostnames.iter().map(|h| h.name.as_str()))
        .collect();
    assert_eq!(names, ["local.example.org"]);

    // A local hostname asked for ACME stays served by the local CA until it is issued.
    let upgraded = client
        .add_acme_certificate("shop", "local.example.org")
        .await
        .unwrap();
    assert!(
        upgraded.acme_requested && upgraded.configured,
        "{upgraded:?}"
    );
    let catalog = platform.control.catalog_now().await.unwrap();
    assert!(
        catalog
            .apps
            .iter()
            .any(|a| a.hostnames.iter().any(|h| h.name == "local.example.org")),
        "{catalog:?}"
    );

    let wildcard = client
        .add_acme_certificate("shop", "*.example.org")
        .await
        .expect_err("a wildcard")
        .to_string();
    assert!(wildcard.contains("DNS-01"), "{wildcard}");
    let reserved = client
        .add_acme_certificate("shop", "shop.apps.example.net")
        .await
        .expect_err("the apps domain")
        .to_string();
    assert!(reserved.contains("apps domain"), "{reserved}");

    // DNS that cannot be asked shows nothing resolved, and nothing changes.
    let checked = client
        .check_certificate("shop", "www.example.org")
        .await
        .unwrap();
    assert!(checked.dns_records.unwrap().resolved_addresses.is_empty());
    assert!(!checked.configured);

    // Stopping ACME for the name keeps the name, with nothing to serve.
    let kept = client
        .remove_certificate_kind("shop", "www.example.org", "acme")
        .await
        .unwrap();
    assert!(
        !kept.acme_requested && kept.certificates.is_empty(),
        "{kept:?}"
    );
    platform.stop().await;
}
