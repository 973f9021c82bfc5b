//! MLflow-compatible routes through the router: error shapes and statuses, project
//! selection, non-finite metrics, paging, and refusal of a tampered model.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::{TestApp, TestResponse};
use ghaf_core::Name;
use serde_json::{Value, json};

/// Sends an MLflow request with an optional `X-Ghaf-Project` header.
async fn mlflow(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    project: Option<&str>,
    body: Option<Value>,
) -> TestResponse {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("/api/2.0/{path}"))
        .header("authorization", format!("Bearer {token}"));
    if let Some(project) = project {
        builder = builder.header("x-ghaf-project", project);
    }
    let request = match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap();
    app.send(request).await
}

async fn create_project(app: &TestApp, name: &str) {
    let admin = app.tenancy().authenticate(&app.admin_token).await.unwrap();
    app.tenancy()
        .create_project(&admin, &Name::parse(name).unwrap(), "")
        .await
        .unwrap();
}

#[tokio::test]
async fn missing_experiment_has_mlflow_error_shape() {
    let app = TestApp::new().await;
    let token = app.admin_token.clone();
    let response = mlflow(
        &app,
        "GET",
        "mlflow/experiments/get-by-name?experiment_name=nope",
        &token,
        None,
        None,
    )
    .await;
    assert_eq!(response.status, 404, "{}", response.text());
    let body = response.json();
    assert_eq!(body["error_code"], "RESOURCE_DOES_NOT_EXIST");
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    assert!(body.get("error").is_none(), "{body}");
}

