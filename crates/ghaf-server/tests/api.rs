//! Behaviour of the HTTP surface: error bodies, authentication failures, request ids,
//! auditing, metrics, OpenAPI and persistence across restarts.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::TestApp;
use ghaf_server::ServerConfig;

#[tokio::test]
async fn bootstrap_admin_sees_default_project() {
    let app = TestApp::new().await;
    let response = app
        .call("GET", "/api/v1/projects", Some(&app.admin_token), None)
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["projects"][0]["name"], "default");

    let whoami = app
        .call("GET", "/api/v1/whoami", Some(&app.admin_token), None)
        .await
        .json();
    assert_eq!(whoami["tenant"], "default");
    assert_eq!(whoami["platform_admin"], true);
    assert_eq!(
        whoami["tenant_roles"],
        serde_json::json!(["auditor", "tenant_admin"])
    );
}

#[tokio::test]
async fn malformed_json_is_400_malformed_body() {
    let app = TestApp::new().await;
    let request = Request::post("/api/v1/projects")
        .header("authorization", format!("Bearer {}", app.admin_token))
        .header("content-type", "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.code(), "malformed_body");
    assert!(
        response.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1")
    );
}

#[tokio::test]
async fn unknown_field_is_named() {
    let app = TestApp::new().await;
    let body = serde_json::json!({"name": "x", "colour": "red"});
    let response = app
        .call(
            "POST",
            "/api/v1/projects",
            Some(&app.admin_token),
            Some(body),
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.code(), "invalid_argument");
    assert!(response.text().contains("colour"), "{}", response.text());
}

#[tokio::test]
async fn wrong_type_names_the_field() {
    let app = TestApp::new().await;
    let body = serde_json::json!({"name": "ci", "expires_in_seconds": "soon"});
    let response = app
        .call("POST", "/api/v1/tokens", Some(&app.admin_token), Some(body))
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.code(), "invalid_argument");
    assert_eq!(
        response.json()["error"]["details"]["field"],
        "expires_in_seconds"
    );
}

#[tokio::test]
async fn invalid_name_is_explained() {
    let app = TestApp::new().await;
    let body = serde_json::json!({"name": "Fraud Model"});
    let response = app
        .call(
            "POST",
            "/api/v1/projects",
            Some(&app.admin_token),
            Some(body),
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["details"]["field"], "name");
    assert!(response.text().contains("lowercase"), "{}", response.text());
}

#[tokio::test]
async fn duplicate_project_is_409() {
    let app = TestApp::new().await;
    let body = serde_json::json!({"name": "default"});
    let response = app
        .call(
            "POST",
            "/api/v1/projects",
            Some(&app.admin_token),
            Some(body),
        )
        .await;
    assert_eq!(response.status, 409);
    assert_eq!(response.code(), "already_exists");
}

#[tokio::test]
async fn oversize_body_is_413() {
    let mut config = ServerConfig::default();
    config.http.max_body_bytes = 64;
    let app = TestApp::with_config(config).await;
    let body = serde_json::json!({"name": "x", "description": "d".repeat(200)});
    let response = app
        .call(
            "POST",
            "/api/v1/projects",
            Some(&app.admin_token),
            Some(body),
        )
        .await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert_eq!(response.code(), "payload_too_large");
}

#[tokio::test]
async fn missing_content_type_is_415() {
    let app = TestApp::new().await;
    let request = Request::post("/api/v1/projects")
        .header("authorization", format!("Bearer {}", app.admin_token))
        .body(Body::from("{\"name\": \"x\"}"))
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, 415);
    assert_eq!(response.code(), "unsupported_media_type");
}

