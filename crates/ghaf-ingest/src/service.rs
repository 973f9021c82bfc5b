//! [`IngestService`]: datasets, schema versions and the ingest of a file into an immutable,
//! content-addressed dataset version, with lineage events for every run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use ghaf_blob::{BlobStore, Sha256Digest};
use ghaf_core::{ProjectId, TenantId};
use serde::{Deserialize, Serialize};

use crate::IngestError;
use crate::lineage::{IngestRun, RunState};
use crate::pipeline::{
    IngestReport, PassInput, PassOutput, PassSettings, VersionEncoding, run_pass,
};
use crate::read::ReadOptions;
use crate::schema::{Classification, DatasetSchema, LabelChange};

/// Returns a classification as schema files write it.
fn label_name(label: Classification) -> String {
    serde_json::to_value(label)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{label:?}"))
}
use crate::store::{
    Dataset, DatasetStore, DatasetVersion, LineageFilter, SchemaVersion, StoredLineageEvent,
};

/// Time limit for posting one lineage event to the external endpoint.
const LINEAGE_POST_TIMEOUT: Duration = Duration::from_secs(5);

/// Result of a successful ingest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestOutcome {
    pub version: DatasetVersion,
    /// False when the dataset already had a version with the same content; that version is
    /// returned and nothing new is stored.
    pub created: bool,
    /// OpenLineage run id of this ingest.
    pub run_id: String,
    /// The checks of this run. For an existing version it can differ from the stored report
    /// only in the quarantined rows, which do not change the content address.
    pub report: IngestReport,
}

/// One input to ingest.
pub struct IngestInput<'a> {
    pub path: &'a Path,
    pub options: &'a ReadOptions,
    /// Origin of the rows, for the version record and lineage: a file path or
    /// `upload:<name>`.
    pub source: &'a str,
    /// Bytes of the input read so far, for progress reports.
    pub progress: Option<Arc<AtomicU64>>,
}

/// Datasets and ingestion for all tenants, on one metadata database and blob store.
#[derive(Clone)]
pub struct IngestService {
    store: DatasetStore,
    blobs: BlobStore,
    staging_dir: PathBuf,
    lineage_endpoint: Option<String>,
    http: Option<reqwest::Client>,
    /// Set at server shutdown: running ingests stop between two batches and store nothing.
    shutdown: Arc<AtomicBool>,
    /// Size limits of pushes, such as the largest message.
    limits: ReadLimits,
    /// Allowed object-store inputs and how to reach them.
    pub(crate) object_inputs: crate::ObjectInputConfig,
}

/// Size limits that bound the memory of one ingest or push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Largest CSV field or NDJSON line (`ingest.max_field_bytes`).
    pub max_field_bytes: usize,
    /// Largest CSV record (`ingest.max_row_bytes`).
    pub max_row_bytes: usize,
    /// Largest decoded Parquet batch (`ingest.max_batch_bytes`).
    pub max_batch_bytes: usize,
    /// Largest decoded Parquet row group (`ingest.max_row_group_bytes`).
    pub max_row_group_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_field_bytes: crate::read::DEFAULT_MAX_FIELD_BYTES,
            max_row_bytes: crate::read::DEFAULT_MAX_ROW_BYTES,
            max_batch_bytes: crate::read::DEFAULT_MAX_BATCH_BYTES,
            max_row_group_bytes: crate::read::DEFAULT_MAX_ROW_GROUP_BYTES,
        }
    }
}

impl ReadLimits {
    /// Copies the limits into read options.
    pub fn apply(&self, options: &mut ReadOptions) {
        options.max_field_bytes = self.max_field_bytes;
        options.max_row_bytes = self.max_row_bytes;
        options.max_batch_bytes = self.max_batch_bytes;
        options.max_row_group_bytes = self.max_row_group_bytes;
    }
}

/// Marks an ingest or push as cancelled when its future is dropped before it finished (the
/// client disconnected, the request timed out or a stream consumer stopped), so the blocking
/// pass stops and an ABORT run event is recorded.
pub(crate) struct DropGuard {
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) finished: bool,
    pub(crate) abort: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(abort) = self.abort.take() {
            abort();
        }
    }
}

