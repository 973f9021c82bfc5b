//! Endpoints on real SQLite and PostgreSQL stores: deploy a model trained by ghaf-train and
//! registered with a signed manifest, infer, read the prediction log, post labels, refuse a
//! tampered artifact, join online features, and delete.

mod common;

use common::{Env, env, register, scope, settled, trained_model};
use ghaf_runtime::{InferRequest, InferResponse, Parameter, Tensor, TensorData};
use ghaf_serving::{DeploySpec, InferContext, LabelInput, REQUEST_ID_PARAMETER, ServingError};
use ghaf_tracking::TrackingStore;

fn rows_request(id: Option<&str>, rows: &[[f64; 2]]) -> InferRequest {
    InferRequest {
        id: id.map(str::to_owned),
        inputs: vec![Tensor::new(
            "input",
            vec![rows.len() as i64, 2],
            TensorData::Fp64(rows.iter().flatten().copied().collect()),
        )],
        ..InferRequest::default()
    }
}

/// Returns the server-generated request id of a response.
fn server_id(response: &InferResponse) -> String {
    match response.parameters.get(REQUEST_ID_PARAMETER) {
        Some(Parameter::String(id)) => id.clone(),
        other => panic!("no {REQUEST_ID_PARAMETER} parameter: {other:?}"),
    }
}

fn alice() -> InferContext {
    InferContext {
        principal: "alice".into(),
        ..InferContext::default()
    }
}

fn deploy(model: &str, version: i64) -> DeploySpec {
    DeploySpec {
        model: model.into(),
        version,
        ..DeploySpec::default()
    }
}

fn dropped_after_flush(env: &Env) -> u64 {
    env.serving.dropped_log_rows()
}

async fn lifecycle(env: Env) {
    let model = trained_model();
    let (version, _) = register(&env, "scorer", &model).await;
    let created = env
        .serving
        .create(
            &env.scope,
            &env.project_name,
            "scorer-live",
            &deploy("scorer", version),
            "alice",
        )
        .await
        .unwrap();
    assert_eq!(created.endpoint.variants.len(), 1);
    assert_eq!(created.endpoint.variants[0].version, version);
    let status = settled(&env, "scorer-live").await;
    assert_eq!(status.state, "ready", "{status:?}");
    assert!(status.load_ms.is_some());
    assert!(status.warmup_ms.is_some());
    assert!(
        env.serving
            .model_ready(&env.scope, "scorer-live", None)
            .await
            .unwrap()
    );

    let metadata = env
        .serving
        .model_metadata(&env.scope, "scorer-live", None)
        .await
        .unwrap();
    assert_eq!(metadata.versions, vec![version.to_string()]);

    let rows = [[0.9, 30.0], [-0.4, 12.0]];
    let response = env
        .serving
        .infer(
            &env.scope,
            "scorer-live",
            Some(&version.to_string()),
            rows_request(Some("req-1"), &rows),
            &alice(),
        )
        .await
        .unwrap();
    // The response echoes the caller's id; the log key is the server's UUIDv7.
    assert_eq!(response.id.as_deref(), Some("req-1"));
    let first_id = server_id(&response);
    assert_eq!(
        uuid::Uuid::parse_str(&first_id).unwrap().get_version_num(),
        7
    );
    // A client that reuses its id loses no log rows.
    let reused = env
        .serving
        .infer(
            &env.scope,
            "scorer-live",
            None,
            rows_request(Some("req-1"), &rows[..1]),
            &alice(),
        )
        .await
        .unwrap();
    assert_eq!(reused.id.as_deref(), Some("req-1"));
    assert_ne!(server_id(&reused), first_id);
    assert_eq!(response.model_version, Some(version.to_string()));
    let expected: Vec<f64> = rows.iter().map(|r| model.predict(r)).collect();
    assert_eq!(response.outputs[0].data, TensorData::Fp64(expected.clone()));

    // A generated id is a UUIDv7.
    let generated = env
        .serving
        .infer(
            &env.scope,
            "scorer-live",
            None,
            rows_request(None, &rows[..1]),
            &InferContext::default(),
        )
        .await
        .unwrap();
    let id = generated.id.clone().unwrap();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    assert_eq!(server_id(&generated), id);

    let missing = env
        .serving
        .infer(
            &env.scope,
            "scorer-live",
            Some("99"),
            rows_request(None, &rows),
            &InferContext::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ServingError::VersionNotFound { .. }),
        "{missing}"
    );

    env.serving.flush_log().await;
    let dataset = env
        .ingest
        .store()
        .get_dataset(
            &env.scope.tenant,
            &env.scope.project,
            "scorer-live-predictions",
        )
        .await
        .unwrap();
    let columns: Vec<&str> = dataset
        .schema
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "request_id",
            "row",
            "timestamp",
            "endpoint",
            "variant",
            "model_name",
            "model_version",
            "latency_us",
            "client_request_id",
            "principal",
            "amount",
            "age",
            "prediction"
        ]
    );
    assert_eq!(dataset.schema.unique_key, ["request_id", "row"]);
    let logged = env
        .serving
        .recent_predictions(&env.scope, "scorer-live", 10)
        .await
        .unwrap();
    assert_eq!(logged.len(), 4);
    assert_eq!(
        logged
            .iter()
            .filter(|row| row["client_request_id"] == "req-1")
            .count(),
        3
    );
    assert_eq!(dropped_after_flush(&env), 0);
    let first: Vec<_> = logged
        .iter()
        .filter(|row| row["request_id"] == first_id.as_str())
        .collect();
    assert_eq!(first.len(), 2);
    for row in first {
        assert_eq!(row["client_request_id"], "req-1");
        assert_eq!(row["principal"], "alice");
        let index = row["row"].as_i64().unwrap() as usize;
        assert_eq!(row["endpoint"], "scorer-live");
        assert_eq!(row["variant"], "primary");
        assert_eq!(row["model_name"], "scorer");
        assert_eq!(row["model_version"], version);
        assert_eq!(row["amount"].as_f64().unwrap(), rows[index][0]);
        assert_eq!(row["age"].as_f64().unwrap(), rows[index][1]);
        assert_eq!(row["prediction"].as_f64().unwrap(), expected[index]);
        assert!(row["latency_us"].as_i64().unwrap() >= 0);
        assert!(row["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    let labels = [
        LabelInput {
            request_id: first_id.clone(),
            row: 0,
            label: 1.0,
        },
        LabelInput {
            request_id: first_id.clone(),
            row: 1,
            label: 0.0,
        },
        LabelInput {
            request_id: "never-logged".into(),
            row: 0,
            label: 1.0,
        },
    ];
    let outcome = env
        .serving
        .post_labels(&env.scope, "scorer-live", &labels, "alice")
        .await
        .unwrap();
    assert_eq!(
        (outcome.received, outcome.accepted, outcome.duplicates),
        (3, 3, 0)
    );
    assert_eq!(outcome.unknown_request_ids, 1);
    let again = env
        .serving
        .post_labels(&env.scope, "scorer-live", &labels[..1], "alice")
        .await
        .unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 1));
    let label_set = env
        .ingest
        .store()
        .get_dataset(&env.scope.tenant, &env.scope.project, "scorer-live-labels")
        .await
        .unwrap();
    let versions = env
        .ingest
        .store()
        .list_versions(&env.scope.tenant, &label_set.id)
        .await
        .unwrap();
    assert_eq!(versions.iter().map(|v| v.row_count).sum::<u64>(), 3);

    env.serving.delete(&env.scope, "scorer-live").await.unwrap();
    let gone = env
        .serving
        .infer(
            &env.scope,
            "scorer-live",
            None,
            rows_request(None, &rows),
            &InferContext::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(gone, ServingError::EndpointNotFound { .. }),
        "{gone}"
    );
    assert!(env.serving.list(&env.scope).await.unwrap().is_empty());
}

