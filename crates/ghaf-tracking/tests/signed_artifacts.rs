//! Signed artifact manifests: a registered version verifies, and each kind of tampering is
//! rejected with an error that names it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use ghaf_blob::{BlobConfig, BlobStore};
use ghaf_meta::testing::sqlite_store;
use ghaf_tracking::conformance::scope;
use ghaf_tracking::manifest::ArtifactManifest;
use ghaf_tracking::{
    FileKeyStore, ModelVersion, NewLoggedModel, NewRun, RegisterVersion, Scope, SignedManifest,
    SqlTrackingStore, TrackingError, TrackingService, TrackingStore,
};

struct Fixture {
    service: TrackingService,
    store: Arc<SqlTrackingStore>,
    blobs: BlobStore,
    scope: Scope,
    version: ModelVersion,
    dir: tempfile::TempDir,
    _meta: tempfile::TempDir,
}

const FILES: [(&str, &[u8]); 3] = [
    ("MLmodel", b"flavors:\n  sklearn: {}\n"),
    ("model.skops", b"model weights"),
    ("conda.yaml", b"dependencies: []\n"),
];

fn stream(content: &[u8]) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::iter([Ok(Bytes::copy_from_slice(content))])
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
    let service = TrackingService::new(store.clone(), blobs.clone(), keys);
    let scope = scope("signed");

    let run = store.create_run(&scope, &NewRun::default()).await.unwrap();
    let model = store
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
    let prefix = ghaf_tracking::artifact_uri_path(&model.artifact_uri).unwrap();
    for (name, content) in FILES {
        service
            .put_artifact(&scope, &format!("{prefix}/{name}"), stream(content))
            .await
            .unwrap();
    }
    store
        .create_registered_model(&scope, "fraud", "", "alice", &[])
        .await
        .unwrap();
    let version = service
        .register_version(
            &scope,
            &RegisterVersion {
                name: "fraud".into(),
                source: format!("models:/{}", model.model_id),
                run_id: run.info.run_id.clone(),
                model_id: model.model_id.clone(),
                ..RegisterVersion::default()
            },
        )
        .await
        .unwrap();
    Fixture {
        service,
        store,
        blobs,
        scope,
        version,
        dir,
        _meta: meta_dir,
    }
}

impl Fixture {
    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.version.artifact_prefix)
    }

    async fn put(&self, name: &str, content: &[u8]) {
        self.service
            .put_artifact(&self.scope, &self.path(name), stream(content))
            .await
            .unwrap();
    }

    async fn verify(&self) -> Result<ArtifactManifest, TrackingError> {
        let version = self
            .store
            .get_model_version(&self.scope, "fraud", self.version.version)
            .await
            .unwrap();
        self.service.verify_version(&self.scope, &version).await
    }

    /// Returns the reason of a failed verification.
    async fn rejection(&self) -> String {
        match self.verify().await {
            Err(TrackingError::VerificationFailed { reason, .. }) => reason,
            other => panic!("expected a verification failure, got {other:?}"),
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
async fn untouched_version_verifies() {
    let fixture = registered().await;
    let manifest = fixture.verify().await.unwrap();
    let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["MLmodel", "conda.yaml", "model.skops"]);
    assert_eq!(manifest.model, "fraud");
    assert_eq!(manifest.version, 1);
    assert_eq!(fixture.version.manifest.key_id.len(), 16);
}

#[tokio::test]
async fn flipped_byte_is_rejected() {
    let fixture = registered().await;
    let entry = fixture
        .store
        .get_artifact(&fixture.scope, &fixture.path("model.skops"))
        .await
        .unwrap()
        .unwrap();
    let blob = find_file(&fixture.dir.path().join("blobs"), &entry.digest)
        .expect("blob file of model.skops");
    let mut content = std::fs::read(&blob).unwrap();
    content[0] ^= 0x01;
    std::fs::write(&blob, content).unwrap();

    let reason = fixture.rejection().await;
    assert!(reason.contains("model.skops"), "{reason}");
    assert!(reason.contains("does not match its digest"), "{reason}");
}

#[tokio::test]
async fn missing_file_is_rejected() {
    let fixture = registered().await;
    fixture
        .service
        .delete_artifacts(&fixture.scope, &fixture.path("conda.yaml"))
        .await
        .unwrap();
    let reason = fixture.rejection().await;
    assert!(
        reason.contains("\"conda.yaml\" of the manifest is missing"),
        "{reason}"
    );
}

#[tokio::test]
async fn missing_blob_is_rejected() {
    let fixture = registered().await;
    let entry = fixture
        .store
        .get_artifact(&fixture.scope, &fixture.path("MLmodel"))
        .await
        .unwrap()
        .unwrap();
    fixture
        .blobs
        .delete(&fixture.scope.tenant, &entry.digest.parse().unwrap())
        .await
        .unwrap();
    let reason = fixture.rejection().await;
    assert!(reason.contains("missing from the blob store"), "{reason}");
}

#[tokio::test]
async fn extra_file_is_rejected() {
    let fixture = registered().await;
    fixture.put("backdoor.py", b"import os").await;
    let reason = fixture.rejection().await;
    assert!(
        reason.contains("\"backdoor.py\" is not in the manifest"),
        "{reason}"
    );
}

#[tokio::test]
async fn swapped_file_is_rejected() {
    let fixture = registered().await;
    fixture.put("model.skops", FILES[2].1).await;
    fixture.put("conda.yaml", FILES[1].1).await;
    let reason = fixture.rejection().await;
    assert!(reason.contains("\"conda.yaml\" has digest"), "{reason}");
}

#[tokio::test]
async fn wrong_signer_is_rejected() {
    let fixture = registered().await;
    // Someone with database access records a manifest signed with a key of their own.
    let mut manifest: ArtifactManifest =
        serde_json::from_str(&fixture.version.manifest.manifest).unwrap();
    manifest.files.retain(|f| f.path != "conda.yaml");
    let forged = SignedManifest::sign(&manifest, &SigningKey::from_bytes(&[9; 32])).unwrap();
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
    assert!(
        reason.contains("does not verify with the tenant's signing key"),
        "{reason}"
    );
}

#[tokio::test]
async fn other_tenant_key_is_rejected() {
    let fixture = registered().await;
    let foreign = TrackingService::new(
        fixture.store.clone(),
        fixture.blobs.clone(),
        FileKeyStore::new(fixture.dir.path().join("other-keys")),
    );
    let version = fixture.version.clone();
    let result = foreign.verify_version(&fixture.scope, &version).await;
    assert!(
        matches!(result, Err(TrackingError::VerificationFailed { ref reason, .. }) if reason.contains("does not verify")),
        "{result:?}"
    );
}