#[tokio::test]
async fn bad_ids_are_404_not_500() {
    let app = TestApp::new().await;
    for path in [
        "/api/v1/tokens/not-a-token",
        "/api/v1/tokens/%00%ff",
        "/api/v1/projects/..%2F..%2Fetc/members/x/viewer",
    ] {
        let response = app.call("DELETE", path, Some(&app.admin_token), None).await;
        assert!(
            response.status == 404 || response.status == 400,
            "{path}: {} {}",
            response.status,
            response.text()
        );
        assert!(!response.code().is_empty(), "{path}: no code");
    }
    let response = app
        .call("GET", "/api/v1/projects/NOPE", Some(&app.admin_token), None)
        .await;
    assert_eq!(response.status, 404);
    let response = app
        .call(
            "DELETE",
            "/api/v1/role-bindings/admin/owner",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["details"]["field"], "role");
}

#[tokio::test]
async fn missing_malformed_and_unknown_tokens_are_401() {
    let app = TestApp::new().await;
    let unknown = format!("ghaf_{}_{}", "0".repeat(32), "a".repeat(64));
    for token in [None, Some("garbage"), Some(unknown.as_str())] {
        let response = app.call("GET", "/api/v1/projects", token, None).await;
        assert_eq!(response.status, 401, "{token:?}");
        assert_eq!(response.code(), "unauthenticated");
    }
    // A valid token id with the wrong secret is just as unknown.
    let id = ghaf_auth::token::parse(&app.admin_token).unwrap().id;
    let forged = format!("ghaf_{id}_{}", "b".repeat(64));
    let response = app
        .call("GET", "/api/v1/projects", Some(&forged), None)
        .await;
    assert_eq!(response.status, 401);
    assert_eq!(response.code(), "unauthenticated");
}

#[tokio::test]
async fn revoked_token_is_401_token_revoked() {
    let app = TestApp::new().await;
    let created = app
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "short"})),
        )
        .await
        .json();
    let secret = created["secret"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        app.call("GET", "/api/v1/whoami", Some(secret), None)
            .await
            .status,
        200
    );

    let revoked = app
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.json()["revoked_at"].is_string());

    let response = app.call("GET", "/api/v1/whoami", Some(secret), None).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.code(), "token_revoked");
}

#[tokio::test]
async fn expired_token_is_401_token_expired() {
    let app = TestApp::new().await;
    let (id, secret, hash) = ghaf_auth::token::generate();
    let admin = app.tenancy().authenticate(&app.admin_token).await.unwrap();
    let token = ghaf_meta::StoredToken {
        id,
        tenant: admin.tenant.clone(),
        principal: admin.principal.clone(),
        name: "old".into(),
        secret_hash: hash,
        project: None,
        max_role: None,
        created_at: 0,
        created_by: "test".into(),
        expires_at: Some(1_000),
        revoked_at: None,
    };
    app.state.store().create_token(&token).await.unwrap();
    let response = app.call("GET", "/api/v1/whoami", Some(&secret), None).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.code(), "token_expired");
    assert!(
        response.text().contains("1970-01-01T00:00:01"),
        "{}",
        response.text()
    );
}

#[tokio::test]
async fn token_lifetime_is_checked() {
    let app = TestApp::new().await;
    for seconds in [0u64, 400_000_000] {
        let body = serde_json::json!({"name": "x", "expires_in_seconds": seconds});
        let response = app
            .call("POST", "/api/v1/tokens", Some(&app.admin_token), Some(body))
            .await;
        assert_eq!(response.status, 400, "{seconds}");
        assert_eq!(
            response.json()["error"]["details"]["field"],
            "expires_in_seconds"
        );
    }
}

#[tokio::test]
async fn token_secret_is_shown_once() {
    let app = TestApp::new().await;
    let created = app
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "once"})),
        )
        .await
        .json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let listed = app
        .call("GET", "/api/v1/tokens", Some(&app.admin_token), None)
        .await
        .text();
    assert!(!listed.contains(&secret));
    assert!(!listed.contains("secret"), "{listed}");
}

