//! Authorisation matrix: every route of the router, called by every kind of caller, against
//! an expected table. A route missing from the table, or a table row without a route, fails
//! the test, so no route ships without a decision about who may call it.
//!
//! Each call runs on a fresh store, so a successful change by one caller never alters what
//! the next caller sees.

mod common;
mod oip_support;

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

/// Rows of project actions by the role they need; auditors see the project but hold no
/// project role, and callers without a role or of another tenant do not see it at all.
const VIEW: [Expect; 9] = [A, A, D, A, A, A, A, H, H];
const DEVELOP: [Expect; 9] = [A, A, D, A, A, A, D, H, H];
const PROMOTE: [Expect; 9] = [A, A, D, A, A, D, D, H, H];

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
        ("GET /api/2.0/mlflow/experiments/get-by-name", VIEW),
        ("GET /api/2.0/mlflow/experiments/get", VIEW),
        ("POST /api/2.0/mlflow/experiments/create", DEVELOP),
        ("POST /api/2.0/mlflow/experiments/search", VIEW),
        ("POST /api/2.0/mlflow/experiments/update", DEVELOP),
        ("POST /api/2.0/mlflow/experiments/delete", DEVELOP),
        ("POST /api/2.0/mlflow/experiments/restore", DEVELOP),
        (
            "POST /api/2.0/mlflow/experiments/set-experiment-tag",
            DEVELOP,
        ),
        ("POST /api/2.0/mlflow/runs/create", DEVELOP),
        ("GET /api/2.0/mlflow/runs/get", VIEW),
        ("POST /api/2.0/mlflow/runs/update", DEVELOP),
        ("POST /api/2.0/mlflow/runs/delete", DEVELOP),
        ("POST /api/2.0/mlflow/runs/restore", DEVELOP),
        ("POST /api/2.0/mlflow/runs/log-parameter", DEVELOP),
        ("POST /api/2.0/mlflow/runs/log-metric", DEVELOP),
        ("POST /api/2.0/mlflow/runs/log-batch", DEVELOP),
        ("POST /api/2.0/mlflow/runs/set-tag", DEVELOP),
        ("POST /api/2.0/mlflow/runs/delete-tag", DEVELOP),
        ("POST /api/2.0/mlflow/runs/search", VIEW),
        ("POST /api/2.0/mlflow/runs/outputs", DEVELOP),
        ("GET /api/2.0/mlflow/metrics/get-history", VIEW),
        ("POST /api/2.0/mlflow/logged-models", DEVELOP),
        ("GET /api/2.0/mlflow/logged-models/{model_id}", VIEW),
        ("PATCH /api/2.0/mlflow/logged-models/{model_id}", DEVELOP),
        (
            "PATCH /api/2.0/mlflow/logged-models/{model_id}/tags",
            DEVELOP,
        ),
        ("POST /api/2.0/mlflow/logged-models/search", VIEW),
        ("POST /api/2.0/mlflow/registered-models/create", DEVELOP),
        ("GET /api/2.0/mlflow/registered-models/get", VIEW),
        ("PATCH /api/2.0/mlflow/registered-models/update", DEVELOP),
        ("DELETE /api/2.0/mlflow/registered-models/delete", PROMOTE),
        ("GET /api/2.0/mlflow/registered-models/search", VIEW),
        (
            "POST /api/2.0/mlflow/registered-models/get-latest-versions",
            VIEW,
        ),
        ("POST /api/2.0/mlflow/registered-models/set-tag", DEVELOP),
        (
            "DELETE /api/2.0/mlflow/registered-models/delete-tag",
            DEVELOP,
        ),
        ("POST /api/2.0/mlflow/registered-models/alias", PROMOTE),
        ("DELETE /api/2.0/mlflow/registered-models/alias", PROMOTE),
        ("GET /api/2.0/mlflow/registered-models/alias", VIEW),
        ("POST /api/2.0/mlflow/model-versions/create", DEVELOP),
        ("GET /api/2.0/mlflow/model-versions/get", VIEW),
        ("PATCH /api/2.0/mlflow/model-versions/update", DEVELOP),
        ("DELETE /api/2.0/mlflow/model-versions/delete", PROMOTE),
        ("GET /api/2.0/mlflow/model-versions/search", VIEW),
        ("GET /api/2.0/mlflow/model-versions/get-download-uri", VIEW),
        (
            "POST /api/2.0/mlflow/model-versions/transition-stage",
            PROMOTE,
        ),
        ("POST /api/2.0/mlflow/model-versions/set-tag", DEVELOP),
        ("DELETE /api/2.0/mlflow/model-versions/delete-tag", DEVELOP),
        ("PUT /api/2.0/mlflow-artifacts/artifacts/{*path}", DEVELOP),
        ("GET /api/2.0/mlflow-artifacts/artifacts/{*path}", VIEW),
        (
            "DELETE /api/2.0/mlflow-artifacts/artifacts/{*path}",
            DEVELOP,
        ),
        ("GET /api/2.0/mlflow-artifacts/artifacts", VIEW),
        ("GET /api/v1/projects/{project}/experiments", VIEW),
        ("GET /api/v1/projects/{project}/runs", VIEW),
        ("GET /api/v1/projects/{project}/models", VIEW),
        (
            "GET /api/v1/projects/{project}/models/{model}/versions",
            VIEW,
        ),
        (
            "GET /api/v1/projects/{project}/models/{model}/versions/{version}",
            VIEW,
        ),
        (
            "POST /api/v1/projects/{project}/models/{model}/versions/{version}/verify",
            VIEW,
        ),
        (
            "PUT /api/v1/projects/{project}/models/{model}/versions/{version}/card",
            DEVELOP,
        ),
        (
            "PUT /api/v1/projects/{project}/models/{model}/aliases/{alias}",
            PROMOTE,
        ),
        (
            "DELETE /api/v1/projects/{project}/models/{model}/aliases/{alias}",
            PROMOTE,
        ),
        (
            "GET /api/v1/projects/{project}/datasets",
            [A, A, D, A, A, A, A, H, H],
        ),
        (
            "POST /api/v1/projects/{project}/datasets",
            [A, A, D, A, A, A, D, H, H],
        ),
        (
            "GET /api/v1/projects/{project}/datasets/{dataset}",
            [A, A, D, A, A, A, A, H, H],
        ),
        (
            "POST /api/v1/projects/{project}/datasets/{dataset}/schemas",
            [A, A, D, A, A, A, D, H, H],
        ),
        (
            "POST /api/v1/projects/{project}/datasets/{dataset}/versions",
            [A, A, D, A, A, A, D, H, H],
        ),
        (
            "POST /api/v1/projects/{project}/datasets/{dataset}/push",
            [A, A, D, A, A, A, D, H, H],
        ),
        (
            "GET /api/v1/projects/{project}/datasets/{dataset}/versions",
            [A, A, D, A, A, A, A, H, H],
        ),
        (
            "GET /api/v1/projects/{project}/datasets/{dataset}/versions/{version}",
            [A, A, D, A, A, A, A, H, H],
        ),
        (
            "GET /api/v1/projects/{project}/datasets/{dataset}/versions/{version}/quarantine",
            [A, A, D, A, A, A, A, H, H],
        ),
        (
            "GET /api/v1/projects/{project}/datasets/{dataset}/versions/{version}/data",
            [A, A, D, A, A, A, A, H, H],
        ),
        ("GET /api/v1/projects/{project}/features", VIEW),
        ("POST /api/v1/projects/{project}/features/plan", VIEW),
        ("POST /api/v1/projects/{project}/features/apply", DEVELOP),
        (
            "GET /api/v1/projects/{project}/feature-views/{view}/versions",
            VIEW,
        ),
        ("POST /api/v1/projects/{project}/training-sets", DEVELOP),
        (
            "POST /api/v1/projects/{project}/feature-views/{view}/materialize",
            DEVELOP,
        ),
        ("POST /api/v1/projects/{project}/get-online-features", VIEW),
        ("POST /api/v1/projects/{project}/push", DEVELOP),
        // Feast-compatible paths name no project, so the matrix calls resolve to the
        // bootstrap project `default`, where only the tenant's admins hold a role.
        ("POST /get-online-features", [A, A, D, H, H, H, H, H, H]),
        ("POST /push", [A, A, D, H, H, H, H, H, H]),
        // Everyone may ask; each caller sees only events of the projects it can see.
        ("GET /api/v1/lineage", [A, A, A, A, A, A, A, A, A]),
        ("GET /api/v1/projects/{project}/jobs", VIEW),
        ("POST /api/v1/projects/{project}/jobs", DEVELOP),
        ("GET /api/v1/projects/{project}/jobs/{job}", VIEW),
        ("POST /api/v1/projects/{project}/jobs/{job}/cancel", DEVELOP),
        ("GET /api/v1/projects/{project}/jobs/{job}/logs", VIEW),
        ("GET /api/v1/projects/{project}/endpoints", VIEW),
        ("POST /api/v1/projects/{project}/endpoints", PROMOTE),
        ("GET /api/v1/projects/{project}/endpoints/{endpoint}", VIEW),
        (
            "PUT /api/v1/projects/{project}/endpoints/{endpoint}",
            PROMOTE,
        ),
        (
            "DELETE /api/v1/projects/{project}/endpoints/{endpoint}",
            PROMOTE,
        ),
        (
            "POST /api/v1/projects/{project}/endpoints/{endpoint}/labels",
            DEVELOP,
        ),
        (
            "GET /api/v1/projects/{project}/endpoints/{endpoint}/predictions",
            VIEW,
        ),
        (
            "PUT /api/v1/projects/{project}/endpoints/{endpoint}/policy",
            PROMOTE,
        ),
        (
            "GET /api/v1/projects/{project}/endpoints/{endpoint}/stats",
            VIEW,
        ),
        (
            "POST /api/v1/projects/{project}/endpoints/{endpoint}/rollout",
            PROMOTE,
        ),
        (
            "POST /api/v1/projects/{project}/endpoints/{endpoint}/rollout/promote",
            PROMOTE,
        ),
        (
            "POST /api/v1/projects/{project}/endpoints/{endpoint}/rollout/pause",
            PROMOTE,
        ),
        (
            "POST /api/v1/projects/{project}/endpoints/{endpoint}/rollout/resume",
            PROMOTE,
        ),
        (
            "POST /api/v1/projects/{project}/endpoints/{endpoint}/rollout/abort",
            PROMOTE,
        ),
        (
            "GET /api/v1/projects/{project}/endpoints/{endpoint}/history",
            VIEW,
        ),
        (
            "GET /api/v1/projects/{project}/endpoints/{endpoint}/analysis",
            VIEW,
        ),
        // Open Inference Protocol paths name no project either; endpoint `scorer` is deployed
        // in the bootstrap project for these calls.
        ("GET /v2/models/{name}", [A, A, D, H, H, H, H, H, H]),
        (
            "GET /v2/models/{name}/versions/{version}",
            [A, A, D, H, H, H, H, H, H],
        ),
        ("GET /v2/models/{name}/ready", [A, A, D, H, H, H, H, H, H]),
        (
            "GET /v2/models/{name}/versions/{version}/ready",
            [A, A, D, H, H, H, H, H, H],
        ),
        ("POST /v2/models/{name}/infer", [A, A, D, H, H, H, H, H, H]),
        (
            "POST /v2/models/{name}/versions/{version}/infer",
            [A, A, D, H, H, H, H, H, H],
        ),
        ("GET /api/v1/projects/{project}/monitors", VIEW),
        ("POST /api/v1/projects/{project}/monitors", DEVELOP),
        ("GET /api/v1/projects/{project}/monitors/{monitor}", VIEW),
        ("PUT /api/v1/projects/{project}/monitors/{monitor}", DEVELOP),
        (
            "DELETE /api/v1/projects/{project}/monitors/{monitor}",
            DEVELOP,
        ),
        (
            "POST /api/v1/projects/{project}/monitors/{monitor}/evaluate",
            DEVELOP,
        ),
        (
            "GET /api/v1/projects/{project}/monitors/{monitor}/reports",
            VIEW,
        ),
        (
            "GET /api/v1/projects/{project}/monitors/{monitor}/alert-rules",
            VIEW,
        ),
        (
            "POST /api/v1/projects/{project}/monitors/{monitor}/alert-rules",
            DEVELOP,
        ),
        (
            "PUT /api/v1/projects/{project}/monitors/{monitor}/alert-rules/{rule}",
            DEVELOP,
        ),
        (
            "DELETE /api/v1/projects/{project}/monitors/{monitor}/alert-rules/{rule}",
            DEVELOP,
        ),
        (
            "GET /api/v1/projects/{project}/monitors/{monitor}/alerts",
            VIEW,
        ),
        (
            "POST /api/v1/projects/{project}/monitors/{monitor}/alerts/{alert}/ack",
            DEVELOP,
        ),
        (
            "GET /api/v1/projects/{project}/monitors/{monitor}/alerts/{alert}/deliveries",
            VIEW,
        ),
        ("POST /api/v1/projects/{project}/drift", VIEW),
    ])
}

