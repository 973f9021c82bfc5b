//! Wiring of the job system: the services the executors use, and the worker that `ghaf
//! server` runs in its process (unless `jobs.worker = false`) and `ghaf worker` runs alone.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ghaf_jobs::executor::Services;
use ghaf_jobs::executor::builtin::BuiltinExecutor;
use ghaf_jobs::executor::command::CommandExecutor;
use ghaf_jobs::executor::kubernetes::KubernetesExecutor;
use ghaf_jobs::worker::{Worker, WorkerConfig};
use ghaf_meta::{Db, MetaStore};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::state::AppState;

/// Builds the services of the job system from the server's stores.
pub fn job_services(
    db: Db,
    meta: Arc<dyn MetaStore>,
    blobs: ghaf_blob::BlobStore,
    ingest: ghaf_ingest::IngestService,
    tracking: ghaf_tracking::TrackingService,
    features: Option<Arc<ghaf_features::FeatureStore>>,
) -> Services {
    Services {
        jobs: ghaf_jobs::JobStore::new(db),
        meta,
        blobs,
        ingest,
        tracking,
        features,
        checkpoint_observer: None,
    }
}

/// Returns the tracking URI given to command and Kubernetes jobs: `jobs.tracking_uri`, or
/// the server's own address with a wildcard host replaced by the loopback address.
pub fn tracking_uri(config: &ServerConfig) -> String {
    if !config.jobs.tracking_uri.is_empty() {
        return config.jobs.tracking_uri.clone();
    }
    let listen = config.listen;
    let host = if listen.ip().is_unspecified() {
        if listen.is_ipv4() {
            "127.0.0.1".to_owned()
        } else {
            "[::1]".to_owned()
        }
    } else if listen.is_ipv6() {
        format!("[{}]", listen.ip())
    } else {
        listen.ip().to_string()
    };
    format!("http://{host}:{}", listen.port())
}

/// Builds a worker with the built-in executor, the command executor when
/// `jobs.allow_commands` is true, and the Kubernetes executor when `jobs.kubernetes` is set.
pub fn build_worker(state: &AppState, id: Option<String>) -> anyhow::Result<Arc<Worker>> {
    let config = state.config();
    let services = state
        .job_services()
        .cloned()
        .context("the job system is not configured on this server")?;
    let jobs = &config.jobs;
    let mut worker_config = WorkerConfig::new(config.data_dir.join("jobs").join("work"));
    if let Some(id) = id {
        worker_config.id = id;
    }
    worker_config.slots = jobs.slots.max(1);
    worker_config.gpus = jobs.gpus;
    worker_config.poll_interval = Duration::from_millis(jobs.poll_ms.max(10));
    worker_config.lease = Duration::from_secs(jobs.lease_seconds.max(2));
    worker_config.heartbeat = Duration::from_secs(jobs.heartbeat_seconds.max(1));
    anyhow::ensure!(
        jobs.heartbeat_seconds < jobs.lease_seconds,
        "jobs.heartbeat_seconds ({}) must be below jobs.lease_seconds ({}), or leases expire \
         while jobs run",
        jobs.heartbeat_seconds,
        jobs.lease_seconds
    );
    let mut worker = Worker::new(worker_config, services)
        .with_executor("builtin", Arc::new(BuiltinExecutor))
        .with_executor(
            "batch_score",
            Arc::new(ghaf_jobs::executor::batch_score::BatchScoreExecutor),
        );
    if jobs.allow_commands {
        worker = worker.with_executor(
            "command",
            Arc::new(CommandExecutor::new(tracking_uri(config))),
        );
    }
    if let Some(kubernetes) = &jobs.kubernetes {
        let mut kubernetes = kubernetes.clone();
        if kubernetes.tracking_uri.is_empty() {
            kubernetes.tracking_uri = tracking_uri(config);
        }
        let executor = KubernetesExecutor::new(kubernetes).map_err(anyhow::Error::msg)?;
        worker = worker.with_executor("kubernetes", Arc::new(executor));
    }
    Ok(Arc::new(worker))
}

/// A worker running in a task, stopped by [`RunningWorker::stop`].
pub struct RunningWorker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    /// Interrupts running attempts (they go back to the queue) and waits for the worker.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the job worker task failed");
        }
    }
}

/// Starts the in-process worker when `jobs.worker` is true.
pub fn start_in_process_worker(state: &AppState) -> anyhow::Result<Option<RunningWorker>> {
    if !state.config().jobs.worker {
        tracing::info!("in-process job worker is off (jobs.worker = false)");
        return Ok(None);
    }
    let worker = build_worker(state, None)?;
    let (stop, receiver) = watch::channel(false);
    let task = tokio::spawn(worker.run(receiver));
    Ok(Some(RunningWorker { stop, task }))
}
