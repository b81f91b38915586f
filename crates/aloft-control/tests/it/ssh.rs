//! SSH certificates: who gets one, for what, for how long.

use aloft_types::api::{CreateTokenRequest, SshCertificateRequest};
use reqwest::Method;

use crate::{Api, on_both_backends};

on_both_backends!(certificates_follow_the_token_that_asks);

fn key(seed: u8) -> String {
    let key = aloft_ssh::ca::ed25519_from_seed(&[seed; 32]);
    aloft_ssh::ca::public_to_openssh(key.public_key()).unwrap()
}

fn request(app: Option<&str>, hours: Option<u32>) -> SshCertificateRequest {
    SshCertificateRequest {
        public_key: key(1),
        hours,
        app: app.map(str::to_owned),
    }
}

async fn token(api: &Api, kind: &str, app: Option<&str>) -> String {
    api.admin
        .create_token(&CreateTokenRequest {
            kind: kind.into(),
            app: app.map(str::to_owned),
            name: Some(format!("{kind} token")),
            expiry: None,
        })
        .await
        .unwrap()
        .token
}

async fn certificates_follow_the_token_that_asks(api: Api) {
    api.admin.create_app("web", None).await.unwrap();
    api.admin.create_app("api", None).await.unwrap();

    // The operator's token (an org token too): the whole organization, 24 h by default,
    // named in the key id.
    let issued = api
        .admin
        .ssh_certificate("personal", &request(None, None))
        .await
        .unwrap();
    assert_eq!(issued.principals, ["org:personal"]);
    let certificate = aloft_ssh::ca::certificate_from_openssh(&issued.certificate).unwrap();
    let lifetime = certificate.valid_before() - certificate.valid_after();
    assert_eq!(lifetime, 24 * 3600 + 60, "24 h from a minute ago");
    assert!(
        certificate.key_id().contains("operator token"),
        "{}",
        certificate.key_id()
    );
    assert!(
        certificate
            .extensions()
            .contains_key(aloft_control::ssh::TOKEN_EXTENSION)
    );
    // The CA is made once: a second certificate has the same.
    let again = api
        .admin
        .ssh_certificate("personal", &request(Some("web"), Some(1)))
        .await
        .unwrap();
    assert_eq!(again.ca_public_key, issued.ca_public_key);
    assert_eq!(again.principals, ["app:personal/web"]);

    // An ssh token: its own app only.
    let ssh = api.client(&token(&api, "ssh", Some("web")).await);
    assert_eq!(
        ssh.ssh_certificate("personal", &request(None, None))
            .await
            .unwrap()
            .principals,
        ["app:personal/web"]
    );
    let other = ssh
        .ssh_certificate("personal", &request(Some("api"), None))
        .await
        .unwrap_err();
    assert_eq!(other.status(), Some(403), "{other}");

    // A read-only token: none.
    let readonly = api.client(&token(&api, "readonly", None).await);
    let refused = readonly
        .ssh_certificate("personal", &request(None, None))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(403));
    assert!(refused.to_string().contains("no SSH rights"), "{refused}");

    // Bad input names what is wrong.
    let bad = api
        .admin
        .ssh_certificate("personal", &request(None, Some(0)))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("`hours` is 0"), "{bad}");
    let mut garbled = request(None, None);
    garbled.public_key = "ssh-ed25519 not-base64".into();
    let bad = api
        .admin
        .ssh_certificate("personal", &garbled)
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(400));
    assert!(bad.to_string().contains("public_key"), "{bad}");
    let elsewhere = api
        .admin
        .ssh_certificate("globex", &request(None, None))
        .await
        .unwrap_err();
    assert_eq!(elsewhere.status(), Some(404));

    // The tunnel wants an upgrade and a token with SSH rights.
    let (status, body) = api
        .raw(
            Method::GET,
            "/v1/apps/web/machines/0123456789abcd/ssh",
            Some(&api.token),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
}
