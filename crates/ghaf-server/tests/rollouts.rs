//! Rollouts through the router with the real controller. An alias move starts a canary that
//! is promoted under live traffic. A candidate whose artifact was tampered with fails every
//! request and is rolled back, with the evidence in the endpoint's history and the audit
//! log. Manual pause, resume and abort, and the A/B analysis of two variants. A rollout
//! whose prediction log cannot be read still rolls a failing candidate back.

mod common;
mod oip_support;

use std::time::Duration;

use bytes::Bytes;
use common::TestApp;
use ghaf_rollout::RolloutController;
use ghaf_serving::PolicyUpdate;
use ghaf_serving::policy::TrafficPolicy;
use ghaf_tracking::{NewLoggedModel, NewRun, RegisterVersion, Scope};
use ghaf_train::{Column, Dataset, GbdtParams, Model, train_gbdt};
use serde_json::{Value, json};

const BASE: &str = "/api/v1/projects/default/endpoints";
const MODEL: &str = "scorer-model";
const CONTROLLER: &str = "system:rollout-controller";

/// Trains a GBDT over two features; `trees` makes each version's bytes, and so its blob,
/// differ from the others.
fn trained_model(trees: usize) -> Model {
    let rows = 300;
    let first: Vec<f64> = (0..rows).map(|i| (i as f64 * 0.37).sin()).collect();
    let second: Vec<f64> = (0..rows).map(|i| (i % 50) as f64).collect();
    let label: Vec<f64> = first.iter().map(|&v| f64::from(v > 0.5)).collect();
    let data = Dataset::new(
        vec![Column::f64("amount", first), Column::f64("age", second)],
        label,
    )
    .unwrap();
    let params = GbdtParams {
        n_estimators: trees,
        ..GbdtParams::default()
    };
    Model::Gbdt(train_gbdt(&data, None, &params).unwrap().model)
}

fn tracking_scope(deployed: &oip_support::Deployed) -> Scope {
    Scope {
        tenant: deployed.scope.tenant.clone(),
        project: deployed.scope.project.clone(),
    }
}

/// Registers another version of `scorer-model` and returns its number.
async fn register_version(app: &TestApp, scope: &Scope, trees: usize) -> i64 {
    let tracking = app.state.tracking().unwrap().clone();
    let store = tracking.store();
    let run = store.create_run(scope, &NewRun::default()).await.unwrap();
    let logged = store
        .create_logged_model(
            scope,
            &NewLoggedModel {
                name: "model".into(),
                source_run_id: run.info.run_id.clone(),
                ..NewLoggedModel::default()
            },
        )
        .await
        .unwrap();
    let prefix = ghaf_tracking::artifact_uri_path(&logged.artifact_uri).unwrap();
    let files = [
        (
            "MLmodel",
            b"flavors:\n  ghaf:\n    model_file: model.ghaf\n".to_vec(),
        ),
        ("model.ghaf", trained_model(trees).to_bytes()),
    ];
    for (file, content) in files {
        tracking
            .put_artifact(
                scope,
                &format!("{prefix}/{file}"),
                futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(content))]),
            )
            .await
            .unwrap();
    }
    tracking
        .register_version(
            scope,
            &RegisterVersion {
                name: MODEL.into(),
                source: format!("models:/{}", logged.model_id),
                run_id: run.info.run_id.clone(),
                model_id: logged.model_id.clone(),
                ..RegisterVersion::default()
            },
        )
        .await
        .unwrap()
        .version
}

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

/// Flips one byte of a version's model file in the blob store, so its signature check fails.
async fn tamper(app: &TestApp, scope: &Scope, version: i64) {
    let tracking = app.state.tracking().unwrap();
    let stored = tracking
        .store()
        .get_model_version(scope, MODEL, version)
        .await
        .unwrap();
    let entry = tracking
        .store()
        .get_artifact(scope, &format!("{}/model.ghaf", stored.artifact_prefix))
        .await
        .unwrap()
        .unwrap();
    let blob = find_file(app.data_dir(), &entry.digest).expect("model blob");
    let mut content = std::fs::read(&blob).unwrap();
    content[12] ^= 0x01;
    std::fs::write(&blob, content).unwrap();
}

fn canary(steps: &[u32], min_requests: u64) -> Value {
    json!({
        "steps": steps,
        "interval_secs": 1,
        "min_requests": min_requests,
        "failure_threshold": 2,
        "checks": {"max_error_rate": 0.2},
    })
}