#[tokio::test]
async fn unknown_route_and_method_get_json_errors() {
    let app = TestApp::new().await;
    let response = app
        .call("GET", "/api/v1/nothing-here", Some(&app.admin_token), None)
        .await;
    assert_eq!(response.status, 404);
    assert_eq!(response.code(), "route_not_found");
    let response = app
        .call("PUT", "/api/v1/projects", Some(&app.admin_token), None)
        .await;
    assert_eq!(response.status, 405);
    assert_eq!(response.code(), "method_not_allowed");
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let app = TestApp::new().await;
    let request = Request::get("/healthz")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.headers["x-request-id"], "abc-123");

    let response = app.call("GET", "/healthz", None, None).await;
    let generated = response.headers["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "{generated}");

    let request = Request::get("/healthz")
        .header("x-request-id", "bad id with spaces")
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    assert_ne!(response.headers["x-request-id"], "bad id with spaces");
}

#[tokio::test]
async fn mutations_and_denials_are_audited() {
    let app = TestApp::new().await;
    let request = Request::post("/api/v1/projects")
        .header("authorization", format!("Bearer {}", app.admin_token))
        .header("content-type", "application/json")
        .header("x-request-id", "req-audit-1")
        .body(Body::from(r#"{"name": "fraud"}"#))
        .unwrap();
    assert_eq!(app.send(request).await.status, 201);

    // A viewer-less principal is denied creating a project.
    let admin = app.tenancy().authenticate(&app.admin_token).await.unwrap();
    let name = ghaf_core::Name::parse("eve").unwrap();
    app.tenancy()
        .create_principal(&admin, ghaf_meta::PrincipalKind::User, &name, None)
        .await
        .unwrap();
    let eve = app
        .tenancy()
        .issue_token(
            &admin,
            &ghaf_auth::TokenRequest {
                principal: Some("eve".into()),
                name: "t".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let denied = app
        .call(
            "POST",
            "/api/v1/projects",
            Some(&eve.secret),
            Some(serde_json::json!({"name": "x"})),
        )
        .await;
    assert_eq!(denied.status, 403);

    let page = app
        .call(
            "GET",
            "/api/v1/audit?action=projects.create",
            Some(&app.admin_token),
            None,
        )
        .await
        .json();
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{page}");
    assert_eq!(entries[0]["outcome"], "success");
    assert_eq!(entries[0]["resource"], "projects");
    assert_eq!(entries[0]["request_id"], "req-audit-1");
    assert_eq!(entries[0]["actor"], admin.principal.to_string());
    assert_eq!(entries[0]["status"], 201);
    assert_eq!(entries[1]["outcome"], "denied");
    assert_eq!(entries[1]["details"]["error_code"], "permission_denied");
    assert_eq!(entries[1]["details"]["principal_name"], "eve");

    let by_name = app
        .call(
            "GET",
            "/api/v1/audit?actor=eve",
            Some(&app.admin_token),
            None,
        )
        .await
        .json();
    assert_eq!(by_name["entries"].as_array().unwrap().len(), 1, "{by_name}");

    let by_outcome = app
        .call(
            "GET",
            "/api/v1/audit?outcome=denied",
            Some(&app.admin_token),
            None,
        )
        .await
        .json();
    assert_eq!(by_outcome["entries"].as_array().unwrap().len(), 1);

    let bad = app
        .call(
            "GET",
            "/api/v1/audit?since=yesterday",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["details"]["field"], "since");
    let bad = app
        .call("GET", "/api/v1/audit?limit=0", Some(&app.admin_token), None)
        .await;
    assert_eq!(bad.status, 400);
    let bad = app
        .call(
            "GET",
            "/api/v1/audit?colour=red",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());

    let verify = app
        .call("POST", "/api/v1/audit/verify", Some(&app.admin_token), None)
        .await
        .json();
    assert_eq!(verify["valid"], true, "{verify}");
}

#[tokio::test]
async fn unauthenticated_calls_go_to_the_system_chain() {
    let app = TestApp::new().await;
    app.call(
        "POST",
        "/api/v1/projects",
        Some("garbage"),
        Some(serde_json::json!({"name": "x"})),
    )
    .await;
    let entries = app
        .state
        .store()
        .list_audit(
            ghaf_core::audit::SYSTEM_CHAIN,
            &ghaf_meta::AuditFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, "anonymous");
    assert_eq!(entries[0].outcome, ghaf_core::audit::AuditOutcome::Denied);
    assert_eq!(entries[0].status, 401);
    let verify = app
        .call("POST", "/api/v1/audit/verify", Some(&app.admin_token), None)
        .await
        .json();
    assert_eq!(verify["chains"].as_array().unwrap().len(), 2, "{verify}");
    assert_eq!(verify["valid"], true);
}

#[tokio::test]
async fn audit_pages_follow_next_after() {
    let app = TestApp::new().await;
    for i in 0..5 {
        let body = serde_json::json!({"name": format!("p{i}")});
        app.call(
            "POST",
            "/api/v1/projects",
            Some(&app.admin_token),
            Some(body),
        )
        .await;
    }
    let first = app
        .call("GET", "/api/v1/audit?limit=3", Some(&app.admin_token), None)
        .await
        .json();
    assert_eq!(first["entries"].as_array().unwrap().len(), 3);
    let after = first["next_after"].as_i64().unwrap();
    let second = app
        .call(
            "GET",
            &format!("/api/v1/audit?limit=3&after={after}"),
            Some(&app.admin_token),
            None,
        )
        .await
        .json();
    assert_eq!(second["entries"][0]["seq"].as_i64().unwrap(), after + 1);
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let app = TestApp::new().await;
    app.call("GET", "/api/v1/projects", Some(&app.admin_token), None)
        .await;
    let metrics = app.call("GET", "/metrics", None, None).await.text();
    assert!(metrics.contains("ghaf_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/api/v1/projects\""), "{metrics}");
    assert!(
        metrics.contains("ghaf_http_request_duration_seconds"),
        "{metrics}"
    );
    assert!(!metrics.contains(&app.admin_token));
}

#[tokio::test]
async fn openapi_lists_every_route_and_resolves_refs() {
    let app = TestApp::new().await;
    let document = app
        .call("GET", "/api/v1/openapi.json", None, None)
        .await
        .json();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for route in ghaf_server::route_table() {
        let item = paths
            .get(route.path)
            .unwrap_or_else(|| panic!("{} missing from OpenAPI", route.path));
        let method = route.method.as_str().to_ascii_lowercase();
        assert!(
            item.get(&method).is_some(),
            "{} {} missing",
            route.method,
            route.path
        );
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "unresolved $ref {name}");
    }
}

#[tokio::test]
async fn restart_keeps_state_and_does_not_bootstrap_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        ..ServerConfig::default()
    };

    let state = ghaf_server::open_state(&config).await.unwrap();
    let created = ghaf_server::bootstrap(&state)
        .await
        .unwrap()
        .expect("first start bootstraps");
    let router = ghaf_server::router(state.clone());
    let app_call = |router: axum::Router, token: String| async move {
        use tower::ServiceExt;
        let request = Request::get("/api/v1/projects")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        router.oneshot(request).await.unwrap().status()
    };
    assert_eq!(app_call(router, created.token.secret.clone()).await, 200);
    drop(state);

    let state = ghaf_server::open_state(&config).await.unwrap();
    assert!(ghaf_server::bootstrap(&state).await.unwrap().is_none());
    let router = ghaf_server::router(state);
    assert_eq!(app_call(router, created.token.secret).await, 200);
    assert!(dir.path().join("keys/audit.key").exists());
    assert!(dir.path().join("meta.db").exists());
}

/// Creates a principal with an optional tenant-wide role and returns its token.
async fn principal_with_role(app: &TestApp, name: &str, role: Option<ghaf_core::Role>) -> String {
    let admin = app.tenancy().authenticate(&app.admin_token).await.unwrap();
    let principal = app
        .tenancy()
        .create_principal(
            &admin,
            ghaf_meta::PrincipalKind::User,
            &ghaf_core::Name::parse(name).unwrap(),
            None,
        )
        .await
        .unwrap();
    if let Some(role) = role {
        app.tenancy()
            .grant_role(&admin, &principal, None, role)
            .await
            .unwrap();
    }
    app.tenancy()
        .issue_token(
            &admin,
            &ghaf_auth::TokenRequest {
                principal: Some(name.into()),
                name: "t".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .secret
}

#[tokio::test]
async fn tenant_admin_cannot_take_over_platform_admin() {
    let app = TestApp::new().await;
    let second = principal_with_role(&app, "ta2", Some(ghaf_core::Role::TenantAdmin)).await;
    let minted = app
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&second),
            Some(serde_json::json!({"name": "steal", "principal": "admin"})),
        )
        .await;
    assert_eq!(minted.status, 403, "{}", minted.text());

    let admin_token_id = ghaf_auth::token::parse(&app.admin_token).unwrap().id;
    let revoked = app
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{admin_token_id}"),
            Some(&second),
            None,
        )
        .await;
    assert_eq!(revoked.status, 403, "{}", revoked.text());
    let demoted = app
        .call(
            "DELETE",
            "/api/v1/role-bindings/admin/tenant_admin",
            Some(&second),
            None,
        )
        .await;
    assert_eq!(demoted.status, 403, "{}", demoted.text());

    // The attempts are audited as denials.
    let denied = app
        .call(
            "GET",
            "/api/v1/audit?outcome=denied&actor=ta2",
            Some(&app.admin_token),
            None,
        )
        .await
        .json();
    assert_eq!(denied["entries"].as_array().unwrap().len(), 3, "{denied}");
}

