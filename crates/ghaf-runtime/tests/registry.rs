//! The verified loader: a registered built-in model loads and predicts, and a tampered
//! version (flipped byte, extra file, wrong signer) is rejected with a verification error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use ghaf_blob::{BlobConfig, BlobStore};
use ghaf_meta::testing::sqlite_store;
use ghaf_runtime::{ModelFormat, RuntimeError, RuntimeOptions, Tensor, TensorData, load_verified};
use ghaf_tracking::conformance::scope;
use ghaf_tracking::manifest::ArtifactManifest;
use ghaf_tracking::{
    FileKeyStore, ModelVersion, NewLoggedModel, NewRun, RegisterVersion, Scope, SignedManifest,
    SqlTrackingStore, TrackingService, TrackingStore,
};
use ghaf_train::{Column, Dataset, GbdtParams, Model, train_gbdt};

struct Fixture {
    service: TrackingService,
    store: Arc<SqlTrackingStore>,
    scope: Scope,
    version: ModelVersion,
    model: Model,
    dir: tempfile::TempDir,
    db: ghaf_meta::Db,
    _meta: tempfile::TempDir,
}

fn stream(content: Vec<u8>) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::iter([Ok(Bytes::from(content))])
}

fn trained_model() -> Model {
    let rows = 200;
    let x: Vec<f64> = (0..rows).map(|i| (i as f64 * 0.1).cos()).collect();
    let label: Vec<f64> = x.iter().map(|&v| f64::from(v > 0.2)).collect();
    let data = Dataset::new(vec![Column::f64("x", x)], label).unwrap();
    let params = GbdtParams {
        n_estimators: 5,
        ..GbdtParams::default()
    };
    Model::Gbdt(train_gbdt(&data, None, &params).unwrap().model)
}

async fn registered() -> Fixture {
    let (meta, meta_dir) = sqlite_store().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqlTrackingStore::new(meta.db().clone()));
    let blobs = BlobStore::from_config(&BlobConfig::Local {
        root: dir.path().join("blobs"),
    })
    .unwrap();
    let keys = FileKeyStore::new(dir.path().join("keys"));
    let service = TrackingService::new(store.clone(), blobs, keys);
    let scope = scope("runtime");

    let run = store.create_run(&scope, &NewRun::default()).await.unwrap();
    let logged = store
        .create_logged_model(
            &scope,
            &NewLoggedModel {
                name: "model".into(),
                source_run_id: run.info.run_id.clone(),
                ..NewLoggedModel::default()
            },
        )
        .await
        .unwrap();
    let prefix = ghaf_tracking::artifact_uri_path(&logged.artifact_uri).unwrap();
    let model = trained_model();
    let files = [
        (
            "MLmodel",
            b"flavors:\n  ghaf:\n    model_file: model.ghaf\n".to_vec(),
        ),
        ("model.ghaf", model.to_bytes()),
    ];
    for (name, content) in files {
        service
            .put_artifact(&scope, &format!("{prefix}/{name}"), stream(content))
            .await
            .unwrap();
    }
    store
        .create_registered_model(&scope, "churn", "", "alice", &[])
        .await
        .unwrap();
    let version = service
        .register_version(
            &scope,
            &RegisterVersion {
                name: "churn".into(),
                source: format!("models:/{}", logged.model_id),
                run_id: run.info.run_id.clone(),
                model_id: logged.model_id.clone(),
                ..RegisterVersion::default()
            },
        )
        .await
        .unwrap();
    Fixture {
        service,
        store,
        scope,
        version,
        model,
        dir,
        db: meta.db().clone(),
        _meta: meta_dir,
    }
}

impl Fixture {
    async fn load(&self) -> Result<ghaf_runtime::LoadedModel, RuntimeError> {
        load_verified(
            &self.service,
            &self.scope,
            "churn",
            self.version.version,
            &RuntimeOptions::default(),
        )
        .await
    }