#[tokio::test]
async fn lifecycle_on_sqlite() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    lifecycle(env(meta).await).await;
}

#[tokio::test]
async fn lifecycle_on_postgres() {
    let (meta, guard) = ghaf_meta::testing::postgres_store().await;
    lifecycle(env(meta).await).await;
    guard.drop_database().await;
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

#[tokio::test]
async fn tampered_artifact_fails_the_load() {
    let (meta, _meta_dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let (version, prefix) = register(&env, "scorer", &trained_model()).await;
    let entry = env
        .tracking_store
        .get_artifact(&scope(&env), &format!("{prefix}/model.ghaf"))
        .await
        .unwrap()
        .unwrap();
    let blob = find_file(&env.dir.path().join("blobs"), &entry.digest).expect("blob file");
    let mut content = std::fs::read(&blob).unwrap();
    content[12] ^= 0x01;
    std::fs::write(&blob, content).unwrap();

    env.serving
        .create(
            &env.scope,
            &env.project_name,
            "tampered",
            &deploy("scorer", version),
            "alice",
        )
        .await
        .unwrap();
    let status = settled(&env, "tampered").await;
    assert_eq!(status.state, "failed");
    let reason = status.reason.unwrap();
    assert!(reason.contains("signature verification failed"), "{reason}");
    assert!(
        !env.serving
            .model_ready(&env.scope, "tampered", None)
            .await
            .unwrap()
    );
    let error = env
        .serving
        .infer(
            &env.scope,
            "tampered",
            None,
            rows_request(None, &[[0.1, 2.0]]),
            &InferContext::default(),
        )
        .await
        .unwrap_err();
    match error {
        ServingError::LoadFailed {
            reason, version: v, ..
        } => {
            assert_eq!(v, version);
            assert!(reason.contains("signature verification failed"), "{reason}");
        }
        other => panic!("expected LoadFailed, got {other}"),
    }
}

#[tokio::test]
async fn deploy_checks_its_references() {
    let (meta, _meta_dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let error = env
        .serving
        .create(
            &env.scope,
            &env.project_name,
            "nothing",
            &deploy("absent", 1),
            "alice",
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), ghaf_core::ErrorCode::NotFound, "{error}");
    let long = "e".repeat(60);
    let error = env
        .serving
        .create(
            &env.scope,
            &env.project_name,
            &long,
            &deploy("absent", 1),
            "alice",
        )
        .await
        .unwrap_err();
    assert_eq!(error.field(), Some("name"), "{error}");
    let (version, _) = register(&env, "scorer", &trained_model()).await;
    let mut spec = deploy("scorer", version);
    spec.feature_service = Some("missing-service".into());
    let error = env
        .serving
        .create(&env.scope, &env.project_name, "bound", &spec, "alice")
        .await
        .unwrap_err();
    assert_eq!(error.code(), ghaf_core::ErrorCode::NotFound, "{error}");
    env.serving
        .create(
            &env.scope,
            &env.project_name,
            "twice",
            &deploy("scorer", version),
            "alice",
        )
        .await
        .unwrap();
    let error = env
        .serving
        .create(
            &env.scope,
            &env.project_name,
            "twice",
            &deploy("scorer", version),
            "alice",
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), ghaf_core::ErrorCode::AlreadyExists, "{error}");
}
