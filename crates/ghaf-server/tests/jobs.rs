//! Job routes through the router, and a command job that trains with scikit-learn and logs
//! through the real MLflow client to a server with its in-process worker.
//!
//! The MLflow test needs the venv of `tests/mlflow/setup.sh` (`GHAF_MLFLOW_VENV` overrides
//! its location); `GHAF_SKIP_PEER_TESTS=1` turns a missing venv into a skip.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::TestApp;
use ghaf_jobs::JobState;
use ghaf_server::ServerConfig;
use serde_json::json;

fn command_spec(name: &str) -> serde_json::Value {
    json!({"name": name, "kind": {"type": "command", "command": ["true"]}, "priority": 5})
}

#[tokio::test]
async fn job_routes_round_trip() {
    let app = TestApp::new().await;
    let token = Some(app.admin_token.as_str());

    let created = app
        .call(
            "POST",
            "/api/v1/projects/default/jobs",
            token,
            Some(command_spec("first")),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let job = created.json();
    assert_eq!(job["state"], "queued");
    assert_eq!(job["spec"]["max_attempts"], 3);
    let id = job["id"].as_str().unwrap().to_owned();

    let got = app
        .call(
            "GET",
            &format!("/api/v1/projects/default/jobs/{id}"),
            token,
            None,
        )
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["name"], "first");

    let listed = app
        .call(
            "GET",
            "/api/v1/projects/default/jobs?state=queued",
            token,
            None,
        )
        .await;
    assert_eq!(listed.json()["jobs"].as_array().unwrap().len(), 1);
    let none = app
        .call(
            "GET",
            "/api/v1/projects/default/jobs?state=running",
            token,
            None,
        )
        .await;
    assert!(none.json()["jobs"].as_array().unwrap().is_empty());

    let logs = app
        .call(
            "GET",
            &format!("/api/v1/projects/default/jobs/{id}/logs"),
            token,
            None,
        )
        .await;
    assert_eq!(logs.status, 200);
    assert_eq!(logs.headers["content-type"], "application/x-ndjson");
    assert!(logs.body.is_empty());

    let cancelled = app
        .call(
            "POST",
            &format!("/api/v1/projects/default/jobs/{id}/cancel"),
            token,
            None,
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(cancelled.json()["state"], "cancelled");
}

#[tokio::test]
async fn job_routes_reject_bad_input() {
    let app = TestApp::new().await;
    let token = Some(app.admin_token.as_str());
    let jobs = "/api/v1/projects/default/jobs";

    let mut bad_priority = command_spec("bad");
    bad_priority["priority"] = json!(5000);
    let response = app.call("POST", jobs, token, Some(bad_priority)).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["error"]["details"]["field"], "priority");

    let feature_service = json!({
        "name": "fs",
        "kind": {"type": "builtin", "trainer": "gbdt"},
        "inputs": [{"type": "feature_service", "feature_service": "fraud",
                    "entity_dataset": "transactions", "entity_version": 0}],
        "label": "is_fraud",
    });
    let response = app.call("POST", jobs, token, Some(feature_service)).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.code(), "invalid_argument");
    assert_eq!(
        response.json()["error"]["details"]["field"],
        "inputs[0].entity_version"
    );

    let response = app
        .call("GET", &format!("{jobs}?state=done"), token, None)
        .await;
    assert_eq!(response.status, 400);
    let response = app
        .call("GET", &format!("{jobs}/0123456789abcdef"), token, None)
        .await;
    assert_eq!(response.status, 404);
    assert_eq!(response.code(), "not_found");
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("GHAF_MLFLOW_VENV").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache").join("ghaf-venv")
        },
        PathBuf::from,
    );
    venv.join("bin").join("python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sklearn_command_job_logs_through_mlflow() {
    let python = venv_python();
    if !python.exists() {
        if std::env::var("GHAF_SKIP_PEER_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: no MLflow client venv at {}", python.display());
            return;
        }
        panic!(
            "no MLflow client venv at {}: run tests/mlflow/setup.sh, or set \
             GHAF_SKIP_PEER_TESTS=1 to skip this test",
            python.display()
        );
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/mlflow/train_job.py")
        .canonicalize()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut config = ServerConfig {
        data_dir: dir.path().to_owned(),
        listen: address,
        ..ServerConfig::default()
    };
    config.jobs.poll_ms = 100;
    config.jobs.allow_commands = true;
    config.jobs.heartbeat_seconds = 1;
    config.jobs.lease_seconds = 30;
    let state = ghaf_server::open_state(&config).await.unwrap();
    let created = ghaf_server::bootstrap(&state)
        .await
        .unwrap()
        .expect("bootstraps");
    let project = created.project.clone();

    // Input: a labelled table ingested as dataset `points` version 1.
    let ingest = state.ingest().unwrap().clone();
    let schema = ghaf_ingest::DatasetSchema::from_yaml(
        "columns:\n  - {name: a, type: float}\n  - {name: b, type: float}\n  - {name: label, type: integer}\n",
    )
    .unwrap();
    let dataset = ingest
        .create_dataset(&project.tenant, &project.id, "points", "", &schema, "test")
        .await
        .unwrap();
    let mut csv = String::from("a,b,label\n");
    for i in 0..400 {
        let a = f64::from(i % 37) / 37.0 - 0.5;
        let b = f64::from((i * 7) % 23) / 23.0 - 0.5;
        csv.push_str(&format!("{a},{b},{}\n", u8::from(a + 0.5 * b > 0.0)));
    }
    let csv_path = dir.path().join("points.csv");
    std::fs::write(&csv_path, csv).unwrap();
    ingest
        .ingest(
            &dataset,
            "default",
            ghaf_ingest::IngestInput {
                path: &csv_path,
                options: &ghaf_ingest::ReadOptions::new(ghaf_ingest::InputFormat::Csv),
                source: "points.csv",
                progress: None,
            },
            "test",
        )
        .await
        .unwrap();

    let router = ghaf_server::router(state.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ghaf_server::serve_with(
        state.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));

    let spec = json!({
        "name": "sklearn",
        "kind": {"type": "command", "command": [python, script], "timeout_seconds": 600,
                 "env": {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
                         "DO_NOT_TRACK": "true"}},
        "inputs": [{"type": "dataset_version", "dataset": "points", "version": 1}],
        "label": "label",
        "parameters": {"C": 0.5},
        "max_attempts": 1,
    });
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/projects/default/jobs")
        .header("authorization", format!("Bearer {}", created.token.secret))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(spec.to_string()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
    assert_eq!(response.status(), 201);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let jobs = state.job_services().unwrap().jobs.clone();
    let mut job = jobs.get(&project.tenant, &project.id, &id).await.unwrap();
    for _ in 0..1200 {
        if job.state.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        job = jobs.get(&project.tenant, &project.id, &id).await.unwrap();
    }
    let log: String = jobs
        .read_logs(&project.tenant, &project.id, &id, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|chunk| chunk.content)
        .collect();
    let _ = stop.send(());
    let _ = server.await;

    assert_eq!(job.state, JobState::Succeeded, "{job:?}\nlog:\n{log}");
    assert!(log.contains("job script done"), "{log}");
    assert_eq!(
        job.result.as_ref().unwrap()["outputs"],
        json!(["run_id.txt"])
    );

    let tracking = state.tracking().unwrap();
    let scope = ghaf_tracking::Scope {
        tenant: project.tenant.clone(),
        project: project.id.clone(),
    };
    let experiment = tracking
        .store()
        .get_experiment_by_name(&scope, "sklearn-job")
        .await
        .expect("the script's experiment is in the job's project");
    let runs = tracking
        .store()
        .search_runs(
            &scope,
            &ghaf_tracking::RunQuery {
                experiment_ids: vec![experiment.experiment_id],
                max_results: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(runs.items.len(), 1);
    let run = &runs.items[0];
    assert!(
        run.metrics.iter().any(|m| m.key == "auc" && m.value > 0.8),
        "{:?}",
        run.metrics
    );
    assert!(run.params.iter().any(|p| p.key == "C" && p.value == "0.5"));
}

/// Uploads `csv` as the first version of a new dataset `name` with `schema`.
async fn dataset_from_csv(app: &TestApp, name: &str, schema: serde_json::Value, csv: String) {
    let token = Some(app.admin_token.as_str());
    let response = app
        .call(
            "POST",
            "/api/v1/projects/default/datasets",
            token,
            Some(json!({"name": name, "schema": schema})),
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    let request = axum::http::Request::builder()
        .method("POST")
        .uri(format!(
            "/api/v1/projects/default/datasets/{name}/versions?format=csv"
        ))
        .header("authorization", format!("Bearer {}", app.admin_token))
        .header("content-type", "text/csv")
        .body(axum::body::Body::from(csv))
        .unwrap();
    let response = app.send(request).await;
    assert_eq!(response.status, 201, "{}", response.text());
}

#[tokio::test]
async fn builtin_job_trains_on_a_feature_service() {
    let app = TestApp::new().await;
    let token = Some(app.admin_token.as_str());

    // Hourly driver rates, and an entity table half an hour after each rate whose label
    // follows the rate in force at that time: the point-in-time join gives the trainer
    // that signal, and a join on the driver alone would not.
    let mut stats = String::from("driver_id,event_timestamp,rate\n");
    let mut labels = String::from("driver_id,event_timestamp,late\n");
    for driver in 0..20 {
        for hour in 0..20 {
            let rate = ((driver * 7 + hour * 13) % 20) as f64 / 20.0;
            stats.push_str(&format!("{driver},2026-01-01T{hour:02}:00:00Z,{rate}\n"));
            let late = u8::from(rate > 0.5);
            labels.push_str(&format!("{driver},2026-01-01T{hour:02}:30:00Z,{late}\n"));
        }
    }
    dataset_from_csv(
        &app,
        "stats",
        json!({"columns": [
            {"name": "driver_id", "type": "integer", "nullable": false},
            {"name": "event_timestamp", "type": "timestamp", "nullable": false},
            {"name": "rate", "type": "float"},
        ]}),
        stats,
    )
    .await;
    dataset_from_csv(
        &app,
        "trips",
        json!({"columns": [
            {"name": "driver_id", "type": "integer", "nullable": false},
            {"name": "event_timestamp", "type": "timestamp", "nullable": false},
            {"name": "late", "type": "integer", "nullable": false},
        ]}),
        labels,
    )
    .await;
    let definitions = json!({
        "entities": [{"name": "driver", "join_key": "driver_id", "value_type": "integer"}],
        "feature_views": [{
            "name": "driver_stats",
            "entities": ["driver"],
            "source": {"dataset": "stats"},
            "event_time": "event_timestamp",
            "features": [{"name": "rate"}],
        }],
        "feature_services": [{"name": "lateness", "features": ["driver_stats:rate"]}],
    });
    let applied = app
        .call(
            "POST",
            "/api/v1/projects/default/features/apply",
            token,
            Some(json!({"definitions": definitions})),
        )
        .await;
    assert_eq!(applied.status, 200, "{}", applied.text());

    let created = app
        .call(
            "POST",
            "/api/v1/projects/default/jobs",
            token,
            Some(json!({
                "name": "lateness-logistic",
                "kind": {"type": "builtin", "trainer": "logistic", "features": ["rate"]},
                "inputs": [{
                    "type": "feature_service", "feature_service": "lateness",
                    "entity_dataset": "trips", "entity_version": 1,
                }],
                "label": "late",
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();

    let services = app.state.job_services().expect("job services").clone();
    let work_dir = tempfile::tempdir().unwrap();
    let worker = ghaf_jobs::worker::Worker::new(
        ghaf_jobs::worker::WorkerConfig::new(work_dir.path().to_owned()),
        services.clone(),
    )
    .with_executor(
        "builtin",
        std::sync::Arc::new(ghaf_jobs::executor::builtin::BuiltinExecutor),
    );
    let (claimed, lease) = worker.claim().await.unwrap().expect("the queued job");
    let (_stop, interrupt) = tokio::sync::watch::channel(false);
    worker.run_attempt(claimed, lease, interrupt).await;

    let job = app
        .call(
            "GET",
            &format!("/api/v1/projects/default/jobs/{id}"),
            token,
            None,
        )
        .await
        .json();
    assert_eq!(job["state"], "succeeded", "{job}");
    let auc = job["result"]["metrics"]["auc"].as_f64().expect("auc");
    assert!(auc > 0.9, "the joined rate predicts the label: auc {auc}");

    // The training set was stored as a dataset version with one row per entity row.
    let versions = app
        .call(
            "GET",
            "/api/v1/projects/default/datasets/lateness-training-set/versions",
            token,
            None,
        )
        .await;
    assert_eq!(versions.status, 200, "{}", versions.text());
    let body = versions.json();
    let first = &body["versions"][0];
    assert_eq!(first["row_count"], json!(400), "{body}");
}
