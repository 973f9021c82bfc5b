//! Shared fixtures: stores on SQLite or PostgreSQL, a tenant and project, a model trained by
//! ghaf-train and registered with a signed manifest.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ghaf_blob::{BlobConfig, BlobStore};
use ghaf_core::{Name, PrincipalId, TenantId};
use ghaf_ingest::IngestService;
use ghaf_meta::{MetaStore, SqlMetaStore};
use ghaf_serving::loader::{LoadError, LoadedModel, ModelLoader, RegistryLoader};
use ghaf_serving::{EndpointScope, ServingService};
use ghaf_tracking::{
    FileKeyStore, NewLoggedModel, NewRun, RegisterVersion, Scope, SqlTrackingStore,
    TrackingService, TrackingStore,
};
use ghaf_train::{Column, Dataset, GbdtParams, Model, train_gbdt};

pub struct Env {
    pub meta: SqlMetaStore,
    pub scope: EndpointScope,
    pub project_name: String,
    pub tracking: TrackingService,
    pub tracking_store: Arc<SqlTrackingStore>,
    pub ingest: IngestService,
    pub features: Arc<ghaf_features::FeatureStore>,
    pub serving: ServingService,
    pub dir: tempfile::TempDir,
}

pub async fn env(meta: SqlMetaStore) -> Env {
    env_with_loader(meta, |loader| Arc::new(loader)).await
}

/// Like [`env`], with the registry loader wrapped by `wrap` (to count or fail loads).
pub async fn env_with_loader(
    meta: SqlMetaStore,
    wrap: impl FnOnce(RegistryLoader) -> Arc<dyn ModelLoader>,
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::new(Name::parse("acme").unwrap());
    meta.create_tenant(&tenant, "test tenant").await.unwrap();
    let project = meta
        .create_project(
            &tenant,
            &Name::parse("fraud").unwrap(),
            "",
            &PrincipalId::from_stored("alice"),
        )
        .await
        .unwrap();
    let db = meta.db().clone();
    let blobs = BlobStore::from_config(&BlobConfig::Local {
        root: dir.path().join("blobs"),
    })
    .unwrap();
    let tracking_store = Arc::new(SqlTrackingStore::new(db.clone()));
    let tracking = TrackingService::new(
        tracking_store.clone(),
        blobs.clone(),
        FileKeyStore::new(dir.path().join("keys")),
    );
    let ingest = IngestService::new(
        ghaf_ingest::DatasetStore::new(db.clone()),
        blobs,
        dir.path().join("staging"),
    );
    let online = Arc::new(
        ghaf_features::online::RedbOnlineStore::open(&dir.path().join("online.redb")).unwrap(),
    );
    let features = Arc::new(ghaf_features::FeatureStore::new(
        ghaf_features::FeatureDb::new(db.clone()),
        ingest.clone(),
        online,
    ));
    let serving = ServingService::new(
        db,
        wrap(RegistryLoader::new(tracking.clone())),
        ingest.clone(),
        Some(features.clone()),
        None,
    );
    Env {
        meta,
        scope: EndpointScope {
            tenant,
            project: project.id,
        },
        project_name: project.name,
        tracking,
        tracking_store,
        ingest,
        features,
        serving,
        dir,
    }
}

/// A GBDT over `amount` and `age` whose label is `amount > 0.5`.
pub fn trained_model() -> Model {
    let rows = 300;
    let amount: Vec<f64> = (0..rows).map(|i| (i as f64 * 0.37).sin()).collect();
    let age: Vec<f64> = (0..rows).map(|i| (i % 50) as f64).collect();
    let label: Vec<f64> = amount.iter().map(|&v| f64::from(v > 0.5)).collect();
    let data = Dataset::new(
        vec![Column::f64("amount", amount), Column::f64("age", age)],
        label,
    )
    .unwrap();
    let params = GbdtParams {
        n_estimators: 8,
        ..GbdtParams::default()
    };
    Model::Gbdt(train_gbdt(&data, None, &params).unwrap().model)
}

pub fn scope(env: &Env) -> Scope {
    Scope {
        tenant: env.scope.tenant.clone(),
        project: env.scope.project.clone(),
    }
}

