//! The worker with the built-in and command executors, end to end on SQLite: training,
//! tracking, registration, the quality gate, resume after SIGTERM, cancellation and logs.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Once};
use std::time::Duration;

use ghaf_jobs::executor::CheckpointEvent;
use ghaf_jobs::{JobState, LogStream};
use ghaf_meta::MetaStore;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builtin_gbdt_logs_registers_and_promotes() {
    let h = common::harness().await;
    let worker = h.worker("w1", h.services.clone());
    let mut spec = common::gbdt_spec("churn", json!({"n_estimators": 30}));
    spec["register"] =
        json!({"model": "churn", "alias": "champion", "gate": {"metric": "auc", "margin": 0.01}});
    let job = h.submit(spec).await;
    let job = h.run_to_end(&worker, &job.id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{job:?}\n{}",
        h.log_text(&job.id).await
    );

    let result = job.result.clone().unwrap();
    let auc = result["metrics"]["auc"].as_f64().unwrap();
    assert!(auc > 0.8, "holdout AUC {auc}");
    for key in ["log_loss", "accuracy", "f1"] {
        assert!(
            result["metrics"][key].is_number(),
            "{key} missing: {result}"
        );
    }
    assert_eq!(result["model"], json!({"name": "churn", "version": 1}));
    assert_eq!(result["gate"]["promoted"], json!(true));

    let scope = h.scope();
    let store = h.services.tracking.store();
    let run = store
        .get_run(&scope, result["run_id"].as_str().unwrap())
        .await
        .unwrap();
    let param = |key: &str| {
        run.params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.clone())
    };
    assert_eq!(param("trainer").as_deref(), Some("gbdt"));
    assert_eq!(param("input").as_deref(), Some("synthetic@1"));
    assert_eq!(param("n_estimators").as_deref(), Some("30"));
    assert!(run.metrics.iter().any(|m| m.key == "auc"));
    let calibration_error = run
        .metrics
        .iter()
        .find(|m| m.key == "calibration_error")
        .expect("calibration_error metric");
    assert!((0.0..=1.0).contains(&calibration_error.value));
    let root = ghaf_tracking::artifact_uri_path(&run.info.artifact_uri).unwrap();
    let files: Vec<String> = store
        .list_artifacts(&scope, &root)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| {
            entry
                .path
                .trim_start_matches(&format!("{root}/"))
                .to_owned()
        })
        .collect();
    assert_eq!(
        files,
        vec![
            "calibration.json",
            "feature_importance.json",
            "model/MLmodel",
            "model/model.ghaf",
            "model/model.onnx"
        ]
    );

    let version = store.get_model_version(&scope, "churn", 1).await.unwrap();
    assert_eq!(
        version.details.lineage.training_set.as_deref(),
        Some("dataset:synthetic@1")
    );
    let signature = version
        .details
        .signature
        .clone()
        .expect("signature from MLmodel");
    assert_eq!(signature["outputs"][0]["name"], "probability");
    h.services
        .tracking
        .verify_version(&scope, &version)
        .await
        .expect("signed version verifies");
    assert_eq!(version.aliases, vec!["champion".to_owned()]);

    let audit = h
        .meta
        .list_audit(
            "acme",
            &ghaf_meta::AuditFilter {
                action: Some("jobs.quality_gate".into()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].details["decision"]["promoted"], json!(true));

    let log = h.log_text(&job.id).await;
    assert!(
        log.contains("[system] attempt 1 started on worker w1"),
        "{log}"
    );
    assert!(log.contains("holdout auc"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gate_moves_alias_only_past_margin() {
    let h = common::harness().await;
    let worker = h.worker("w1", h.services.clone());
    let register =
        json!({"model": "m", "alias": "champion", "gate": {"metric": "auc", "margin": 0.01}});
    let weak = json!({"n_estimators": 1, "num_leaves": 2});
    let strong = json!({"n_estimators": 40});

    let mut results = Vec::new();
    for (name, parameters) in [
        ("weak", weak.clone()),
        ("strong", strong),
        ("weak-again", weak),
    ] {
        let mut spec = common::gbdt_spec(name, parameters);
        spec["register"] = register.clone();
        let job = h.submit(spec).await;
        let job = h.run_to_end(&worker, &job.id).await;
        assert_eq!(
            job.state,
            JobState::Succeeded,
            "{}",
            h.log_text(&job.id).await
        );
        results.push(job.result.unwrap());
    }

    assert_eq!(results[0]["gate"]["promoted"], json!(true));
    assert_eq!(results[1]["gate"]["promoted"], json!(true));
    assert_eq!(results[1]["gate"]["champion_version"], json!(1));
    let last = &results[2]["gate"];
    assert_eq!(last["promoted"], json!(false));
    assert_eq!(last["champion_version"], json!(2));
    assert!(last["champion_score"].as_f64().unwrap() > last["candidate_score"].as_f64().unwrap());

    let scope = h.scope();
    let store = h.services.tracking.store();
    let champion = store
        .get_version_by_alias(&scope, "m", "champion")
        .await
        .unwrap();
    assert_eq!(champion.version, 2);
    let rejected = store.get_model_version(&scope, "m", 3).await.unwrap();
    let tag = |key: &str| {
        rejected
            .tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.clone())
    };
    assert_eq!(tag("ghaf.gate.promoted").as_deref(), Some("false"));
    assert_eq!(tag("ghaf.gate.champion_version").as_deref(), Some("2"));
    assert!(tag("ghaf.gate.candidate_score").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linear_and_logistic_report_their_metrics() {
    let h = common::harness().await;
    let worker = h.worker("w1", h.services.clone());
    let mut logistic = common::gbdt_spec("logistic", json!({"l2": 0.01}));
    logistic["kind"] = json!({"type": "builtin", "trainer": "logistic"});
    let job = h.submit(logistic).await;
    let job = h.run_to_end(&worker, &job.id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{}",
        h.log_text(&job.id).await
    );
    assert!(
        job.result.as_ref().unwrap()["metrics"]["auc"]
            .as_f64()
            .unwrap()
            > 0.7
    );

    let mut linear = common::gbdt_spec("linear", json!({}));
    linear["kind"] =
        json!({"type": "builtin", "trainer": "linear", "features": ["x1", "x2", "city"]});
    linear["label"] = json!("y");
    let job = h.submit(linear).await;
    let job = h.run_to_end(&worker, &job.id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{}",
        h.log_text(&job.id).await
    );
    let metrics = &job.result.as_ref().unwrap()["metrics"];
    assert!(metrics["rmse"].as_f64().unwrap() < 2.0, "{metrics}");
    assert!(metrics["mae"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_label_fails_without_retry() {
    let h = common::harness().await;
    let worker = h.worker("w1", h.services.clone());
    let mut spec = common::gbdt_spec("bad", json!({}));
    spec["label"] = json!("no_such_column");
    let job = h.submit(spec).await;
    let (claimed, lease) = worker.claim().await.unwrap().unwrap();
    let (_keep, interrupt) = tokio::sync::watch::channel(false);
    worker.run_attempt(claimed, lease, interrupt).await;
    let job = h.job(&job.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.error.as_deref().unwrap().contains("no_such_column"),
        "{:?}",
        job.error
    );
}

/// A worker shutdown (what `ghaf worker` does on SIGTERM) in the middle of GBDT training
/// requeues the job. The next attempt resumes from the checkpoint and produces exactly the
/// model of an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_resume_equals_uninterrupted_run() {
    let h = common::harness().await;
    let parameters = json!({"n_estimators": 40, "early_stopping_rounds": 50});

    let plain_worker = h.worker("plain", h.services.clone());
    let uninterrupted = h
        .submit(common::gbdt_spec("full", parameters.clone()))
        .await;
    let uninterrupted = h.run_to_end(&plain_worker, &uninterrupted.id).await;

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let shutdown_tx = Arc::new(shutdown_tx);
    let once = Arc::new(Once::new());
    let mut services = h.services.clone();
    services.checkpoint_observer = Some(Arc::new(move |event: &CheckpointEvent<'_>| {
        if event.progress != 10 {
            return;
        }
        once.call_once(|| {
            let _ = shutdown_tx.send(true);
            // Wait until the interruption reaches the training loop, so it stops at 10 trees.
            for _ in 0..1000 {
                if event.stop_requested.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("the interruption did not reach the training loop");
        });
    }));
    let job = h.submit(common::gbdt_spec("spot", parameters)).await;
    let spot_worker = h.worker("spot", services);
    tokio::time::timeout(Duration::from_secs(60), spot_worker.run(shutdown_rx))
        .await
        .expect("the worker stops after the shutdown signal");

    let interrupted = h.job(&job.id).await;
    assert_eq!(interrupted.state, JobState::Queued, "{interrupted:?}");
    assert_eq!(interrupted.interruptions, 1);
    assert_eq!(
        interrupted.checkpoint.as_ref().map(|c| c.progress),
        Some(10)
    );
    let log = h.log_text(&job.id).await;
    assert!(log.contains("training stopped after 10 trees"), "{log}");
    assert!(
        log.contains("interrupted by the shutdown of worker spot"),
        "{log}"
    );

    let resumed = h.run_to_end(&plain_worker, &job.id).await;
    assert_eq!(resumed.state, JobState::Succeeded);
    assert_eq!(resumed.attempt, 2);
    assert_eq!(
        resumed.result.as_ref().unwrap()["resumed_from_trees"],
        json!(10)
    );
    assert!(
        h.log_text(&job.id)
            .await
            .contains("resuming from the checkpoint of attempt 1 with 10 trees")
    );
    assert_eq!(
        h.model_bytes(&resumed).await,
        h.model_bytes(&uninterrupted).await,
        "the resumed model differs from the uninterrupted one"
    );
    assert_eq!(
        resumed.result.as_ref().unwrap()["metrics"],
        uninterrupted.result.as_ref().unwrap()["metrics"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_gets_environment_and_streams_output() {
    let h = common::harness().await;
    let worker = h.worker("w1", h.services.clone());
    let script = r#"echo "hello from stdout"; echo "warning on stderr" >&2;
test -f "$GHAF_INPUT_0" && echo "input ok";
test -d "$GHAF_OUTPUT_DIR" && echo "metrics" > "$GHAF_OUTPUT_DIR/metrics.txt";
echo "uri $MLFLOW_TRACKING_URI"; echo "token ${MLFLOW_TRACKING_TOKEN%%_*}"; echo "params $GHAF_PARAMETERS";
echo "cargo ${CARGO_PKG_NAME:-unset}"; printf 'raw \377 bytes\n'"#;
    let job = h
        .submit(json!({
            "name": "script",
            "kind": {"type": "command", "command": ["sh", "-c", script]},
            "inputs": [{"type": "dataset_version", "dataset": "synthetic", "version": 1}],
            "parameters": {"alpha": 0.5},
        }))
        .await;
    let job = h.run_to_end(&worker, &job.id).await;
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{}",
        h.log_text(&job.id).await
    );
    assert_eq!(
        job.result.as_ref().unwrap()["outputs"],
        json!(["metrics.txt"])
    );
    let chunks = h
        .services
        .jobs
        .read_logs(&h.tenant, &h.project, &job.id, 0, 1000)
        .await
        .unwrap();
    let stdout: String = chunks
        .iter()
        .filter(|c| c.stream == LogStream::Stdout)
        .map(|c| c.content.clone())
        .collect();
    let stderr: String = chunks
        .iter()
        .filter(|c| c.stream == LogStream::Stderr)
        .map(|c| c.content.clone())
        .collect();
    assert!(stdout.contains("hello from stdout\n"), "{stdout}");
    assert!(stdout.contains("input ok\n"), "{stdout}");
    assert!(stdout.contains("uri http://127.0.0.1:1\n"), "{stdout}");
    assert!(stdout.contains("token ghaf\n"), "{stdout}");
    assert!(stdout.contains(r#"params {"alpha":0.5}"#), "{stdout}");
    // Variables of the worker's environment outside the inherited list stay behind (cargo
    // sets CARGO_PKG_NAME for every test process).
    assert!(stdout.contains("cargo unset\n"), "{stdout}");
    // Output that is not UTF-8 is kept, replaced, and does not stop the pump.
    assert!(stdout.contains("raw \u{fffd} bytes\n"), "{stdout}");
    assert_eq!(stderr, "warning on stderr\n");

    // The job's token was revoked when the attempt ended.
    let tokens = h.meta.list_tokens(&h.tenant, None).await.unwrap();
    assert!(!tokens.is_empty());
    assert!(tokens.iter().all(|t| t.revoked_at.is_some()), "{tokens:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_command_is_retried_then_failed() {
    let h = common::harness().await;
    let worker = h.worker("w1", h.services.clone());
    let job = h
        .submit(json!({
            "name": "flaky",
            "kind": {"type": "command", "command": ["sh", "-c", "echo attempt $GHAF_JOB_ATTEMPT; exit 3"]},
            "max_attempts": 2,
            "backoff": {"initial_seconds": 0, "multiplier": 1.0, "max_seconds": 0},
        }))
        .await;
    let job = {
        for _ in 0..2 {
            let (claimed, lease) = worker.claim().await.unwrap().expect("a due attempt");
            let (_keep, interrupt) = tokio::sync::watch::channel(false);
            worker.run_attempt(claimed, lease, interrupt).await;
        }
        h.job(&job.id).await
    };
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.error.as_deref(),
        Some("the command exited with status 3")
    );
    let log = h.log_text(&job.id).await;
    assert!(
        log.contains("[stdout] attempt 1\n") && log.contains("[stdout] attempt 2\n"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_stops_running_command() {
    let h = common::harness().await;
    let worker = h.worker("w1", h.services.clone());
    let job = h
        .submit(json!({
            "name": "sleeper",
            "kind": {"type": "command", "command": ["sh", "-c", "echo started; sleep 60"]},
        }))
        .await;
    let (claimed, lease) = worker.claim().await.unwrap().unwrap();
    let (_keep, interrupt) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_attempt(claimed, lease, interrupt).await }
    });
    for _ in 0..100 {
        if h.log_text(&job.id).await.contains("started") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.services
        .jobs
        .cancel(&h.tenant, &h.project, &job.id, ghaf_core::now_millis())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the attempt stops after the cancel")
        .unwrap();
    let job = h.job(&job.id).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert!(
        h.log_text(&job.id)
            .await
            .contains("command stopped (Cancelled)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_never_claims_more_gpus_than_it_has() {
    let h = common::harness().await;
    let mut config = h.worker_config("gpu");
    config.gpus = 1;
    let worker = ghaf_jobs::worker::Worker::new(config, h.services.clone()).with_executor(
        "command",
        Arc::new(ghaf_jobs::executor::command::CommandExecutor::new(
            "http://127.0.0.1:1",
        )),
    );
    for name in ["gpu-a", "gpu-b"] {
        h.submit(json!({
            "name": name,
            "kind": {"type": "command", "command": ["true"]},
            "resources": {"gpus": 1},
        }))
        .await;
    }
    let (first, lease) = worker.claim().await.unwrap().expect("one job fits");
    let first_id = first.id.clone();
    assert!(
        worker.claim().await.unwrap().is_none(),
        "the only GPU is held by the first attempt"
    );
    let (_keep, interrupt) = tokio::sync::watch::channel(false);
    worker.run_attempt(first, lease, interrupt).await;
    let (second, _) = worker
        .claim()
        .await
        .unwrap()
        .expect("the GPU is free again after the first attempt");
    assert_ne!(second.id, first_id);
    assert_eq!(h.job(&first_id).await.state, JobState::Succeeded);
}
