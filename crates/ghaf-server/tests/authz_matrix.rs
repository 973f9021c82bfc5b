//! Authorisation matrix: every route of the router, called by every kind of caller, against
//! an expected table. A route missing from the table, or a table row without a route, fails
//! the test, so no route ships without a decision about who may call it.
//!
//! Each call runs on a fresh store, so a successful change by one caller never alters what
//! the next caller sees.

mod common;

use std::collections::BTreeMap;

use common::TestApp;
use ghaf_auth::Caller;
use ghaf_core::{Name, ProjectRole, Role};
use ghaf_meta::{PrincipalKind, Project};
use ghaf_server::api::Access;
use ghaf_server::route_table;

/// Expected result of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The route's success status.
    Allow,
    /// 403 permission_denied.
    Deny,
    /// 404 not_found: the object is in another tenant or invisible to the caller.
    Hidden,
}

use Expect::{Allow as A, Deny as D, Hidden as H};

/// Callers, in the column order of the table.
const CALLERS: [&str; 9] = [
    "platform_admin",
    "tenant_admin",
    "auditor",
    "project_admin",
    "deployer",
    "developer",
    "viewer",
    "no_role",
    "other_tenant_admin",
];

fn expected_table() -> BTreeMap<&'static str, [Expect; 9]> {
    // platform, tenant_admin, auditor, project_admin, deployer, developer, viewer, no_role,
    // other_tenant_admin
    BTreeMap::from([
        ("GET /api/v1/whoami", [A, A, A, A, A, A, A, A, A]),
        ("GET /api/v1/tenants", [A, D, D, D, D, D, D, D, D]),
        ("POST /api/v1/tenants", [A, D, D, D, D, D, D, D, D]),
        ("GET /api/v1/projects", [A, A, A, A, A, A, A, A, A]),
        ("POST /api/v1/projects", [A, A, D, D, D, D, D, D, A]),
        (
            "GET /api/v1/projects/{project}",
            [A, A, D, A, A, A, A, H, H],
        ),
        (
            "GET /api/v1/projects/{project}/members",
            [A, A, D, A, D, D, D, H, H],
        ),
        (
            "POST /api/v1/projects/{project}/members",
            [A, A, D, A, D, D, D, H, H],
        ),
        (
            "DELETE /api/v1/projects/{project}/members/{principal}/{role}",
            [A, A, D, A, D, D, D, H, H],
        ),
        ("GET /api/v1/principals", [A, A, D, D, D, D, D, D, A]),
        ("POST /api/v1/principals", [A, A, D, D, D, D, D, D, A]),
        (
            "GET /api/v1/principals/{principal}",
            [A, A, D, D, D, D, D, D, H],
        ),
        ("GET /api/v1/role-bindings", [A, A, D, D, D, D, D, D, A]),
        ("POST /api/v1/role-bindings", [A, A, D, D, D, D, D, D, H]),
        (
            "DELETE /api/v1/role-bindings/{principal}/{role}",
            [A, A, D, D, D, D, D, D, H],
        ),
        ("GET /api/v1/tokens", [A, A, A, A, A, A, A, A, A]),
        ("POST /api/v1/tokens", [A, A, A, A, A, A, A, A, A]),
        // The token belongs to `viewer`: its owner and tenant admins may revoke it.
        ("DELETE /api/v1/tokens/{token}", [A, A, H, H, H, H, A, H, H]),
        ("GET /api/v1/audit", [A, D, A, D, D, D, D, D, A]),
        ("POST /api/v1/audit/verify", [A, D, A, D, D, D, D, D, A]),
    ])
}

/// Routes that need no token.
const PUBLIC: [&str; 4] = [
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /api/v1/openapi.json",
];

/// A fresh store with one principal per caller kind, a project `p` in tenant `default`, and a
/// second tenant `beta` with its own admin and project.
struct World {
    app: TestApp,
    tokens: BTreeMap<&'static str, String>,
    viewer_token_id: String,
}

