//! An ingest service on a fresh SQLite store and a local blob store in a temporary directory,
//! with tenant `acme` and project `p`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ghaf_blob::{BlobConfig, BlobStore};
use ghaf_core::{Name, PrincipalId, ProjectId, TenantId};
use ghaf_ingest::{
    Dataset, DatasetSchema, DatasetStore, DatasetVersion, IngestError, IngestInput, IngestOutcome,
    IngestService, InputFormat, ReadOptions,
};
use ghaf_meta::{Db, MetaStore, SqlMetaStore};

pub struct Harness {
    pub service: IngestService,
    pub tenant: TenantId,
    pub project: ProjectId,
    pub dir: tempfile::TempDir,
}

/// Opens the stores under `dir`, creating tenant `acme` and project `p` when missing.
pub async fn open(dir: &Path) -> (IngestService, TenantId, ProjectId) {
    let url = format!("sqlite://{}", dir.join("meta.db").display());
    let db = Db::connect(&url, 4).await.expect("open sqlite");
    let meta = SqlMetaStore::new(db.clone(), b"ingest-test-key".to_vec());
    let tenant = TenantId::new(Name::parse("acme").unwrap());
    if meta.get_tenant(&tenant).await.unwrap().is_none() {
        meta.create_tenant(&tenant, "Acme").await.unwrap();
    }
    let project = match meta.get_project_by_name(&tenant, "p").await.unwrap() {
        Some(project) => project,
        None => meta
            .create_project(
                &tenant,
                &Name::parse("p").unwrap(),
                "",
                &PrincipalId::from_stored("tester"),
            )
            .await
            .unwrap(),
    };
    let blobs = BlobStore::from_config(&BlobConfig::Local {
        root: dir.join("blobs"),
    })
    .expect("blob store");
    let service = IngestService::new(DatasetStore::new(db), blobs, dir.join("staging"));
    (service, tenant, project.id)
}

pub async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let (service, tenant, project) = open(dir.path()).await;
    Harness {
        service,
        tenant,
        project,
        dir,
    }
}

impl Harness {
    pub async fn create(&self, name: &str, schema_yaml: &str) -> Dataset {
        let schema = DatasetSchema::from_yaml(schema_yaml).expect("valid schema");
        self.service
            .create_dataset(&self.tenant, &self.project, name, "", &schema, "tester")
            .await
            .expect("create dataset")
    }

    pub async fn dataset(&self, name: &str) -> Dataset {
        self.service
            .store()
            .get_dataset(&self.tenant, &self.project, name)
            .await
            .expect("dataset exists")
    }

    /// Returns the stored versions of the dataset named `name`.
    pub async fn versions(&self, name: &str) -> Vec<DatasetVersion> {
        let dataset = self.dataset(name).await;
        self.service
            .store()
            .list_versions(&self.tenant, &dataset.id)
            .await
            .expect("list versions")
    }

    /// Writes `content` to a file named `file_name` in the harness directory.
    pub fn write(&self, file_name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join(file_name);
        std::fs::write(&path, content).expect("write input");
        path
    }

    pub async fn ingest(
        &self,
        dataset: &str,
        path: &Path,
        options: &ReadOptions,
    ) -> Result<IngestOutcome, IngestError> {
        let dataset = self.dataset(dataset).await;
        let source = path.display().to_string();
        self.service
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
    }

    /// Reads a blob of the tenant as text.
    pub async fn blob_text(&self, digest: &str) -> String {
        let digest = IngestService::digest(digest).unwrap();
        let bytes = self
            .service
            .blobs()
            .get(&self.tenant, &digest)
            .await
            .expect("blob exists");
        String::from_utf8(bytes.to_vec()).expect("UTF-8 blob")
    }
}

pub fn csv_options() -> ReadOptions {
    let mut options = ReadOptions::new(InputFormat::Csv);
    options.null_values = vec![String::new(), "NA".into()];
    options
}
