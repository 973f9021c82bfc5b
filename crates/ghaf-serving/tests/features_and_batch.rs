//! An endpoint bound to a feature service (entities present, unknown and expired), and batch
//! scoring that gives the same predictions as the endpoint for the same rows.

mod common;

use std::collections::BTreeMap;

use common::{env, register, settled, trained_model};
use ghaf_features::online::{EntityKey, KeyValue, OnlineRow, OnlineScope};
use ghaf_ingest::{IngestInput, InputFormat, ReadOptions};
use ghaf_runtime::{InferRequest, Parameter, Tensor, TensorData};
use ghaf_serving::batch::{BatchRequest, score};
use ghaf_serving::loader::{LoadError, LoadedModel, ModelLoader, RegistryLoader};
use ghaf_serving::{DeploySpec, InferContext, ServingError};
use serde_json::json;

const DEFINITIONS: &str = "
entities:
  - {name: customer, join_key: customer_id, value_type: string}
feature_views:
  - name: customer_stats
    entities: [customer]
    source: {dataset: customers}
    event_time: updated_at
    ttl: 1d
    online: true
    features:
      - {name: amount}
feature_services:
  - name: scoring
    features: [\"customer_stats:amount\"]
";

#[tokio::test]
async fn feature_service_endpoint_joins_online_features() {
    let (meta, _dir) = ghaf_meta::testing::sqlite_store().await;
    let env = env(meta).await;
    let schema = ghaf_ingest::schema::DatasetSchema::from_yaml(
        "columns:\n  - {name: customer_id, type: string}\n  - {name: amount, type: float}\n  - {name: updated_at, type: timestamp}\n",
    )
    .unwrap();
    env.ingest
        .create_dataset(
            &env.scope.tenant,
            &env.scope.project,
            "customers",
            "",
            &schema,
            "alice",
        )
        .await
        .unwrap();
    let definitions = ghaf_features::Definitions::from_yaml(DEFINITIONS).unwrap();
    let plan = env
        .features
        .plan(&env.scope.tenant, &env.scope.project, &definitions)
        .await
        .unwrap();
    env.features
        .apply(&env.scope.tenant, &env.scope.project, &plan, "alice")
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    let day = 86_400_000_000i64;
    let online_row = |event: i64, amount: f64| OnlineRow {
        event_micros: event,
        created_micros: i64::MIN,
        values: BTreeMap::from([("amount".to_owned(), json!(amount))]),
    };
    let key = |id: &str| EntityKey::new([("customer_id".to_owned(), KeyValue::Text(id.into()))]);
    env.features
        .online()
        .write(
            &OnlineScope {
                tenant: env.scope.tenant.clone(),
                project: env.scope.project.clone(),
                view: "customer_stats".into(),
                version: 1,
            },
            vec![
                (key("fresh"), online_row(now - 1000, 0.9)),
                (key("stale"), online_row(now - 3 * day, 0.8)),
            ],
        )
        .await
        .unwrap();

    let model = trained_model();
    let (version, _) = register(&env, "scorer", &model).await;
    let spec = DeploySpec {
        model: "scorer".into(),
        version,
        feature_service: Some("scoring".into()),
        ..DeploySpec::default()
    };
    env.serving
        .create(&env.scope, &env.project_name, "bound", &spec, "alice")
        .await
        .unwrap();
    let status = settled(&env, "bound").await;
    assert_eq!(status.state, "ready", "{status:?}");

    let metadata = env
        .serving
        .model_metadata(&env.scope, "bound", None)
        .await
        .unwrap();
    let inputs: Vec<(&str, &str)> = metadata
        .signature
        .inputs
        .iter()
        .map(|i| (i.name.as_str(), i.datatype.as_str()))
        .collect();
    assert_eq!(inputs, [("customer_id", "BYTES"), ("age", "FP64")]);

    let request = InferRequest {
        id: Some("joined".into()),
        inputs: vec![
            Tensor::new(
                "customer_id",
                vec![3],
                TensorData::Bytes(vec![
                    b"fresh".to_vec(),
                    b"nobody".to_vec(),
                    b"stale".to_vec(),
                ]),
            ),
            Tensor::new("age", vec![3, 1], TensorData::Fp64(vec![30.0, 12.0, 40.0])),
        ],
        ..InferRequest::default()
    };
    let response = env
        .serving
        .infer(&env.scope, "bound", None, request, &InferContext::default())
        .await
        .unwrap();
    let expected = vec![
        model.predict(&[0.9, 30.0]),
        model.predict(&[f64::NAN, 12.0]),
        model.predict(&[f64::NAN, 40.0]),
    ];
    assert_eq!(response.outputs[0].data, TensorData::Fp64(expected));
    assert_eq!(
        response.parameters["missing_features"],
        Parameter::String(r#"[[],["amount"],["amount"]]"#.into())
    );
    assert_eq!(response.parameters["missing_rows"], Parameter::Int(2));

    let missing_key = InferRequest {
        inputs: vec![Tensor::new("age", vec![1], TensorData::Fp64(vec![30.0]))],
        ..InferRequest::default()
    };
    match env
        .serving
        .infer(
            &env.scope,
            "bound",
            None,
            missing_key,
            &InferContext::default(),
        )
        .await
        .unwrap_err()
    {
        ServingError::InvalidInput { input, .. } => assert_eq!(input, "customer_id"),
        other => panic!("expected InvalidInput, got {other}"),
    }

    env.serving.flush_log().await;
    let logged = env
        .serving
        .recent_predictions(&env.scope, "bound", 10)
        .await
        .unwrap();
    assert_eq!(logged.len(), 3);
    let fresh = logged.iter().find(|r| r["row"] == 0).unwrap();
    assert_eq!(fresh["amount"], json!(0.9));
    assert_eq!(fresh["age"], json!(30.0));
    let unknown = logged.iter().find(|r| r["row"] == 1).unwrap();
    assert_eq!(unknown["amount"], serde_json::Value::Null);
}

#[tokio::test]
async fn batch_scores_equal_online_predictions() {
    let (meta, guard) = ghaf_meta::testing::postgres_store().await;
    let env = env(meta).await;
    let model = trained_model();
    let (version, _) = register(&env, "scorer", &model).await;

    let schema = ghaf_ingest::schema::DatasetSchema::from_yaml(
        "columns:\n  - {name: id, type: integer}\n  - {name: amount, type: float}\n  - {name: age, type: float}\n",
    )
    .unwrap();
    let dataset = env
        .ingest
        .create_dataset(
            &env.scope.tenant,
            &env.scope.project,
            "applications",
            "",
            &schema,
            "alice",
        )
        .await
        .unwrap();
    let rows: Vec<[f64; 2]> = (0..25)
        .map(|i| [((i as f64) * 0.7).sin(), (i % 9) as f64])
        .collect();
    let mut csv = String::from("id,amount,age\n");
    for (i, row) in rows.iter().enumerate() {
        csv.push_str(&format!("{i},{},{}\n", row[0], row[1]));
    }
    csv.push_str("25,,7\n");
    let path = env.dir.path().join("applications.csv");
    std::fs::write(&path, csv).unwrap();
    env.ingest
        .ingest(
            &dataset,
            &env.project_name,
            IngestInput {
                path: &path,
                options: &ReadOptions::new(InputFormat::Csv),
                source: "test",
                progress: None,
            },
            "alice",
        )
        .await
        .unwrap();

    let loader = RegistryLoader::new(env.tracking.clone());
    let request = BatchRequest {
        tenant: env.scope.tenant.clone(),
        project: env.scope.project.clone(),
        project_name: env.project_name.clone(),
        dataset: "applications".into(),
        dataset_version: None,
        model: "scorer".into(),
        model_version: version,
        output_dataset: "application-scores".into(),
        passthrough: vec!["id".into()],
        chunk_rows: 7,
        execution_provider: "cpu".into(),
        actor: "alice".into(),
    };
    let outcome = score(&env.ingest, &loader, &request, &|_| {})
        .await
        .unwrap();
    assert_eq!(outcome.rows, 26);
    assert_eq!(outcome.columns, ["id", "prediction"]);

    // Load failures: verification and bad files are permanent, store outages retryable.
    for (error, retryable) in [
        (
            LoadError::Transient("the blob store did not answer".into()),
            true,
        ),
        (
            LoadError::Failed("signature verification failed: digest differs".into()),
            false,
        ),
    ] {
        let loader = FailingLoader(std::sync::Mutex::new(Some(error)));
        let failed = score(&env.ingest, &loader, &request, &|_| {})
            .await
            .unwrap_err();
        assert_eq!(failed.retryable, retryable, "{}", failed.message);
    }

    let output = env
        .ingest
        .store()
        .get_dataset(&env.scope.tenant, &env.scope.project, "application-scores")
        .await
        .unwrap();
    let stored = env
        .ingest
        .store()
        .get_version(&env.scope.tenant, &output.id, outcome.output_version)
        .await
        .unwrap();
    assert!(
        stored.source.contains("applications@1"),
        "{}",
        stored.source
    );
    assert!(stored.source.contains("scorer@"), "{}", stored.source);
    let digest = ghaf_ingest::IngestService::digest(&stored.content_digest).unwrap();
    let bytes = env
        .ingest
        .blobs()
        .get(&env.scope.tenant, &digest)
        .await
        .unwrap();
    let scored = ghaf_serving::rows::parquet_rows(bytes).unwrap();

    env.serving
        .create(
            &env.scope,
            &env.project_name,
            "online",
            &DeploySpec {
                model: "scorer".into(),
                version,
                ..DeploySpec::default()
            },
            "alice",
        )
        .await
        .unwrap();
    assert_eq!(settled(&env, "online").await.state, "ready");
    let mut matrix: Vec<f64> = rows.iter().flatten().copied().collect();
    matrix.extend([f64::NAN, 7.0]);
    let response = env
        .serving
        .infer(
            &env.scope,
            "online",
            None,
            InferRequest {
                inputs: vec![Tensor::new("input", vec![26, 2], TensorData::Fp64(matrix))],
                ..InferRequest::default()
            },
            &InferContext::default(),
        )
        .await
        .unwrap();
    let TensorData::Fp64(online) = &response.outputs[0].data else {
        panic!("FP64 output expected");
    };
    for row in &scored {
        let id = row["id"].as_i64().unwrap() as usize;
        assert_eq!(row["prediction"].as_f64().unwrap(), online[id], "row {id}");
    }
    guard.drop_database().await;
}

/// A loader whose load fails once with the given error.
struct FailingLoader(std::sync::Mutex<Option<LoadError>>);

#[async_trait::async_trait]
impl ModelLoader for FailingLoader {
    async fn check_exists(
        &self,
        _scope: &ghaf_tracking::Scope,
        _model: &str,
        _version: i64,
    ) -> Result<(), LoadError> {
        Ok(())
    }

    async fn resolve_alias(
        &self,
        _scope: &ghaf_tracking::Scope,
        model: &str,
        alias: &str,
    ) -> Result<i64, LoadError> {
        Err(LoadError::NotFound(format!(
            "model {model} has no alias {alias}"
        )))
    }

    async fn load(
        &self,
        _scope: &ghaf_tracking::Scope,
        _model: &str,
        _version: i64,
        _execution_provider: &str,
    ) -> Result<LoadedModel, LoadError> {
        let error = self.0.lock().unwrap().take();
        Err(error.unwrap_or_else(|| LoadError::Failed("called twice".into())))
    }
}
