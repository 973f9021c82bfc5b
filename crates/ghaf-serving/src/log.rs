//! The prediction log: rows of every successful inference, written asynchronously and in
//! batches into the dataset `<endpoint>-predictions` through the ingest push path.
//!
//! Inference never waits for the log. Rows go into a bounded channel; a background task
//! pushes them every second or every [`FLUSH_ROWS`] rows. A request logs at most
//! [`MAX_ROWS_PER_REQUEST`] rows; the queue holds at most [`MAX_QUEUED_ROWS`] rows and
//! [`CHANNEL_CAPACITY`] requests. Rows beyond these bounds, rows the store reports as
//! duplicates and rows sent to the dead-letter dataset are dropped and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ghaf_core::{ProjectId, TenantId};
use ghaf_ingest::schema::{ColumnSpec, ColumnType, DatasetSchema};
use ghaf_ingest::{IngestError, IngestService, PushFormat};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

/// Maximum requests queued in the channel; rows of further requests are dropped and counted.
pub const CHANNEL_CAPACITY: usize = 4096;
/// Rows waiting in the channel before new rows are dropped, so a burst of large requests
/// cannot fill memory.
pub const MAX_QUEUED_ROWS: usize = 200_000;
/// Rows one request logs; the rows after it are dropped and counted.
pub const MAX_ROWS_PER_REQUEST: usize = 10_000;
/// Rows buffered for one push before the flusher pushes without waiting for the tick.
pub const FLUSH_ROWS: usize = 2000;
/// Time between two flushes.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Rows kept for retry when pushes fail (the store is down); older rows beyond it are
/// dropped and counted.
pub const RETRY_ROWS: usize = 100_000;
/// Consecutive failed flushes of one dataset after which its buffered rows are dropped
/// (about five minutes at one flush a second), so rows of a deleted endpoint or a dataset
/// that cannot be created do not stay forever.
pub const MAX_FAILED_FLUSHES: u32 = 300;
/// Principal recorded as the actor of log pushes.
pub const LOG_ACTOR: &str = "ghaf-serving";

/// Suffix of the prediction log dataset's name.
pub const PREDICTIONS_SUFFIX: &str = "-predictions";
/// Suffix of the label dataset's name.
pub const LABELS_SUFFIX: &str = "-labels";

/// Columns that start every prediction log row, in order. `request_id` is the id the server
/// generates for each request (a UUIDv7, the unique key with `row`); `client_request_id` is
/// the id the caller sent, if any; `principal` is the caller.
pub const FIXED_COLUMNS: [(&str, ColumnType); 10] = [
    ("request_id", ColumnType::String),
    ("row", ColumnType::Integer),
    ("timestamp", ColumnType::Timestamp),
    ("endpoint", ColumnType::String),
    ("variant", ColumnType::String),
    ("model_name", ColumnType::String),
    ("model_version", ColumnType::Integer),
    ("latency_us", ColumnType::Integer),
    ("client_request_id", ColumnType::String),
    ("principal", ColumnType::String),
];

/// The fixed column that may be null.
const NULLABLE_FIXED: &str = "client_request_id";

/// The dataset one batch of rows goes to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogTarget {
    pub tenant: TenantId,
    pub project: ProjectId,
    pub project_name: String,
    pub dataset: String,
}

enum Command {
    Rows(LogTarget, Vec<Map<String, Value>>),
    Flush(oneshot::Sender<()>),
}

/// Handle of the background writer.
pub struct PredictionLog {
    sender: mpsc::Sender<Command>,
    dropped: Arc<AtomicU64>,
    queued_rows: Arc<AtomicUsize>,
    on_drop: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl PredictionLog {
    /// Starts the writer on the current Tokio runtime. `on_drop` is called with the number
    /// of rows dropped, for a metric.
    pub fn start(ingest: IngestService, on_drop: Option<Arc<dyn Fn(u64) + Send + Sync>>) -> Self {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let queued_rows = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            ingest,
            queued_rows: queued_rows.clone(),
            buffers: HashMap::new(),
            buffered: 0,
            dropped: dropped.clone(),
            on_drop: on_drop.clone(),
            reported_drops: 0,
            failed_flushes: HashMap::new(),
        };
        tokio::spawn(writer.run(receiver));
        Self {
            sender,
            dropped,
            queued_rows,
            on_drop,
        }
    }

    /// Counts `count` rows as dropped, for the metric.
    pub fn count_dropped(&self, count: u64) {
        if count == 0 {
            return;
        }
        self.dropped.fetch_add(count, Ordering::Relaxed);
        if let Some(on_drop) = &self.on_drop {
            on_drop(count);
        }
    }

    /// Rows waiting in the queue.
    pub fn queued_rows(&self) -> usize {
        self.queued_rows.load(Ordering::Relaxed)
    }

    /// Returns whether `rows` more rows fit in the queue now. Callers check this before
    /// building the rows, so a full queue costs nothing.
    pub fn has_room(&self, rows: usize) -> bool {
        self.queued_rows
            .load(Ordering::Relaxed)
            .saturating_add(rows)
            <= MAX_QUEUED_ROWS
    }