    async fn rejection(&self) -> String {
        match self.load().await {
            Err(RuntimeError::Verification(reason)) => reason,
            other => panic!("expected a verification error, got {other:?}"),
        }
    }
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
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
async fn verified_version_loads() {
    let fixture = registered().await;
    let loaded = fixture.load().await.unwrap();
    assert_eq!(loaded.format, ModelFormat::Native);
    assert_eq!(loaded.model_file, "model.ghaf");
    let outputs = loaded
        .predictor
        .predict(
            &[Tensor::new(
                "input",
                vec![2, 1],
                TensorData::Fp64(vec![0.9, -0.4]),
            )],
            &[],
        )
        .unwrap();
    let expected = vec![
        fixture.model.predict(&[0.9]),
        fixture.model.predict(&[-0.4]),
    ];
    assert_eq!(outputs[0].data, TensorData::Fp64(expected));
}

#[tokio::test]
async fn unknown_version_is_a_load_error() {
    let fixture = registered().await;
    let error = load_verified(
        &fixture.service,
        &fixture.scope,
        "churn",
        9,
        &RuntimeOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Load(message) if message.contains("version 9 is not registered")),
        "{error}"
    );
}

#[tokio::test]
async fn flipped_byte_is_rejected() {
    let fixture = registered().await;
    let entry = fixture
        .store
        .get_artifact(
            &fixture.scope,
            &format!("{}/model.ghaf", fixture.version.artifact_prefix),
        )
        .await
        .unwrap()
        .unwrap();
    let blob = find_file(&fixture.dir.path().join("blobs"), &entry.digest).expect("blob file");
    let mut content = std::fs::read(&blob).unwrap();
    content[10] ^= 0x01;
    std::fs::write(&blob, content).unwrap();

    let reason = fixture.rejection().await;
    assert!(reason.contains("model.ghaf"), "{reason}");
    let error = RuntimeError::Verification(reason);
    assert!(error.to_string().starts_with("signature check failed: "));
}

#[tokio::test]
async fn extra_file_is_rejected() {
    let fixture = registered().await;
    fixture
        .service
        .put_artifact(
            &fixture.scope,
            &format!("{}/model.onnx", fixture.version.artifact_prefix),
            stream(b"not in the manifest".to_vec()),
        )
        .await
        .unwrap();
    let reason = fixture.rejection().await;
    assert!(reason.contains("model.onnx"), "{reason}");
}

#[tokio::test]
async fn wrong_signer_is_rejected() {
    let fixture = registered().await;
    let manifest: ArtifactManifest =
        serde_json::from_str(&fixture.version.manifest.manifest).unwrap();
    let forged = SignedManifest::sign(&manifest, &SigningKey::from_bytes(&[7; 32])).unwrap();
    let db = fixture.store.db();
    sqlx::query(db.sql(
        "UPDATE registry_versions SET manifest = ?, manifest_signature = ?, signing_key_id = ?",
    ))
    .bind(&forged.manifest)
    .bind(&forged.signature)
    .bind(&forged.key_id)
    .execute(db.pool())
    .await
    .unwrap();

    let reason = fixture.rejection().await;
    assert!(reason.contains("does not verify"), "{reason}");
}

/// A metadata store that fails while a version is fetched is a transient error: the model
/// cache retries it after a backoff instead of remembering it.
#[tokio::test]
async fn store_failure_is_transient_and_retried() {
    let fixture = Arc::new(registered().await);
    fixture.db.close().await;

    let error = fixture.load().await.unwrap_err();
    assert!(matches!(error, RuntimeError::Internal(_)), "{error:?}");
    assert!(error.is_transient());

    let cache = ghaf_runtime::ModelCache::new(4);
    let key = ghaf_runtime::ModelKey {
        tenant: fixture.scope.tenant.to_string(),
        project: fixture.scope.project.to_string(),
        model: "churn".into(),
        version: fixture.version.version,
        options: RuntimeOptions::default(),
    };
    let loading = fixture.clone();
    let result = cache
        .get_or_load(&key, move || async move { loading.load().await })
        .await;
    assert!(
        matches!(result, Err(RuntimeError::Internal(_))),
        "{result:?}"
    );
    let state = cache.state(&key).unwrap();
    assert!(
        matches!(state, ghaf_runtime::ModelState::Backoff { failures: 1, .. }),
        "{state:?}"
    );
    assert!(cache.retry_after(&key).is_some());
}
