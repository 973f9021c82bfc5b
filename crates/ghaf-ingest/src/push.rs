//! Stream pushes: a micro-batch of JSON messages is checked like a file and committed as an
//! appended segment (a new version of the dataset). Messages whose key the dataset already
//! stored are dropped, and failing messages go to the dead-letter dataset with their reasons.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::lineage::{IngestRun, RunState};
use crate::pipeline::{PassInput, PassSettings, QuarantineRow};
use crate::read::{InputFormat, ReadOptions};
use crate::schema::{Classification, ColumnSpec, ColumnType, DatasetSchema};
use crate::service::DropGuard;
use crate::store::{Dataset, DatasetVersion};
use crate::validate::{CheckKind, Failure};
use crate::{IngestError, IngestInput, IngestService};

/// Suffix of the name of a dataset's dead-letter dataset.
pub const DEAD_LETTER_SUFFIX: &str = ".dead-letter";

/// Encoding of a pushed micro-batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushFormat {
    /// One JSON object per line.
    Ndjson,
    /// One JSON array of objects.
    JsonArray,
}

/// Longest message kept whole in the dead-letter dataset, in bytes. A longer message is
/// cut to this prefix, and its reasons give its full size and SHA-256, so that a message
/// that can never be accepted is still dead-lettered instead of failing the push.
pub const DEAD_LETTER_MESSAGE_BYTES: usize = 64 * 1024;

/// Outcome of a push, in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushResult {
    /// A segment was appended; failing messages, if any, were dead-lettered.
    Appended,
    /// Every message was dropped because its key was stored before or repeats in the
    /// batch; nothing was stored.
    AllDuplicates,
    /// No message passed the checks; they were all dead-lettered and no segment appended.
    AllDeadLettered,
    /// The batch contained no message.
    Empty,
}

/// Result of one push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushOutcome {
    /// Outcome of the push.
    pub result: PushResult,
    /// Messages in the micro-batch.
    pub received: u64,
    /// Messages dropped because their key was stored before or repeats in the batch.
    pub duplicates_dropped: u64,
    /// Messages stored in the segment.
    pub accepted: u64,
    /// Messages sent to the dead-letter dataset.
    pub dead_lettered: u64,
    /// The appended segment; `None` when no message was accepted.
    pub segment: Option<DatasetVersion>,
    /// Version of the dead-letter dataset that holds this batch's failing messages.
    pub dead_letter_version: Option<i64>,
    /// OpenLineage run id; empty when every message was a duplicate.
    pub run_id: String,
}

/// One message kept after key deduplication.
struct Message {
    /// The message bytes as received; they may be invalid UTF-8, which fails the message.
    raw: Vec<u8>,
    key: Option<String>,
    /// 1-based position in the received batch.
    position: u64,
}

/// Splits a micro-batch into raw messages, one JSON text each.
fn split_messages(body: &[u8], format: PushFormat) -> Result<Vec<Vec<u8>>, IngestError> {
    match format {
        PushFormat::Ndjson => Ok(body
            .split(|&byte| byte == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|line| !line.is_empty())
            .map(<[u8]>::to_vec)
            .collect()),
        PushFormat::JsonArray => {
            if let Err(error) = std::str::from_utf8(body) {
                return Err(IngestError::InvalidInput(format!(
                    "the body is not valid UTF-8: invalid byte at offset {}; send UTF-8 JSON",
                    error.valid_up_to()
                )));
            }
            let values: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|error| {
                IngestError::InvalidInput(format!("the body is not a JSON array: {error}"))
            })?;
            Ok(values
                .iter()
                .map(|value| value.to_string().into_bytes())
                .collect())
        }
    }
}

/// Returns the message key: the JSON array of the `unique_key` values, each normalised to the
/// column's type, so that `1` and `1.0` in a float column, or the same instant written with
/// two offsets, are one key. `None` when the schema declares no key, or the message lacks
/// a key value or has one that does not convert (the message then fails its checks).
fn message_key(raw: &[u8], schema: &DatasetSchema) -> Option<String> {
    if schema.unique_key.is_empty() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let object = value.as_object()?;
    let mut parts = Vec::with_capacity(schema.unique_key.len());
    for name in &schema.unique_key {
        let column = schema.column(name)?;
        parts.push(normalise_key_value(column, object.get(name)?)?);
    }
    Some(serde_json::Value::Array(parts).to_string())
}