#[tokio::test]
async fn last_tenant_admin_cannot_be_removed() {
    let app = TestApp::new().await;
    let response = app
        .call(
            "DELETE",
            "/api/v1/role-bindings/admin/tenant_admin",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(response.status, 409, "{}", response.text());
    assert_eq!(response.code(), "failed_precondition");
}

#[tokio::test]
async fn child_token_never_outlives_its_parent() {
    let app = TestApp::new().await;
    let parent = app
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "short", "expires_in_seconds": 60})),
        )
        .await
        .json();
    let parent_secret = parent["secret"].as_str().unwrap();
    let child = app
        .call(
            "POST",
            "/api/v1/tokens",
            Some(parent_secret),
            Some(serde_json::json!({"name": "forever"})),
        )
        .await
        .json();
    assert_eq!(child["expires_at"], parent["expires_at"], "{child}");
}

#[tokio::test]
async fn revoking_by_whole_token_keeps_secret_out_of_audit() {
    let app = TestApp::new().await;
    let created = app
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "leaked"})),
        )
        .await
        .json();
    let secret = created["secret"].as_str().unwrap();
    let response = app
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{secret}"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        app.call("GET", "/api/v1/whoami", Some(secret), None)
            .await
            .status,
        401
    );

    let audit = app
        .call(
            "GET",
            "/api/v1/audit?limit=1000",
            Some(&app.admin_token),
            None,
        )
        .await
        .text();
    let secret_part = secret.rsplit('_').next().unwrap();
    assert!(
        !audit.contains(secret_part),
        "the audit log contains the token secret"
    );
    assert!(audit.contains("<redacted>"), "{audit}");
}

