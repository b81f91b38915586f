use aloft_store::{Store, StoreError, TokenKind, now_ms};

use crate::on_both_backends;

on_both_backends!(
    orgs_and_tokens,
    an_organization_keeps_its_first_ssh_authority,
    an_organization_and_its_first_token_are_stored_together
);

/// The first start's setup: the organization and its operator token, both or neither.
async fn an_organization_and_its_first_token_are_stored_together(store: Store) {
    let (org, token) = store
        .create_org_with_token(
            "personal",
            "Personal",
            TokenKind::Operator,
            "admin",
            "hash-a",
        )
        .await
        .unwrap();
    assert_eq!(store.org_by_slug("personal").await.unwrap(), org);
    let found = store.token_by_hash("hash-a").await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.kind, found.org_id),
        (token.id, TokenKind::Operator, org.id.clone())
    );
    // A second setup conflicts on the organization and stores no token either.
    assert!(matches!(
        store
            .create_org_with_token("personal", "Again", TokenKind::Operator, "admin", "hash-b")
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(store.token_by_hash("hash-b").await.unwrap().is_none());
    assert_eq!(store.list_tokens(&org.id).await.unwrap().len(), 1);
}

async fn orgs_and_tokens(store: Store) {
    let org = store.create_org("acme", "Acme Inc").await.unwrap();
    assert!(matches!(
        store.create_org("acme", "Again").await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.org_by_slug("acme").await.unwrap(), org);
    assert_eq!(store.org(&org.id).await.unwrap(), org);
    assert!(matches!(
        store.org_by_slug("nope").await,
        Err(StoreError::NotFound { .. })
    ));

    let deploy = store
        .create_token(
            &org.id,
            TokenKind::Deploy,
            Some("web"),
            "ci",
            "hash-1",
            None,
        )
        .await
        .unwrap();
    let expiring = store
        .create_token(
            &org.id,
            TokenKind::Readonly,
            None,
            "short",
            "hash-2",
            Some(now_ms() - 1),
        )
        .await
        .unwrap();
    let found = store.token_by_hash("hash-1").await.unwrap().unwrap();
    assert_eq!(found, deploy);
    assert_eq!(found.app_name.as_deref(), Some("web"));
    assert!(found.is_active(now_ms()));
    assert!(
        !store
            .token_by_hash("hash-2")
            .await
            .unwrap()
            .unwrap()
            .is_active(now_ms()),
        "expired"
    );
    assert!(store.token_by_hash("unknown").await.unwrap().is_none());
    assert!(matches!(
        store
            .create_token(&org.id, TokenKind::Org, None, "dup", "hash-1", None)
            .await,
        Err(StoreError::Conflict { .. })
    ));

    // Listed by creation time; two tokens made in the same millisecond may come in either order.
    let mut listed: Vec<_> = store
        .list_tokens(&org.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    listed.sort();
    let mut expected = vec![deploy.id.clone(), expiring.id.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    store.revoke_token(&org.id, &deploy.id).await.unwrap();
    store.revoke_token(&org.id, &deploy.id).await.unwrap();
    assert!(
        !store
            .token_by_hash("hash-1")
            .await
            .unwrap()
            .unwrap()
            .is_active(now_ms())
    );

    let other = store.create_org("other", "Other").await.unwrap();
    assert!(
        matches!(
            store.revoke_token(&other.id, &expiring.id).await,
            Err(StoreError::NotFound { .. })
        ),
        "a token of one organization cannot be touched through another"
    );
    assert!(store.list_tokens(&other.id).await.unwrap().is_empty());

    let slugs: Vec<_> = store
        .list_orgs()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.slug)
        .collect();
    assert_eq!(slugs, vec!["acme", "other"]);
    store.delete_org(&other.id).await.unwrap();
    assert!(matches!(
        store.delete_org(&other.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn an_organization_keeps_its_first_ssh_authority(store: Store) {
    let org = store.create_org("ssh-org", "SSH org").await.unwrap();
    assert_eq!(store.ssh_authority(&org.id).await.unwrap(), None);
    let first = aloft_store::SshAuthority {
        org_id: org.id.clone(),
        public_key: "ssh-ed25519 AAAAfirst".to_owned(),
        private_key_sealed: "sealed-first".to_owned(),
        created_at: 0,
    };
    let kept = store.keep_ssh_authority(&first).await.unwrap();
    assert_eq!(kept.public_key, first.public_key);
    // A second (racing) one does not replace it.
    let second = aloft_store::SshAuthority {
        public_key: "ssh-ed25519 AAAAsecond".to_owned(),
        private_key_sealed: "sealed-second".to_owned(),
        ..first.clone()
    };
    let kept = store.keep_ssh_authority(&second).await.unwrap();
    assert_eq!(kept.public_key, "ssh-ed25519 AAAAfirst");
    assert_eq!(kept.private_key_sealed, "sealed-first");
    assert_eq!(store.ssh_authority(&org.id).await.unwrap(), Some(kept));
}