/// Converts one key value to the canonical JSON form of its column type: integers and
/// floats as numbers (a float always with a fraction part), dates as `YYYY-MM-DD`,
/// timestamps as RFC 3339 in UTC with microseconds.
fn normalise_key_value(
    column: &ColumnSpec,
    value: &serde_json::Value,
) -> Option<serde_json::Value> {
    use serde_json::Value;
    match (column.column_type, value) {
        (ColumnType::Integer, Value::Number(number)) => number.as_i64().map(Value::from),
        (ColumnType::Float, Value::Number(number)) => {
            let float = number.as_f64().filter(|float| float.is_finite())?;
            // -0.0 and 0.0 are one value.
            let float = if float == 0.0 { 0.0 } else { float };
            serde_json::Number::from_f64(float).map(Value::Number)
        }
        (ColumnType::String, Value::String(text)) => Some(Value::String(text.clone())),
        (ColumnType::Boolean, Value::Bool(flag)) => Some(Value::Bool(*flag)),
        (ColumnType::Date, Value::String(text)) => {
            let days = crate::convert::parse_date(text.trim()).ok()?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
            let date = epoch.checked_add_signed(chrono::TimeDelta::try_days(i64::from(days))?)?;
            Some(Value::String(date.to_string()))
        }
        (ColumnType::Timestamp, Value::String(text)) => {
            let micros = crate::convert::parse_timestamp(text.trim(), column.offset()).ok()?;
            let instant = chrono::DateTime::from_timestamp_micros(micros)?;
            Some(Value::String(
                instant.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ))
        }
        _ => None,
    }
}

/// Returns the text of a message as the dead-letter dataset keeps it. Invalid UTF-8 is
/// replaced with U+FFFD, and the reasons give its byte offset. A message longer than
/// [`DEAD_LETTER_MESSAGE_BYTES`] is cut to that prefix, with a reason that gives its size
/// and SHA-256.
fn dead_letter_text(raw: &[u8], reasons: &mut Vec<Failure>) -> String {
    let text = String::from_utf8_lossy(raw);
    if text.len() <= DEAD_LETTER_MESSAGE_BYTES {
        return text.into_owned();
    }
    let mut cut = DEAD_LETTER_MESSAGE_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = hex::encode(sha2::Sha256::digest(raw));
    reasons.push(Failure {
        check: CheckKind::FieldSize,
        column: None,
        message: format!(
            "the message has {} bytes; the dead-letter dataset keeps its first {cut} bytes \
             (SHA-256 of the whole message: {digest})",
            raw.len()
        ),
    });
    text[..cut].to_owned()
}

/// The schema of a dead-letter dataset. The raw message carries every column of the source
/// dataset, so it gets the source's most restrictive classification.
fn dead_letter_schema(source: &DatasetSchema) -> DatasetSchema {
    let classification = source
        .columns
        .iter()
        .map(ColumnSpec::label)
        .max()
        .unwrap_or(Classification::Internal);
    let column = |name: &str, column_type, classification, description: &str| ColumnSpec {
        name: name.into(),
        column_type,
        nullable: false,
        classification: Some(classification),
        description: description.into(),
        timezone: None,
        min: None,
        max: None,
        allowed: None,
        pattern: None,
        unique: false,
    };
    DatasetSchema {
        columns: vec![
            column(
                "message",
                ColumnType::String,
                classification,
                "The message as received.",
            ),
            column(
                "reasons",
                ColumnType::String,
                Classification::Internal,
                "JSON array of the failed checks with their messages.",
            ),
            column(
                "row",
                ColumnType::Integer,
                Classification::Internal,
                "Position of the message in its batch.",
            ),
        ],
        event_time: None,
        unique_key: Vec::new(),
        acceptance: crate::AcceptancePolicy {
            max_failure_share: 1.0,
        },
    }
}

