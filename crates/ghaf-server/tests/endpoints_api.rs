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