async fn new_world() -> World {
    let app = TestApp::new().await;
    let tenancy = app.tenancy().clone();
    let admin = tenancy.authenticate(&app.admin_token).await.unwrap();
    let project = tenancy
        .create_project(&admin, &name("p"), "matrix project")
        .await
        .unwrap();

    let mut tokens = BTreeMap::new();
    tokens.insert("platform_admin", app.admin_token.clone());
    let grants: [(&str, Option<Role>, bool); 7] = [
        ("tenant_admin", Some(Role::TenantAdmin), false),
        ("auditor", Some(Role::Auditor), false),
        ("project_admin", Some(Role::Admin), true),
        ("deployer", Some(Role::Deployer), true),
        ("developer", Some(Role::Developer), true),
        ("viewer", Some(Role::Viewer), true),
        ("no_role", None, false),
    ];
    let mut viewer_token_id = String::new();
    for (caller, role, on_project) in grants {
        let token = add_principal(
            &tenancy,
            &admin,
            caller,
            role,
            on_project.then_some(&project),
        )
        .await;
        if caller == "viewer" {
            viewer_token_id = token.0.clone();
        }
        tokens.insert(caller, token.1);
    }

    // The target of member and role-binding changes: a developer on `p`.
    add_principal(
        &tenancy,
        &admin,
        "target",
        Some(Role::Developer),
        Some(&project),
    )
    .await;

    let (_, _, beta_token) = tenancy
        .create_tenant(&admin, &name("beta"), "Beta", &name("beta-admin"))
        .await
        .unwrap();
    let beta_admin = tenancy.authenticate(&beta_token.secret).await.unwrap();
    tenancy
        .create_project(&beta_admin, &name("beta-project"), "")
        .await
        .unwrap();
    tokens.insert("other_tenant_admin", beta_token.secret);

    World {
        app,
        tokens,
        viewer_token_id,
    }
}

fn name(value: &str) -> Name {
    Name::parse(value).unwrap()
}

