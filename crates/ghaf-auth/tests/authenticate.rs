//! Authentication with its cache: revocations and role changes made through the service
//! apply to the next call; ones written to the store directly apply once the cache entry is
//! older than `AUTH_CACHE_TTL` or the cache is cleared.

use std::sync::Arc;
use std::time::Duration;

use ghaf_auth::service::AUTH_CACHE_TTL;
use ghaf_auth::{AuthError, TenancyService, TokenRequest};
use ghaf_core::{Name, ProjectRole, Role};
use ghaf_meta::testing;
use ghaf_meta::{MetaStore, PrincipalKind};

struct Setup {
    tenancy: TenancyService,
    store: Arc<dyn MetaStore>,
    admin_token: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (store, dir) = testing::sqlite_store().await;
    let store: Arc<dyn MetaStore> = Arc::new(store);
    let tenancy = TenancyService::new(store.clone());
    let name = |n: &str| Name::parse(n).unwrap();
    let created = tenancy
        .bootstrap(&name("acme"), &name("fraud"), &name("admin"))
        .await
        .unwrap()
        .expect("an empty store bootstraps");
    Setup {
        tenancy,
        store,
        admin_token: created.token.secret,
        _dir: dir,
    }
}

/// Creates the user `ana` with a token and returns the token.
async fn ana_token(setup: &Setup) -> String {
    let admin = setup
        .tenancy
        .authenticate(&setup.admin_token)
        .await
        .unwrap();
    setup
        .tenancy
        .create_principal(
            &admin,
            PrincipalKind::User,
            &Name::parse("ana").unwrap(),
            None,
        )
        .await
        .unwrap();
    let request = TokenRequest {
        principal: Some("ana".into()),
        name: "laptop".into(),
        ..TokenRequest::default()
    };
    setup
        .tenancy
        .issue_token(&admin, &request)
        .await
        .unwrap()
        .secret
}

#[tokio::test]
async fn role_changes_apply_to_the_next_call() {
    let setup = setup().await;
    let token = ana_token(&setup).await;
    let admin = setup
        .tenancy
        .authenticate(&setup.admin_token)
        .await
        .unwrap();
    let project = setup
        .tenancy
        .visible_project(&admin, "fraud")
        .await
        .unwrap();
    let ana = setup
        .tenancy
        .principal_by_name(&admin, "ana")
        .await
        .unwrap();

    let before = setup.tenancy.authenticate(&token).await.unwrap();
    assert_eq!(before.project_role(&project.id), None);

    setup
        .tenancy
        .grant_role(&admin, &ana, Some(&project), Role::Developer)
        .await
        .unwrap();
    let granted = setup.tenancy.authenticate(&token).await.unwrap();
    assert_eq!(
        granted.project_role(&project.id),
        Some(ProjectRole::Developer)
    );

    setup
        .tenancy
        .revoke_role(&admin, &ana, Some(&project), Role::Developer)
        .await
        .unwrap();
    let revoked = setup.tenancy.authenticate(&token).await.unwrap();
    assert_eq!(revoked.project_role(&project.id), None);
}

#[tokio::test]
async fn store_role_change_applies_after_clear() {
    let setup = setup().await;
    let token = ana_token(&setup).await;
    let admin = setup
        .tenancy
        .authenticate(&setup.admin_token)
        .await
        .unwrap();
    let project = setup
        .tenancy
        .visible_project(&admin, "fraud")
        .await
        .unwrap();
    let cached = setup.tenancy.authenticate(&token).await.unwrap();
    assert_eq!(cached.project_role(&project.id), None);

    // A grant written to the store directly bypasses the service's cache.
    setup
        .store
        .grant_role(&ghaf_meta::RoleBinding {
            tenant: cached.tenant.clone(),
            principal: cached.principal.clone(),
            project: Some(project.id.clone()),
            role: Role::Viewer,
            created_at: 0,
            created_by: "test".into(),
        })
        .await
        .unwrap();
    setup.tenancy.clear_auth_cache();
    let fresh = setup.tenancy.authenticate(&token).await.unwrap();
    assert_eq!(fresh.project_role(&project.id), Some(ProjectRole::Viewer));
}

#[tokio::test]
async fn revoked_token_is_refused_at_once() {
    let setup = setup().await;
    let token = ana_token(&setup).await;
    let caller = setup.tenancy.authenticate(&token).await.unwrap();

    setup
        .tenancy
        .revoke_token(&caller, &caller.token.to_string())
        .await
        .unwrap();
    let refused = setup.tenancy.authenticate(&token).await.unwrap_err();
    assert!(
        matches!(refused, AuthError::TokenRevoked { .. }),
        "{refused:?}"
    );
}

#[tokio::test]
async fn store_revocation_applies_after_ttl() {
    let setup = setup().await;
    let token = ana_token(&setup).await;
    let caller = setup.tenancy.authenticate(&token).await.unwrap();

    // Revoked in the store, as another server replica on the same database would.
    setup
        .store
        .revoke_token(&caller.tenant, &caller.token, ghaf_core::now_millis())
        .await
        .unwrap();
    tokio::time::sleep(AUTH_CACHE_TTL + Duration::from_millis(100)).await;
    let refused = setup.tenancy.authenticate(&token).await.unwrap_err();
    assert!(
        matches!(refused, AuthError::TokenRevoked { .. }),
        "{refused:?}"
    );
}

#[tokio::test]
async fn wrong_secret_is_refused_after_success() {
    let setup = setup().await;
    let token = ana_token(&setup).await;
    setup.tenancy.authenticate(&token).await.unwrap();

    let wrong = with_other_last_digit(&token);
    let refused = setup.tenancy.authenticate(&wrong).await.unwrap_err();
    assert!(
        matches!(refused, AuthError::WrongSecret { .. }),
        "{refused:?}"
    );
}

/// Returns the token with its last hex digit changed, so only the secret differs.
fn with_other_last_digit(token: &str) -> String {
    let mut changed = token.to_owned();
    let last = changed.pop().unwrap();
    changed.push(if last == '0' { '1' } else { '0' });
    changed
}