/// Registers `model` as a signed version of `name`, as the built-in training job does.
pub async fn register(env: &Env, name: &str, model: &Model) -> (i64, String) {
    let scope = scope(env);
    let run = env
        .tracking_store
        .create_run(&scope, &NewRun::default())
        .await
        .unwrap();
    let logged = env
        .tracking_store
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
    let files = [
        (
            "MLmodel",
            b"flavors:\n  ghaf:\n    model_file: model.ghaf\n".to_vec(),
        ),
        ("model.ghaf", model.to_bytes()),
    ];
    for (file, content) in files {
        env.tracking
            .put_artifact(
                &scope,
                &format!("{prefix}/{file}"),
                futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(content))]),
            )
            .await
            .unwrap();
    }
    match env
        .tracking_store
        .create_registered_model(&scope, name, "", "alice", &[])
        .await
    {
        Ok(_) | Err(ghaf_tracking::TrackingError::AlreadyExists { .. }) => {}
        Err(error) => panic!("{error}"),
    }
    let version = env
        .tracking
        .register_version(
            &scope,
            &RegisterVersion {
                name: name.into(),
                source: format!("models:/{}", logged.model_id),
                run_id: run.info.run_id.clone(),
                model_id: logged.model_id.clone(),
                ..RegisterVersion::default()
            },
        )
        .await
        .unwrap();
    (version.version, version.artifact_prefix)
}

/// Waits until the endpoint's variant leaves `loading`; returns its state.
pub async fn settled(env: &Env, endpoint: &str) -> ghaf_serving::VariantStatus {
    for _ in 0..600 {
        let info = env.serving.get(&env.scope, endpoint).await.unwrap();
        if info.status[0].state != "loading" {
            return info.status[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("endpoint {endpoint} still loading");
}

/// Check run before each load with the model name and the zero-based load count; an error
/// it returns fails that load.
pub type BeforeLoad = Box<dyn Fn(&str, usize) -> Result<(), LoadError> + Send + Sync>;

/// Change applied to each loaded model, such as a predictor that stalls.
pub type AfterLoad = Box<dyn Fn(&str, LoadedModel) -> LoadedModel + Send + Sync>;

/// The registry loader with hooks around each load, which counts every load in `loads`.
pub struct HookedLoader {
    inner: RegistryLoader,
    loads: Arc<AtomicUsize>,
    before: BeforeLoad,
    after: AfterLoad,
}

impl HookedLoader {
    pub fn new(inner: RegistryLoader, loads: Arc<AtomicUsize>) -> Self {
        Self {
            inner,
            loads,
            before: Box::new(|_, _| Ok(())),
            after: Box::new(|_, loaded| loaded),
        }
    }

    pub fn before_load(
        mut self,
        hook: impl Fn(&str, usize) -> Result<(), LoadError> + Send + Sync + 'static,
    ) -> Self {
        self.before = Box::new(hook);
        self
    }

    pub fn after_load(
        mut self,
        hook: impl Fn(&str, LoadedModel) -> LoadedModel + Send + Sync + 'static,
    ) -> Self {
        self.after = Box::new(hook);
        self
    }
}

#[async_trait::async_trait]
impl ModelLoader for HookedLoader {
    async fn check_exists(
        &self,
        scope: &ghaf_tracking::Scope,
        model: &str,
        version: i64,
    ) -> Result<(), LoadError> {
        self.inner.check_exists(scope, model, version).await
    }

    async fn resolve_alias(
        &self,
        scope: &ghaf_tracking::Scope,
        model: &str,
        alias: &str,
    ) -> Result<i64, LoadError> {
        self.inner.resolve_alias(scope, model, alias).await
    }

    async fn load(
        &self,
        scope: &ghaf_tracking::Scope,
        model: &str,
        version: i64,
        execution_provider: &str,
    ) -> Result<LoadedModel, LoadError> {
        let attempt = self.loads.fetch_add(1, Ordering::SeqCst);
        (self.before)(model, attempt)?;
        let loaded = self
            .inner
            .load(scope, model, version, execution_provider)
            .await?;
        Ok((self.after)(model, loaded))
    }
}