impl IngestService {
    /// Commits a micro-batch of JSON messages as an appended segment of `dataset`.
    ///
    /// When the schema declares a `unique_key`, it is the message key: messages whose key
    /// an earlier segment stored, or that repeat a key earlier in the batch, are dropped.
    /// The segment and its keys are stored in one transaction, so a batch that is pushed
    /// again after a failure is never stored twice. The acceptance policy does not apply:
    /// failing messages go to the dead-letter dataset `<dataset>.dead-letter` with their
    /// reasons and the passing ones are stored.
    pub async fn push(
        &self,
        dataset: &Dataset,
        project_name: &str,
        body: &[u8],
        format: PushFormat,
        actor: &str,
    ) -> Result<PushOutcome, IngestError> {
        let raw_messages = split_messages(body, format)?;
        let received = raw_messages.len() as u64;

        // Drops messages whose key is stored or repeats within the batch.
        let keyed: Vec<Message> = raw_messages
            .into_iter()
            .zip(1..)
            .map(|(raw, position)| Message {
                key: message_key(&raw, &dataset.schema),
                raw,
                position,
            })
            .collect();
        let keys: Vec<String> = keyed
            .iter()
            .filter_map(|message| message.key.clone())
            .collect();
        let stored = self.store().stored_message_keys(&dataset.id, &keys).await?;
        let mut seen = HashSet::new();
        let messages: Vec<Message> = keyed
            .into_iter()
            .filter(|message| match &message.key {
                Some(key) => !stored.contains(key) && seen.insert(key.clone()),
                None => true,
            })
            .collect();
        let duplicates_dropped = received - messages.len() as u64;
        let mut outcome = PushOutcome {
            result: if received == 0 {
                PushResult::Empty
            } else {
                PushResult::AllDuplicates
            },
            received,
            duplicates_dropped,
            accepted: 0,
            dead_lettered: 0,
            segment: None,
            dead_letter_version: None,
            run_id: String::new(),
        };
        if messages.is_empty() {
            return Ok(outcome);
        }

        let run_id = uuid::Uuid::now_v7().to_string();
        outcome.run_id.clone_from(&run_id);
        let run = IngestRun {
            run_id: &run_id,
            tenant: &dataset.tenant,
            project: project_name,
            dataset: &dataset.name,
            schema: &dataset.schema,
            source: "push",
        };
        // As in a file ingest, the guard is armed before START is written, so a push whose
        // future is dropped (a stream consumer stopping mid-batch) records ABORT and stops
        // its pass instead of leaving the run open.
        let cancel = Arc::new(AtomicBool::new(false));
        let mut guard = DropGuard {
            cancel: cancel.clone(),
            finished: false,
            abort: Some(self.abort_event(dataset, project_name, "push", &run_id)),
        };
        if let Err(error) = self.emit(dataset, &run, RunState::Start, None, None).await {
            // The START event was not stored, so there is no run to abort.
            guard.finished = true;
            return Err(error);
        }
        let result = self
            .push_run(
                dataset,
                project_name,
                &messages,
                actor,
                cancel,
                &mut outcome,
            )
            .await;
        guard.finished = true;
        match &result {
            Ok(()) => {
                let version = outcome.segment.as_ref().map(|segment| segment.version);
                self.emit(dataset, &run, RunState::Complete, version, None)
                    .await?;
            }
            Err(error) => {
                tracing::warn!(tenant = %dataset.tenant, dataset = %dataset.name, run_id = %run_id, error = %error, "push failed");
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
        result.map(|()| outcome)
    }

    async fn push_run(
        &self,
        dataset: &Dataset,
        project_name: &str,
        messages: &[Message],
        actor: &str,
        cancel: Arc<AtomicBool>,
        outcome: &mut PushOutcome,
    ) -> Result<(), IngestError> {
        let run_id = outcome.run_id.clone();
        let staging = self.staging_file("push-", ".ndjson")?;
        {
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&staging).map_err(self.staging_error())?,
            );
            for message in messages {
                out.write_all(&message.raw).map_err(self.staging_error())?;
                out.write_all(b"\n").map_err(self.staging_error())?;
            }
            out.flush().map_err(self.staging_error())?;
        }

        let mut options = ReadOptions::new(InputFormat::Ndjson);
        self.limits().apply(&mut options);
        let settings = PassSettings {
            collect_accepted: true,
            segment_run_id: Some(run_id.to_owned()),
            ..PassSettings::default()
        };
        let input = PassInput::File {
            path: staging.to_path_buf(),
            options,
            progress: Arc::new(AtomicU64::new(0)),
        };
        let pass = self.pass(&dataset.schema, input, settings, cancel).await?;
        outcome.accepted = pass.report.rows_accepted;
        outcome.dead_lettered = pass.report.rows_quarantined;

        // Dead letters first: a retry after a failure below stores the same dead-letter
        // content again, which is the same content-addressed version, not a second copy.
        if let Some(quarantine) = &pass.quarantine {
            let version = self
                .dead_letter(dataset, project_name, quarantine, messages, actor)
                .await?;
            outcome.dead_letter_version = Some(version);
        }

        if pass.report.rows_accepted > 0 {
            let content = self
                .blobs()
                .put_moved_file(&dataset.tenant, &pass.parquet, pass.parquet_blob)
                .await?;
            let keys: Vec<String> = pass
                .accepted_rows
                .iter()
                .filter_map(|&row| {
                    messages[usize::try_from(row - 1).unwrap_or(usize::MAX)]
                        .key
                        .clone()
                })
                .collect();
            let version = DatasetVersion {
                dataset_id: dataset.id.clone(),
                version: 0,
                schema_version: dataset.schema_version,
                content_digest: content.digest.to_hex(),
                content_size: content.size,
                row_count: pass.report.rows_accepted,
                quarantined_rows: pass.report.rows_quarantined,
                quarantine_digest: None,
                report: pass.report.clone(),
                profile: pass.profile,
                source: "push".into(),
                created_at: ghaf_core::now_millis(),
                created_by: actor.to_owned(),
            };
            let (segment, created) = self
                .store()
                .insert_version_with_keys(&dataset.tenant, &version, &keys)
                .await?;
            if !created {
                // The run id in the file's metadata makes every segment's digest new.
                return Err(IngestError::Corrupt {
                    what: "pushed segment",
                    message: format!(
                        "segment of run {run_id} has the digest of version {}",
                        segment.version
                    ),
                });
            }
            outcome.segment = Some(segment);
            outcome.result = PushResult::Appended;
        } else {
            outcome.result = PushResult::AllDeadLettered;
        }
        Ok(())
    }