/// Creates a principal with an optional role and returns its token id and secret.
async fn add_principal(
    tenancy: &ghaf_auth::TenancyService,
    admin: &Caller,
    principal_name: &str,
    role: Option<Role>,
    project: Option<&Project>,
) -> (String, String) {
    let principal = tenancy
        .create_principal(admin, PrincipalKind::User, &name(principal_name), None)
        .await
        .unwrap();
    if let Some(role) = role {
        tenancy
            .grant_role(admin, &principal, project, role)
            .await
            .unwrap();
    }
    let issued = tenancy
        .issue_token(
            admin,
            &ghaf_auth::TokenRequest {
                principal: Some(principal_name.into()),
                name: "matrix".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (issued.stored.id.to_string(), issued.secret)
}

/// Fills the path parameters and picks the body for a route.
fn request_for(key: &str, path: &str, world: &World) -> (String, Option<serde_json::Value>) {
    let path = path
        .replace("{project}", "p")
        .replace("{principal}", "target")
        .replace("{role}", "developer")
        .replace("{token}", &world.viewer_token_id);
    let body = match key {
        "POST /api/v1/tenants" => Some(serde_json::json!({"name": "gamma"})),
        "POST /api/v1/projects" => Some(serde_json::json!({"name": "new-project"})),
        "POST /api/v1/projects/{project}/members" => {
            Some(serde_json::json!({"principal": "target", "role": "viewer"}))
        }
        "POST /api/v1/principals" => Some(serde_json::json!({"name": "new-principal"})),
        "POST /api/v1/role-bindings" => {
            Some(serde_json::json!({"principal": "target", "role": "viewer", "project": "p"}))
        }
        "POST /api/v1/tokens" => Some(serde_json::json!({"name": "matrix-made"})),
        _ => None,
    };
    let path = if key == "DELETE /api/v1/role-bindings/{principal}/{role}" {
        format!("{path}?project=p")
    } else {
        path
    };
    (path, body)
}

#[tokio::test]
async fn every_route_is_in_the_table() {
    let table = expected_table();
    let mut keys: Vec<String> = Vec::new();
    for route in route_table() {
        let key = format!("{} {}", route.method, route.path);
        match route.access {
            Access::Public => assert!(
                PUBLIC.contains(&key.as_str()),
                "public route {key} is not listed as public"
            ),
            Access::Action(_) => assert!(
                table.contains_key(key.as_str()),
                "route {key} is missing from the authorisation table"
            ),
        }
        keys.push(key);
    }
    for key in table.keys().chain(PUBLIC.iter()) {
        assert!(
            keys.iter().any(|k| k == key),
            "table row {key} has no route"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorisation_matrix() {
    let table = expected_table();
    let mut failures = Vec::new();

    for route in route_table() {
        let key = format!("{} {}", route.method, route.path);
        let Access::Action(action) = route.access else {
            continue;
        };
        let Some(expected) = table.get(key.as_str()) else {
            failures.push(format!("{key}: missing from the table"));
            continue;
        };

        // No credentials: always 401, before anything else happens.
        let world = new_world().await;
        let (path, body) = request_for(&key, route.path, &world);
        let response = world
            .app
            .call(route.method.as_str(), &path, None, body)
            .await;
        if response.status != 401 || response.code() != "unauthenticated" {
            failures.push(format!(
                "{key} anonymous: got {} {}",
                response.status,
                response.text()
            ));
        }

        for (column, caller) in CALLERS.iter().enumerate() {
            let world = new_world().await;
            let (path, body) = request_for(&key, route.path, &world);
            let token = world.tokens[caller].clone();
            let response = world
                .app
                .call(route.method.as_str(), &path, Some(&token), body)
                .await;
            let want = expected[column];
            let ok = match want {
                Expect::Allow => response.status.as_u16() == route.success,
                Expect::Deny => response.status == 403 && response.code() == "permission_denied",
                Expect::Hidden => response.status == 404 && response.code() == "not_found",
            };
            if !ok {
                failures.push(format!(
                    "{key} ({}) as {caller}: expected {want:?}, got {} {}",
                    action.name(),
                    response.status,
                    response.text()
                ));
                continue;
            }
            // A caller of another tenant that is allowed must never see tenant `default`'s
            // objects in the answer.
            if *caller == "other_tenant_admin" && want == Expect::Allow {
                let text = response.text();
                for leaked in [
                    "\"p\"",
                    "\"target\"",
                    "\"viewer\"",
                    "\"tenant\":\"default\"",
                ] {
                    if text.contains(leaked) {
                        failures.push(format!(
                            "{key} as {caller}: response leaks {leaked}: {text}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn public_routes_need_no_token() {
    let app = TestApp::new().await;
    for key in PUBLIC {
        let (method, path) = key.split_once(' ').unwrap();
        let response = app.call(method, path, None, None).await;
        assert_eq!(response.status, 200, "{key}: {}", response.text());
    }
}

#[tokio::test]
async fn restricted_token_cannot_mint_a_stronger_one() {
    let world = new_world().await;
    let tenancy = world.app.tenancy();
    let admin = tenancy.authenticate(&world.app.admin_token).await.unwrap();
    let restricted = tenancy
        .issue_token(
            &admin,
            &ghaf_auth::TokenRequest {
                name: "restricted".into(),
                project: Some("p".into()),
                max_role: Some(ProjectRole::Viewer),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Tenant-level administration is closed to a project-restricted admin token.
    let response = world
        .app
        .call(
            "POST",
            "/api/v1/projects",
            Some(&restricted.secret),
            Some(serde_json::json!({"name": "x"})),
        )
        .await;
    assert_eq!(response.status, 403, "{}", response.text());

    // A token minted with it inherits the restriction, even when asked for more.
    let response = world
        .app
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&restricted.secret),
            Some(serde_json::json!({"name": "child", "max_role": "admin"})),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    let child = response.json();
    assert_eq!(child["max_role"], "viewer");
    assert!(child["project"].is_string());

    let secret = child["secret"].as_str().unwrap();
    let response = world
        .app
        .call("GET", "/api/v1/projects/p/members", Some(secret), None)
        .await;
    assert_eq!(response.status, 403, "{}", response.text());
    let response = world
        .app
        .call("GET", "/api/v1/projects/p", Some(secret), None)
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
}
