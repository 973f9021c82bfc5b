//! A job system on a fresh SQLite store, local blob store and signing keys in a temporary
//! directory, with tenant `acme`, project `p`, user `alice` and a dataset `synthetic` whose
//! version 1 has numeric, categorical and label columns.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ghaf_blob::{BlobConfig, BlobStore};
use ghaf_core::{Name, ProjectId, TenantId};
use ghaf_ingest::{
    DatasetSchema, DatasetStore, IngestInput, IngestService, InputFormat, ReadOptions,
};
use ghaf_jobs::executor::Services;
use ghaf_jobs::executor::builtin::BuiltinExecutor;
use ghaf_jobs::executor::command::CommandExecutor;
use ghaf_jobs::worker::{Worker, WorkerConfig};
use ghaf_jobs::{Job, JobSpec, JobState, JobStore};
use ghaf_meta::{Db, MetaStore, NewPrincipal, PrincipalKind, SqlMetaStore};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub meta: Arc<SqlMetaStore>,
    pub services: Services,
    pub tenant: TenantId,
    pub project: ProjectId,
    /// Principal id of `alice`, the creator of the test jobs.
    pub alice: String,
}

const SCHEMA: &str = "columns:\n  - {name: x1, type: float}\n  - {name: x2, type: float}\n  - {name: city, type: string}\n  - {name: flag, type: boolean}\n  - {name: label, type: integer}\n  - {name: y, type: float}\n";

/// Writes `rows` rows of a deterministic synthetic table: `label` depends on x1, x2 and the
/// city; `y` is a noisy linear function of them.
fn synthetic_csv(rows: usize, seed: u64) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64) / ((1u64 << 53) as f64)
    };
    let cities = ["dubai", "abu-dhabi", "sharjah", "ajman"];
    let effects = [0.8, -0.6, 0.3, -1.0];
    let mut text = String::from("x1,x2,city,flag,label,y\n");
    for _ in 0..rows {
        let x1 = uniform() * 4.0 - 2.0;
        let x2 = uniform() * 4.0 - 2.0;
        let city = (uniform() * 4.0) as usize % 4;
        let flag = uniform() < 0.3;
        let noise = uniform() - 0.5;
        let score =
            1.2 * x1 - 0.8 * x2 * x2 + effects[city] + if flag { 0.5 } else { 0.0 } + noise * 1.5;
        let label = u8::from(score > 0.0);
        let y = 3.0 * x1 - 2.0 * x2 + effects[city] * 4.0 + noise;
        let x2_text = if uniform() < 0.05 {
            String::new()
        } else {
            format!("{x2:.5}")
        };
        text.push_str(&format!(
            "{x1:.5},{x2_text},{},{flag},{label},{y:.5}\n",
            cities[city]
        ));
    }
    text
}

pub async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let db = Db::connect(&url, 8).await.expect("open sqlite");
    let meta = Arc::new(SqlMetaStore::new(
        db.clone(),
        b"jobs-test-audit-key-0123456789abcdef".to_vec(),
    ));
    let tenant = TenantId::new(Name::parse("acme").unwrap());
    meta.create_tenant(&tenant, "Acme").await.unwrap();
    let alice = meta
        .create_principal(
            &tenant,
            &NewPrincipal {
                kind: PrincipalKind::User,
                name: Name::parse("alice").unwrap(),
                email: None,
                platform_admin: false,
            },
        )
        .await
        .unwrap();
    let project = meta
        .create_project(&tenant, &Name::parse("p").unwrap(), "", &alice.id)
        .await
        .unwrap();
    let blobs = BlobStore::from_config(&BlobConfig::Local {
        root: dir.path().join("blobs"),
    })
    .expect("blob store");
    let ingest = IngestService::new(
        DatasetStore::new(db.clone()),
        blobs.clone(),
        dir.path().join("staging"),
    );
    let tracking = ghaf_tracking::TrackingService::new(
        Arc::new(ghaf_tracking::SqlTrackingStore::new(db.clone())),
        blobs.clone(),
        ghaf_tracking::FileKeyStore::new(dir.path().join("keys")),
    );
    let services = Services {
        jobs: JobStore::new(db),
        meta: meta.clone(),
        blobs,
        ingest,
        tracking,
        features: None,
        checkpoint_observer: None,
    };
    let harness = Harness {
        dir,
        meta,
        services,
        tenant,
        project: project.id,
        alice: alice.id.as_str().to_owned(),
    };
    harness.ingest("synthetic", &synthetic_csv(3_000, 7)).await;
    harness
}

