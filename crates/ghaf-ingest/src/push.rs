//! Stream pushes: a micro-batch of JSON messages is checked like a file and committed as an
//! appended segment (a new version of the dataset). Messages whose key the dataset already
//! stored are dropped, and failing messages go to the dead-letter dataset with their reasons.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde::{Deserialize, Serialize};

use crate::lineage::{IngestRun, RunState};
use crate::pipeline::{QuarantineRow, run_pass};
use crate::read::{InputFormat, ReadOptions};
use crate::schema::{Classification, ColumnSpec, ColumnType, DatasetSchema};
use crate::store::{Dataset, DatasetVersion};
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

/// Result of one push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushOutcome {
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
    raw: String,
    key: Option<String>,
    /// 1-based position in the received batch.
    position: u64,
}

/// Splits a micro-batch into raw messages, one JSON text each.
fn split_messages(body: &[u8], format: PushFormat) -> Result<Vec<String>, IngestError> {
    match format {
        PushFormat::Ndjson => Ok(body
            .split(|&byte| byte == b'\n')
            .map(|line| String::from_utf8_lossy(line).trim().to_owned())
            .filter(|line| !line.is_empty())
            .collect()),
        PushFormat::JsonArray => {
            let values: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|error| {
                IngestError::InvalidInput(format!("the body is not a JSON array: {error}"))
            })?;
            Ok(values.iter().map(serde_json::Value::to_string).collect())
        }
    }
}

/// The message key: the JSON array of the `unique_key` values, or `None` when the schema
/// declares no key or the message lacks a key value.
fn message_key(raw: &str, key_columns: &[String]) -> Option<String> {
    if key_columns.is_empty() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(raw).ok()?;
    let object = value.as_object()?;
    let mut parts = Vec::with_capacity(key_columns.len());
    for column in key_columns {
        match object.get(column) {
            None | Some(serde_json::Value::Null) => return None,
            Some(part) => parts.push(part.clone()),
        }
    }
    Some(serde_json::Value::Array(parts).to_string())
}

/// The schema of a dead-letter dataset. The raw message carries every column of the source
/// dataset, so it gets the source's most restrictive classification.
fn dead_letter_schema(source: &DatasetSchema) -> DatasetSchema {
    let classification = source
        .columns
        .iter()
        .map(|column| column.classification)
        .max()
        .unwrap_or(Classification::Internal);
    let column = |name: &str, column_type, classification, description: &str| ColumnSpec {
        name: name.into(),
        column_type,
        nullable: false,
        classification,
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
                key: message_key(&raw, &dataset.schema.unique_key),
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
        self.emit(dataset, &run, RunState::Start, None, None)
            .await?;
        let result = self
            .push_run(dataset, project_name, &messages, actor, &mut outcome)
            .await;
        match &result {
            Ok(()) => {
                let version = outcome.segment.as_ref().map(|segment| segment.version);
                self.emit(dataset, &run, RunState::Complete, version, None)
                    .await?;
            }
            Err(error) => {
                tracing::warn!(tenant = %dataset.tenant, dataset = %dataset.name, run_id = %run_id, error = %error, "push failed");
                let message = error.to_string();
                self.emit(dataset, &run, RunState::Fail, None, Some(&message))
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
        outcome: &mut PushOutcome,
    ) -> Result<(), IngestError> {
        let staging = self.staging_file("push-", ".ndjson")?;
        {
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&staging).map_err(self.staging_error())?,
            );
            for message in messages {
                writeln!(out, "{}", message.raw).map_err(self.staging_error())?;
            }
            out.flush().map_err(self.staging_error())?;
        }

        let schema = dataset.schema.clone();
        let path = staging.to_path_buf();
        let options = ReadOptions::new(InputFormat::Ndjson);
        let staging_dir = self.staging_dir().to_owned();
        let pass = tokio::task::spawn_blocking(move || {
            run_pass(
                &schema,
                &path,
                &options,
                &staging_dir,
                Arc::new(AtomicU64::new(0)),
                true,
            )
        })
        .await
        .map_err(|error| {
            IngestError::InvalidInput(format!("the ingest worker stopped: {error}"))
        })??;
        outcome.accepted = pass.report.rows_accepted;
        outcome.dead_lettered = pass.report.rows_quarantined;

        if pass.report.rows_accepted > 0 {
            let content = self
                .blobs()
                .put_file(&dataset.tenant, &pass.parquet)
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
            let (segment, _) = self
                .store()
                .insert_version_with_keys(&dataset.tenant, &version, &keys)
                .await?;
            outcome.segment = Some(segment);
        }

        if let Some(quarantine) = &pass.quarantine {
            let version = self
                .dead_letter(dataset, project_name, quarantine, messages, actor)
                .await?;
            outcome.dead_letter_version = Some(version);
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
                let letter = serde_json::json!({
                    "message": message.map(|message| message.raw.as_str()),
                    "reasons": serde_json::to_string(&row.reasons).unwrap_or_default(),
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

    fn staging_file(&self, prefix: &str, suffix: &str) -> Result<tempfile::TempPath, IngestError> {
        std::fs::create_dir_all(self.staging_dir()).map_err(self.staging_error())?;
        let file = tempfile::Builder::new()
            .prefix(prefix)
            .suffix(suffix)
            .tempfile_in(self.staging_dir())
            .map_err(self.staging_error())?;
        Ok(file.into_temp_path())
    }

    fn staging_error(&self) -> impl Fn(std::io::Error) -> IngestError + '_ {
        move |source| IngestError::Staging {
            path: self.staging_dir().display().to_string(),
            source,
        }
    }
}