/// Routes that need no token.
const PUBLIC: [&str; 7] = [
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /api/v1/openapi.json",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2",
];

/// A fresh store with one principal per caller kind, a project `p` in tenant `default`, and a
/// second tenant `beta` with its own admin and project.
struct World {
    app: TestApp,
    tokens: BTreeMap<&'static str, String>,
    viewer_token_id: String,
    tracking: TrackingIds,
    /// A queued job of project `p`.
    job_id: String,
    /// A firing alert of monitor `mon` (over dataset `d`) and its rule `rule`.
    alert_id: String,
}

/// Tracking objects of project `p`: experiment `e` (id 1) with a run that has a param, a
/// metric, the tag `team` and the artifact `a.txt`; a logged model with an `MLmodel` file;
/// and registered model `m` whose version 1 is that model, with the alias `champion`.
struct TrackingIds {
    run_id: String,
    model_id: String,
}

async fn seed_tracking(app: &TestApp, project: &Project) -> TrackingIds {
    use ghaf_tracking::{Metric, NewLoggedModel, NewRun, Param, RegisterVersion, Scope, Tag};

    let service = app.state.tracking().expect("tracking service").clone();
    let scope = Scope {
        tenant: project.tenant.clone(),
        project: project.id.clone(),
    };
    let store = service.store();
    let experiment = store
        .create_experiment(&scope, "e", None, &[])
        .await
        .unwrap();
    let run = store
        .create_run(
            &scope,
            &NewRun {
                experiment_id: experiment.experiment_id,
                ..NewRun::default()
            },
        )
        .await
        .unwrap();
    let run_id = run.info.run_id;
    store
        .log_batch(
            &scope,
            &run_id,
            &[Metric {
                key: "loss".into(),
                value: 0.5,
                timestamp: 1,
                step: 0,
                model_id: String::new(),
            }],
            &[Param {
                key: "alpha".into(),
                value: "1".into(),
            }],
            &[Tag {
                key: "team".into(),
                value: "risk".into(),
            }],
        )
        .await
        .unwrap();
    let file = |content: &'static [u8]| {
        futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(content))])
    };
    service
        .put_artifact(&scope, &format!("1/{run_id}/artifacts/a.txt"), file(b"a"))
        .await
        .unwrap();
    let model = store
        .create_logged_model(
            &scope,
            &NewLoggedModel {
                experiment_id: experiment.experiment_id,
                name: "model".into(),
                source_run_id: run_id.clone(),
                ..NewLoggedModel::default()
            },
        )
        .await
        .unwrap();
    service
        .put_artifact(
            &scope,
            &format!("1/models/{}/artifacts/MLmodel", model.model_id),
            file(b"flavors: {}\n"),
        )
        .await
        .unwrap();
    store
        .create_registered_model(&scope, "m", "", "matrix", &[])
        .await
        .unwrap();
    service
        .register_version(
            &scope,
            &RegisterVersion {
                name: "m".into(),
                source: format!("models:/{}", model.model_id),
                run_id: run_id.clone(),
                model_id: model.model_id.clone(),
                ..RegisterVersion::default()
            },
        )
        .await
        .unwrap();
    store.set_alias(&scope, "m", "champion", 1).await.unwrap();
    TrackingIds {
        run_id,
        model_id: model.model_id,
    }
}

