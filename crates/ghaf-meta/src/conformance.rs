//! The conformance suite every [`MetaStore`] backend must pass.
//!
//! Each check takes a freshly migrated, empty store. The test binaries of this crate run the
//! suite on SQLite and on PostgreSQL; a new backend adds one more test binary.

use ghaf_core::audit::{AuditOutcome, NewAuditEntry};
use ghaf_core::{Name, PrincipalId, ProjectId, Role, TenantId, TokenId};

use crate::{
    AuditFilter, MetaError, MetaStore, NewPrincipal, PrincipalKind, RoleBinding, StoredToken,
};

fn name(value: &str) -> Name {
    Name::parse(value).expect("test names are valid")
}

fn tenant(value: &str) -> TenantId {
    TenantId::new(name(value))
}

async fn setup_tenant<S: MetaStore + ?Sized>(store: &S, id: &str) -> (TenantId, PrincipalId) {
    let tenant_id = tenant(id);
    store
        .create_tenant(&tenant_id, id)
        .await
        .expect("create tenant");
    let principal = store
        .create_principal(
            &tenant_id,
            &NewPrincipal {
                kind: PrincipalKind::User,
                name: name("alice"),
                email: Some("alice@example.com".into()),
                platform_admin: false,
            },
        )
        .await
        .expect("create principal");
    (tenant_id, principal.id)
}

/// Tenants are created once and listed by name.
pub async fn tenants<S: MetaStore + ?Sized>(store: &S) {
    let acme = tenant("acme");
    let created = store.create_tenant(&acme, "Acme Bank").await.unwrap();
    assert_eq!(created.display_name, "Acme Bank");
    assert!(matches!(
        store.create_tenant(&acme, "again").await,
        Err(MetaError::AlreadyExists { .. })
    ));
    store.create_tenant(&tenant("beta"), "Beta").await.unwrap();
    let names: Vec<_> = store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(names, ["acme", "beta"]);
    assert_eq!(store.get_tenant(&acme).await.unwrap(), Some(created));
    assert_eq!(store.get_tenant(&tenant("nope")).await.unwrap(), None);
}

/// Project names are unique per tenant, and no lookup crosses tenants.
pub async fn projects_are_tenant_scoped<S: MetaStore + ?Sized>(store: &S) {
    let (acme, alice) = setup_tenant(store, "acme").await;
    let (beta, bob) = setup_tenant(store, "beta").await;

    let fraud = store
        .create_project(&acme, &name("fraud"), "card fraud", &alice)
        .await
        .unwrap();
    // The same name in another tenant is a different project.
    let beta_fraud = store
        .create_project(&beta, &name("fraud"), "", &bob)
        .await
        .unwrap();
    assert_ne!(fraud.id, beta_fraud.id);
    assert!(matches!(
        store
            .create_project(&acme, &name("fraud"), "", &alice)
            .await,
        Err(MetaError::AlreadyExists { .. })
    ));

    assert_eq!(
        store.get_project_by_name(&acme, "fraud").await.unwrap(),
        Some(fraud.clone())
    );
    assert_eq!(
        store.get_project(&acme, &fraud.id).await.unwrap(),
        Some(fraud.clone())
    );
    assert_eq!(store.get_project(&beta, &fraud.id).await.unwrap(), None);

    store
        .create_project(&acme, &name("churn"), "", &alice)
        .await
        .unwrap();
    let names: Vec<_> = store
        .list_projects(&acme)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["churn", "fraud"]);
    assert_eq!(store.list_projects(&beta).await.unwrap().len(), 1);
}

