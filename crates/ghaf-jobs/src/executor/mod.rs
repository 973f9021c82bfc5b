//! Executors run one attempt of a job: [`builtin`] trains in the worker process,
//! [`command`] runs a local program, [`kubernetes`] creates a `batch/v1` Job and follows it.
//!
//! An executor receives a [`JobContext`] with the job, its lease, a log sink and a stop
//! signal, and returns the job's result or an [`ExecError`]. It must return soon after the
//! stop signal fires, with [`ExecError::Stopped`].

pub mod batch_score;
pub mod builtin;
pub mod command;
mod data;
pub mod kubernetes;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use ghaf_blob::BlobStore;
use ghaf_core::audit::{AuditOutcome, NewAuditEntry};
use ghaf_meta::MetaStore;
use tokio::sync::{mpsc, watch};

use crate::{Job, JobInput, JobStore, Lease, LogStream};

pub use data::{TrainingTable, read_training_table};

/// Reason for stopping a running attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A user cancelled the job.
    Cancelled,
    /// The worker is shutting down (SIGTERM, such as a spot reclaim); the job is requeued.
    Interrupted,
    /// The worker lost the lease; another attempt may already run.
    LeaseLost,
}

/// Error of an attempt.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("stopped: {0:?}")]
    Stopped(StopReason),
    /// A failure; `retryable` failures are tried again while attempts remain.
    #[error("{message}")]
    Failed { message: String, retryable: bool },
}

impl ExecError {
    /// Creates a failure that a retry cannot fix, such as an invalid label column.
    pub fn permanent(message: impl Into<String>) -> Self {
        ExecError::Failed {
            message: message.into(),
            retryable: false,
        }
    }

    /// Creates a failure that may pass on another attempt, such as a lost connection.
    pub fn transient(message: impl Into<String>) -> Self {
        ExecError::Failed {
            message: message.into(),
            retryable: true,
        }
    }
}

/// Sends log lines of an attempt to the writer task that stores them in chunks.
#[derive(Clone, Debug)]
pub struct LogSink {
    sender: mpsc::UnboundedSender<(LogStream, String)>,
}

impl LogSink {
    pub(crate) fn new(sender: mpsc::UnboundedSender<(LogStream, String)>) -> Self {
        Self { sender }
    }

    /// Appends `text` to the job log; a newline is added when missing.
    pub fn write(&self, stream: LogStream, text: impl Into<String>) {
        let mut text = text.into();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        // The writer task outlives every sink; a closed channel means the attempt ended.
        let _ = self.sender.send((stream, text));
    }

    /// Appends a line of the worker's own (`system` stream).
    pub fn system(&self, text: impl Into<String>) {
        self.write(LogStream::System, text);
    }
}

/// A checkpoint reported to a [`Services::checkpoint_observer`].
pub struct CheckpointEvent<'a> {
    pub job: &'a Job,
    pub progress: u64,
    /// Becomes true once the attempt has been asked to stop.
    pub stop_requested: &'a AtomicBool,
}

