//! A feature store on a fresh metadata database (SQLite in a temporary directory, or a
//! PostgreSQL database of its own), a local blob store and the embedded online store, with
//! tenant `acme` and project `p`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use ghaf_blob::{BlobConfig, BlobStore};
use ghaf_core::{Name, PrincipalId, ProjectId, TenantId};
use ghaf_features::online::RedbOnlineStore;
use ghaf_features::{Definitions, FeatureDb, FeatureStore};
use ghaf_ingest::{
    DatasetSchema, DatasetStore, DatasetVersion, IngestInput, IngestService, InputFormat,
    ReadOptions,
};
use ghaf_meta::{Db, MetaStore, SqlMetaStore};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub struct Harness {
    pub store: FeatureStore,
    pub ingest: IngestService,
    pub tenant: TenantId,
    pub project: ProjectId,
    pub dir: tempfile::TempDir,
    pub pg: Option<ghaf_meta::testing::PgGuard>,
}

async fn build(db: Db, dir: tempfile::TempDir, pg: Option<ghaf_meta::testing::PgGuard>) -> Harness {
    let meta = SqlMetaStore::new(db.clone(), b"features-test-key".to_vec());
    let tenant = TenantId::new(Name::parse("acme").unwrap());
    meta.create_tenant(&tenant, "Acme").await.unwrap();
    let project = meta
        .create_project(
            &tenant,
            &Name::parse("p").unwrap(),
            "",
            &PrincipalId::from_stored("tester"),
        )
        .await
        .unwrap();
    let blobs = BlobStore::from_config(&BlobConfig::Local {
        root: dir.path().join("blobs"),
    })
    .unwrap();
    let ingest = IngestService::new(
        DatasetStore::new(db.clone()),
        blobs,
        dir.path().join("staging"),
    );
    let online = RedbOnlineStore::open(&dir.path().join("online").join("features.redb")).unwrap();
    let store = FeatureStore::new(FeatureDb::new(db), ingest.clone(), Arc::new(online));
    Harness {
        store,
        ingest,
        tenant,
        project: project.id,
        dir,
        pg,
    }
}

pub async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let db = Db::connect(&url, 4).await.unwrap();
    build(db, dir, None).await
}

pub async fn postgres() -> Harness {
    let (meta, guard) = ghaf_meta::testing::postgres_store().await;
    let dir = tempfile::tempdir().unwrap();
    build(meta.db().clone(), dir, Some(guard)).await
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn csv_options() -> ReadOptions {
    let mut options = ReadOptions::new(InputFormat::Csv);
    options.null_values = vec![String::new(), "NA".into()];
    options
}

impl Harness {
    pub async fn finish(self) {
        if let Some(pg) = self.pg {
            pg.drop_database().await;
        }
    }

    /// Creates a dataset from a schema document and ingests one file into it.
    pub async fn dataset(
        &self,
        name: &str,
        schema_yaml: &str,
        path: &Path,
        options: &ReadOptions,
    ) -> DatasetVersion {
        let schema = DatasetSchema::from_yaml(schema_yaml).unwrap();
        let dataset = match self
            .ingest
            .store()
            .get_dataset(&self.tenant, &self.project, name)
            .await
        {
            Ok(dataset) => dataset,
            Err(_) => self
                .ingest
                .create_dataset(&self.tenant, &self.project, name, "", &schema, "tester")
                .await
                .unwrap(),
        };
        let source = path.display().to_string();
        self.ingest
            .ingest(
                &dataset,
                "p",
                IngestInput {
                    path,
                    options,
                    source: &source,
                    progress: None,
                },
                "tester",
            )
            .await
            .unwrap()
            .version
    }

    /// Writes `content` to a file of the harness directory and returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Plans and applies `definitions` as the user `tester`.
    pub async fn apply(&self, definitions: &Definitions) {
        let plan = self
            .store
            .plan(&self.tenant, &self.project, definitions)
            .await
            .unwrap();
        self.store
            .apply(&self.tenant, &self.project, &plan, "tester")
            .await
            .unwrap();
    }

    /// Reads a stored dataset version into one batch.
    pub async fn read_version(&self, version: &DatasetVersion) -> RecordBatch {
        let digest = IngestService::digest(&version.content_digest).unwrap();
        let bytes = self
            .ingest
            .blobs()
            .get(&self.tenant, &digest)
            .await
            .unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let schema = arrow::array::RecordBatchReader::schema(&reader);
        let batches: Vec<_> = reader.map(Result::unwrap).collect();
        concat_batches(&schema, &batches).unwrap()
    }
}