#[tokio::test]
async fn array_body_is_rejected() {
    let app = TestApp::new().await;
    let response = app
        .call(
            "POST",
            "/api/v1/projects",
            Some(&app.admin_token),
            Some(serde_json::json!(["arr", "x"])),
        )
        .await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(response.code(), "invalid_argument");
}

#[tokio::test]
async fn invisible_characters_are_rejected() {
    let app = TestApp::new().await;
    for description in ["evil\u{202E}txt", "\u{200B}"] {
        let body = serde_json::json!({"name": "x", "description": description});
        let response = app
            .call(
                "POST",
                "/api/v1/projects",
                Some(&app.admin_token),
                Some(body),
            )
            .await;
        assert_eq!(response.status, 400, "{description:?}: {}", response.text());
    }
}

#[tokio::test]
async fn rejected_known_token_is_audited_in_its_tenant() {
    let app = TestApp::new().await;
    let created = app
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "gone"})),
        )
        .await
        .json();
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    app.call(
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        Some(&app.admin_token),
        None,
    )
    .await;
    app.call("GET", "/api/v1/projects", Some(secret), None)
        .await;

    let wrong_secret = format!("ghaf_{id}_{}", "c".repeat(64));
    app.call("GET", "/api/v1/projects", Some(&wrong_secret), None)
        .await;

    let denied = app
        .call(
            "GET",
            "/api/v1/audit?outcome=denied",
            Some(&app.admin_token),
            None,
        )
        .await
        .json();
    let entries = denied["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{denied}");
    for entry in entries {
        assert_eq!(entry["details"]["token_id"], id);
    }
    assert_eq!(entries[0]["details"]["error_code"], "token_revoked");
    assert_eq!(entries[1]["details"]["error_code"], "unauthenticated");
}