/// Sends a request as `token`. MLflow-compatible routes name no project in their path, so
/// they get project `p` through the `X-Ghaf-Project` header.
async fn send(
    world: &World,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> common::TestResponse {
    if !path.starts_with("/api/2.0/") {
        return world.app.call(method, path, token, body).await;
    }
    let mut builder = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("x-ghaf-project", "p");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let request = match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string())),
        None => builder.body(axum::body::Body::empty()),
    }
    .expect("valid request");
    world.app.send(request).await
}

/// Path with query and body of an MLflow-compatible route, filled with the seeded ids.
fn mlflow_request(key: &str, ids: &TrackingIds) -> Option<(String, Option<serde_json::Value>)> {
    use serde_json::json;

    let run = ids.run_id.as_str();
    let model = ids.model_id.as_str();
    let (method, template) = key.split_once(' ')?;
    let template = template.strip_prefix("/api/2.0/")?;
    let path = template
        .replace("{model_id}", model)
        .replace("{*path}", &format!("1/{run}/artifacts/a.txt"));
    let query = match template {
        "mlflow/experiments/get-by-name" => "?experiment_name=e".to_owned(),
        "mlflow/experiments/get" => "?experiment_id=1".to_owned(),
        "mlflow/runs/get" => format!("?run_id={run}"),
        "mlflow/metrics/get-history" => format!("?run_id={run}&metric_key=loss"),
        "mlflow/registered-models/get" => "?name=m".to_owned(),
        "mlflow/registered-models/alias" if method == "GET" => "?name=m&alias=champion".to_owned(),
        "mlflow/model-versions/get" | "mlflow/model-versions/get-download-uri" => {
            "?name=m&version=1".to_owned()
        }
        "mlflow-artifacts/artifacts" => format!("?path=1/{run}/artifacts"),
        _ => String::new(),
    };
    let body = match (method, template) {
        ("GET", _) => None,
        (_, "mlflow/experiments/create") => Some(json!({"name": "new-experiment"})),
        (_, "mlflow/experiments/search") => Some(json!({"max_results": 10})),
        (_, "mlflow/experiments/update") => Some(json!({"experiment_id": "1", "new_name": "e2"})),
        (_, "mlflow/experiments/delete" | "mlflow/experiments/restore") => {
            Some(json!({"experiment_id": "1"}))
        }
        (_, "mlflow/experiments/set-experiment-tag") => {
            Some(json!({"experiment_id": "1", "key": "k", "value": "v"}))
        }
        (_, "mlflow/runs/create") => Some(json!({"experiment_id": "1", "start_time": 5})),
        (_, "mlflow/runs/update") => Some(json!({"run_id": run, "status": "FINISHED"})),
        (_, "mlflow/runs/delete" | "mlflow/runs/restore") => Some(json!({"run_id": run})),
        (_, "mlflow/runs/log-parameter") => Some(json!({"run_id": run, "key": "b", "value": "2"})),
        (_, "mlflow/runs/log-metric") => Some(json!({
            "run_id": run, "key": "loss", "value": "NaN", "timestamp": 2, "step": 1,
        })),
        (_, "mlflow/runs/log-batch") => Some(json!({
            "run_id": run,
            "metrics": [{"key": "acc", "value": 0.9, "timestamp": 2, "step": 0}],
            "params": [{"key": "c", "value": "3"}],
            "tags": [{"key": "t", "value": "v"}],
        })),
        (_, "mlflow/runs/set-tag") => Some(json!({"run_id": run, "key": "t", "value": "v"})),
        (_, "mlflow/runs/delete-tag") => Some(json!({"run_id": run, "key": "team"})),
        (_, "mlflow/runs/search") => Some(json!({
            "experiment_ids": ["1"], "filter": "metrics.loss < 1", "order_by": ["metrics.loss DESC"],
        })),
        (_, "mlflow/runs/outputs") => {
            Some(json!({"run_id": run, "models": [{"model_id": model, "step": 0}]}))
        }
        (_, "mlflow/logged-models") => {
            Some(json!({"experiment_id": "1", "name": "other", "source_run_id": run}))
        }
        (_, "mlflow/logged-models/search") => {
            Some(json!({"experiment_ids": ["1"], "filter": "name = 'model'"}))
        }
        (_, t) if t.ends_with("/tags") => Some(json!({"tags": [{"key": "a", "value": "b"}]})),
        (_, t) if t.starts_with("mlflow/logged-models/") => {
            Some(json!({"model_id": model, "status": "LOGGED_MODEL_READY"}))
        }
        (_, "mlflow/registered-models/create") => Some(json!({"name": "new-model"})),
        (_, "mlflow/registered-models/update") => Some(json!({"name": "m", "description": "d"})),
        (_, "mlflow/registered-models/delete" | "mlflow/registered-models/get-latest-versions") => {
            Some(json!({"name": "m"}))
        }
        (_, "mlflow/registered-models/set-tag") => {
            Some(json!({"name": "m", "key": "k", "value": "v"}))
        }
        (_, "mlflow/registered-models/delete-tag") => Some(json!({"name": "m", "key": "k"})),
        ("POST", "mlflow/registered-models/alias") => {
            Some(json!({"name": "m", "alias": "challenger", "version": "1"}))
        }
        ("DELETE", "mlflow/registered-models/alias") => {
            Some(json!({"name": "m", "alias": "champion"}))
        }
        (_, "mlflow/model-versions/create") => Some(json!({
            "name": "m", "source": format!("models:/{model}"), "run_id": run, "model_id": model,
        })),
        (_, "mlflow/model-versions/update") => {
            Some(json!({"name": "m", "version": "1", "description": "d"}))
        }
        (_, "mlflow/model-versions/delete") => Some(json!({"name": "m", "version": "1"})),
        (_, "mlflow/model-versions/transition-stage") => Some(json!({
            "name": "m", "version": "1", "stage": "Production", "archive_existing_versions": true,
        })),
        (_, "mlflow/model-versions/set-tag") => {
            Some(json!({"name": "m", "version": "1", "key": "k", "value": "v"}))
        }
        (_, "mlflow/model-versions/delete-tag") => {
            Some(json!({"name": "m", "version": "1", "key": "k"}))
        }
        ("PUT", _) => Some(json!({"artifact": "bytes"})),
        _ => None,
    };
    Some((format!("/api/2.0/{path}{query}"), body))
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

    // Dataset `d` of project `p` with version 1, which has one quarantined row.
    let ingest = app.state.ingest().expect("ingest service").clone();
    let schema = ghaf_ingest::DatasetSchema::from_yaml(
        "columns: [{name: id, type: integer, nullable: false}]\nacceptance: {max_failure_share: 0.5}",
    )
    .unwrap();
    let dataset = ingest
        .create_dataset(&project.tenant, &project.id, "d", "", &schema, "matrix")
        .await
        .unwrap();
    let input = app.state.config().data_dir.join("d.csv");
    std::fs::write(&input, "id\n1\n2\nx\n").unwrap();
    let options = ghaf_ingest::ReadOptions::new(ghaf_ingest::InputFormat::Csv);
    ingest
        .ingest(
            &dataset,
            "p",
            ghaf_ingest::IngestInput {
                path: &input,
                options: &options,
                source: "d.csv",
                progress: None,
            },
            "matrix",
        )
        .await
        .unwrap();

    // Feature view `fv` over dataset `d`, keyed by its `id` column, in `p` and in the
    // bootstrap project `default` that the Feast-compatible paths resolve to.
    let default_project = app
        .state
        .store()
        .get_project_by_name(&project.tenant, "default")
        .await
        .unwrap()
        .expect("bootstrap project");
    let default_dataset = ingest
        .create_dataset(
            &default_project.tenant,
            &default_project.id,
            "d",
            "",
            &schema,
            "matrix",
        )
        .await
        .unwrap();
    ingest
        .ingest(
            &default_dataset,
            "default",
            ghaf_ingest::IngestInput {
                path: &input,
                options: &options,
                source: "d.csv",
                progress: None,
            },
            "matrix",
        )
        .await
        .unwrap();
    let features = app.state.features().expect("feature store");
    let definitions = ghaf_features::Definitions::from_yaml(
        "entities: [{name: item, join_key: id, value_type: integer}]\n\
         feature_views: [{name: fv, entities: [item], source: {dataset: d}, \
         features: [{name: double_id, expression: 'id * 2'}]}]",
    )
    .unwrap();
    let plan = features
        .plan(&project.tenant, &project.id, &definitions)
        .await
        .unwrap();
    features
        .apply(&project.tenant, &project.id, &plan, "matrix")
        .await
        .unwrap();
    let plan = features
        .plan(&default_project.tenant, &default_project.id, &definitions)
        .await
        .unwrap();
    features
        .apply(
            &default_project.tenant,
            &default_project.id,
            &plan,
            "matrix",
        )
        .await
        .unwrap();

    let tracking = seed_tracking(&app, &project).await;

    let job_spec = ghaf_jobs::JobSpec::from_json(serde_json::json!({
        "name": "matrix-job",
        "kind": {"type": "command", "command": ["true"]},
    }))
    .unwrap();
    let job_id = app
        .state
        .job_services()
        .expect("job system")
        .jobs
        .submit(
            &project.tenant,
            &project.id,
            &job_spec,
            admin.principal.as_str(),
            ghaf_core::now_millis(),
        )
        .await
        .unwrap()
        .id;

    // Monitor `mon` compares the newest version of `d` with version 1; rule `rule` fires on
    // any drift share, so the evaluation raises one alert.
    let monitoring = app.state.monitoring().expect("monitoring service");
    let monitor = monitoring
        .create_monitor(
            &project.tenant,
            &project.id,
            &ghaf_monitoring::MonitorSpec::from_json(serde_json::json!({
                "name": "mon",
                "target": {"type": "dataset", "name": "d"},
                "reference": {"dataset": "d", "version": 1},
                "window": {"type": "latest_version"},
            }))
            .unwrap(),
            "matrix",
        )
        .await
        .unwrap();
    monitoring
        .create_rule(
            &monitor,
            &ghaf_monitoring::AlertRuleSpec::from_json(serde_json::json!({
                "name": "rule",
                "condition": {"type": "drift_share", "at_least": 0.0},
            }))
            .unwrap(),
            "matrix",
        )
        .await
        .unwrap();
    monitoring.evaluate(&monitor).await.unwrap();
    let alert_id = monitoring
        .store()
        .list_alerts(&monitor, None, 10)
        .await
        .unwrap()
        .first()
        .expect("the seeded rule fired")
        .id
        .clone();

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
        tracking,
        job_id,
        alert_id,
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
    if let Some(request) = mlflow_request(key, &world.tracking) {
        return request;
    }
    let path = path
        .replace("{project}", "p")
        .replace("{principal}", "target")
        .replace("{role}", "developer")
        .replace("{token}", &world.viewer_token_id)
        .replace("{dataset}", "d")
        .replace("{view}", "fv")
        .replace("{version}", "1")
        .replace("{model}", "m")
        .replace("{alias}", "champion")
        .replace("{name}", oip_support::ENDPOINT)
        .replace("{job}", &world.job_id)
        .replace("{endpoint}", MATRIX_ENDPOINT)
        .replace("{monitor}", "mon")
        .replace("{rule}", "rule")
        .replace("{alert}", &world.alert_id);
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
        "PUT /api/v1/projects/{project}/models/{model}/versions/{version}/card" => {
            Some(serde_json::json!({"model_card": {"intended_use": "matrix"}}))
        }
        "PUT /api/v1/projects/{project}/models/{model}/aliases/{alias}" => {
            Some(serde_json::json!({"version": 1}))
        }
        "POST /api/v1/projects/{project}/datasets" => Some(serde_json::json!({
            "name": "new-dataset",
            "schema": {"columns": [{"name": "id", "type": "integer"}]},
        })),
        "POST /api/v1/projects/{project}/datasets/{dataset}/schemas" => Some(serde_json::json!({
            "schema": {"columns": [{"name": "id", "type": "integer", "nullable": false}]},
        })),
        // One NDJSON line; JSON objects are valid NDJSON.
        "POST /api/v1/projects/{project}/datasets/{dataset}/versions" => {
            Some(serde_json::json!({"id": 3}))
        }
        "POST /api/v1/projects/{project}/datasets/{dataset}/push" => {
            Some(serde_json::json!([{"id": 4}]))
        }
        "POST /api/v1/projects/{project}/features/plan"
        | "POST /api/v1/projects/{project}/features/apply" => Some(serde_json::json!({
            "definitions": {"entities": [{"name": "store", "value_type": "string"}]},
        })),
        "POST /api/v1/projects/{project}/training-sets" => Some(serde_json::json!({
            "entity_dataset": "d",
            "features": ["fv:double_id"],
            "output_dataset": "training",
        })),
        "POST /api/v1/projects/{project}/feature-views/{view}/materialize" => {
            Some(serde_json::json!({}))
        }
        "POST /v2/models/{name}/infer" | "POST /v2/models/{name}/versions/{version}/infer" => {
            Some(serde_json::json!({
                "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [0.5, 3]}],
            }))
        }
        "POST /api/v1/projects/{project}/monitors" => Some(serde_json::json!({
            "name": "new-monitor",
            "target": {"type": "dataset", "name": "d"},
            "reference": {"dataset": "d", "version": 1},
            "window": {"type": "latest_version"},
        })),
        "PUT /api/v1/projects/{project}/monitors/{monitor}" => Some(serde_json::json!({
            "name": "mon",
            "target": {"type": "dataset", "name": "d"},
            "reference": {"dataset": "d", "version": 1},
            "window": {"type": "rows", "count": 10},
        })),
        "POST /api/v1/projects/{project}/monitors/{monitor}/alert-rules" => {
            Some(serde_json::json!({
                "name": "new-rule",
                "condition": {"type": "drift_share", "at_least": 0.5},
            }))
        }
        "PUT /api/v1/projects/{project}/monitors/{monitor}/alert-rules/{rule}" => {
            Some(serde_json::json!({
                "name": "rule",
                "condition": {"type": "drift_share", "at_least": 0.9},
            }))
        }
        "POST /api/v1/projects/{project}/drift" => Some(serde_json::json!({
            "reference": {"dataset": "d", "version": 1},
            "current": {"dataset": "d"},
        })),
        "POST /api/v1/projects/{project}/endpoints" => Some(serde_json::json!({
            "name": "new-endpoint",
            "model": "m",
            "version": 1,
        })),
        "PUT /api/v1/projects/{project}/endpoints/{endpoint}" => {
            Some(serde_json::json!({"model": "m", "version": 1}))
        }
        "PUT /api/v1/projects/{project}/endpoints/{endpoint}/policy" => {
            Some(serde_json::json!({"shadow": null}))
        }
        "POST /api/v1/projects/{project}/endpoints/{endpoint}/rollout" => Some(serde_json::json!({
            "version": 2,
            "canary": {"steps": [10], "interval_secs": 60, "min_requests": 10, "failure_threshold": 1},
        })),
        "POST /api/v1/projects/{project}/endpoints/{endpoint}/labels" => Some(serde_json::json!({
            "labels": [{"request_id": "r1", "label": 1.0}],
        })),
        "POST /api/v1/projects/{project}/jobs" => Some(serde_json::json!({
            "name": "matrix-submitted",
            "kind": {"type": "command", "command": ["true"]},
        })),
        "POST /api/v1/projects/{project}/push" | "POST /push" => Some(serde_json::json!({
            "push_source_name": "d",
            "df": {"id": [5, 6]},
            "to": "online_and_offline",
        })),
        "POST /api/v1/projects/{project}/get-online-features" | "POST /get-online-features" => {
            Some(serde_json::json!({
                "features": ["fv:double_id"],
                "entities": {"id": [1, 2]},
            }))
        }
        _ => None,
    };
    let path = if key == "DELETE /api/v1/role-bindings/{principal}/{role}" {
        format!("{path}?project=p")
    } else if key == "POST /api/v1/projects/{project}/datasets/{dataset}/versions" {
        format!("{path}?format=ndjson")
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
        let Access::Action(_) = route.access else {
            continue;
        };
        let Some(expected) = table.get(key.as_str()).copied() else {
            failures.push(format!("{key}: missing from the table"));
            continue;
        };
        // Each caller gets its own store, so the calls of one route run in parallel.
        let mut calls = Vec::new();
        calls.push(tokio::spawn(check_call(route.clone(), key.clone(), None)));
        for (column, caller) in CALLERS.iter().enumerate() {
            let call = check_call(
                route.clone(),
                key.clone(),
                Some((*caller, expected[column])),
            );
            calls.push(tokio::spawn(call));
        }
        for call in calls {
            failures.extend(call.await.expect("matrix call panicked"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Endpoint of project `p` that the endpoint routes address; it serves model `m` version 1,
/// whose files are no model, so it ends up failed, which no route of the matrix minds.
const MATRIX_ENDPOINT: &str = "ep";

async fn deploy_matrix_endpoint(world: &World) {
    let tenant = ghaf_core::TenantId::from_stored("default");
    let project = world
        .app
        .state
        .store()
        .get_project_by_name(&tenant, "p")
        .await
        .unwrap()
        .expect("project p");
    let scope = ghaf_serving::EndpointScope {
        tenant,
        project: project.id,
    };
    let spec = ghaf_serving::DeploySpec {
        model: "m".into(),
        version: 1,
        ..ghaf_serving::DeploySpec::default()
    };
    world
        .app
        .state
        .serving()
        .expect("serving service")
        .create(&scope, "p", MATRIX_ENDPOINT, &spec, "matrix")
        .await
        .unwrap();
}

/// Registers version 2 of model `m` for the rollout routes; for the routes that act on a
/// rollout, starts a canary of the matrix endpoint to it (paused, for resume).
async fn prepare_rollout(world: &World, key: &str) {
    let tenant = ghaf_core::TenantId::from_stored("default");
    let project = world
        .app
        .state
        .store()
        .get_project_by_name(&tenant, "p")
        .await
        .unwrap()
        .expect("project p");
    let scope = ghaf_tracking::Scope {
        tenant: tenant.clone(),
        project: project.id.clone(),
    };
    world
        .app
        .state
        .tracking()
        .expect("tracking service")
        .register_version(
            &scope,
            &ghaf_tracking::RegisterVersion {
                name: "m".into(),
                source: format!("models:/{}", world.tracking.model_id),
                run_id: world.tracking.run_id.clone(),
                model_id: world.tracking.model_id.clone(),
                ..ghaf_tracking::RegisterVersion::default()
            },
        )
        .await
        .unwrap();
    if key.ends_with("/rollout") {
        return;
    }
    let service = ghaf_server::app::rollout_service(&world.app.state).expect("rollout service");
    let endpoint_scope = ghaf_serving::EndpointScope {
        tenant,
        project: project.id,
    };
    let request = ghaf_rollout::StartRequest {
        model: None,
        version: 2,
        canary: Some(
            serde_json::from_value(serde_json::json!({
                "steps": [10], "interval_secs": 60, "min_requests": 10, "failure_threshold": 1,
            }))
            .unwrap(),
        ),
    };
    service
        .start(&endpoint_scope, MATRIX_ENDPOINT, &request, "matrix")
        .await
        .unwrap();
    if key.ends_with("/resume") {
        service
            .act(
                &endpoint_scope,
                MATRIX_ENDPOINT,
                ghaf_rollout::canary::ManualAction::Pause,
                "matrix",
            )
            .await
            .unwrap();
    }
}

/// Makes one call of the matrix on a fresh store and returns what did not match. Without a
/// caller, the call carries no credentials and must get 401.
async fn check_call(
    route: ghaf_server::api::RouteInfo,
    key: String,
    caller: Option<(&'static str, Expect)>,
) -> Vec<String> {
    let world = new_world().await;
    if key.contains(" /v2/models/") {
        oip_support::deploy(&world.app).await;
    }
    if key.contains("/endpoints") {
        deploy_matrix_endpoint(&world).await;
    }
    if key.contains("/rollout") {
        prepare_rollout(&world, &key).await;
    }
    let (path, body) = request_for(&key, route.path, &world);
    let Some((caller, want)) = caller else {
        let response = send(&world, route.method.as_str(), &path, None, body).await;
        if response.status != 401 || error_code(&key, &response) != "unauthenticated" {
            return vec![format!(
                "{key} anonymous: got {} {}",
                response.status,
                response.text()
            )];
        }
        return Vec::new();
    };

    let token = world.tokens[caller].clone();
    let response = send(&world, route.method.as_str(), &path, Some(&token), body).await;
    let ok = match want {
        Expect::Allow => response.status.as_u16() == route.success,
        Expect::Deny => {
            response.status == 403 && error_code(&key, &response) == "permission_denied"
        }
        Expect::Hidden => response.status == 404 && error_code(&key, &response) == "not_found",
    };
    if !ok {
        return vec![format!(
            "{key} as {caller}: expected {want:?}, got {} {}",
            response.status,
            response.text()
        )];
    }
    // A caller of another tenant that is allowed must never see tenant `default`'s objects
    // in the answer.
    let mut leaks = Vec::new();
    if caller == "other_tenant_admin" && want == Expect::Allow {
        let text = response.text();
        for leaked in [
            "\"p\"",
            "\"target\"",
            "\"viewer\"",
            "\"tenant\":\"default\"",
        ] {
            if text.contains(leaked) {
                leaks.push(format!(
                    "{key} as {caller}: response leaks {leaked}: {text}"
                ));
            }
        }
    }
    leaks
}

/// The error code of a response. Open Inference Protocol routes answer with the protocol's
/// `{"error": "<message>"}` body, which has no code, so their status stands for it.
fn error_code(key: &str, response: &common::TestResponse) -> String {
    if !key.contains(" /v2/") {
        return response.code();
    }
    let has_body = serde_json::from_slice::<serde_json::Value>(&response.body)
        .is_ok_and(|body| body["error"].is_string());
    if !has_body {
        return format!("{key}: no protocol error body");
    }
    match response.status.as_u16() {
        401 => "unauthenticated",
        403 => "permission_denied",
        404 => "not_found",
        _ => "",
    }
    .to_owned()
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
