use aloft_store::{Store, StoreError};
use aloft_types::AppName;

use crate::on_both_backends;

on_both_backends!(apps_belong_to_one_org);

async fn apps_belong_to_one_org(store: Store) {
    let acme = store.create_org("acme", "Acme").await.unwrap();
    let other = store.create_org("other", "Other").await.unwrap();
    let name: AppName = "web".parse().unwrap();
    let app = store.create_app(&name, &acme.id, "default").await.unwrap();
    assert_eq!(app.secrets_version, 0);
    assert!(
        matches!(
            store.create_app(&name, &other.id, "default").await,
            Err(StoreError::Conflict { .. })
        ),
        "app names are global"
    );
    store
        .create_app(&"api".parse().unwrap(), &acme.id, "default")
        .await
        .unwrap();
    let names: Vec<_> = store
        .list_apps(&acme.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name.to_string())
        .collect();
    assert_eq!(names, vec!["api", "web"]);
    assert!(store.list_apps(&other.id).await.unwrap().is_empty());
    assert_eq!(store.app_by_name("web").await.unwrap(), app);

    assert!(
        matches!(
            store.delete_org(&acme.id).await,
            Err(StoreError::Conflict { .. })
        ),
        "the org still owns apps"
    );
    store.delete_app(&app.id).await.unwrap();
    assert!(matches!(
        store.app_by_name("web").await,
        Err(StoreError::NotFound { .. })
    ));
}