    /// Queues rows without waiting; drops and counts them when the queue is full.
    pub fn record(&self, target: LogTarget, rows: Vec<Map<String, Value>>) {
        let count = rows.len();
        if count == 0 {
            return;
        }
        let before = self.queued_rows.fetch_add(count, Ordering::Relaxed);
        if before.saturating_add(count) > MAX_QUEUED_ROWS {
            self.queued_rows.fetch_sub(count, Ordering::Relaxed);
            self.count_dropped(count as u64);
            tracing::debug!(
                rows = count,
                queued_rows = before,
                "prediction log queue holds too many rows; rows dropped"
            );
            return;
        }
        if let Err(error) = self.sender.try_send(Command::Rows(target, rows)) {
            let reason = match error {
                mpsc::error::TrySendError::Full(_) => "full",
                mpsc::error::TrySendError::Closed(_) => "closed",
            };
            self.queued_rows.fetch_sub(count, Ordering::Relaxed);
            self.count_dropped(count as u64);
            tracing::debug!(rows = count, reason, "prediction log queue rejected rows");
        }
    }

    /// Rows dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Pushes everything queued so far and waits until it is stored (or failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

struct Writer {
    ingest: IngestService,
    queued_rows: Arc<AtomicUsize>,
    buffers: HashMap<LogTarget, Vec<Map<String, Value>>>,
    buffered: usize,
    dropped: Arc<AtomicU64>,
    on_drop: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    reported_drops: u64,
    /// Consecutive failed flushes per dataset.
    failed_flushes: HashMap<LogTarget, u32>,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = receiver.recv() => match command {
                    Some(Command::Rows(target, rows)) => {
                        self.queued_rows.fetch_sub(rows.len(), Ordering::Relaxed);
                        self.buffered += rows.len();
                        self.buffers.entry(target).or_default().extend(rows);
                        if self.buffered >= FLUSH_ROWS {
                            self.flush_all().await;
                        }
                    }
                    Some(Command::Flush(done)) => {
                        self.flush_all().await;
                        let _ = done.send(());
                    }
                    None => {
                        // Every sender is gone: the service is shutting down.
                        self.flush_all().await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    self.flush_all().await;
                    self.report_drops();
                }
            }
        }
    }

    fn report_drops(&mut self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.reported_drops {
            tracing::warn!(
                dropped = dropped - self.reported_drops,
                total = dropped,
                "prediction log rows dropped (queue full, row cap per request, duplicates or dead-lettered); inference was not slowed"
            );
            self.reported_drops = dropped;
        }
    }

    async fn flush_all(&mut self) {
        let buffers = std::mem::take(&mut self.buffers);
        self.buffered = 0;
        for (target, rows) in buffers {
            if rows.is_empty() {
                continue;
            }
            match push_rows(&self.ingest, &target, &rows).await {
                Ok(lost) => {
                    self.failed_flushes.remove(&target);
                    self.count_dropped(lost as usize);
                }
                Err(PushFailure::Permanent(error)) => {
                    tracing::error!(
                        tenant = %target.tenant,
                        project = %target.project,
                        dataset = %target.dataset,
                        rows = rows.len(),
                        %error,
                        "cannot write prediction log rows; they are dropped"
                    );
                    self.count_dropped(rows.len());
                }
                Err(PushFailure::Retry(error)) => {
                    let failures = self.failed_flushes.entry(target.clone()).or_insert(0);
                    *failures += 1;
                    if *failures >= MAX_FAILED_FLUSHES {
                        self.failed_flushes.remove(&target);
                        tracing::error!(
                            tenant = %target.tenant,
                            project = %target.project,
                            dataset = %target.dataset,
                            rows = rows.len(),
                            flushes = MAX_FAILED_FLUSHES,
                            %error,
                            "cannot write prediction log rows after repeated attempts; they are dropped"
                        );
                        self.count_dropped(rows.len());
                        continue;
                    }
                    // Logged on the first failure and then once a minute, not every flush.
                    let failures = *failures;
                    if failures == 1 || failures.is_multiple_of(60) {
                        tracing::error!(
                            tenant = %target.tenant,
                            project = %target.project,
                            dataset = %target.dataset,
                            rows = rows.len(),
                            failures,
                            %error,
                            "cannot write prediction log rows; retrying at the next flush"
                        );
                    }
                    self.keep_for_retry(target, rows);
                }
            }
        }
    }

    fn keep_for_retry(&mut self, target: LogTarget, mut rows: Vec<Map<String, Value>>) {
        let room = RETRY_ROWS.saturating_sub(self.buffered);
        if rows.len() > room {
            let excess = rows.len() - room;
            rows.drain(..excess);
            self.count_dropped(excess);
        }
        self.buffered += rows.len();
        self.buffers.entry(target).or_default().extend(rows);
    }

    fn count_dropped(&self, count: usize) {
        self.dropped.fetch_add(count as u64, Ordering::Relaxed);
        if let Some(on_drop) = &self.on_drop {
            on_drop(count as u64);
        }
    }
}

enum PushFailure {
    Permanent(IngestError),
    Retry(IngestError),
}