/// Called after every stored checkpoint, on the training thread; the attempt waits for it.
pub type CheckpointObserver = Arc<dyn Fn(&CheckpointEvent<'_>) + Send + Sync>;

/// Stores and services the executors use.
#[derive(Clone)]
pub struct Services {
    pub jobs: JobStore,
    pub meta: Arc<dyn MetaStore>,
    pub blobs: BlobStore,
    pub ingest: ghaf_ingest::IngestService,
    pub tracking: ghaf_tracking::TrackingService,
    /// The feature store that builds training sets for feature-service inputs; a worker
    /// without it fails such jobs with a clear error.
    pub features: Option<Arc<ghaf_features::FeatureStore>>,
    /// Observes stored checkpoints; tests use it to interrupt training at a known point.
    pub checkpoint_observer: Option<CheckpointObserver>,
}

impl Services {
    /// Appends an entry to the tenant's audit chain for a decision the worker took on the
    /// job's behalf, recorded with the job's creator as actor and the job id as request id.
    /// A failed append is logged and does not fail the job.
    pub async fn audit(
        &self,
        job: &Job,
        action: &str,
        resource: String,
        details: serde_json::Value,
    ) {
        let entry = NewAuditEntry {
            tenant: job.tenant.as_str().to_owned(),
            actor: job.created_by.clone(),
            action: action.to_owned(),
            resource,
            outcome: AuditOutcome::Success,
            status: 200,
            request_id: format!("job-{}", job.id),
            time: ghaf_core::now_millis(),
            details,
        };
        if let Err(error) = self.meta.append_audit(&entry).await {
            tracing::error!(
                job = %job.id,
                tenant = %job.tenant,
                action,
                %error,
                entry = ?entry,
                "cannot append the audit entry of a job decision"
            );
        }
    }

    /// Downloads the Parquet file of an input: a dataset version, or the training set that
    /// the feature store builds for a feature-service input.
    pub async fn read_input(
        &self,
        job: &Job,
        input: &JobInput,
    ) -> Result<(bytes::Bytes, String), ExecError> {
        let (dataset, version) = match input {
            JobInput::DatasetVersion { dataset, version } => (dataset.clone(), *version),
            JobInput::FeatureService { .. } => self.build_training_set(job, input).await?,
        };
        let dataset = &dataset;
        let version = &version;
        let store = self.ingest.store();
        let found = store
            .get_dataset(&job.tenant, &job.project, dataset)
            .await
            .map_err(|error| input_error(error, input))?;
        let stored = store
            .get_version(&job.tenant, &found.id, *version)
            .await
            .map_err(|error| input_error(error, input))?;
        let digest = stored.content_digest.parse().map_err(|_| {
            ExecError::permanent(format!(
                "dataset version {} has an invalid content digest",
                input.reference()
            ))
        })?;
        let bytes = self
            .blobs
            .get(&job.tenant, &digest)
            .await
            .map_err(|error| {
                ExecError::transient(format!("cannot read {}: {error}", input.reference()))
            })?;
        Ok((bytes, stored.content_digest))
    }
}

impl Services {
    /// Builds the point-in-time training set of a feature-service input as a new version of
    /// `<feature_service>-training-set` and returns that dataset and version.
    async fn build_training_set(
        &self,
        job: &Job,
        input: &JobInput,
    ) -> Result<(String, i64), ExecError> {
        let JobInput::FeatureService {
            feature_service,
            entity_dataset,
            entity_version,
        } = input
        else {
            return Err(ExecError::permanent(format!(
                "input {} is not a feature-service input",
                input.reference()
            )));
        };
        let Some(features) = &self.features else {
            return Err(ExecError::permanent(format!(
                "input {} needs the feature store, and this worker runs without one",
                input.reference()
            )));
        };
        let project = self
            .meta
            .get_project(&job.tenant, &job.project)
            .await
            .map_err(|error| {
                ExecError::transient(format!("cannot read the job's project: {error}"))
            })?
            .ok_or_else(|| ExecError::permanent("the job's project no longer exists"))?;
        let output_dataset = format!("{feature_service}-training-set");
        let request = ghaf_features::TrainingSetRequest {
            entities: ghaf_features::EntitySource::Dataset {
                name: entity_dataset.clone(),
                version: Some(*entity_version),
            },
            selection: ghaf_features::FeatureSelection {
                features: None,
                feature_service: Some(feature_service.clone()),
            },
            timestamp_column: None,
            full_feature_names: false,
            output_dataset: output_dataset.clone(),
        };
        let outcome = features
            .training_set(
                &job.tenant,
                &job.project,
                &project.name,
                request,
                &job.created_by,
            )
            .await
            .map_err(|error| {
                let message = format!(
                    "cannot build the training set of input {}: {error}",
                    input.reference()
                );
                match error.code() {
                    ghaf_core::ErrorCode::Unavailable | ghaf_core::ErrorCode::Internal => {
                        ExecError::transient(message)
                    }
                    _ => ExecError::permanent(message),
                }
            })?;
        Ok((output_dataset, outcome.version.version))
    }
}

fn input_error(error: ghaf_ingest::IngestError, input: &JobInput) -> ExecError {
    let message = format!("cannot open input {}: {error}", input.reference());
    match error.code() {
        ghaf_core::ErrorCode::NotFound | ghaf_core::ErrorCode::InvalidArgument => {
            ExecError::permanent(message)
        }
        _ => ExecError::transient(message),
    }
}

/// Everything an executor gets for one attempt.
pub struct JobContext {
    pub job: Job,
    pub lease: Lease,
    pub log: LogSink,
    pub stop: watch::Receiver<Option<StopReason>>,
    /// Scratch directory of this attempt, removed when it ends.
    pub work_dir: PathBuf,
    pub services: Services,
}

impl JobContext {
    /// Returns the stop reason once one is set.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }

    /// Completes when the attempt is asked to stop, with the reason.
    pub async fn stopped(&self) -> StopReason {
        let mut stop = self.stop.clone();
        loop {
            if let Some(reason) = *stop.borrow_and_update() {
                return reason;
            }
            if stop.changed().await.is_err() {
                // The worker dropped the sender, which it does only when it is going away.
                return StopReason::Interrupted;
            }
        }
    }
}

/// Runs attempts of one job kind.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs the attempt and returns the job's result document.
    async fn run(&self, context: &JobContext) -> Result<serde_json::Value, ExecError>;
}
