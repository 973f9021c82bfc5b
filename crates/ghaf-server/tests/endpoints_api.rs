//! The endpoint routes through the router: list and get with load status, inference through
//! the Open Inference Protocol, the prediction log, labels, a tampered artifact (503) and
//! deletion.

mod common;
mod oip_support;

use std::time::Duration;

use common::TestApp;
use serde_json::json;

const BASE: &str = "/api/v1/projects/default/endpoints";

fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

async fn wait_settled(app: &TestApp, name: &str) -> serde_json::Value {
    for _ in 0..600 {
        let response = app
            .call(
                "GET",
                &format!("{BASE}/{name}"),
                Some(&app.admin_token),
                None,
            )
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        if body["status"][0]["state"] != "loading" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("endpoint {name} still loading");
}

#[tokio::test]
async fn endpoint_routes_serve_log_and_label() {
    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    let token = app.admin_token.clone();

    let list = app.call("GET", BASE, Some(&token), None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["endpoints"][0]["name"], "scorer");
    let got = wait_settled(&app, "scorer").await;
    assert_eq!(got["status"][0]["state"], "ready");
    assert_eq!(got["predictions_dataset"], "scorer-predictions");
    assert_eq!(got["variants"][0]["version"], deployed.version);

    let infer = app
        .call(
            "POST",
            "/v2/models/scorer/infer",
            Some(&token),
            Some(json!({
                "id": "http-1",
                "inputs": [{"name": deployed.input, "shape": [1, 2], "datatype": "FP64", "data": [0.9, 30.0]}],
            })),
        )
        .await;
    assert_eq!(infer.status, 200, "{}", infer.text());
    assert_eq!(infer.json()["id"], "http-1");
    // The prediction log and labels use the server's id, returned as a parameter.
    let server_id = infer.json()["parameters"]["ghaf_request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no ghaf_request_id in {}", infer.text()))
        .to_owned();

    app.state.serving().unwrap().flush_log().await;
    let rows = app
        .call(
            "GET",
            &format!("{BASE}/scorer/predictions?limit=5"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(rows.status, 200, "{}", rows.text());
    let rows = rows.json();
    assert_eq!(rows["predictions"][0]["request_id"], server_id.as_str());
    assert_eq!(rows["predictions"][0]["client_request_id"], "http-1");
    assert_eq!(
        rows["predictions"][0]["prediction"].as_f64().unwrap(),
        deployed.model.predict(&[0.9, 30.0])
    );

    let labels = app
        .call(
            "POST",
            &format!("{BASE}/scorer/labels"),
            Some(&token),
            Some(json!({"labels": [{"request_id": server_id, "label": 1.0}, {"request_id": "later", "label": 0.0}]})),
        )
        .await;
    assert_eq!(labels.status, 200, "{}", labels.text());
    assert_eq!(labels.json()["accepted"], 2);
    assert_eq!(labels.json()["unknown_request_ids"], 1);

    let bad_limit = app
        .call(
            "GET",
            &format!("{BASE}/scorer/predictions?limit=0"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(bad_limit.status, 400);

    let missing_version = app
        .call(
            "PUT",
            &format!("{BASE}/scorer"),
            Some(&token),
            Some(json!({"model": "scorer-model", "version": 99})),
        )
        .await;
    assert_eq!(missing_version.status, 404, "{}", missing_version.text());

    // A second endpoint on the same version after its model file was changed in the blob
    // store fails verification, and inference returns 503.
    let project = app
        .state
        .store()
        .get_project_by_name(&ghaf_core::TenantId::from_stored("default"), "default")
        .await
        .unwrap()
        .unwrap();
    let scope = ghaf_tracking::Scope {
        tenant: project.tenant.clone(),
        project: project.id.clone(),
    };
    let tracking = app.state.tracking().unwrap();
    let version = tracking
        .store()
        .get_model_version(&scope, "scorer-model", deployed.version)
        .await
        .unwrap();
    let entry = tracking
        .store()
        .get_artifact(&scope, &format!("{}/model.ghaf", version.artifact_prefix))
        .await
        .unwrap()
        .unwrap();
    let blob = find_file(app.data_dir(), &entry.digest).expect("model blob");
    let mut content = std::fs::read(&blob).unwrap();
    content[12] ^= 0x01;
    std::fs::write(&blob, content).unwrap();

    let created = app
        .call(
            "POST",
            BASE,
            Some(&token),
            Some(json!({"name": "tampered", "model": "scorer-model", "version": deployed.version})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let failed = wait_settled(&app, "tampered").await;
    assert_eq!(failed["status"][0]["state"], "failed");
    let reason = failed["status"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("signature verification failed"), "{reason}");
    let refused = app
        .call(
            "POST",
            "/v2/models/tampered/infer",
            Some(&token),
            Some(json!({"inputs": [{"name": deployed.input, "shape": [1, 2], "datatype": "FP64", "data": [0.9, 30.0]}]})),
        )
        .await;
    assert_eq!(refused.status, 503, "{}", refused.text());

    let too_long = app
        .call(
            "POST",
            BASE,
            Some(&token),
            Some(json!({"name": "e".repeat(55), "model": "scorer-model", "version": 1})),
        )
        .await;
    assert_eq!(too_long.status, 400);
    assert_eq!(too_long.code(), "invalid_argument");

    let deleted = app
        .call("DELETE", &format!("{BASE}/tampered"), Some(&token), None)
        .await;
    assert_eq!(deleted.status, 204);
    let gone = app
        .call("GET", &format!("{BASE}/tampered"), Some(&token), None)
        .await;
    assert_eq!(gone.status, 404);
}

/// Registers the deployed model's files again as the next version of `scorer-model` and
/// returns that version.
async fn register_next_version(app: &TestApp, deployed: &oip_support::Deployed) -> i64 {
    let scope = ghaf_tracking::Scope {
        tenant: deployed.scope.tenant.clone(),
        project: deployed.scope.project.clone(),
    };
    let tracking = app.state.tracking().unwrap();
    let first = tracking
        .store()
        .get_model_version(&scope, "scorer-model", deployed.version)
        .await
        .unwrap();
    tracking
        .register_version(
            &scope,
            &ghaf_tracking::RegisterVersion {
                name: "scorer-model".into(),
                source: first.source.clone(),
                run_id: first.run_id.clone(),
                model_id: first.model_id.clone(),
                ..ghaf_tracking::RegisterVersion::default()
            },
        )
        .await
        .unwrap()
        .version
}

async fn wait_all_ready(app: &TestApp, name: &str) -> serde_json::Value {
    for _ in 0..600 {
        let response = app
            .call(
                "GET",
                &format!("{BASE}/{name}"),
                Some(&app.admin_token),
                None,
            )
            .await;
        let body = response.json();
        let states: Vec<&str> = body["status"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap())
            .collect();
        assert!(!states.contains(&"failed"), "{body}");
        if states.iter().all(|s| *s == "ready") {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("endpoint {name} still loading");
}

async fn infer_as(app: &TestApp, input: &str, user: &str) -> serde_json::Value {
    let body = json!({
        "inputs": [{"name": input, "shape": [1, 2], "datatype": "FP64", "data": [0.9, 30.0]}],
    });
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v2/models/scorer/infer")
        .header("authorization", format!("Bearer {}", app.admin_token))
        .header("content-type", "application/json")
        .header("x-user-id", user)
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

#[tokio::test]
async fn policy_and_stats_routes() {
    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    let second = register_next_version(&app, &deployed).await;
    let token = app.admin_token.clone();
    let policy_path = format!("{BASE}/scorer/policy");

    let set = app
        .call(
            "PUT",
            &policy_path,
            Some(&token),
            Some(json!({
                "policy": {"kind": "ab", "sticky": {"from": "header", "name": "x-user-id"}},
                "variants": [
                    {"name": "primary", "model": "scorer-model", "version": deployed.version, "weight": 50},
                    {"name": "b", "model": "scorer-model", "version": second, "weight": 50},
                ],
            })),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(set.json()["policy"]["kind"], "ab");
    assert_eq!(set.json()["generation"], 2);
    let view = wait_all_ready(&app, "scorer").await;
    assert_eq!(view["status"].as_array().unwrap().len(), 2);
    assert_eq!(view["policy"]["sticky"]["name"], "x-user-id");

    let first_answer = infer_as(&app, &deployed.input, "user-1").await;
    for _ in 0..9 {
        let again = infer_as(&app, &deployed.input, "user-1").await;
        assert_eq!(again["model_version"], first_answer["model_version"]);
    }

    let stats = app
        .call("GET", &format!("{BASE}/scorer/stats"), Some(&token), None)
        .await;
    assert_eq!(stats.status, 200, "{}", stats.text());
    let stats = stats.json();
    let variants = stats["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2, "{stats}");
    let requests: u64 = variants
        .iter()
        .map(|v| v["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 10);
    let served = variants
        .iter()
        .find(|v| v["requests"].as_u64() == Some(10))
        .unwrap_or_else(|| panic!("one variant served every call: {stats}"));
    assert_eq!(served["error_rate"], 0.0);
    assert!(served["p99_ms"].as_f64().is_some(), "{served}");
    assert_eq!(
        stats["latency_bounds_us"].as_array().unwrap().len() + 1,
        served["latency_buckets"].as_array().unwrap().len()
    );

    let bad_steps = app
        .call(
            "PUT",
            &policy_path,
            Some(&token),
            Some(json!({"policy": {"kind": "canary", "steps": [50, 25], "interval_secs": 60, "min_requests": 10, "failure_threshold": 1}})),
        )
        .await;
    assert_eq!(bad_steps.status, 400, "{}", bad_steps.text());
    assert_eq!(
        bad_steps.json()["error"]["details"]["field"],
        "policy.steps",
        "{}",
        bad_steps.text()
    );

    let unknown_field = app
        .call(
            "PUT",
            &policy_path,
            Some(&token),
            Some(json!({"weights": [1]})),
        )
        .await;
    assert_eq!(unknown_field.status, 400, "{}", unknown_field.text());

    let shadowed = app
        .call(
            "PUT",
            &policy_path,
            Some(&token),
            Some(json!({"policy": {"kind": "single"}, "shadow": {"variant": "b", "percent": 100}})),
        )
        .await;
    assert_eq!(shadowed.status, 200, "{}", shadowed.text());
    assert_eq!(shadowed.json()["shadow"]["variant"], "b");
    assert_eq!(shadowed.json()["status"][1]["shadow"], true);
    let unshadowed = app
        .call(
            "PUT",
            &policy_path,
            Some(&token),
            Some(json!({"shadow": null})),
        )
        .await;
    assert_eq!(unshadowed.status, 200, "{}", unshadowed.text());
    assert!(
        unshadowed.json().get("shadow").is_none(),
        "{}",
        unshadowed.text()
    );

    let missing = app
        .call("GET", &format!("{BASE}/absent/stats"), Some(&token), None)
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text());
}

#[tokio::test]
async fn create_follows_alias() {
    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    let second = register_next_version(&app, &deployed).await;
    let scope = ghaf_tracking::Scope {
        tenant: deployed.scope.tenant.clone(),
        project: deployed.scope.project.clone(),
    };
    app.state
        .tracking()
        .unwrap()
        .store()
        .set_alias(&scope, "scorer-model", "champion", second)
        .await
        .unwrap();
    let token = app.admin_token.clone();

    let created = app
        .call(
            "POST",
            BASE,
            Some(&token),
            Some(json!({"name": "follower", "model": "scorer-model", "follow_alias": "champion"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["variants"][0]["version"], second);
    assert_eq!(created.json()["follow_alias"], "champion");

    let no_version = app
        .call(
            "POST",
            BASE,
            Some(&token),
            Some(json!({"name": "versionless", "model": "scorer-model"})),
        )
        .await;
    assert_eq!(no_version.status, 400, "{}", no_version.text());
    let unknown_alias = app
        .call(
            "POST",
            BASE,
            Some(&token),
            Some(json!({"name": "orphan", "model": "scorer-model", "follow_alias": "nobody"})),
        )
        .await;
    assert_eq!(unknown_alias.status, 404, "{}", unknown_alias.text());
}