#[tokio::test]
async fn audit_entries_name_what_changed() {
    let app = TestApp::new().await;
    app.call(
        "POST",
        "/api/v1/projects",
        Some(&app.admin_token),
        Some(serde_json::json!({"name": "fraud"})),
    )
    .await;
    let page = app
        .call(
            "GET",
            "/api/v1/audit?action=projects.create",
            Some(&app.admin_token),
            None,
        )
        .await
        .json();
    let entry = &page["entries"][0];
    assert_eq!(entry["details"]["project"], "fraud", "{entry}");
    assert!(entry["time"].as_str().unwrap().ends_with('Z'), "{entry}");
}

#[tokio::test]
async fn recovery_token_is_issued_and_audited() {
    let app = TestApp::new().await;
    let issued = app.tenancy().issue_recovery_token().await.unwrap();
    let whoami = app
        .call("GET", "/api/v1/whoami", Some(&issued.secret), None)
        .await
        .json();
    assert_eq!(whoami["platform_admin"], true);
    let page = app
        .call(
            "GET",
            "/api/v1/audit?action=tokens.recover",
            Some(&app.admin_token),
            None,
        )
        .await
        .json();
    assert_eq!(page["entries"][0]["actor"], "local-operator", "{page}");
}

#[tokio::test]
async fn broken_audit_chain_refuses_changes() {
    let app = TestApp::new().await;
    app.call(
        "POST",
        "/api/v1/projects",
        Some(&app.admin_token),
        Some(serde_json::json!({"name": "a"})),
    )
    .await;
    // Make the head's seal invalid, as an edit without the key would.
    let dir = app.data_dir();
    let url = format!("sqlite://{}", dir.join("meta.db").display());
    let db = ghaf_meta::Db::connect(&url, 1).await.unwrap();
    for statement in [
        "DROP TRIGGER audit_heads_forward_only",
        "UPDATE audit_heads SET mac = 'garbage' WHERE tenant_id = 'default'",
    ] {
        sqlx::query(statement).execute(db.pool()).await.unwrap();
    }

    let response = app
        .call(
            "POST",
            "/api/v1/projects",
            Some(&app.admin_token),
            Some(serde_json::json!({"name": "b"})),
        )
        .await;
    assert_eq!(response.status, 503, "{}", response.text());
    let projects = app
        .call("GET", "/api/v1/projects", Some(&app.admin_token), None)
        .await
        .text();
    assert!(
        !projects.contains("\"b\""),
        "the refused change happened: {projects}"
    );

    let verify = app
        .call("POST", "/api/v1/audit/verify", Some(&app.admin_token), None)
        .await
        .json();
    assert_eq!(verify["valid"], false, "{verify}");
}