impl Harness {
    /// Creates the dataset when missing and ingests `csv` as its next version.
    pub async fn ingest(&self, name: &str, csv: &str) -> i64 {
        let service = &self.services.ingest;
        let dataset = match service
            .store()
            .get_dataset(&self.tenant, &self.project, name)
            .await
        {
            Ok(dataset) => dataset,
            Err(_) => service
                .create_dataset(
                    &self.tenant,
                    &self.project,
                    name,
                    "",
                    &DatasetSchema::from_yaml(SCHEMA).unwrap(),
                    "alice",
                )
                .await
                .unwrap(),
        };
        let path = self.dir.path().join(format!("{name}-{}.csv", uuid_like()));
        std::fs::write(&path, csv).unwrap();
        let mut options = ReadOptions::new(InputFormat::Csv);
        options.null_values = vec![String::new()];
        let outcome = service
            .ingest(
                &dataset,
                "p",
                IngestInput {
                    path: &path,
                    options: &options,
                    source: "test",
                    progress: None,
                },
                "alice",
            )
            .await
            .expect("ingest");
        outcome.version.version
    }

    pub fn worker_config(&self, id: &str) -> WorkerConfig {
        WorkerConfig {
            id: id.to_owned(),
            slots: 2,
            gpus: 0,
            poll_interval: Duration::from_millis(50),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_millis(100),
            shutdown_grace: Duration::from_secs(30),
            work_dir: self.dir.path().join("work").join(id),
        }
    }

    /// Builds a worker with the built-in and command executors on `services`.
    pub fn worker(&self, id: &str, services: Services) -> Arc<Worker> {
        Arc::new(
            Worker::new(self.worker_config(id), services)
                .with_executor("builtin", Arc::new(BuiltinExecutor))
                .with_executor(
                    "command",
                    Arc::new(CommandExecutor::new("http://127.0.0.1:1")),
                ),
        )
    }

    pub async fn submit(&self, spec: serde_json::Value) -> Job {
        let spec = JobSpec::from_json(spec).expect("valid spec");
        self.services
            .jobs
            .submit(
                &self.tenant,
                &self.project,
                &spec,
                &self.alice,
                ghaf_core::now_millis(),
            )
            .await
            .expect("submit")
    }

    pub async fn job(&self, id: &str) -> Job {
        self.services
            .jobs
            .get(&self.tenant, &self.project, id)
            .await
            .unwrap()
    }

    /// Claims and runs attempts on `worker` until none is due, then returns the job.
    pub async fn run_to_end(&self, worker: &Worker, id: &str) -> Job {
        for _ in 0..20 {
            let job = self.job(id).await;
            if job.state.is_terminal() {
                return job;
            }
            match worker.claim().await.unwrap() {
                Some((job, lease)) => {
                    let (_keep, interrupt) = tokio::sync::watch::channel(false);
                    worker.run_attempt(job, lease, interrupt).await;
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let job = self.job(id).await;
        assert_eq!(
            job.state,
            JobState::Succeeded,
            "job did not finish: {job:?}"
        );
        job
    }

    pub async fn log_text(&self, id: &str) -> String {
        self.services
            .jobs
            .read_logs(&self.tenant, &self.project, id, 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|chunk| format!("[{}] {}", chunk.stream.as_str(), chunk.content))
            .collect()
    }

    pub fn scope(&self) -> ghaf_tracking::Scope {
        ghaf_tracking::Scope {
            tenant: self.tenant.clone(),
            project: self.project.clone(),
        }
    }

    /// Reads the native model file logged by a job's run.
    pub async fn model_bytes(&self, job: &Job) -> Vec<u8> {
        use futures::TryStreamExt;
        let run_id = job.result.as_ref().unwrap()["run_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let run = self
            .services
            .tracking
            .store()
            .get_run(&self.scope(), &run_id)
            .await
            .unwrap();
        let root = ghaf_tracking::artifact_uri_path(&run.info.artifact_uri).unwrap();
        let content = self
            .services
            .tracking
            .open_artifact(&self.scope(), &format!("{root}/model/model.ghaf"))
            .await
            .unwrap();
        content
            .stream
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await
            .unwrap()
    }
}

fn uuid_like() -> String {
    format!("{}", ghaf_core::now_millis())
        + &format!("{:?}", std::time::Instant::now()).len().to_string()
}

pub fn gbdt_spec(name: &str, parameters: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "kind": {"type": "builtin", "trainer": "gbdt", "checkpoint_every": 5},
        "inputs": [{"type": "dataset_version", "dataset": "synthetic", "version": 1}],
        "label": "label",
        "parameters": parameters,
    })
}
