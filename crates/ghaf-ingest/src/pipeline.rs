//! The streaming pass of one ingest: read a batch, check it, append the passing rows to the
//! Parquet staging file and the profile, and write the failing rows to the quarantine file.
//! It runs on a blocking thread and touches only its own staging files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use ghaf_blob::{BlobRef, Sha256Digest};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::IngestError;
use crate::profile::{Profile, Profiler};
use crate::read::{
    BatchSource, DEFAULT_BATCH_ROWS, ParsedBatch, ReadOptions, RecordBatchSource, open_source,
};
use crate::schema::DatasetSchema;
use crate::validate::{CheckCount, Failure, Validator};

/// Number of failing rows copied into the report as a sample.
const SAMPLE_ROWS: usize = 10;

/// Longest value of a sample row in the report, in characters. The report is stored in the
/// database and returned by the API, so longer values are cut there. The quarantine file
/// keeps every value whole.
pub const SAMPLE_VALUE_CHARS: usize = 256;

/// Parsed batches the reader thread may read ahead of the checks and the writer.
const READ_AHEAD_BATCHES: usize = 2;

/// Parquet key-value metadata key that names the push run of a segment, so that a segment
/// with the same rows as an earlier one is a different file and is appended.
pub(crate) const SEGMENT_RUN_KEY: &str = "ghaf.segment_run_id";

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
    /// The first failing rows, as in the quarantine file but with each value cut to
    /// [`SAMPLE_VALUE_CHARS`] characters.
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
    /// Digest and size of the Parquet file, computed while it was written.
    pub parquet_blob: BlobRef,
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

/// Encoding of the Parquet file of a stored version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VersionEncoding {
    /// Dictionary encoding and zstd level 3: small files, for data that is read many times
    /// or kept long.
    #[default]
    Compact,
    /// Plain encoding and LZ4_RAW pages: faster to write, because no dictionary is built and
    /// no zstd runs, and larger, for versions that a program writes once and reads whole,
    /// such as training sets.
    Fast,
}

/// Writer properties of stored versions. They are fixed per encoding, so equal rows under
/// an equal schema and encoding give a byte-identical file and hence the same content
/// address. A pushed segment also records its run id, which makes each segment a distinct
/// file.
fn writer_properties(encoding: VersionEncoding, segment_run_id: Option<&str>) -> WriterProperties {
    let builder = WriterProperties::builder().set_created_by("ghaf".into());
    let mut builder = match encoding {
        VersionEncoding::Compact => builder.set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("valid zstd level"),
        )),
        VersionEncoding::Fast => builder
            .set_compression(Compression::LZ4_RAW)
            .set_dictionary_enabled(false)
            .set_encoding(Encoding::PLAIN),
    };
    if let Some(run_id) = segment_run_id {
        builder = builder.set_key_value_metadata(Some(vec![KeyValue::new(
            SEGMENT_RUN_KEY.to_owned(),
            run_id.to_owned(),
        )]));
    }
    builder.build()
}

/// Settings of one streaming pass besides the input.
#[derive(Clone, Debug, Default)]
pub(crate) struct PassSettings {
    /// List the input row numbers of the accepted rows in the output.
    pub collect_accepted: bool,
    /// Run id of a pushed segment, written into the Parquet file's metadata.
    pub segment_run_id: Option<String>,
    /// Encoding of the Parquet file of the accepted rows.
    pub encoding: VersionEncoding,
    /// Flags that stop the pass between two batches with [`IngestError::Cancelled`] when
    /// any of them is set.
    pub cancel: Vec<Arc<AtomicBool>>,
}

fn cancelled(settings: &PassSettings) -> bool {
    settings
        .cancel
        .iter()
        .any(|flag| flag.load(Ordering::Relaxed))
}

/// Input of a streaming pass.
pub(crate) enum PassInput {
    /// A file read with `options`, while `progress` counts the bytes read.
    File {
        path: PathBuf,
        options: ReadOptions,
        progress: Arc<AtomicU64>,
    },
    /// Rows already in memory, such as a computed training set. Type conversion and the
    /// checks run on them as on a Parquet file with the same columns.
    Batch(RecordBatch),
}

impl PassInput {
    fn open(self, schema: &DatasetSchema) -> Result<Box<dyn BatchSource>, IngestError> {
        match self {
            PassInput::File {
                path,
                options,
                progress,
            } => open_source(&path, schema, &options, progress),
            PassInput::Batch(batch) => Ok(Box::new(RecordBatchSource::new(
                batch,
                schema,
                DEFAULT_BATCH_ROWS,
            )?)),
        }
    }
}