    /// Writes the failing messages of a batch to the dead-letter dataset, creating it on
    /// first use, and returns the version that holds them.
    async fn dead_letter(
        &self,
        dataset: &Dataset,
        project_name: &str,
        quarantine: &std::path::Path,
        messages: &[Message],
        actor: &str,
    ) -> Result<i64, IngestError> {
        let letters = self.staging_file("dead-letter-", ".ndjson")?;
        {
            let input = std::io::BufReader::new(
                std::fs::File::open(quarantine).map_err(self.staging_error())?,
            );
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&letters).map_err(self.staging_error())?,
            );
            for line in input.lines() {
                let line = line.map_err(self.staging_error())?;
                let row: QuarantineRow =
                    serde_json::from_str(&line).map_err(|error| IngestError::Corrupt {
                        what: "quarantine file",
                        message: error.to_string(),
                    })?;
                let index = usize::try_from(row.row - 1).unwrap_or(usize::MAX);
                let message = messages.get(index);
                let mut reasons = row.reasons;
                let text = message.map(|message| dead_letter_text(&message.raw, &mut reasons));
                let letter = serde_json::json!({
                    "message": text,
                    "reasons": serde_json::to_string(&reasons).unwrap_or_default(),
                    "row": message.map_or(row.row, |message| message.position),
                });
                writeln!(out, "{letter}").map_err(self.staging_error())?;
            }
            out.flush().map_err(self.staging_error())?;
        }

        let name = format!("{}{DEAD_LETTER_SUFFIX}", dataset.name);
        let target = match self
            .store()
            .get_dataset(&dataset.tenant, &dataset.project, &name)
            .await
        {
            Ok(found) => found,
            Err(IngestError::NotFound { .. }) => {
                let schema = dead_letter_schema(&dataset.schema);
                let description = format!(
                    "Messages pushed to {} that failed its checks.",
                    dataset.name
                );
                match self
                    .create_dataset(
                        &dataset.tenant,
                        &dataset.project,
                        &name,
                        &description,
                        &schema,
                        actor,
                    )
                    .await
                {
                    Ok(created) => created,
                    // A concurrent push created it first.
                    Err(IngestError::AlreadyExists { .. }) => {
                        self.store()
                            .get_dataset(&dataset.tenant, &dataset.project, &name)
                            .await?
                    }
                    Err(error) => return Err(error),
                }
            }
            Err(error) => return Err(error),
        };
        let options = ReadOptions::new(InputFormat::Ndjson);
        let source = format!("push:{}", dataset.name);
        let outcome = self
            .ingest(
                &target,
                project_name,
                IngestInput {
                    path: &letters,
                    options: &options,
                    source: &source,
                    progress: None,
                },
                actor,
            )
            .await?;
        Ok(outcome.version.version)
    }

    pub(crate) fn staging_file(
        &self,
        prefix: &str,
        suffix: &str,
    ) -> Result<tempfile::TempPath, IngestError> {
        std::fs::create_dir_all(self.staging_dir()).map_err(self.staging_error())?;
        let file = tempfile::Builder::new()
            .prefix(prefix)
            .suffix(suffix)
            .tempfile_in(self.staging_dir())
            .map_err(self.staging_error())?;
        Ok(file.into_temp_path())
    }

    pub(crate) fn staging_error(&self) -> impl Fn(std::io::Error) -> IngestError + '_ {
        move |source| IngestError::Staging {
            path: self.staging_dir().display().to_string(),
            source,
        }
    }
}
