//! The typed tracking client against a real server on a free 127.0.0.1 port: experiments,
//! runs, metrics and params, batches, search, metric history, artifacts, model versions and
//! aliases, and MLflow's error codes.

use ghaf_client::mlflow::{KeyValue, Metric, NewModelVersion, NewRun, RunQuery, RunStatus};
use ghaf_client::{Client, ClientError};
use ghaf_server::ServerConfig;

/// A server on a fresh data directory, stopped when dropped.
struct Server {
    url: String,
    token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ServerConfig {
        data_dir: dir.path().to_owned(),
        ..ServerConfig::default()
    };
    let state = ghaf_server::open_state(&config).await.expect("open state");
    let created = ghaf_server::bootstrap(&state)
        .await
        .expect("bootstrap")
        .expect("an empty store bootstraps");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        ghaf_server::serve_with(state, listener, shutdown)
            .await
            .expect("server runs");
    });
    Server {
        url,
        token: created.token.secret,
        stop: Some(stop),
        _dir: dir,
    }
}

fn api_code(error: &ClientError) -> &str {
    error.code().unwrap_or("not an API error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_metrics_artifacts_and_registry() {
    let server = start_server().await;
    let client = Client::new(&server.url, Some(server.token.clone())).unwrap();
    let tracking = client.tracking("default").unwrap();

    // Experiments.
    let experiment_id = tracking
        .create_experiment("fraud", &[KeyValue::new("team", "risk")])
        .await
        .unwrap();
    let experiment = tracking.get_experiment(&experiment_id).await.unwrap();
    assert_eq!(experiment.name, "fraud");
    assert_eq!(experiment.tags, vec![KeyValue::new("team", "risk")]);
    let by_name = tracking.get_experiment_by_name("fraud").await.unwrap();
    assert_eq!(by_name.experiment_id, experiment_id);
    let missing = tracking.get_experiment_by_name("nope").await.unwrap_err();
    assert_eq!(api_code(&missing), "RESOURCE_DOES_NOT_EXIST", "{missing}");
    assert_eq!(missing.status(), Some(404));
    let names: Vec<String> = tracking
        .list_experiments(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&"fraud".to_owned()), "{names:?}");
    assert!(names.contains(&"Default".to_owned()), "{names:?}");

    // Runs: create, log one by one and in a batch, read back.
    let mut run_ids = Vec::new();
    for (index, model) in ["rf", "gbm", "rf"].iter().enumerate() {
        let run = tracking
            .create_run(&NewRun {
                experiment_id: experiment_id.clone(),
                run_name: Some(format!("run-{index}")),
                start_time: Some(1_000 + index as i64),
                tags: vec![KeyValue::new("mlflow.user", "ana")],
            })
            .await
            .unwrap();
        assert_eq!(run.info.status, "RUNNING");
        assert_eq!(run.info.experiment_id, experiment_id);
        let run_id = run.info.run_id.clone();
        tracking.log_param(&run_id, "model", model).await.unwrap();
        for step in 0..3 {
            let value = 0.5 + 0.1 * step as f64 + 0.01 * index as f64;
            tracking
                .log_metric(&run_id, &Metric::new("acc", value, 2_000 + step, step))
                .await
                .unwrap();
        }
        tracking
            .log_batch(
                &run_id,
                &[
                    Metric::new("loss", 0.3, 3_000, 0),
                    Metric::new("loss", f64::INFINITY, 3_001, 1),
                ],
                &[KeyValue::new("depth", index.to_string())],
                &[KeyValue::new("stage", "test")],
            )
            .await
            .unwrap();
        tracking.set_run_tag(&run_id, "owner", "ana").await.unwrap();
        run_ids.push(run_id);
    }

    let run = tracking.get_run(&run_ids[0]).await.unwrap();
    assert_eq!(run.info.run_name, "run-0");
    assert_eq!(run.param("model"), Some("rf"));
    assert_eq!(run.param("depth"), Some("0"));
    assert_eq!(run.tag("owner"), Some("ana"));
    assert_eq!(run.tag("stage"), Some("test"));
    assert!((run.metric("acc").unwrap() - 0.7).abs() < 1e-9, "{run:?}");
    assert_eq!(run.metric("loss"), Some(f64::INFINITY));

    // Params are immutable.
    let changed = tracking
        .log_param(&run_ids[0], "model", "svm")
        .await
        .unwrap_err();
    assert_eq!(api_code(&changed), "INVALID_PARAMETER_VALUE", "{changed}");

    // Metric history, in step order.
    let history = tracking.metric_history(&run_ids[1], "acc").await.unwrap();
    let steps: Vec<i64> = history.iter().map(|m| m.step).collect();
    assert_eq!(steps, vec![0, 1, 2]);
    assert!((history[2].value - 0.71).abs() < 1e-9, "{history:?}");

    // Search with a filter and an order, then page through all runs.
    let page = tracking
        .search_runs(&RunQuery {
            experiment_ids: vec![experiment_id.clone()],
            filter: "params.model = 'rf' and metrics.acc > 0.5".into(),
            order_by: vec!["metrics.acc DESC".into()],
            ..RunQuery::default()
        })
        .await
        .unwrap();
    let found: Vec<&str> = page.runs.iter().map(|r| r.info.run_id.as_str()).collect();
    assert_eq!(found, vec![run_ids[2].as_str(), run_ids[0].as_str()]);
    assert!(page.next_page_token.is_none());

    let mut seen = Vec::new();
    let mut query = RunQuery {
        experiment_ids: vec![experiment_id.clone()],
        max_results: Some(2),
        ..RunQuery::default()
    };
    loop {
        let page = tracking.search_runs(&query).await.unwrap();
        seen.extend(page.runs.into_iter().map(|r| r.info.run_id));
        match page.next_page_token {
            Some(token) => query.page_token = Some(token),
            None => break,
        }
    }
    seen.sort();
    let mut expected = run_ids.clone();
    expected.sort();
    assert_eq!(seen, expected);

    let bad_filter = tracking
        .search_runs(&RunQuery {
            experiment_ids: vec![experiment_id.clone()],
            filter: "metrics.acc >".into(),
            ..RunQuery::default()
        })
        .await
        .unwrap_err();
    assert_eq!(api_code(&bad_filter), "INVALID_PARAMETER_VALUE");

    // End a run.
    let info = tracking
        .update_run(&run_ids[0], RunStatus::Finished, Some(9_000))
        .await
        .unwrap();
    assert_eq!(info.status, "FINISHED");
    assert_eq!(info.end_time, Some(9_000));

    // Artifacts below the run's artifact directory.
    let model_file = run.info.artifact_path("model/model.onnx");
    tracking
        .upload_artifact(&model_file, b"onnx bytes".to_vec())
        .await
        .unwrap();
    tracking
        .upload_artifact(&run.info.artifact_path("notes.txt"), "hello")
        .await
        .unwrap();
    let bytes = tracking.download_artifact(&model_file).await.unwrap();
    assert_eq!(&bytes[..], b"onnx bytes");
    let mut listing = tracking
        .list_artifacts(&run.info.artifact_path(""))
        .await
        .unwrap();
    listing.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(listing.len(), 2, "{listing:?}");
    assert_eq!(listing[0].path, "model");
    assert!(listing[0].is_dir);
    assert_eq!(listing[1].path, "notes.txt");
    assert_eq!(listing[1].file_size, Some(5));
    let absent = tracking
        .download_artifact(&run.info.artifact_path("absent.bin"))
        .await
        .unwrap_err();
    assert_eq!(absent.status(), Some(404), "{absent}");
    let escape = tracking.download_artifact("1/../secret").await.unwrap_err();
    assert!(
        matches!(escape, ClientError::InvalidPathSegment { .. }),
        "{escape:?}"
    );

    // Registry: a model, two signed versions, an alias.
    let model = tracking
        .create_registered_model("fraud-model", "detects fraud")
        .await
        .unwrap();
    assert_eq!(model.name, "fraud-model");
    let duplicate = tracking
        .create_registered_model("fraud-model", "")
        .await
        .unwrap_err();
    assert_eq!(api_code(&duplicate), "RESOURCE_ALREADY_EXISTS");
    let source = format!("runs:/{}/model", run_ids[0]);
    let mut versions = Vec::new();
    for _ in 0..2 {
        let version = tracking
            .create_model_version(&NewModelVersion {
                name: "fraud-model".into(),
                source: source.clone(),
                run_id: run_ids[0].clone(),
                ..NewModelVersion::default()
            })
            .await
            .unwrap();
        assert_eq!(version.status, "READY");
        versions.push(version.number());
    }
    assert_eq!(versions, vec![1, 2]);
    let listed: Vec<i64> = tracking
        .list_model_versions("fraud-model")
        .await
        .unwrap()
        .iter()
        .map(|v| v.number())
        .collect();
    assert_eq!(listed, vec![2, 1]);
    let first = tracking.get_model_version("fraud-model", 1).await.unwrap();
    assert_eq!(first.run_id, run_ids[0]);

    tracking
        .set_model_alias("fraud-model", "champion", 1)
        .await
        .unwrap();
    let champion = tracking
        .get_model_version_by_alias("fraud-model", "champion")
        .await
        .unwrap();
    assert_eq!(champion.number(), 1);
    assert_eq!(champion.aliases, vec!["champion".to_owned()]);
    let model = tracking.get_registered_model("fraud-model").await.unwrap();
    assert_eq!(model.aliases.len(), 1, "{model:?}");
    assert_eq!(model.aliases[0].version, "1");

    let uri = tracking
        .model_version_download_uri("fraud-model", 1)
        .await
        .unwrap();
    assert!(uri.starts_with("mlflow-artifacts:/"), "{uri}");

    tracking
        .delete_model_alias("fraud-model", "champion")
        .await
        .unwrap();
    let gone = tracking
        .get_model_version_by_alias("fraud-model", "champion")
        .await
        .unwrap_err();
    assert_eq!(api_code(&gone), "RESOURCE_DOES_NOT_EXIST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_project_and_bad_token_are_refused() {
    let server = start_server().await;
    let client = Client::new(&server.url, Some(server.token.clone())).unwrap();
    let error = client
        .tracking("no-such-project")
        .unwrap()
        .get_experiment("0")
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), "RESOURCE_DOES_NOT_EXIST", "{error}");

    let stranger = Client::new(&server.url, Some("ghaf_not_a_token".into())).unwrap();
    let error = stranger
        .tracking("default")
        .unwrap()
        .get_experiment("0")
        .await
        .unwrap_err();
    assert_eq!(api_code(&error), "UNAUTHENTICATED", "{error}");
    assert_eq!(error.status(), Some(401));

    assert!(matches!(
        client.tracking("bad\nname"),
        Err(ClientError::InvalidProject { .. })
    ));
}