/// Starts the real controller with a one-second tick; dropping the sender stops it.
fn start_controller(app: &TestApp) -> tokio::sync::watch::Sender<bool> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let service = ghaf_server::app::rollout_service(&app.state).expect("rollout service");
    RolloutController::spawn(service, Duration::from_secs(1), stopped);
    stop
}

async fn endpoint(app: &TestApp) -> Value {
    let response = app
        .call(
            "GET",
            &format!("{BASE}/{}", oip_support::ENDPOINT),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// Reads the stored rollout state of the endpoint.
async fn rollout_state(app: &TestApp, deployed: &oip_support::Deployed) -> Option<Value> {
    let stored = app
        .state
        .serving()
        .unwrap()
        .store()
        .get(
            &deployed.scope.tenant,
            &deployed.scope.project,
            oip_support::ENDPOINT,
        )
        .await
        .unwrap()
        .unwrap();
    stored
        .rollout
        .map(|state| serde_json::to_value(state).unwrap())
}

/// Sends one inference request; returns its status.
async fn infer(app: &TestApp, deployed: &oip_support::Deployed, index: usize) -> u16 {
    let amount = (index as f64 * 0.13).sin();
    let response = app
        .call(
            "POST",
            &format!("/v2/models/{}/infer", oip_support::ENDPOINT),
            Some(&app.admin_token),
            Some(json!({
                "inputs": [{"name": deployed.input, "shape": [1, 2], "datatype": "FP64", "data": [amount, 30.0]}],
            })),
        )
        .await;
    response.status.as_u16()
}

/// Sends traffic until the rollout reaches `status`, and returns the number of requests.
async fn drive_until(
    app: &TestApp,
    deployed: &oip_support::Deployed,
    status: &str,
) -> (usize, Value) {
    for index in 0..200_000 {
        infer(app, deployed, index).await;
        if index % 20 == 0 {
            if let Some(state) = rollout_state(app, deployed).await
                && state["status"] == status
            {
                return (index, state);
            }
            // Gives the controller's tick room on a busy machine.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    panic!(
        "rollout did not reach {status}: {:?}",
        rollout_state(app, deployed).await
    );
}

async fn history(app: &TestApp) -> Vec<Value> {
    let response = app
        .call(
            "GET",
            &format!("{BASE}/{}/history", oip_support::ENDPOINT),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["entries"].as_array().unwrap().clone()
}

/// Reads the history until it contains `action`. The controller appends a decision's audit
/// entry right after it stores the decision, so a reader can see the state first.
async fn history_with(app: &TestApp, action: &str) -> Vec<Value> {
    for _ in 0..400 {
        let entries = history(app).await;
        if entries.iter().any(|entry| entry["action"] == action) {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the history has no {action} entry: {:?}",
        history(app).await
    );
}

fn actions(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|entry| entry["action"].as_str())
        .filter(|action| action.starts_with("endpoints.rollout."))
        .map(str::to_owned)
        .collect()
}

async fn set_policy(app: &TestApp, deployed: &oip_support::Deployed, update: PolicyUpdate) {
    app.state
        .serving()
        .unwrap()
        .set_policy(&deployed.scope, oip_support::ENDPOINT, update, "admin")
        .await
        .unwrap();
}

fn canary_policy(steps: &[u32], min_requests: u64) -> TrafficPolicy {
    TrafficPolicy::Canary(serde_json::from_value(canary(steps, min_requests)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_move_canary_promoted() {
    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    let scope = tracking_scope(&deployed);
    let tracking = app.state.tracking().unwrap().clone();
    tracking
        .store()
        .set_alias(&scope, MODEL, "champion", deployed.version)
        .await
        .unwrap();
    let candidate = register_version(&app, &scope, 9).await;
    set_policy(
        &app,
        &deployed,
        PolicyUpdate {
            policy: Some(canary_policy(&[20, 60], 5)),
            follow_alias: Some(Some("champion".into())),
            ..PolicyUpdate::default()
        },
    )
    .await;
    let stop = start_controller(&app);

    // The alias moves through the API; the controller starts a canary to the new version.
    let moved = app
        .call(
            "PUT",
            &format!("/api/v1/projects/default/models/{MODEL}/aliases/champion"),
            Some(&app.admin_token),
            Some(json!({"version": candidate})),
        )
        .await;
    assert!(moved.status.is_success(), "{}", moved.text());
    let mut started = None;
    for _ in 0..400 {
        if let Some(state) = rollout_state(&app, &deployed).await {
            started = Some(state);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let started = started.expect("the alias move starts a rollout");
    assert_eq!(started["candidate_version"], candidate);
    assert_eq!(started["stable_version"], deployed.version);
    assert_eq!(started["started_by"], CONTROLLER);
    let view = endpoint(&app).await;
    assert_eq!(view["variants"][1]["name"], "candidate");
    assert_eq!(view["variants"][1]["weight"], 20);

    let (_, promoted) = drive_until(&app, &deployed, "promoted").await;
    assert_eq!(promoted["candidate_version"], candidate);
    let view = endpoint(&app).await;
    let variants = view["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 1, "{view}");
    assert_eq!(variants[0]["name"], "primary");
    assert_eq!(variants[0]["version"], candidate);
    assert_eq!(variants[0]["weight"], 100);

    let entries = history_with(&app, "endpoints.rollout.promoted").await;
    assert_eq!(
        actions(&entries),
        vec![
            "endpoints.rollout.started",
            "endpoints.rollout.step_passed",
            "endpoints.rollout.promoted",
        ]
    );
    let promoted_entry = entries
        .iter()
        .find(|entry| entry["action"] == "endpoints.rollout.promoted")
        .unwrap();
    assert_eq!(promoted_entry["actor"], CONTROLLER);
    let evidence = &promoted_entry["details"]["measurements"];
    assert!(
        evidence["candidate"]["requests"].as_u64().unwrap() >= 5,
        "{evidence}"
    );
    assert_eq!(evidence["step_percent"], 60);
    assert_eq!(evidence["checks"][0]["check"], "error_rate");
    assert_eq!(evidence["checks"][0]["passed"], true);
    assert_eq!(
        promoted_entry["details"]["rollout_id"],
        started["id"].as_str().unwrap()
    );
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_candidate_rolled_back() {
    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    let scope = tracking_scope(&deployed);
    let candidate = register_version(&app, &scope, 11).await;
    tamper(&app, &scope, candidate).await;
    let stop = start_controller(&app);

    let started = app
        .call(
            "POST",
            &format!("{BASE}/{}/rollout", oip_support::ENDPOINT),
            Some(&app.admin_token),
            Some(json!({"version": candidate, "canary": canary(&[30, 60], 5)})),
        )
        .await;
    assert_eq!(started.status, 201, "{}", started.text());
    let started = started.json();
    assert_eq!(started["rollout"]["status"], "running");
    assert_eq!(started["policy"]["kind"], "canary");

    let (_, rolled_back) = drive_until(&app, &deployed, "rolled_back").await;
    assert_eq!(rolled_back["failures"], 2);
    let view = endpoint(&app).await;
    let variants = view["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 1, "{view}");
    assert_eq!(variants[0]["version"], deployed.version);
    assert_eq!(infer(&app, &deployed, 1).await, 200);

    let entries = history_with(&app, "endpoints.rollout.rolled_back").await;
    assert_eq!(
        actions(&entries),
        vec![
            "endpoints.rollout.started",
            "endpoints.rollout.check_failed",
            "endpoints.rollout.rolled_back",
        ]
    );
    // The start request itself is in the history as the middleware recorded it.
    assert!(
        entries
            .iter()
            .any(|entry| entry["action"] == "endpoints.deploy"
                && entry["resource"].as_str().unwrap().ends_with("/rollout")),
        "{entries:?}"
    );
    let rolled = entries
        .iter()
        .find(|entry| entry["action"] == "endpoints.rollout.rolled_back")
        .unwrap();
    let evidence = &rolled["details"]["measurements"];
    assert_eq!(evidence["candidate"]["error_rate"], 1.0, "{evidence}");
    assert!(evidence["candidate"]["requests"].as_u64().unwrap() >= 5);
    assert_eq!(evidence["checks"][0]["passed"], false);
    assert_eq!(evidence["failures"], 2);
    assert_eq!(evidence["failure_threshold"], 2);
    assert_eq!(rolled["details"]["weights"][0]["version"], deployed.version);

    // The same decision is in the tenant's audit log.
    let audit = app
        .call(
            "GET",
            "/api/v1/audit?action=endpoints.rollout.rolled_back",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(audit.status, 200, "{}", audit.text());
    let audit = audit.json();
    let found = audit["entries"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{audit}");
    assert_eq!(found[0]["actor"], CONTROLLER);
    assert_eq!(found[0]["resource"], "projects/default/endpoints/scorer");
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_pause_resume_abort() {
    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    let scope = tracking_scope(&deployed);
    let candidate = register_version(&app, &scope, 12).await;
    let token = Some(app.admin_token.as_str());
    let rollout = format!("{BASE}/{}/rollout", oip_support::ENDPOINT);

    let without_policy = app
        .call("POST", &rollout, token, Some(json!({"version": candidate})))
        .await;
    assert_eq!(without_policy.status, 400, "{}", without_policy.text());
    assert_eq!(without_policy.json()["error"]["details"]["field"], "canary");

    let nothing_to_pause = app
        .call("POST", &format!("{rollout}/pause"), token, None)
        .await;
    assert_eq!(nothing_to_pause.status, 409, "{}", nothing_to_pause.text());

    let started = app
        .call(
            "POST",
            &rollout,
            token,
            Some(json!({"version": candidate, "canary": canary(&[10, 50], 1000)})),
        )
        .await;
    assert_eq!(started.status, 201, "{}", started.text());
    let again = app
        .call(
            "POST",
            &rollout,
            token,
            Some(json!({"version": candidate, "canary": canary(&[10], 5)})),
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.text());

    let paused = app
        .call("POST", &format!("{rollout}/pause"), token, None)
        .await;
    assert_eq!(paused.status, 200, "{}", paused.text());
    assert_eq!(paused.json()["rollout"]["status"], "paused");
    assert_eq!(paused.json()["variants"][1]["weight"], 10);

    let resumed = app
        .call("POST", &format!("{rollout}/resume"), token, None)
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    assert_eq!(resumed.json()["rollout"]["status"], "running");

    let aborted = app
        .call("POST", &format!("{rollout}/abort"), token, None)
        .await;
    assert_eq!(aborted.status, 200, "{}", aborted.text());
    let aborted = aborted.json();
    assert_eq!(aborted["rollout"]["status"], "aborted");
    assert_eq!(aborted["variants"].as_array().unwrap().len(), 1);
    assert_eq!(aborted["variants"][0]["version"], deployed.version);

    let late_promote = app
        .call("POST", &format!("{rollout}/promote"), token, None)
        .await;
    assert_eq!(late_promote.status, 409, "{}", late_promote.text());

    let entries = history(&app).await;
    assert_eq!(
        actions(&entries),
        vec![
            "endpoints.rollout.started",
            "endpoints.rollout.paused",
            "endpoints.rollout.resumed",
            "endpoints.rollout.aborted",
        ]
    );
    assert!(entries.iter().all(|entry| entry["actor"] != CONTROLLER));

    let limited = app
        .call(
            "GET",
            &format!("{BASE}/{}/history?limit=2", oip_support::ENDPOINT),
            token,
            None,
        )
        .await
        .json();
    let limited = limited["entries"].as_array().unwrap();
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[1]["action"], entries.last().unwrap()["action"]);

    let bad_limit = app
        .call(
            "GET",
            &format!("{BASE}/{}/history?limit=0", oip_support::ENDPOINT),
            token,
            None,
        )
        .await;
    assert_eq!(bad_limit.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_compares_ab_variants() {
    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    let scope = tracking_scope(&deployed);
    let other = register_version(&app, &scope, 13).await;
    let variants: Vec<ghaf_serving::Variant> = serde_json::from_value(json!([
        {"name": "primary", "model": MODEL, "version": deployed.version, "weight": 50},
        {"name": "b", "model": MODEL, "version": other, "weight": 50},
    ]))
    .unwrap();
    set_policy(
        &app,
        &deployed,
        PolicyUpdate {
            policy: Some(serde_json::from_value(json!({"kind": "ab", "min_samples": 10})).unwrap()),
            variants: Some(variants),
            ..PolicyUpdate::default()
        },
    )
    .await;
    app.state
        .serving()
        .unwrap()
        .wait_loaded(
            &deployed.scope,
            oip_support::ENDPOINT,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    for index in 0..100 {
        assert_eq!(infer(&app, &deployed, index).await, 200);
    }

    let response = app
        .call(
            "GET",
            &format!("{BASE}/{}/analysis", oip_support::ENDPOINT),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let analysis = response.json();
    let summaries = analysis["variants"].as_array().unwrap();
    assert_eq!(summaries.len(), 2, "{analysis}");
    let total: u64 = summaries
        .iter()
        .map(|summary| summary["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 100);
    assert_eq!(summaries[0]["errors"], 0);
    assert_eq!(analysis["verdicts"][0]["metric"], "error_rate");
    // Both variants serve every request without error, so neither error rate is better.
    assert!(analysis["winner"].is_null(), "{analysis}");

    let bad_metric = app
        .call(
            "GET",
            &format!("{BASE}/{}/analysis?metric=precision", oip_support::ENDPOINT),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(bad_metric.status, 400, "{}", bad_metric.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_controllers_start_once() {
    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    let scope = tracking_scope(&deployed);
    let candidate = register_version(&app, &scope, 14).await;
    set_policy(
        &app,
        &deployed,
        PolicyUpdate {
            policy: Some(canary_policy(&[20, 60], 5)),
            follow_alias: Some(Some("champion".into())),
            ..PolicyUpdate::default()
        },
    )
    .await;
    app.state
        .tracking()
        .unwrap()
        .store()
        .set_alias(&scope, MODEL, "champion", candidate)
        .await
        .unwrap();

    // Two controllers, as on two replicas, decide at the same time; the compare-and-set on
    // the endpoint's generation lets one of them start the rollout.
    let first = ghaf_server::app::rollout_service(&app.state).unwrap();
    let second = ghaf_server::app::rollout_service(&app.state).unwrap();
    let (a, b) = tokio::join!(first.tick(), second.tick());
    assert_eq!(a.decisions + b.decisions, 1, "{a:?} {b:?}");
    assert_eq!(a.errors + b.errors, 0, "{a:?} {b:?}");
    let entries = history(&app).await;
    assert_eq!(actions(&entries), vec!["endpoints.rollout.started"]);
    let state = rollout_state(&app, &deployed).await.unwrap();
    assert_eq!(state["candidate_version"], candidate);
}

/// Logs predictions of the running rollout, waits until the prediction log has a version,
/// and deletes the blobs of its versions, so every read of the rollout's window fails.
async fn break_prediction_log(app: &TestApp, deployed: &oip_support::Deployed) {
    let ingest = app.state.ingest().unwrap();
    let name = format!("{}-predictions", oip_support::ENDPOINT);
    let tenant = &deployed.scope.tenant;
    for attempt in 0..400 {
        infer(app, deployed, attempt).await;
        let dataset = ingest
            .store()
            .get_dataset(tenant, &deployed.scope.project, &name)
            .await
            .unwrap();
        let versions = ingest
            .store()
            .list_versions(tenant, &dataset.id)
            .await
            .unwrap();
        if !versions.is_empty() {
            for version in versions {
                let digest = version.content_digest.rsplit(':').next().unwrap();
                let blob = find_file(app.data_dir(), digest).expect("prediction log blob");
                std::fs::remove_file(blob).unwrap();
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the prediction log of {name} has no version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_log_still_rolls_back() {
    let app = TestApp::new().await;
    let deployed = oip_support::deploy(&app).await;
    let scope = tracking_scope(&deployed);
    let candidate = register_version(&app, &scope, 11).await;
    tamper(&app, &scope, candidate).await;

    let mut spec = canary(&[30, 60], 5);
    spec["checks"]["quality"] = json!({"metric": "accuracy", "max_drop": 0.05, "min_labels": 10});
    let started = app
        .call(
            "POST",
            &format!("{BASE}/{}/rollout", oip_support::ENDPOINT),
            Some(&app.admin_token),
            Some(json!({"version": candidate, "canary": spec})),
        )
        .await;
    assert_eq!(started.status, 201, "{}", started.text());
    break_prediction_log(&app, &deployed).await;
    let state = rollout_state(&app, &deployed).await.unwrap();
    let read = ghaf_rollout::quality::read_labelled(
        app.state.ingest().unwrap(),
        &deployed.scope.tenant,
        &deployed.scope.project,
        oip_support::ENDPOINT,
        state["window_started_at"].as_i64().unwrap(),
        ghaf_core::now_millis(),
    )
    .await;
    assert!(read.is_err(), "the prediction log read should fail");

    let stop = start_controller(&app);
    let (_, rolled_back) = drive_until(&app, &deployed, "rolled_back").await;
    assert_eq!(rolled_back["failures"], 2);
    let _ = stop.send(true);
}