impl IngestService {
    /// Creates the service. Running ingests keep their staging files in `staging_dir`. It
    /// must be on a local disk with room for one Parquet file and one quarantine file per
    /// running ingest.
    pub fn new(store: DatasetStore, blobs: BlobStore, staging_dir: PathBuf) -> Self {
        Self {
            store,
            blobs,
            staging_dir,
            lineage_endpoint: None,
            http: None,
            shutdown: Arc::new(AtomicBool::new(false)),
            limits: ReadLimits::default(),
            object_inputs: crate::ObjectInputConfig::default(),
        }
    }

    /// Sets the size limits of pushes. Uploads take theirs from their [`ReadOptions`]; a
    /// caller applies these to them with [`ReadLimits::apply`].
    pub fn with_limits(mut self, limits: ReadLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> ReadLimits {
        self.limits
    }

    /// Stops every running ingest and push of this service (and its clones) between two
    /// batches. They store no version and record an ABORT run event. Call it at shutdown.
    pub fn cancel_running(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }

    /// Also posts every lineage event to an OpenLineage HTTP endpoint, such as
    /// `http://127.0.0.1:5000/api/v1/lineage`. A failed post is logged and does not fail the
    /// ingest; the event stays in Ghaf's own store either way.
    pub fn with_lineage_endpoint(mut self, endpoint: Option<String>) -> Self {
        self.http = endpoint.as_ref().map(|_| {
            reqwest::Client::builder()
                .timeout(LINEAGE_POST_TIMEOUT)
                .build()
                .unwrap_or_default()
        });
        self.lineage_endpoint = endpoint;
        self
    }

    pub fn store(&self) -> &DatasetStore {
        &self.store
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn staging_dir(&self) -> &Path {
        &self.staging_dir
    }

    /// Deletes staging files older than `older_than`, left behind by ingests whose process
    /// died. Returns how many were deleted.
    pub fn clean_staging(&self, older_than: Duration) -> std::io::Result<usize> {
        let entries = match std::fs::read_dir(&self.staging_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(error),
        };
        let mut deleted = 0;
        for entry in entries {
            let entry = entry?;
            let modified = entry.metadata()?.modified()?;
            let age = SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default();
            if age >= older_than && entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, dir = %self.staging_dir.display(), "deleted stale ingest staging files");
        }
        Ok(deleted)
    }

    pub async fn create_dataset(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
        description: &str,
        schema: &DatasetSchema,
        created_by: &str,
    ) -> Result<Dataset, IngestError> {
        schema.validate()?;
        let mut schema = schema.clone();
        schema.resolve_labels(None);
        self.store
            .create_dataset(tenant, project, name, description, &schema, created_by)
            .await
    }

    /// Makes `schema` the dataset's current schema after checking that it can read the data
    /// of the current one. A column without a label keeps its current one; lowering a label
    /// is rejected (see [`IngestService::update_schema_lowering`]).
    pub async fn update_schema(
        &self,
        dataset: &Dataset,
        schema: &DatasetSchema,
        created_by: &str,
    ) -> Result<SchemaVersion, IngestError> {
        let (version, _) = self
            .update_schema_lowering(dataset, schema, created_by, &[])
            .await?;
        Ok(version)
    }

    /// Updates the schema like [`IngestService::update_schema`], and also allows the labels
    /// of the columns named in `lower_labels` to go down. Returns the lowered labels, for
    /// the caller's audit record. A label lowered on a column not named there fails the
    /// update with a message that names the column.
    pub async fn update_schema_lowering(
        &self,
        dataset: &Dataset,
        schema: &DatasetSchema,
        created_by: &str,
        lower_labels: &[String],
    ) -> Result<(SchemaVersion, Vec<LabelChange>), IngestError> {
        schema.validate()?;
        if let Some(unknown) = lower_labels
            .iter()
            .find(|name| schema.column(name).is_none())
        {
            return Err(IngestError::InvalidSchema(format!(
                "lower_classification names {unknown:?}, which is not a column of the new schema"
            )));
        }
        let problems = dataset.schema.incompatibilities(schema);
        if !problems.is_empty() {
            return Err(IngestError::IncompatibleSchema {
                version: dataset.schema_version,
                problems,
            });
        }
        let lowered = dataset.schema.lowered_labels(schema);
        let rejected: Vec<String> = lowered
            .iter()
            .filter(|change| !lower_labels.contains(&change.column))
            .map(|change| {
                format!(
                    "column {:?} would lower its classification from {} to {}",
                    change.column,
                    label_name(change.from),
                    label_name(change.to)
                )
            })
            .collect();
        if !rejected.is_empty() {
            return Err(IngestError::InvalidSchema(format!(
                "{}; to confirm, name each column in `lower_classification` (CLI: \
                 --lower-classification COLUMN), and the change is recorded in the audit log",
                rejected.join("; ")
            )));
        }
        let mut resolved = schema.clone();
        resolved.resolve_labels(Some(&dataset.schema));
        let version = self
            .store
            .add_schema_version(dataset, &resolved, created_by)
            .await?;
        if !lowered.is_empty() {
            tracing::info!(
                tenant = %dataset.tenant,
                dataset = %dataset.name,
                schema_version = version.version,
                actor = created_by,
                lowered = ?lowered,
                "lowered column classifications"
            );
        }
        Ok((version, lowered))
    }

    /// Ingests one input into a new version of `dataset`, or returns the existing version
    /// with the same content.
    ///
    /// The rows are read, checked and written to staging files in one pass. The version
    /// becomes visible only in the last step, one database transaction after both blobs are
    /// stored, so an ingest that fails or whose process dies leaves no version behind. Blobs
    /// it stored before dying are content-addressed and reused by the next ingest of the
    /// same content.
    pub async fn ingest(
        &self,
        dataset: &Dataset,
        project_name: &str,
        input: IngestInput<'_>,
        actor: &str,
    ) -> Result<IngestOutcome, IngestError> {
        let pass_input = PassInput::File {
            path: input.path.to_owned(),
            options: input.options.clone(),
            progress: input.progress.clone().unwrap_or_default(),
        };
        self.ingest_input(
            dataset,
            project_name,
            pass_input,
            input.source,
            VersionEncoding::Compact,
            actor,
        )
        .await
    }

    /// Ingests rows that are already in memory into a new version of `dataset`, or returns
    /// the existing version with the same content. The batch is taken as a Parquet file
    /// with the same columns would be: its declared columns are converted and checked, the
    /// profile and report are computed, and `source` is recorded as the rows' origin.
    /// `encoding` sets how the version's Parquet file is written.
    pub async fn ingest_batch(
        &self,
        dataset: &Dataset,
        project_name: &str,
        batch: RecordBatch,
        source: &str,
        encoding: VersionEncoding,
        actor: &str,
    ) -> Result<IngestOutcome, IngestError> {
        self.ingest_input(
            dataset,
            project_name,
            PassInput::Batch(batch),
            source,
            encoding,
            actor,
        )
        .await
    }

    /// Runs one ingest with its lineage events: START, then COMPLETE, FAIL or ABORT.
    async fn ingest_input(
        &self,
        dataset: &Dataset,
        project_name: &str,
        pass_input: PassInput,
        source: &str,
        encoding: VersionEncoding,
        actor: &str,
    ) -> Result<IngestOutcome, IngestError> {
        let run_id = uuid::Uuid::now_v7().to_string();
        let run = IngestRun {
            run_id: &run_id,
            tenant: &dataset.tenant,
            project: project_name,
            dataset: &dataset.name,
            schema: &dataset.schema,
            source,
        };
        // The guard is armed before START is written: a future dropped between the START
        // commit and its next poll would otherwise leave a run with no end event.
        let cancel = Arc::new(AtomicBool::new(false));
        let mut guard = DropGuard {
            cancel: cancel.clone(),
            finished: false,
            abort: Some(self.abort_event(dataset, project_name, source, &run_id)),
        };
        if let Err(error) = self.emit(dataset, &run, RunState::Start, None, None).await {
            // The START event was not stored, so there is no run to abort.
            guard.finished = true;
            return Err(error);
        }
        // NOTE: a future dropped while the version insert commits can leave the version
        // stored and still record ABORT; the pass and the blob uploads stop cleanly.
        let settings = PassSettings {
            encoding,
            ..PassSettings::default()
        };
        let result = self
            .ingest_run(dataset, pass_input, settings, source, actor, cancel)
            .await;
        guard.finished = true;
        match &result {
            Ok((version, _, _)) => {
                self.emit(
                    dataset,
                    &run,
                    RunState::Complete,
                    Some(version.version),
                    None,
                )
                .await?;
            }
            Err(error) => {
                tracing::warn!(
                    tenant = %dataset.tenant,
                    dataset = %dataset.name,
                    run_id = %run_id,
                    error = %error,
                    "ingest failed"
                );
                let message = error.to_string();
                let state = if matches!(error, IngestError::Cancelled) {
                    RunState::Abort
                } else {
                    RunState::Fail
                };
                self.emit(dataset, &run, state, None, Some(&message))
                    .await?;
            }
        }
        let (version, created, report) = result?;
        Ok(IngestOutcome {
            version,
            created,
            run_id,
            report,
        })
    }

    /// Returns a callback that records the ABORT event of a run whose future was dropped.
    /// It spawns the write, because a dropped future cannot wait for it.
    pub(crate) fn abort_event(
        &self,
        dataset: &Dataset,
        project_name: &str,
        source: &str,
        run_id: &str,
    ) -> Box<dyn FnOnce() + Send> {
        let service = self.clone();
        let dataset = dataset.clone();
        let project_name = project_name.to_owned();
        let source = source.to_owned();
        let run_id = run_id.to_owned();
        Box::new(move || {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            runtime.spawn(async move {
                let run = IngestRun {
                    run_id: &run_id,
                    tenant: &dataset.tenant,
                    project: &project_name,
                    dataset: &dataset.name,
                    schema: &dataset.schema,
                    source: &source,
                };
                let message = "the request ended before the ingest finished (the client \
                               disconnected or the request timed out); no version was stored";
                tracing::warn!(tenant = %dataset.tenant, dataset = %dataset.name, run_id = %run_id, "ingest aborted: {message}");
                if let Err(error) = service
                    .emit(&dataset, &run, RunState::Abort, None, Some(message))
                    .await
                {
                    tracing::warn!(run_id = %run_id, error = %error, "cannot record the ABORT event of an ingest");
                }
            });
        })
    }

    /// Runs the streaming pass on a blocking thread. It stops with `Cancelled` when `cancel`
    /// or the service's shutdown flag is set.
    pub(crate) async fn pass(
        &self,
        schema: &DatasetSchema,
        input: PassInput,
        mut settings: PassSettings,
        cancel: Arc<AtomicBool>,
    ) -> Result<PassOutput, IngestError> {
        let schema = schema.clone();
        let staging_dir = self.staging_dir.clone();
        settings.cancel = vec![cancel.clone(), self.shutdown.clone()];
        let result =
            tokio::task::spawn_blocking(move || run_pass(&schema, input, &staging_dir, &settings))
                .await;
        let pass = result.map_err(|error| {
            IngestError::InvalidInput(format!("the ingest worker stopped: {error}"))
        })??;
        if cancel.load(Ordering::Relaxed) || self.shutdown.load(Ordering::Relaxed) {
            return Err(IngestError::Cancelled);
        }
        Ok(pass)
    }

    async fn ingest_run(
        &self,
        dataset: &Dataset,
        input: PassInput,
        settings: PassSettings,
        source: &str,
        actor: &str,
        cancel: Arc<AtomicBool>,
    ) -> Result<(DatasetVersion, bool, IngestReport), IngestError> {
        let started = std::time::Instant::now();
        let pass = self
            .pass(&dataset.schema, input, settings, cancel.clone())
            .await?;
        let passed = started.elapsed();

        let tenant = &dataset.tenant;
        let quarantine_digest = match &pass.quarantine {
            Some(path) => Some(self.blobs.put_file(tenant, path).await?.digest),
            None => None,
        };
        let report = pass.report;
        let max_share = dataset.schema.acceptance.max_failure_share;
        if report.failure_share > max_share || report.rows_accepted == 0 {
            return Err(IngestError::PolicyRejected {
                failed: report.rows_quarantined,
                total: report.rows_read,
                share: report.failure_share,
                max_share,
                quarantine: quarantine_digest
                    .map(|digest| digest.to_hex())
                    .unwrap_or_default(),
                report: Box::new(report),
            });
        }

        let content = self
            .blobs
            .put_moved_file(tenant, &pass.parquet, pass.parquet_blob)
            .await?;
        if cancel.load(Ordering::Relaxed) || self.shutdown.load(Ordering::Relaxed) {
            return Err(IngestError::Cancelled);
        }
        let put = started.elapsed();
        let version = DatasetVersion {
            dataset_id: dataset.id.clone(),
            version: 0,
            schema_version: dataset.schema_version,
            content_digest: content.digest.to_hex(),
            content_size: content.size,
            row_count: report.rows_accepted,
            quarantined_rows: report.rows_quarantined,
            quarantine_digest: quarantine_digest.map(|digest| digest.to_hex()),
            report: report.clone(),
            profile: pass.profile,
            source: source.to_owned(),
            created_at: ghaf_core::now_millis(),
            created_by: actor.to_owned(),
        };
        let (stored, created) = self.store.insert_version(tenant, &version).await?;
        tracing::debug!(
            tenant = %tenant,
            dataset = %dataset.name,
            bytes = content.size,
            pass_ms = passed.as_millis() as u64,
            put_ms = (put - passed).as_millis() as u64,
            insert_ms = (started.elapsed() - put).as_millis() as u64,
            "ingest steps"
        );
        if created {
            tracing::info!(
                tenant = %tenant,
                dataset = %dataset.name,
                version = stored.version,
                rows = stored.row_count,
                quarantined = stored.quarantined_rows,
                "stored dataset version"
            );
        }
        Ok((stored, created, report))
    }

    pub(crate) async fn emit(
        &self,
        dataset: &Dataset,
        run: &IngestRun<'_>,
        state: RunState,
        version: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), IngestError> {
        let now = ghaf_core::now_millis();
        let event = run.event(state, &ghaf_core::format_millis(now), version, error);
        let stored = StoredLineageEvent {
            id: uuid::Uuid::now_v7().simple().to_string(),
            project: dataset.project.clone(),
            run_id: run.run_id.to_owned(),
            event_type: state.as_str().to_owned(),
            event_time: now,
            job_name: run.job_name(),
            dataset: dataset.name.clone(),
            event: event.clone(),
        };
        self.store
            .insert_lineage_event(&dataset.tenant, &stored)
            .await?;

        if let (Some(endpoint), Some(http)) = (&self.lineage_endpoint, &self.http) {
            let endpoint = endpoint.clone();
            let http = http.clone();
            let run_id = run.run_id.to_owned();
            tokio::spawn(async move {
                let sent = http.post(&endpoint).json(&event).send().await;
                let failure = match sent {
                    Ok(response) if response.status().is_success() => None,
                    Ok(response) => Some(format!("status {}", response.status())),
                    Err(error) => Some(error.to_string()),
                };
                if let Some(failure) = failure {
                    tracing::warn!(%endpoint, %run_id, error = %failure, "cannot post lineage event");
                }
            });
        }
        Ok(())
    }

    /// Lists stored lineage events of a tenant.
    pub async fn lineage_events(
        &self,
        tenant: &TenantId,
        filter: &LineageFilter,
    ) -> Result<Vec<StoredLineageEvent>, IngestError> {
        self.store.list_lineage_events(tenant, filter).await
    }

    /// Parses a stored digest.
    pub fn digest(text: &str) -> Result<Sha256Digest, IngestError> {
        text.parse().map_err(|_| IngestError::Corrupt {
            what: "blob digest",
            message: format!("{text:?} is not a SHA-256 digest"),
        })
    }
}