/// Pushes rows; returns the number of rows the store did not keep (duplicates of a stored
/// key and rows sent to the dead-letter dataset).
async fn push_rows(
    ingest: &IngestService,
    target: &LogTarget,
    rows: &[Map<String, Value>],
) -> Result<u64, PushFailure> {
    // A missing dataset is retried: the serving layer creates it again after a failure.
    let dataset = ingest
        .store()
        .get_dataset(&target.tenant, &target.project, &target.dataset)
        .await
        .map_err(PushFailure::Retry)?;
    let mut body = Vec::with_capacity(rows.len() * 256);
    for row in rows {
        // A map of JSON values always serialises.
        if serde_json::to_writer(&mut body, row).is_ok() {
            body.push(b'\n');
        }
    }
    let outcome = ingest
        .push(
            &dataset,
            &target.project_name,
            &body,
            PushFormat::Ndjson,
            LOG_ACTOR,
        )
        .await
        .map_err(|error| match error {
            IngestError::NotFound { .. }
            | IngestError::InvalidInput(_)
            | IngestError::InvalidSchema(_) => PushFailure::Permanent(error),
            other => PushFailure::Retry(other),
        })?;
    if outcome.dead_lettered > 0 {
        tracing::error!(
            tenant = %target.tenant,
            project = %target.project,
            dataset = %target.dataset,
            dead_lettered = outcome.dead_lettered,
            "prediction log rows failed the dataset's checks and went to its dead-letter dataset"
        );
    }
    if outcome.duplicates_dropped > 0 {
        tracing::warn!(
            tenant = %target.tenant,
            project = %target.project,
            dataset = %target.dataset,
            duplicates = outcome.duplicates_dropped,
            "prediction log rows repeat a stored (request_id, row) key and were dropped"
        );
    }
    Ok(outcome.duplicates_dropped + outcome.dead_lettered)
}

fn column(name: &str, column_type: ColumnType, nullable: bool) -> ColumnSpec {
    ColumnSpec {
        name: name.to_owned(),
        column_type,
        nullable,
        classification: None,
        description: String::new(),
        timezone: None,
        min: None,
        max: None,
        allowed: None,
        pattern: None,
        unique: false,
    }
}

/// Schema of a prediction log: the fixed columns, then `inputs` and `outputs` (float64),
/// then `label` (int64) when `with_label`.
pub fn predictions_schema(
    inputs: &[String],
    outputs: &[String],
    with_label: bool,
) -> DatasetSchema {
    let mut columns: Vec<ColumnSpec> = FIXED_COLUMNS
        .iter()
        .map(|(name, column_type)| column(name, *column_type, *name == NULLABLE_FIXED))
        .collect();
    for name in inputs.iter().chain(outputs) {
        columns.push(column(name, ColumnType::Float, true));
    }
    if with_label {
        columns.push(column("label", ColumnType::Integer, true));
    }
    DatasetSchema {
        columns,
        event_time: Some("timestamp".to_owned()),
        unique_key: vec!["request_id".to_owned(), "row".to_owned()],
        acceptance: Default::default(),
    }
}

/// Schema of a label dataset.
pub fn labels_schema() -> DatasetSchema {
    DatasetSchema {
        columns: vec![
            column("request_id", ColumnType::String, false),
            column("row", ColumnType::Integer, false),
            column("label", ColumnType::Float, false),
            column("labelled_at", ColumnType::Timestamp, false),
        ],
        event_time: Some("labelled_at".to_owned()),
        unique_key: vec!["request_id".to_owned(), "row".to_owned()],
        acceptance: Default::default(),
    }
}

/// Creates the dataset with `schema`, or adds the columns of `schema` that the existing one
/// lacks (as nullable columns). Returns an error that says what failed.
pub async fn ensure_dataset(
    ingest: &IngestService,
    tenant: &TenantId,
    project: &ProjectId,
    name: &str,
    description: &str,
    schema: &DatasetSchema,
    actor: &str,
) -> Result<(), String> {
    match ingest.store().get_dataset(tenant, project, name).await {
        Ok(existing) => {
            let missing: Vec<&ColumnSpec> = schema
                .columns
                .iter()
                .filter(|c| existing.schema.column(&c.name).is_none())
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            let mut updated = existing.schema.clone();
            for spec in missing {
                let mut spec = spec.clone();
                spec.nullable = true;
                updated.columns.push(spec);
            }
            ingest
                .update_schema(&existing, &updated, actor)
                .await
                .map(|_| ())
                .map_err(|error| format!("cannot add the new columns to dataset {name:?}: {error}"))
        }
        Err(IngestError::NotFound { .. }) => {
            match ingest
                .create_dataset(tenant, project, name, description, schema, actor)
                .await
            {
                Ok(_) => Ok(()),
                // Another replica created it at the same time.
                Err(IngestError::AlreadyExists { .. }) => Ok(()),
                Err(error) => Err(format!("cannot create dataset {name:?}: {error}")),
            }
        }
        Err(error) => Err(format!("cannot read dataset {name:?}: {error}")),
    }
}

/// Converts a float for a JSON log row: NaN and infinities become null.
pub fn json_f64(value: f64) -> Value {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}