#[tokio::test]
async fn statuses_follow_mlflow() {
    let app = TestApp::new().await;
    let token = app.admin_token.clone();
    let create = json!({"name": "fraud"});
    let first = mlflow(
        &app,
        "POST",
        "mlflow/registered-models/create",
        &token,
        None,
        Some(create.clone()),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let again = mlflow(
        &app,
        "POST",
        "mlflow/registered-models/create",
        &token,
        None,
        Some(create),
    )
    .await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(again.json()["error_code"], "RESOURCE_ALREADY_EXISTS");

    let bad_filter = mlflow(
        &app,
        "POST",
        "mlflow/runs/search",
        &token,
        None,
        Some(json!({"experiment_ids": ["0"], "filter": "metrics.a > 1 OR metrics.b < 2"})),
    )
    .await;
    assert_eq!(bad_filter.status, 400, "{}", bad_filter.text());
    assert_eq!(bad_filter.json()["error_code"], "INVALID_PARAMETER_VALUE");

    let anonymous = app
        .call(
            "GET",
            "/api/2.0/mlflow/experiments/get?experiment_id=0",
            None,
            None,
        )
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["error_code"], "UNAUTHENTICATED");

    let unknown = mlflow(
        &app,
        "GET",
        "mlflow/experiments/get?experiment_id=42",
        &token,
        None,
        None,
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error_code"], "RESOURCE_DOES_NOT_EXIST");
}

#[tokio::test]
async fn project_comes_from_header_then_token_then_default() {
    let app = TestApp::new().await;
    create_project(&app, "other").await;
    let token = app.admin_token.clone();
    let create = |name: &str| Some(json!({"name": name}));

    let in_default = mlflow(
        &app,
        "POST",
        "mlflow/experiments/create",
        &token,
        None,
        create("a"),
    )
    .await;
    assert_eq!(in_default.status, 200, "{}", in_default.text());
    let in_other = mlflow(
        &app,
        "POST",
        "mlflow/experiments/create",
        &token,
        Some("other"),
        create("b"),
    )
    .await;
    assert_eq!(in_other.status, 200, "{}", in_other.text());
    assert_eq!(
        in_other.json()["experiment_id"],
        "1",
        "ids count per project"
    );

    let lookup = |project: Option<&'static str>, name: &'static str| {
        let token = token.clone();
        let app = &app;
        async move {
            mlflow(
                app,
                "GET",
                &format!("mlflow/experiments/get-by-name?experiment_name={name}"),
                &token,
                project,
                None,
            )
            .await
            .status
        }
    };
    assert_eq!(lookup(None, "a").await, 200);
    assert_eq!(lookup(None, "b").await, 404);
    assert_eq!(lookup(Some("other"), "b").await, 200);
    assert_eq!(lookup(Some("missing"), "b").await, 404);

    // A token restricted to `other` works there without the header.
    let admin = app.tenancy().authenticate(&token).await.unwrap();
    let restricted = app
        .tenancy()
        .issue_token(
            &admin,
            &ghaf_auth::TokenRequest {
                name: "ci".into(),
                project: Some("other".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let response = mlflow(
        &app,
        "GET",
        "mlflow/experiments/get-by-name?experiment_name=b",
        &restricted.secret,
        None,
        None,
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let elsewhere = mlflow(
        &app,
        "GET",
        "mlflow/experiments/get-by-name?experiment_name=a",
        &restricted.secret,
        Some("default"),
        None,
    )
    .await;
    assert_eq!(elsewhere.status, 404, "{}", elsewhere.text());
}

#[tokio::test]
async fn non_finite_metrics_round_trip_and_history_pages() {
    let app = TestApp::new().await;
    let token = app.admin_token.clone();
    let run = mlflow(
        &app,
        "POST",
        "mlflow/runs/create",
        &token,
        None,
        Some(json!({})),
    )
    .await;
    let run_id = run.json()["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (step, value) in [
        (0, json!("NaN")),
        (1, json!("Infinity")),
        (2, json!("-Infinity")),
        (3, json!(0.5)),
    ] {
        let logged = mlflow(
            &app,
            "POST",
            "mlflow/runs/log-metric",
            &token,
            None,
            Some(json!({"run_id": run_id, "key": "m", "value": value, "timestamp": "1000", "step": step})),
        )
        .await;
        assert_eq!(logged.status, 200, "{}", logged.text());
    }
    let first = mlflow(
        &app,
        "GET",
        &format!("mlflow/metrics/get-history?run_id={run_id}&metric_key=m&max_results=3"),
        &token,
        None,
        None,
    )
    .await
    .json();
    let values: Vec<Value> = first["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].clone())
        .collect();
    assert_eq!(
        values,
        [json!("NaN"), json!("Infinity"), json!("-Infinity")]
    );
    let page_token = first["next_page_token"].as_str().expect("a second page");
    let second = mlflow(
        &app,
        "GET",
        &format!("mlflow/metrics/get-history?run_id={run_id}&metric_key=m&max_results=3&page_token={page_token}"),
        &token,
        None,
        None,
    )
    .await
    .json();
    assert_eq!(second["metrics"][0]["value"], 0.5);
    assert!(second.get("next_page_token").is_none(), "{second}");

    let run = mlflow(
        &app,
        "GET",
        &format!("mlflow/runs/get?run_id={run_id}"),
        &token,
        None,
        None,
    )
    .await
    .json();
    assert_eq!(run["run"]["data"]["metrics"][0]["value"], 0.5);
}

#[tokio::test]
async fn tampered_model_is_refused_at_download() {
    let app = TestApp::new().await;
    let token = app.admin_token.clone();
    let run = mlflow(
        &app,
        "POST",
        "mlflow/runs/create",
        &token,
        None,
        Some(json!({})),
    )
    .await
    .json();
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    let model = mlflow(
        &app,
        "POST",
        "mlflow/logged-models",
        &token,
        None,
        Some(json!({"experiment_id": "0", "name": "model", "source_run_id": run_id})),
    )
    .await
    .json();
    let model_id = model["model"]["info"]["model_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = format!("mlflow-artifacts/artifacts/0/models/{model_id}/artifacts/model.bin");
    let upload = |content: &'static str| {
        let request = Request::builder()
            .method("PUT")
            .uri(format!("/api/2.0/{file}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(content))
            .unwrap();
        app.send(request)
    };
    assert_eq!(upload("weights").await.status, 200);
    mlflow(
        &app,
        "POST",
        "mlflow/registered-models/create",
        &token,
        None,
        Some(json!({"name": "fraud"})),
    )
    .await;
    let version = mlflow(
        &app,
        "POST",
        "mlflow/model-versions/create",
        &token,
        None,
        Some(json!({"name": "fraud", "source": format!("models:/{model_id}"), "run_id": run_id, "model_id": model_id})),
    )
    .await;
    assert_eq!(version.status, 200, "{}", version.text());
    assert_eq!(version.json()["model_version"]["status"], "READY");

    let uri = "mlflow/model-versions/get-download-uri?name=fraud&version=1";
    let verified = mlflow(&app, "GET", uri, &token, None, None).await;
    assert_eq!(verified.status, 200, "{}", verified.text());
    assert_eq!(
        verified.json()["artifact_uri"],
        format!("mlflow-artifacts:/0/models/{model_id}/artifacts")
    );
    let downloaded = mlflow(&app, "GET", &file, &token, None, None).await;
    assert_eq!(downloaded.body, b"weights");

    // Overwriting a registered file after registration breaks the signed manifest.
    assert_eq!(upload("poisoned").await.status, 200);
    let refused = mlflow(&app, "GET", uri, &token, None, None).await;
    assert_eq!(refused.status, 500, "{}", refused.text());
    let body = refused.json();
    assert_eq!(body["error_code"], "DATA_LOSS");
    assert!(
        body["message"].as_str().unwrap().contains("model.bin"),
        "{body}"
    );
}

#[tokio::test]
async fn ghaf_api_lists_cards_verifies_and_moves_aliases() {
    let app = TestApp::new().await;
    let token = app.admin_token.clone();
    let run = mlflow(
        &app,
        "POST",
        "mlflow/runs/create",
        &token,
        None,
        Some(json!({})),
    )
    .await
    .json();
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    mlflow(
        &app,
        "POST",
        "mlflow/runs/log-batch",
        &token,
        None,
        Some(
            json!({"run_id": run_id, "metrics": [{"key": "auc", "value": 0.91, "timestamp": 1}],
                    "params": [{"key": "model", "value": "rf"}]}),
        ),
    )
    .await;
    let upload = Request::builder()
        .method("PUT")
        .uri(format!(
            "/api/2.0/mlflow-artifacts/artifacts/0/{run_id}/artifacts/model/MLmodel"
        ))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(
            "signature:\n  inputs: '[{\"type\": \"double\", \"name\": \"x\"}]'\n",
        ))
        .unwrap();
    assert_eq!(app.send(upload).await.status, 200);
    mlflow(
        &app,
        "POST",
        "mlflow/registered-models/create",
        &token,
        None,
        Some(json!({"name": "fraud"})),
    )
    .await;
    let created = mlflow(
        &app,
        "POST",
        "mlflow/model-versions/create",
        &token,
        None,
        Some(json!({"name": "fraud", "source": format!("runs:/{run_id}/model"), "run_id": run_id})),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text());

    let runs = app
        .call(
            "GET",
            "/api/v1/projects/default/runs?filter=params.model%20%3D%20%27rf%27&order_by=metrics.auc%20DESC",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(runs.status, 200, "{}", runs.text());
    assert_eq!(runs.json()["runs"][0]["metrics"]["auc"], 0.91);

    let versions = app
        .call(
            "GET",
            "/api/v1/projects/default/models/fraud/versions",
            Some(&token),
            None,
        )
        .await
        .json();
    let version = &versions["versions"][0];
    assert_eq!(version["version"], 1);
    assert_eq!(version["files"][0]["path"], "MLmodel");
    assert_eq!(version["signature"]["inputs"][0]["name"], "x");
    assert_eq!(version["metrics"]["auc"], 0.91);
    assert_eq!(version["signing_key_id"].as_str().unwrap().len(), 16);

    let card = app
        .call(
            "PUT",
            "/api/v1/projects/default/models/fraud/versions/1/card",
            Some(&token),
            Some(json!({
                "model_card": {
                    "intended_use": "card fraud screening",
                    "limitations": "not for loans",
                    "evaluation_data": ["holdout-2026-11"],
                    "subgroup_metrics": {"region=north": {"auc": 0.9}},
                },
                "lineage": {"training_set": "fraud-train@3"},
            })),
        )
        .await;
    assert_eq!(card.status, 200, "{}", card.text());
    let card = card.json();
    assert_eq!(card["model_card"]["intended_use"], "card fraud screening");
    assert_eq!(
        card["model_card"]["subgroup_metrics"]["region=north"]["auc"],
        0.9
    );
    assert_eq!(card["lineage"]["training_set"], "fraud-train@3");

    let verified = app
        .call(
            "POST",
            "/api/v1/projects/default/models/fraud/versions/1/verify",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(verified.status, 200, "{}", verified.text());
    assert_eq!(verified.json()["files"], 1);

    let alias = app
        .call(
            "PUT",
            "/api/v1/projects/default/models/fraud/aliases/champion",
            Some(&token),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(alias.status, 200, "{}", alias.text());
    assert_eq!(alias.json()["aliases"]["champion"], 1);
    let reserved = app
        .call(
            "PUT",
            "/api/v1/projects/default/models/fraud/aliases/latest",
            Some(&token),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(reserved.status, 400, "{}", reserved.text());
    assert_eq!(reserved.code(), "invalid_argument");
    let deleted = app
        .call(
            "DELETE",
            "/api/v1/projects/default/models/fraud/aliases/champion",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
}

#[tokio::test]
async fn run_writes_name_the_run_in_the_audit_log() {
    let app = TestApp::new().await;
    let token = app.admin_token.clone();
    let run = mlflow(
        &app,
        "POST",
        "mlflow/runs/create",
        &token,
        None,
        Some(json!({})),
    )
    .await;
    let run_id = run.json()["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let logged = mlflow(
        &app,
        "POST",
        "mlflow/runs/log-metric",
        &token,
        None,
        Some(json!({"run_id": run_id, "key": "acc", "value": 0.93, "timestamp": 1, "step": 7})),
    )
    .await;
    assert_eq!(logged.status, 200, "{}", logged.text());
    let batch = mlflow(
        &app,
        "POST",
        "mlflow/runs/log-batch",
        &token,
        None,
        Some(json!({
            "run_id": run_id,
            "metrics": [
                {"key": "loss", "value": 0.1, "timestamp": 1, "step": 0},
                {"key": "loss", "value": 0.05, "timestamp": 2, "step": 1},
            ],
            "params": [{"key": "model", "value": "rf"}],
        })),
    )
    .await;
    assert_eq!(batch.status, 200, "{}", batch.text());

    let page = app
        .call(
            "GET",
            "/api/v1/audit?action=tracking.write",
            Some(&app.admin_token),
            None,
        )
        .await
        .json();
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{page}");
    for entry in entries {
        assert_eq!(entry["details"]["run_id"], run_id, "{entry}");
        assert_eq!(entry["details"]["project"], "default", "{entry}");
    }
    let metric = &entries[1]["details"];
    assert_eq!(metric["metrics"], json!(["acc"]), "{metric}");
    assert_eq!(metric["step"], 7, "{metric}");
    assert!(
        !metric.to_string().contains("0.93"),
        "metric values stay out of the audit log: {metric}"
    );
    let batch = &entries[2]["details"];
    assert_eq!(batch["metrics"], json!(["loss"]), "{batch}");
    assert_eq!(batch["metric_values"], 2, "{batch}");
    assert_eq!(batch["params"], json!(["model"]), "{batch}");
}

#[tokio::test]
async fn broken_audit_chain_refuses_log_metric() {
    let app = TestApp::new().await;
    let token = app.admin_token.clone();
    let run = mlflow(
        &app,
        "POST",
        "mlflow/runs/create",
        &token,
        None,
        Some(json!({})),
    )
    .await;
    let run_id = run.json()["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = |step: i64| {
        let body =
            json!({"run_id": run_id, "key": "acc", "value": 0.5, "timestamp": 1, "step": step});
        mlflow(
            &app,
            "POST",
            "mlflow/runs/log-metric",
            &token,
            None,
            Some(body),
        )
    };
    let first = log(0).await;
    assert_eq!(first.status, 200, "{}", first.text());

    // Make the head's seal invalid, as an edit without the key would.
    let url = format!("sqlite://{}", app.data_dir().join("meta.db").display());
    let db = ghaf_meta::Db::connect(&url, 1).await.unwrap();
    for statement in [
        "DROP TRIGGER audit_heads_forward_only",
        "UPDATE audit_heads SET mac = 'garbage' WHERE tenant_id = 'default'",
    ] {
        sqlx::query(statement).execute(db.pool()).await.unwrap();
    }

    let refused = log(1).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(
        refused.json()["error_code"],
        "TEMPORARILY_UNAVAILABLE",
        "{}",
        refused.text()
    );
    let history = mlflow(
        &app,
        "GET",
        &format!("mlflow/metrics/get-history?run_id={run_id}&metric_key=acc"),
        &token,
        None,
        None,
    )
    .await;
    let metrics = history.json()["metrics"].as_array().cloned().unwrap();
    assert_eq!(
        metrics.len(),
        1,
        "the refused value was written: {metrics:?}"
    );
}
