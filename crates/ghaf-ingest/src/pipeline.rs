//! The streaming pass of one ingest: read a batch, check it, append the passing rows to the
//! Parquet staging file and the profile, and write the failing rows to the quarantine file.
//! It runs on a blocking thread and touches only its own staging files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::IngestError;
use crate::profile::{Profile, Profiler};
use crate::read::{ReadOptions, open_source};
use crate::schema::DatasetSchema;
use crate::validate::{CheckCount, Failure, Validator};

/// Number of failing rows copied into the report as a sample.
const SAMPLE_ROWS: usize = 10;

/// zstd level of stored versions: level 3 is zstd's own default, a balance of speed and size.
const ZSTD_LEVEL: i32 = 3;

/// Result of the checks of one ingest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestReport {
    pub rows_read: u64,
    pub rows_accepted: u64,
    pub rows_quarantined: u64,
    /// Share of rows that failed, from 0 to 1.
    pub failure_share: f64,
    /// Failing rows per declared check. A row that fails several checks counts in each.
    pub checks: Vec<CheckCount>,
    /// The first failing rows, as in the quarantine file.
    pub sample: Vec<QuarantineRow>,
}

/// One line of a quarantine file (NDJSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRow {
    /// 1-based input row: the record number after the header for CSV, the line number for
    /// NDJSON, the row index plus one for Parquet.
    pub row: u64,
    pub reasons: Vec<Failure>,
    /// The row's values as read; a value that could not be converted is null here and
    /// quoted in its reason.
    pub record: serde_json::Map<String, serde_json::Value>,
}

/// Staging files and results of the streaming pass.
pub(crate) struct PassOutput {
    pub report: IngestReport,
    pub profile: Profile,
    pub parquet: tempfile::TempPath,
    pub quarantine: Option<tempfile::TempPath>,
    /// Input row numbers of the accepted rows, in input order.
    pub accepted_rows: Vec<u64>,
}

fn staging_error(path: &Path) -> impl Fn(std::io::Error) -> IngestError + '_ {
    move |source| IngestError::Staging {
        path: path.display().to_string(),
        source,
    }
}

/// Writer properties of stored versions. They are fixed, so equal rows under an equal
/// schema give a byte-identical file and hence the same content address.
fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("valid zstd level"),
        ))
        .set_created_by("ghaf".into())
        .build()
}

/// Runs the streaming pass over the input at `input`, with staging files in `staging_dir`.
/// With `collect_accepted`, the output lists the input row numbers of the accepted rows.
pub(crate) fn run_pass(
    schema: &DatasetSchema,
    input: &Path,
    options: &ReadOptions,
    staging_dir: &Path,
    progress: Arc<AtomicU64>,
    collect_accepted: bool,
) -> Result<PassOutput, IngestError> {
    let mut source = open_source(input, schema, options, progress)?;
    let arrow_schema = schema.arrow_schema();
    let mut validator = Validator::new(schema)?;
    let mut profiler = Profiler::new(schema);

    std::fs::create_dir_all(staging_dir).map_err(staging_error(staging_dir))?;
    let parquet_file = tempfile::Builder::new()
        .prefix("version-")
        .suffix(".parquet")
        .tempfile_in(staging_dir)
        .map_err(staging_error(staging_dir))?;
    let (parquet_handle, parquet_path) = parquet_file.into_parts();
    let mut writer = ArrowWriter::try_new(
        parquet_handle,
        arrow_schema.clone(),
        Some(writer_properties()),
    )?;
    let mut quarantine: Option<(BufWriter<File>, tempfile::TempPath)> = None;

    let mut rows_read = 0u64;
    let mut rows_quarantined = 0u64;
    let mut sample = Vec::new();
    let mut accepted_rows = Vec::new();

    while let Some(mut batch) = source.next_batch()? {
        rows_read += batch.rows as u64;
        let columns: Vec<ArrayRef> = batch.columns.clone();
        let read_failures = std::mem::take(&mut batch.failures);
        let (mask, failures) = validator.check(&columns, batch.rows, read_failures)?;
        let record_batch = RecordBatch::try_new(arrow_schema.clone(), columns)?;

        if collect_accepted {
            let passing = mask
                .iter()
                .enumerate()
                .filter(|(_, keep)| *keep == Some(true));
            accepted_rows.extend(passing.map(|(index, _)| batch.row_number(index)));
        }
        let accepted = accept(&record_batch, &mask)?;
        if accepted.num_rows() > 0 {
            writer.write(&accepted)?;
            profiler.update(&accepted);
        }

        if accepted.num_rows() < record_batch.num_rows() {
            if quarantine.is_none() {
                let file = tempfile::Builder::new()
                    .prefix("quarantine-")
                    .suffix(".ndjson")
                    .tempfile_in(staging_dir)
                    .map_err(staging_error(staging_dir))?;
                let (handle, path) = file.into_parts();
                quarantine = Some((BufWriter::new(handle), path));
            }
            let (out, path) = quarantine
                .as_mut()
                .expect("quarantine file was just opened");
            let formatters = record_batch
                .columns()
                .iter()
                .map(|column| ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()))
                .collect::<Result<Vec<_>, _>>()?;
            for (index, reasons) in failures.into_iter().enumerate() {
                if reasons.is_empty() {
                    continue;
                }
                rows_quarantined += 1;
                let mut record = serde_json::Map::new();
                for ((field, column), formatter) in arrow_schema
                    .fields()
                    .iter()
                    .zip(record_batch.columns())
                    .zip(&formatters)
                {
                    let value = if column.is_null(index) {
                        serde_json::Value::Null
                    } else {
                        serde_json::Value::String(formatter.value(index).to_string())
                    };
                    record.insert(field.name().clone(), value);
                }
                let row = QuarantineRow {
                    row: batch.row_number(index),
                    reasons,
                    record,
                };
                serde_json::to_writer(&mut *out, &row).map_err(|error| IngestError::Staging {
                    path: path.display().to_string(),
                    source: error.into(),
                })?;
                out.write_all(b"\n").map_err(staging_error(path))?;
                if sample.len() < SAMPLE_ROWS {
                    sample.push(row);
                }
            }
        }
    }

    if rows_read == 0 {
        return Err(IngestError::InvalidInput(
            "the input contains no data rows".into(),
        ));
    }

    let file = writer.into_inner()?;
    file.sync_all().map_err(staging_error(&parquet_path))?;
    let quarantine = match quarantine {
        Some((out, path)) => {
            let file = out.into_inner().map_err(|error| IngestError::Staging {
                path: path.display().to_string(),
                source: error.into_error(),
            })?;
            file.sync_all().map_err(staging_error(&path))?;
            Some(path)
        }
        None => None,
    };

    #[allow(clippy::cast_precision_loss)]
    let failure_share = rows_quarantined as f64 / rows_read as f64;
    let report = IngestReport {
        rows_read,
        rows_accepted: rows_read - rows_quarantined,
        rows_quarantined,
        failure_share,
        checks: validator.counts(),
        sample,
    };
    Ok(PassOutput {
        report,
        profile: profiler.finish(),
        parquet: parquet_path,
        quarantine,
        accepted_rows,
    })
}

fn accept(batch: &RecordBatch, mask: &BooleanArray) -> Result<RecordBatch, IngestError> {
    if mask.true_count() == batch.num_rows() {
        return Ok(batch.clone());
    }
    Ok(filter_record_batch(batch, mask)?)
}

/// Path of the staging directory under a data directory.
pub fn staging_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("ingest-staging")
}
