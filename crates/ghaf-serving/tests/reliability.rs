//! Endpoint behaviour under failures and load: transient load failures are retried, a
//! reload after an update on another replica loads once, and a large request logs a bounded
//! number of rows.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{HookedLoader, env, env_with_loader, register, trained_model};
use ghaf_runtime::{InferRequest, Tensor, TensorData};
use ghaf_serving::loader::{LoadError, ModelLoader, RegistryLoader};
use ghaf_serving::{DeploySpec, InferContext, ServingError};

/// Counts loads and fails the first `fail_first` of them for a transient reason.
fn counting_loader(
    inner: RegistryLoader,
    loads: Arc<AtomicUsize>,
    fail_first: usize,
) -> Arc<dyn ModelLoader> {
    Arc::new(
        HookedLoader::new(inner, loads).before_load(move |_, attempt| {
            if attempt < fail_first {
                return Err(LoadError::Transient(
                    "the blob store did not answer (injected)".into(),
                ));
            }
            Ok(())
        }),
    )
}

fn deploy(model: &str, version: i64) -> DeploySpec {
    DeploySpec {
        model: model.into(),
        version,
        ..DeploySpec::default()
    }
}

fn request(rows: usize) -> InferRequest {
    InferRequest {
        inputs: vec![Tensor::new(
            "input",
            vec![rows as i64, 2],
            TensorData::Fp64((0..rows * 2).map(|i| (i % 7) as f64 * 0.1).collect()),
        )],
        ..InferRequest::default()
    }
}

async fn wait_ready(env: &common::Env, endpoint: &str) {
    for _ in 0..1200 {
        let info = env.serving.get(&env.scope, endpoint).await.unwrap();
        match info.status[0].state.as_str() {
            "ready" => return,
            "failed" => panic!("endpoint failed: {:?}", info.status[0]),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("endpoint {endpoint} never became ready");
}

#[tokio::test]
async fn transient_load_failure_is_retried() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let loads = Arc::new(AtomicUsize::new(0));
    let counter = loads.clone();
    let env = env_with_loader(meta, move |inner| counting_loader(inner, counter, 1)).await;
    let (version, _) = register(&env, "flaky", &trained_model()).await;
    env.serving
        .create(
            &env.scope,
            &env.project_name,
            "flaky-live",
            &deploy("flaky", version),
            "alice",
        )
        .await
        .unwrap();
    // Until the retry succeeds the endpoint is loading (never failed) and infer returns NotReady.
    let mut saw_retry = false;
    for _ in 0..1200 {
        let info = env.serving.get(&env.scope, "flaky-live").await.unwrap();
        let status = &info.status[0];
        assert_ne!(status.state, "failed", "{status:?}");
        if status.state == "ready" {
            break;
        }
        if let Some(reason) = &status.reason {
            assert!(reason.contains("transient"), "{reason}");
            saw_retry = true;
            let error = env
                .serving
                .infer(
                    &env.scope,
                    "flaky-live",
                    None,
                    request(1),
                    &InferContext::default(),
                )
                .await
                .unwrap_err();
            match error {
                ServingError::NotReady {
                    retry_after_secs, ..
                } => assert!(retry_after_secs >= 1),
                other => panic!("expected NotReady, got {other}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_ready(&env, "flaky-live").await;
    assert!(saw_retry, "the injected failure was never visible");
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    env.serving
        .infer(
            &env.scope,
            "flaky-live",
            None,
            request(2),
            &InferContext::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn reload_after_update_on_another_replica_loads_once() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let loads = Arc::new(AtomicUsize::new(0));
    let counter = loads.clone();
    let env = env_with_loader(meta, move |inner| counting_loader(inner, counter, 0)).await;
    let (version, _) = register(&env, "shared", &trained_model()).await;
    env.serving
        .create(
            &env.scope,
            &env.project_name,
            "shared-live",
            &deploy("shared", version),
            "alice",
        )
        .await
        .unwrap();
    wait_ready(&env, "shared-live").await;
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // Another replica deploys another version: a newer generation in the store. (A change
    // that keeps the model, such as the description, reuses the loaded model instead.)
    let (next, _) = register(&env, "shared", &trained_model()).await;
    let mut record = env
        .serving
        .store()
        .get(&env.scope.tenant, &env.scope.project, "shared-live")
        .await
        .unwrap()
        .unwrap();
    let expected = record.generation;
    record.generation += 1;
    record.description = "updated elsewhere".into();
    record.variants[0].version = next;
    env.serving.store().update(&record, expected).await.unwrap();

    // Many concurrent reads notice the new generation; only one reload starts.
    let serving = &env.serving;
    let scope = &env.scope;
    let reads = (0..16).map(|_| serving.list(scope));
    for result in futures::future::join_all(reads).await {
        result.unwrap();
    }
    wait_ready(&env, "shared-live").await;
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn large_request_logs_a_bounded_number_of_rows() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let (version, _) = register(&env, "bulk", &trained_model()).await;
    env.serving
        .create(
            &env.scope,
            &env.project_name,
            "bulk-live",
            &deploy("bulk", version),
            "alice",
        )
        .await
        .unwrap();
    wait_ready(&env, "bulk-live").await;
    let rows = ghaf_serving::log::MAX_ROWS_PER_REQUEST + 5;
    let response = env
        .serving
        .infer(
            &env.scope,
            "bulk-live",
            None,
            request(rows),
            &InferContext::default(),
        )
        .await
        .unwrap();
    // Every row gets an output; only the log is capped.
    assert_eq!(response.outputs[0].shape[0], rows as i64);
    // The log rows are built on the blocking pool; a flush waits for them.
    env.serving.flush_log().await;
    let dataset = env
        .ingest
        .store()
        .get_dataset(
            &env.scope.tenant,
            &env.scope.project,
            "bulk-live-predictions",
        )
        .await
        .unwrap();
    let stored = env
        .ingest
        .store()
        .list_versions(&env.scope.tenant, &dataset.id)
        .await
        .unwrap()
        .iter()
        .map(|v| v.row_count)
        .sum::<u64>();
    assert_eq!(stored, ghaf_serving::log::MAX_ROWS_PER_REQUEST as u64);
    assert_eq!(env.serving.dropped_log_rows(), 5);
}

#[tokio::test]
async fn loaded_endpoint_survives_database_outage() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let (version, _) = register(&env, "steady", &trained_model()).await;
    env.serving
        .create(
            &env.scope,
            &env.project_name,
            "steady-live",
            &deploy("steady", version),
            "alice",
        )
        .await
        .unwrap();
    wait_ready(&env, "steady-live").await;
    env.meta.db().close().await;
    // Past the revalidation age, the record cannot be read again; the loaded copy serves.
    tokio::time::sleep(ghaf_serving::REVALIDATE_AFTER + Duration::from_millis(200)).await;
    for _ in 0..2 {
        env.serving
            .infer(
                &env.scope,
                "steady-live",
                None,
                request(1),
                &InferContext::default(),
            )
            .await
            .unwrap();
    }
    // An endpoint this server never loaded cannot be read: 503, not 500.
    let error = env
        .serving
        .infer(
            &env.scope,
            "unknown-live",
            None,
            request(1),
            &InferContext::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ServingError::NotReady { .. }),
        "expected NotReady, got {error}"
    );
}