/// Principals are unique by name per tenant and invisible to other tenants.
pub async fn principals<S: MetaStore + ?Sized>(store: &S) {
    let (acme, alice) = setup_tenant(store, "acme").await;
    let (beta, _) = setup_tenant(store, "beta").await;
    let robot = store
        .create_principal(
            &acme,
            &NewPrincipal {
                kind: PrincipalKind::ServiceAccount,
                name: name("ci-bot"),
                email: None,
                platform_admin: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(robot.kind, PrincipalKind::ServiceAccount);
    assert!(!robot.platform_admin);
    let duplicate = NewPrincipal {
        kind: PrincipalKind::User,
        name: name("alice"),
        email: None,
        platform_admin: false,
    };
    assert!(matches!(
        store.create_principal(&acme, &duplicate).await,
        Err(MetaError::AlreadyExists { .. })
    ));
    assert_eq!(store.get_principal(&beta, &alice).await.unwrap(), None);
    let fetched = store.get_principal(&acme, &alice).await.unwrap().unwrap();
    assert_eq!(fetched.email.as_deref(), Some("alice@example.com"));
    assert_eq!(
        store.get_principal_by_name(&acme, "ci-bot").await.unwrap(),
        Some(robot)
    );
    let names: Vec<_> = store
        .list_principals(&acme)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["alice", "ci-bot"]);
}

/// Role grants are idempotent, revocable and listed per tenant.
pub async fn role_bindings<S: MetaStore + ?Sized>(store: &S) {
    let (acme, alice) = setup_tenant(store, "acme").await;
    let (beta, _) = setup_tenant(store, "beta").await;
    let project = store
        .create_project(&acme, &name("fraud"), "", &alice)
        .await
        .unwrap();
    let binding = RoleBinding {
        tenant: acme.clone(),
        principal: alice.clone(),
        project: Some(project.id.clone()),
        role: Role::Developer,
        created_at: 1,
        created_by: "test".into(),
    };
    store.grant_role(&binding).await.unwrap();
    store.grant_role(&binding).await.unwrap();
    let tenant_wide = RoleBinding {
        project: None,
        role: Role::Auditor,
        ..binding.clone()
    };
    store.grant_role(&tenant_wide).await.unwrap();

    let bindings = store.list_role_bindings(&acme, Some(&alice)).await.unwrap();
    assert_eq!(bindings.len(), 2);
    assert!(bindings.contains(&binding));
    assert!(bindings.contains(&tenant_wide));
    assert!(
        store
            .list_role_bindings(&beta, None)
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        store
            .revoke_role(&acme, &alice, Some(&project.id), Role::Developer)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_role(&acme, &alice, Some(&project.id), Role::Developer)
            .await
            .unwrap()
    );
    assert_eq!(
        store.list_role_bindings(&acme, None).await.unwrap(),
        [tenant_wide]
    );
}

/// Tokens are found by id for authentication, scoped by tenant otherwise, and revocation
/// keeps the first revocation time.
pub async fn tokens<S: MetaStore + ?Sized>(store: &S) {
    let (acme, alice) = setup_tenant(store, "acme").await;
    let (beta, _) = setup_tenant(store, "beta").await;
    let token = StoredToken {
        id: TokenId::generate(),
        tenant: acme.clone(),
        principal: alice.clone(),
        name: "laptop".into(),
        secret_hash: "ab".repeat(32),
        project: Some(ProjectId::from_stored("p1")),
        max_role: Some(Role::Viewer),
        created_at: 10,
        created_by: alice.to_string(),
        expires_at: Some(1_000),
        revoked_at: None,
    };
    store.create_token(&token).await.unwrap();
    let unscoped = StoredToken {
        id: TokenId::generate(),
        project: None,
        max_role: None,
        expires_at: None,
        created_at: 20,
        ..token.clone()
    };
    store.create_token(&unscoped).await.unwrap();

    assert_eq!(
        store
            .find_token_for_authentication(&token.id)
            .await
            .unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.get_token(&beta, &token.id).await.unwrap(), None);
    let listed = store.list_tokens(&acme, Some(&alice)).await.unwrap();
    assert_eq!(listed, [unscoped.clone(), token.clone()]);
    assert!(store.list_tokens(&beta, None).await.unwrap().is_empty());

    assert!(!store.revoke_token(&beta, &token.id, 50).await.unwrap());
    assert!(store.revoke_token(&acme, &token.id, 50).await.unwrap());
    assert!(store.revoke_token(&acme, &token.id, 99).await.unwrap());
    let revoked = store.get_token(&acme, &token.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(50));
}

fn audit_entry(
    tenant: &str,
    actor: &str,
    action: &str,
    resource: &str,
    time: i64,
) -> NewAuditEntry {
    NewAuditEntry {
        tenant: tenant.into(),
        actor: actor.into(),
        action: action.into(),
        resource: resource.into(),
        outcome: AuditOutcome::Success,
        status: 200,
        request_id: format!("req-{time}"),
        time,
        details: serde_json::json!({"n": time}),
    }
}

/// Audit entries get consecutive sequence numbers per tenant, chain hashes, a sealed head,
/// and filters that match exactly.
pub async fn audit_log<S: MetaStore + ?Sized>(store: &S) {
    let first = store
        .append_audit(&audit_entry(
            "acme",
            "alice",
            "projects.create",
            "projects/fraud",
            100,
        ))
        .await
        .unwrap();
    assert_eq!(first.seq, 1);
    let second = store
        .append_audit(&audit_entry(
            "acme",
            "bob",
            "projects.get",
            "projects/fraud/runs/1",
            200,
        ))
        .await
        .unwrap();
    assert_eq!(second.seq, 2);
    assert_ne!(first.hash, second.hash);
    let other = store
        .append_audit(&audit_entry(
            "beta",
            "carol",
            "projects.create",
            "projects/x",
            150,
        ))
        .await
        .unwrap();
    assert_eq!(other.seq, 1, "each tenant has its own chain");
    store
        .append_audit(&audit_entry(
            "acme",
            "alice",
            "tokens.create",
            "projects/fraud_x",
            300,
        ))
        .await
        .unwrap();

    let head = store.audit_head("acme").await.unwrap().unwrap();
    assert_eq!(head.seq, 3);
    assert_eq!(head.mac.len(), 64);

    let all = store
        .list_audit(
            "acme",
            &AuditFilter {
                limit: 100,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(all[0], first);

    let by_actor = AuditFilter {
        actor: Some("alice".into()),
        limit: 100,
        ..AuditFilter::default()
    };
    assert_eq!(store.list_audit("acme", &by_actor).await.unwrap().len(), 2);

    // `projects/fraud` covers its children but not `projects/fraud_x`.
    let by_resource = AuditFilter {
        resource: Some("projects/fraud".into()),
        limit: 100,
        ..AuditFilter::default()
    };
    let seqs: Vec<_> = store
        .list_audit("acme", &by_resource)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2]);

    let by_time = AuditFilter {
        since: Some(150),
        until: Some(300),
        limit: 100,
        ..AuditFilter::default()
    };
    assert_eq!(store.list_audit("acme", &by_time).await.unwrap().len(), 1);

    let page = AuditFilter {
        after_seq: Some(1),
        limit: 1,
        ..AuditFilter::default()
    };
    assert_eq!(store.list_audit("acme", &page).await.unwrap()[0].seq, 2);

    assert_eq!(
        store.audit_chain_page("acme", 0, 10).await.unwrap().len(),
        3
    );
    assert_eq!(store.audit_chains().await.unwrap(), ["acme", "beta"]);
}

/// Concurrent appends to one chain never produce a gap or a duplicate sequence number.
pub async fn audit_concurrent_appends<S: MetaStore + ?Sized>(store: &S) {
    let entries: Vec<_> = (0..20)
        .map(|i| audit_entry("acme", "a", "x", "r", i))
        .collect();
    let appends = entries.iter().map(|entry| store.append_audit(entry));
    let results = futures::future::join_all(appends).await;
    let mut seqs: Vec<i64> = results.into_iter().map(|r| r.unwrap().seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
}