/// Runs the streaming pass over `input`, with staging files in `staging_dir`.
///
/// Three threads form a pipeline: a reader thread parses the next batches, this thread
/// checks the current one and updates the profile, and a writer thread encodes the
/// accepted rows into the Parquet file. Bounded channels keep at most
/// [`READ_AHEAD_BATCHES`] batches waiting at each step, and batches keep their input order,
/// so the output is the same as a pass on one thread.
pub(crate) fn run_pass(
    schema: &DatasetSchema,
    input: PassInput,
    staging_dir: &Path,
    settings: &PassSettings,
) -> Result<PassOutput, IngestError> {
    let mut source = input.open(schema)?;

    std::fs::create_dir_all(staging_dir).map_err(staging_error(staging_dir))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix("version-").suffix(".parquet");
    // The file becomes the stored blob by a rename on a local backend, so it gets the mode
    // (0o666 less the umask) that the blob store gives the files it writes itself.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let parquet_file = builder
        .tempfile_in(staging_dir)
        .map_err(staging_error(staging_dir))?;
    let (parquet_handle, parquet_path) = parquet_file.into_parts();
    let writer = ArrowWriter::try_new(
        HashingWriter::new(parquet_handle),
        schema.arrow_schema(),
        Some(writer_properties(
            settings.encoding,
            settings.segment_run_id.as_deref(),
        )),
    )?;

    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel(READ_AHEAD_BATCHES);
        scope.spawn(move || {
            loop {
                if cancelled(settings) {
                    return;
                }
                let next = source.next_batch();
                let last = !matches!(next, Ok(Some(_)));
                // A closed channel means the checking side stopped; so does this side.
                if sender.send(next).is_err() || last {
                    return;
                }
            }
        });
        let batches = std::iter::from_fn(|| receiver.recv().ok().and_then(Result::transpose));

        let (accepted_sender, accepted_receiver) =
            std::sync::mpsc::sync_channel::<RecordBatch>(READ_AHEAD_BATCHES);
        let writing = scope.spawn(move || write_parquet(writer, &accepted_receiver));
        let checked = check_and_write(schema, batches, &accepted_sender, staging_dir, settings);
        drop(accepted_sender);
        let written = writing.join().map_err(|_| IngestError::Staging {
            path: parquet_path.display().to_string(),
            source: std::io::Error::other("the Parquet writer thread panicked"),
        })?;

        // A writer error comes first: it also stops the checks, which then fail on a
        // closed channel.
        let file = written?;
        let checked = checked?;
        // No fsync here: the blob store syncs the file when it stores it.
        let parquet_blob = file.finish();
        Ok(PassOutput {
            report: checked.report,
            profile: checked.profile,
            parquet: parquet_path,
            parquet_blob,
            quarantine: checked.quarantine,
            accepted_rows: checked.accepted_rows,
        })
    })
}

/// Encodes accepted batches into the Parquet staging file until the channel closes.
fn write_parquet(
    mut writer: ArrowWriter<HashingWriter>,
    batches: &std::sync::mpsc::Receiver<RecordBatch>,
) -> Result<HashingWriter, IngestError> {
    for batch in batches {
        writer.write(&batch)?;
    }
    Ok(writer.into_inner()?)
}

/// A file writer that hashes what it writes, so the staging file's content address is
/// known when the pass ends without reading the file again.
pub(crate) struct HashingWriter {
    file: File,
    hasher: Sha256,
    size: u64,
}

impl HashingWriter {
    fn new(file: File) -> Self {
        HashingWriter {
            file,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Closes the file and returns the digest and size of everything written.
    fn finish(self) -> BlobRef {
        BlobRef {
            digest: Sha256Digest::from_bytes(self.hasher.finalize().into()),
            size: self.size,
        }
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Results of the checks of one pass; the Parquet file is written beside them.
struct Checked {
    report: IngestReport,
    profile: Profile,
    quarantine: Option<tempfile::TempPath>,
    accepted_rows: Vec<u64>,
}

/// Checks parsed batches, sends the accepted rows to the Parquet writer, and writes the
/// failing rows to the quarantine file.
fn check_and_write(
    schema: &DatasetSchema,
    batches: impl Iterator<Item = Result<ParsedBatch, IngestError>>,
    accepted_sender: &std::sync::mpsc::SyncSender<RecordBatch>,
    staging_dir: &Path,
    settings: &PassSettings,
) -> Result<Checked, IngestError> {
    let collect_accepted = settings.collect_accepted;
    let arrow_schema = schema.arrow_schema();
    let mut validator = Validator::new(schema)?;
    let mut profiler = Profiler::new(schema);
    let mut quarantine: Option<(BufWriter<File>, tempfile::TempPath)> = None;

    let mut rows_read = 0u64;
    let mut rows_quarantined = 0u64;
    let mut sample = Vec::new();
    let mut accepted_rows = Vec::new();

    for batch in batches {
        let mut batch = batch?;
        if cancelled(settings) {
            return Err(IngestError::Cancelled);
        }
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
            profiler.update(&accepted);
            if accepted_sender.send(accepted.clone()).is_err() {
                // The writer stopped on an error, which the caller reports.
                return Err(IngestError::Staging {
                    path: staging_dir.display().to_string(),
                    source: std::io::Error::other("the Parquet writer stopped"),
                });
            }
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
                    sample.push(sample_row(row));
                }
            }
        }
    }

    if cancelled(settings) {
        return Err(IngestError::Cancelled);
    }
    if rows_read == 0 {
        return Err(IngestError::InvalidInput(
            "the input contains no data rows".into(),
        ));
    }

    let quarantine = match quarantine {
        Some((out, path)) => {
            let file = out.into_inner().map_err(|error| IngestError::Staging {
                path: path.display().to_string(),
                source: error.into_error(),
            })?;
            // Copied into the blob store, which syncs it, so no fsync here.
            drop(file);
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
    Ok(Checked {
        report,
        profile: profiler.finish(),
        quarantine,
        accepted_rows,
    })
}

/// Returns a quarantine row for the report sample, each string value cut to
/// [`SAMPLE_VALUE_CHARS`] characters and marked with its full length.
fn sample_row(mut row: QuarantineRow) -> QuarantineRow {
    for value in row.record.values_mut() {
        if let serde_json::Value::String(text) = value
            && text.chars().nth(SAMPLE_VALUE_CHARS).is_some()
        {
            let bytes = text.len();
            let mut cut = crate::profile::truncate_chars(std::mem::take(text), SAMPLE_VALUE_CHARS);
            cut.push_str(&format!("… ({bytes} bytes, cut)"));
            *text = cut;
        }
    }
    row
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
