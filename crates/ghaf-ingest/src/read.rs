//! Readers that turn CSV, NDJSON and Parquet input into typed Arrow columns of the declared
//! schema, batch by batch, with the rows that could not be read marked as failures.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};

use crate::IngestError;
use crate::convert::{ColumnBuilder, quote};
use crate::schema::DatasetSchema;
use crate::validate::{CheckKind, Failure};

/// Default number of rows per Arrow batch.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// Largest CSV field or NDJSON line accepted by default, in bytes.
pub const DEFAULT_MAX_FIELD_BYTES: usize = 16 * 1024 * 1024;

/// Largest CSV record (all fields of one row) accepted by default, in bytes.
pub const DEFAULT_MAX_ROW_BYTES: usize = 64 * 1024 * 1024;

/// Largest decoded size of one Arrow batch read from Parquet by default, in bytes.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// Largest decoded size of one Parquet row group (the columns the schema reads) by default,
/// in bytes.
pub const DEFAULT_MAX_ROW_GROUP_BYTES: u64 = 1024 * 1024 * 1024;

/// The file format of an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    Csv,
    Ndjson,
    Parquet,
}

impl InputFormat {
    /// Guesses the format from a file name: `.csv`, `.tsv`, `.ndjson`, `.jsonl`, `.json`
    /// and `.parquet`, each optionally followed by `.gz`. A `.tsv` file is CSV with a tab
    /// delimiter; [`ReadOptions::for_file_name`] sets it. A `.parquet.gz` file is detected
    /// here, and the reader rejects it with a message that asks to decompress it.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let extension = name.rsplit_once('.')?.1;
        match extension {
            "csv" | "tsv" => Some(InputFormat::Csv),
            "ndjson" | "jsonl" | "json" => Some(InputFormat::Ndjson),
            "parquet" => Some(InputFormat::Parquet),
            _ => None,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "csv" => Some(InputFormat::Csv),
            "ndjson" | "jsonl" => Some(InputFormat::Ndjson),
            "parquet" => Some(InputFormat::Parquet),
            _ => None,
        }
    }
}

/// How to read an input file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadOptions {
    pub format: InputFormat,
    /// CSV field separator, one ASCII byte. Defaults to `,`.
    pub delimiter: u8,
    /// CSV quote character, one ASCII byte. Defaults to `"`; a doubled quote inside a quoted
    /// field is a literal quote.
    pub quote: u8,
    /// Whether the first CSV record names the columns. With a header, columns are matched by
    /// name and extra input columns are ignored; without one, by position.
    pub header: bool,
    /// CSV field values read as null, such as `""` and `NA`.
    pub null_values: Vec<String>,
    /// Largest CSV field or NDJSON line in bytes; a larger one fails its row.
    pub max_field_bytes: usize,
    /// Largest CSV record in bytes. A larger record fails its row and is skipped without
    /// being held in memory.
    #[serde(default = "default_max_row_bytes")]
    pub max_row_bytes: usize,
    /// Largest decoded Arrow batch read from Parquet, in bytes: the rows per batch are
    /// lowered so that a batch of average rows stays below it.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Largest decoded Parquet row group (the columns the schema reads), in bytes; a file
    /// with a larger one is rejected.
    #[serde(default = "default_max_row_group_bytes")]
    pub max_row_group_bytes: u64,
    /// Rows per Arrow batch.
    pub batch_rows: usize,
}

fn default_max_row_bytes() -> usize {
    DEFAULT_MAX_ROW_BYTES
}

fn default_max_batch_bytes() -> usize {
    DEFAULT_MAX_BATCH_BYTES
}

fn default_max_row_group_bytes() -> u64 {
    DEFAULT_MAX_ROW_GROUP_BYTES
}

impl ReadOptions {
    pub fn new(format: InputFormat) -> Self {
        Self {
            format,
            delimiter: b',',
            quote: b'"',
            header: true,
            null_values: vec![String::new()],
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
            max_row_bytes: DEFAULT_MAX_ROW_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_row_group_bytes: DEFAULT_MAX_ROW_GROUP_BYTES,
            batch_rows: DEFAULT_BATCH_ROWS,
        }
    }

    /// Returns the options for a file name as [`InputFormat::from_file_name`] reads it, with
    /// a tab delimiter for `.tsv` and `.tsv.gz` files.
    pub fn for_file_name(name: &str) -> Option<Self> {
        let mut options = Self::new(InputFormat::from_file_name(name)?);
        let lower = name.to_ascii_lowercase();
        if lower
            .strip_suffix(".gz")
            .unwrap_or(&lower)
            .ends_with(".tsv")
        {
            options.delimiter = b'\t';
        }
        Some(options)
    }

    pub(crate) fn check(&self) -> Result<(), IngestError> {
        let option = |option, message: &str| {
            Err(IngestError::InvalidOption {
                option,
                message: message.into(),
            })
        };
        if !self.delimiter.is_ascii() || self.delimiter == b'\n' || self.delimiter == b'\r' {
            return option(
                "delimiter",
                "the delimiter must be one ASCII character other than a line break",
            );
        }
        if !self.quote.is_ascii() || self.quote == self.delimiter {
            return option(
                "quote",
                "the quote must be one ASCII character other than the delimiter",
            );
        }
        if self.batch_rows == 0 || self.batch_rows > 1_048_576 {
            return option("batch_rows", "batch_rows must be between 1 and 1048576");
        }
        if self.max_field_bytes == 0 {
            return option("max_field_bytes", "max_field_bytes must be at least 1");
        }
        if self.max_row_bytes < 1024 {
            return option("max_row_bytes", "max_row_bytes must be at least 1024");
        }
        if self.max_batch_bytes < 1024 {
            return option("max_batch_bytes", "max_batch_bytes must be at least 1024");
        }
        if self.max_row_group_bytes < 1024 {
            return option(
                "max_row_group_bytes",
                "max_row_group_bytes must be at least 1024",
            );
        }
        Ok(())
    }
}

/// One batch of input rows converted to the schema's columns.
pub(crate) struct ParsedBatch {
    pub columns: Vec<ArrayRef>,
    /// Number of rows in the batch.
    pub rows: usize,
    /// 1-based input row number of the first row: the record number after the header for
    /// CSV, the line number for NDJSON, the row index plus one for Parquet.
    pub first_row: u64,
    /// Input row numbers when rows are not consecutive (NDJSON skips blank lines).
    pub row_numbers: Option<Vec<u64>>,
    /// Rows that failed while being read, by index in the batch.
    pub failures: Vec<(usize, Failure)>,
}

impl ParsedBatch {
    pub fn row_number(&self, index: usize) -> u64 {
        match &self.row_numbers {
            Some(numbers) => numbers[index],
            None => self.first_row + index as u64,
        }
    }
}

/// A source of parsed batches.
pub(crate) trait BatchSource: Send {
    fn next_batch(&mut self) -> Result<Option<ParsedBatch>, IngestError>;
}

/// Counts bytes read from the underlying file, for progress reports.
struct CountingReader<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.counter.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

/// Opens a text input, decompressing gzip when the file starts with the gzip magic bytes.
fn open_text(path: &Path, counter: Arc<AtomicU64>) -> Result<Box<dyn BufRead + Send>, IngestError> {
    let file = File::open(path).map_err(|error| {
        IngestError::InvalidInput(format!("cannot open {}: {error}", path.display()))
    })?;
    let mut buffered = BufReader::with_capacity(
        256 * 1024,
        CountingReader {
            inner: file,
            counter,
        },
    );
    let head = buffered.fill_buf().map_err(|error| {
        IngestError::InvalidInput(format!("cannot read {}: {error}", path.display()))
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let decoder = flate2::bufread::MultiGzDecoder::new(buffered);
        Ok(Box::new(BufReader::with_capacity(256 * 1024, decoder)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Opens the reader for `options.format` over the file at `path`.
pub(crate) fn open_source(
    path: &Path,
    schema: &DatasetSchema,
    options: &ReadOptions,
    counter: Arc<AtomicU64>,
) -> Result<Box<dyn BatchSource>, IngestError> {
    options.check()?;
    match options.format {
        InputFormat::Csv => Ok(Box::new(CsvSource::open(path, schema, options, counter)?)),
        InputFormat::Ndjson => Ok(Box::new(NdjsonSource::open(
            path, schema, options, counter,
        )?)),
        InputFormat::Parquet => Ok(Box::new(ParquetSource::open(
            path, schema, options, counter,
        )?)),
    }
}

fn read_error(error: impl std::fmt::Display) -> IngestError {
    IngestError::InvalidInput(format!("cannot read the input: {error}"))
}

/// Outcome of reading one CSV record.
enum RecordRead {
    /// A record: its fields are in `CsvRecords::field`.
    Record,
    /// A record larger than `max_row_bytes`; its bytes were skipped, not kept.
    TooLarge,
    End,
}

/// CSV records read with `csv_core` into one reused buffer that never grows past
/// `max_row_bytes`, so a huge field or row in a (compressed) upload cannot exhaust memory.
struct CsvRecords {
    input: Box<dyn BufRead + Send>,
    parser: csv_core::Reader,
    /// Bytes of the fields of the current record, back to back.
    output: Vec<u8>,
    /// End offset of each field of the current record in `output`.
    ends: Vec<usize>,
    fields: usize,
    max_row_bytes: usize,
}

impl CsvRecords {
    fn new(mut input: Box<dyn BufRead + Send>, options: &ReadOptions) -> Result<Self, IngestError> {
        // A UTF-8 byte order mark before the first record is not part of the data.
        if input
            .fill_buf()
            .map_err(read_error)?
            .starts_with(b"\xef\xbb\xbf")
        {
            input.consume(3);
        }
        let parser = csv_core::ReaderBuilder::new()
            .delimiter(options.delimiter)
            .quote(options.quote)
            .build();
        Ok(Self {
            input,
            parser,
            output: vec![0; options.max_row_bytes.min(64 * 1024)],
            ends: vec![0; 64],
            fields: 0,
            max_row_bytes: options.max_row_bytes,
        })
    }

    fn read_record(&mut self) -> Result<RecordRead, IngestError> {
        use csv_core::ReadRecordResult;
        let mut output_len = 0;
        let mut ends_len = 0;
        let mut too_large = false;
        loop {
            let input = self.input.fill_buf().map_err(read_error)?;
            let (result, read, written, ended) = self.parser.read_record(
                input,
                &mut self.output[output_len..],
                &mut self.ends[ends_len..],
            );
            self.input.consume(read);
            output_len += written;
            ends_len += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if self.output.len() >= self.max_row_bytes {
                        // Keeps parsing to find the end of the record, but overwrites the
                        // buffer instead of growing it.
                        too_large = true;
                        output_len = 0;
                        ends_len = 0;
                    } else {
                        let grown = (self.output.len() * 2).min(self.max_row_bytes);
                        self.output.resize(grown, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if too_large {
                        ends_len = 0;
                    } else {
                        let grown = self.ends.len() * 2;
                        self.ends.resize(grown, 0);
                    }
                }
                ReadRecordResult::Record => {
                    self.fields = ends_len;
                    return Ok(if too_large {
                        RecordRead::TooLarge
                    } else {
                        RecordRead::Record
                    });
                }
                ReadRecordResult::End => return Ok(RecordRead::End),
            }
        }
    }

    fn field(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.output[start..self.ends[index]]
    }
}

struct CsvSource {
    records: CsvRecords,
    schema: DatasetSchema,
    /// Input field index of each schema column.
    field_of_column: Vec<usize>,
    expected_fields: usize,
    null_values: Vec<Vec<u8>>,
    max_field_bytes: usize,
    max_row_bytes: usize,
    batch_rows: usize,
    builders: Vec<ColumnBuilder>,
    next_row: u64,
}

/// Rejects a CSV header that names a column twice, because the column it maps to would be
/// ambiguous.
fn check_duplicate_headers(names: &[String]) -> Result<(), IngestError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name.as_str()) {
            return Err(IngestError::InvalidInput(format!(
                "the CSV header names the column {} more than once; rename or remove the \
                 duplicate column",
                quote(name)
            )));
        }
    }
    Ok(())
}

impl CsvSource {
    fn open(
        path: &Path,
        schema: &DatasetSchema,
        options: &ReadOptions,
        counter: Arc<AtomicU64>,
    ) -> Result<Self, IngestError> {
        let input = open_text(path, counter)?;
        let mut records = CsvRecords::new(input, options)?;

        let (field_of_column, expected_fields) = if options.header {
            match records.read_record()? {
                RecordRead::Record => {}
                RecordRead::TooLarge => {
                    return Err(IngestError::InvalidInput(format!(
                        "the CSV header line is larger than the limit of {} bytes \
                         (ingest.max_row_bytes); is this a CSV file?",
                        options.max_row_bytes
                    )));
                }
                RecordRead::End => {
                    return Err(IngestError::InvalidInput(
                        "the input is empty: expected a CSV header line naming the columns".into(),
                    ));
                }
            }
            let names = (0..records.fields)
                .map(|index| {
                    std::str::from_utf8(records.field(index))
                        .map(|name| name.trim().trim_start_matches('\u{feff}').to_owned())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    IngestError::InvalidInput(
                        "the CSV header is not valid UTF-8; is this a CSV file?".into(),
                    )
                })?;
            check_duplicate_headers(&names)?;
            let mut positions = Vec::with_capacity(schema.columns.len());
            let mut missing = Vec::new();
            for column in &schema.columns {
                match names.iter().position(|name| *name == column.name) {
                    Some(position) => positions.push(position),
                    None => missing.push(column.name.clone()),
                }
            }
            if !missing.is_empty() {
                let shown: Vec<String> = names.iter().take(20).map(|name| quote(name)).collect();
                return Err(IngestError::InvalidInput(format!(
                    "the CSV header lacks the declared columns {missing:?}; it has [{}]; check the \
                     delimiter and the schema",
                    shown.join(", ")
                )));
            }
            (positions, names.len())
        } else {
            ((0..schema.columns.len()).collect(), schema.columns.len())
        };

        Ok(Self {
            records,
            schema: schema.clone(),
            field_of_column,
            expected_fields,
            null_values: options
                .null_values
                .iter()
                .map(|token| token.as_bytes().to_vec())
                .collect(),
            max_field_bytes: options.max_field_bytes,
            max_row_bytes: options.max_row_bytes,
            batch_rows: options.batch_rows,
            builders: schema
                .columns
                .iter()
                .map(|column| ColumnBuilder::new(column, options.batch_rows))
                .collect(),
            next_row: 1,
        })
    }

    /// Appends the fields of the current record to the builders, recording failures of row
    /// `row` of the batch.
    fn append_record(&mut self, row: usize, failures: &mut Vec<(usize, Failure)>) {
        let records = &self.records;
        for ((builder, column), &field_index) in self
            .builders
            .iter_mut()
            .zip(&self.schema.columns)
            .zip(&self.field_of_column)
        {
            let field = records.field(field_index);
            if self
                .null_values
                .iter()
                .any(|token| token.as_slice() == field)
            {
                builder.append_null();
                continue;
            }
            if field.len() > self.max_field_bytes {
                builder.append_null();
                let message = format!(
                    "field has {} bytes, more than the limit of {} (ingest.max_field_bytes)",
                    field.len(),
                    self.max_field_bytes
                );
                failures.push((
                    row,
                    Failure::column(CheckKind::FieldSize, &column.name, message),
                ));
                continue;
            }
            match std::str::from_utf8(field) {
                Ok(text) => {
                    if let Err(message) = builder.append_text(text) {
                        failures
                            .push((row, Failure::column(CheckKind::Type, &column.name, message)));
                    }
                }
                Err(error) => {
                    builder.append_null();
                    let message = format!("invalid UTF-8 at byte {}", error.valid_up_to());
                    failures.push((
                        row,
                        Failure::column(CheckKind::Encoding, &column.name, message),
                    ));
                }
            }
        }
    }
}

impl BatchSource for CsvSource {
    fn next_batch(&mut self) -> Result<Option<ParsedBatch>, IngestError> {
        let mut failures = Vec::new();
        let first_row = self.next_row;
        let mut rows = 0;

        while rows < self.batch_rows {
            match self.records.read_record()? {
                RecordRead::End => break,
                RecordRead::TooLarge => {
                    let message = format!(
                        "row is larger than the limit of {} bytes (ingest.max_row_bytes); its \
                         fields were not read",
                        self.max_row_bytes
                    );
                    failures.push((rows, Failure::row(CheckKind::FieldSize, message)));
                    self.builders
                        .iter_mut()
                        .for_each(ColumnBuilder::append_null);
                }
                RecordRead::Record if self.records.fields != self.expected_fields => {
                    let message = format!(
                        "row has {} fields, expected {}",
                        self.records.fields, self.expected_fields
                    );
                    failures.push((rows, Failure::row(CheckKind::Format, message)));
                    self.builders
                        .iter_mut()
                        .for_each(ColumnBuilder::append_null);
                }
                RecordRead::Record => self.append_record(rows, &mut failures),
            }
            rows += 1;
            self.next_row += 1;
        }

        if rows == 0 {
            return Ok(None);
        }
        Ok(Some(ParsedBatch {
            columns: self
                .builders
                .iter_mut()
                .map(ColumnBuilder::finish)
                .collect(),
            rows,
            first_row,
            row_numbers: None,
            failures,
        }))
    }
}

struct NdjsonSource {
    input: Box<dyn BufRead + Send>,
    schema: DatasetSchema,
    max_line_bytes: usize,
    batch_rows: usize,
    line: Vec<u8>,
    line_number: u64,
}

impl NdjsonSource {
    fn open(
        path: &Path,
        schema: &DatasetSchema,
        options: &ReadOptions,
        counter: Arc<AtomicU64>,
    ) -> Result<Self, IngestError> {
        Ok(Self {
            input: open_text(path, counter)?,
            schema: schema.clone(),
            max_line_bytes: options.max_field_bytes,
            batch_rows: options.batch_rows,
            line: Vec::new(),
            line_number: 0,
        })
    }

    /// Reads the next line into `self.line` without holding more than the line limit in
    /// memory. Returns `None` at the end, `Some(false)` for a line over the limit.
    fn read_line(&mut self) -> Result<Option<bool>, IngestError> {
        self.line.clear();
        let limit = self.max_line_bytes as u64 + 1;
        let read = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.line)
            .map_err(read_error)?;
        if read == 0 {
            return Ok(None);
        }
        self.line_number += 1;
        if self.line.len() as u64 == limit && self.line.last() != Some(&b'\n') {
            // Skips the rest of the oversize line in bounded steps.
            loop {
                let buffer = self.input.fill_buf().map_err(read_error)?;
                if buffer.is_empty() {
                    break;
                }
                match buffer.iter().position(|&byte| byte == b'\n') {
                    Some(end) => {
                        self.input.consume(end + 1);
                        break;
                    }
                    None => {
                        let length = buffer.len();
                        self.input.consume(length);
                    }
                }
            }
            return Ok(Some(false));
        }
        Ok(Some(true))
    }
}

impl BatchSource for NdjsonSource {
    fn next_batch(&mut self) -> Result<Option<ParsedBatch>, IngestError> {
        let mut builders: Vec<ColumnBuilder> = self
            .schema
            .columns
            .iter()
            .map(|column| ColumnBuilder::new(column, self.batch_rows))
            .collect();
        let mut failures = Vec::new();
        let mut row_numbers = Vec::new();

        while row_numbers.len() < self.batch_rows {
            let Some(within_limit) = self.read_line()? else {
                break;
            };
            let index = row_numbers.len();
            if !within_limit {
                row_numbers.push(self.line_number);
                let message = format!(
                    "line is longer than the limit of {} bytes (ingest.max_field_bytes)",
                    self.max_line_bytes
                );
                failures.push((index, Failure::row(CheckKind::FieldSize, message)));
                builders.iter_mut().for_each(ColumnBuilder::append_null);
                continue;
            }
            if self.line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            row_numbers.push(self.line_number);
            if let Err(error) = std::str::from_utf8(&self.line) {
                let message = format!("invalid UTF-8 at byte {} of the line", error.valid_up_to());
                failures.push((index, Failure::row(CheckKind::Encoding, message)));
                builders.iter_mut().for_each(ColumnBuilder::append_null);
                continue;
            }
            let object = match serde_json::from_slice::<serde_json::Value>(&self.line) {
                Ok(serde_json::Value::Object(object)) => object,
                Ok(other) => {
                    let message =
                        format!("line is a JSON {}, expected an object", json_kind(&other));
                    failures.push((index, Failure::row(CheckKind::Format, message)));
                    builders.iter_mut().for_each(ColumnBuilder::append_null);
                    continue;
                }
                Err(error) => {
                    let message = format!("line is not valid JSON: {error}");
                    failures.push((index, Failure::row(CheckKind::Format, message)));
                    builders.iter_mut().for_each(ColumnBuilder::append_null);
                    continue;
                }
            };
            for (builder, column) in builders.iter_mut().zip(&self.schema.columns) {
                let value = object.get(&column.name).unwrap_or(&serde_json::Value::Null);
                if let Err(message) = builder.append_json(value) {
                    failures.push((
                        index,
                        Failure::column(CheckKind::Type, &column.name, message),
                    ));
                }
            }
        }

        if row_numbers.is_empty() {
            return Ok(None);
        }
        Ok(Some(ParsedBatch {
            columns: builders.iter_mut().map(ColumnBuilder::finish).collect(),
            rows: row_numbers.len(),
            first_row: row_numbers[0],
            row_numbers: Some(row_numbers),
            failures,
        }))
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Chooses the rows per Parquet batch so that a batch of average rows stays below
/// `max_batch_bytes`, and rejects a file with a row group whose decoded columns exceed
/// `max_row_group_bytes`. Sizes are the uncompressed sizes in the file's metadata, of the
/// columns the schema reads.
fn parquet_batch_rows(
    builder: &ParquetRecordBatchReaderBuilder<File>,
    schema: &DatasetSchema,
    options: &ReadOptions,
) -> Result<usize, IngestError> {
    let names: std::collections::HashSet<&str> = schema
        .columns
        .iter()
        .map(|column| column.name.as_str())
        .collect();
    let descriptor = builder.parquet_schema();
    let read_leaves: Vec<usize> = (0..descriptor.num_columns())
        .filter(|&leaf| {
            let path = descriptor.column(leaf).path().parts().to_vec();
            path.first()
                .is_some_and(|root| names.contains(root.as_str()))
        })
        .collect();
    // NOTE: sizes are averages over a row group, so one huge value is still decoded whole;
    // only the row group limit bounds it.
    let mut max_row_bytes = 1u64;
    for (index, group) in builder.metadata().row_groups().iter().enumerate() {
        let bytes: u64 = read_leaves
            .iter()
            .map(|&leaf| u64::try_from(group.column(leaf).uncompressed_size()).unwrap_or(0))
            .sum();
        if bytes > options.max_row_group_bytes {
            return Err(IngestError::InvalidInput(format!(
                "row group {index} of the Parquet file has {bytes} bytes of decoded column \
                 data, more than the limit of {} bytes (ingest.max_row_group_bytes); rewrite \
                 the file with smaller row groups",
                options.max_row_group_bytes
            )));
        }
        let rows = u64::try_from(group.num_rows()).unwrap_or(0).max(1);
        max_row_bytes = max_row_bytes.max(bytes.div_ceil(rows));
    }
    let by_bytes =
        usize::try_from(options.max_batch_bytes as u64 / max_row_bytes).unwrap_or(usize::MAX);
    Ok(by_bytes.clamp(1, options.batch_rows))
}

/// Names that writers use for UTC in the time zone of an Arrow timestamp. pandas and pyarrow
/// write `UTC` for a tz-aware UTC column; the others are aliases of it in the IANA database.
const UTC_NAMES: &[&str] = &[
    "UTC",
    "Z",
    "Zulu",
    "UCT",
    "GMT",
    "GMT0",
    "GMT+0",
    "GMT-0",
    "Greenwich",
    "Universal",
    "Etc/UTC",
    "Etc/UCT",
    "Etc/Zulu",
    "Etc/GMT",
    "Etc/GMT0",
    "Etc/GMT+0",
    "Etc/GMT-0",
    "Etc/Greenwich",
    "Etc/Universal",
];

/// Returns true when `zone` is a fixed offset that Arrow parses without zone data: `+HH:MM`,
/// `+HHMM` or `+HH`, with `+` or `-`.
fn is_fixed_offset(zone: &str) -> bool {
    let Some(rest) = zone.strip_prefix('+').or_else(|| zone.strip_prefix('-')) else {
        return false;
    };
    let digits = |text: &str| text.len() == 2 && text.bytes().all(|byte| byte.is_ascii_digit());
    let (hours, minutes) = match rest.len() {
        2 => (rest, "00"),
        4 => rest.split_at(2),
        5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
        _ => return false,
    };
    digits(hours)
        && digits(minutes)
        && hours.parse::<u8>().is_ok_and(|hours| hours <= 23)
        && minutes.parse::<u8>().is_ok_and(|minutes| minutes <= 59)
}

/// Relabels a timestamp column whose time zone is a UTC name as `+00:00`.
///
/// Arrow stores a timestamp with a time zone as an instant since the epoch in UTC, and the
/// zone only sets how the instant is displayed. This build of Arrow has no zone database
/// (`chrono-tz`), so it parses only fixed offsets and fails on a name such as `UTC`. The
/// relabelled column has the same instants. A fixed offset or no zone returns `None`, and
/// any other zone name is an input error that names the column and the zone.
fn utc_relabelled(source: &ArrayRef, column: &str) -> Result<Option<ArrayRef>, IngestError> {
    let DataType::Timestamp(unit, Some(zone)) = source.data_type() else {
        return Ok(None);
    };
    if is_fixed_offset(zone) {
        return Ok(None);
    }
    if !UTC_NAMES.iter().any(|name| name.eq_ignore_ascii_case(zone)) {
        return Err(IngestError::InvalidInput(format!(
            "column {column:?} is a Parquet timestamp in the time zone {zone:?}, which Ghaf \
             cannot read: only UTC (written as UTC, Z, Etc/UTC or GMT) and fixed offsets such \
             as +04:00 are supported; convert the column to UTC before writing the file (in \
             pandas: df[{column:?}] = df[{column:?}].dt.tz_convert(\"UTC\")), which keeps \
             every instant"
        )));
    }
    let utc = DataType::Timestamp(*unit, Some("+00:00".into()));
    // A cast between two zones of the same unit copies the instants and parses neither zone.
    let relabelled = arrow::compute::cast(source, &utc).map_err(|error| {
        IngestError::InvalidInput(format!(
            "column {column:?}: cannot read its timestamps in the time zone {zone:?} as UTC: \
             {error}"
        ))
    })?;
    Ok(Some(relabelled))
}

/// Converts a Parquet read error into an input error. When the file uses a page codec that
/// this build leaves out (Brotli), the message also says how to rewrite the file.
fn parquet_read_error(error: impl std::fmt::Display) -> IngestError {
    let message = error.to_string();
    if message.contains("Disabled feature at compile time") {
        return IngestError::InvalidInput(format!(
            "cannot read the input: {message}; Ghaf reads Parquet pages compressed with \
             Snappy, gzip, LZ4 or zstd, so rewrite the file with one of them (in pandas: \
             df.to_parquet(path, compression=\"zstd\"))"
        ));
    }
    read_error(message)
}

struct ParquetSource {
    reader: ParquetRecordBatchReader,
    schema: DatasetSchema,
    next_row: u64,
}

impl ParquetSource {
    fn open(
        path: &Path,
        schema: &DatasetSchema,
        options: &ReadOptions,
        counter: Arc<AtomicU64>,
    ) -> Result<Self, IngestError> {
        let file = File::open(path).map_err(|error| {
            IngestError::InvalidInput(format!("cannot open {}: {error}", path.display()))
        })?;
        if let Ok(metadata) = file.metadata() {
            counter.fetch_add(metadata.len(), Ordering::Relaxed);
        }
        let mut magic = [0u8; 2];
        let gzip = (&file).read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        if gzip {
            return Err(IngestError::InvalidInput(
                "the input is a gzip-compressed file, but gzip-compressed Parquet is not \
                 supported: decompress it first (gunzip), because Parquet compresses its pages \
                 itself"
                    .into(),
            ));
        }
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|error| {
            IngestError::InvalidInput(format!("the input is not a readable Parquet file: {error}"))
        })?;
        let file_schema = builder.schema().clone();
        let mut roots = Vec::new();
        let mut missing = Vec::new();
        for column in &schema.columns {
            match file_schema.index_of(&column.name) {
                Ok(index) => roots.push(index),
                Err(_) => missing.push(column.name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(IngestError::InvalidInput(format!(
                "the Parquet file lacks the declared columns {missing:?}"
            )));
        }
        let batch_rows = parquet_batch_rows(&builder, schema, options)?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(batch_rows)
            .build()
            .map_err(read_error)?;
        Ok(Self {
            reader,
            schema: schema.clone(),
            next_row: 1,
        })
    }

    fn convert(&self, batch: &RecordBatch) -> Result<ParsedBatch, IngestError> {
        convert_arrow_batch(&self.schema, batch, "Parquet file", self.next_row)
    }
}

/// Converts a batch of Arrow columns to the schema's columns, taking each declared column by
/// name. `origin` names the input in messages (`Parquet file`, `record batch`), and
/// `first_row` is the 1-based input row number of the batch's first row. A value that the
/// cast would change is a type failure of its row.
fn convert_arrow_batch(
    schema: &DatasetSchema,
    batch: &RecordBatch,
    origin: &str,
    first_row: u64,
) -> Result<ParsedBatch, IngestError> {
    let mut columns = Vec::with_capacity(schema.columns.len());
    let mut failures = Vec::new();
    let cast_options = CastOptions {
        safe: true,
        ..CastOptions::default()
    };
    for column in &schema.columns {
        let source = batch.column_by_name(&column.name).ok_or_else(|| {
            IngestError::InvalidInput(format!("the {origin} lacks column {:?}", column.name))
        })?;
        let target = column.arrow_type();
        let relabelled = utc_relabelled(source, &column.name)?;
        let source = relabelled.as_ref().unwrap_or(source);
        if source.data_type() == &target {
            columns.push(source.clone());
            continue;
        }
        let cast = cast_with_options(source, &target, &cast_options).map_err(|error| {
            IngestError::InvalidInput(format!(
                "column {:?} has {origin} type {}, which cannot be read as {}: {error}",
                column.name,
                source.data_type(),
                column.column_type.as_str()
            ))
        })?;
        // A cast can succeed and still change a value (1.5 to the integer 1, 6 to the
        // boolean true). Casting back and comparing catches that, so such a value is a
        // type failure, not a silent conversion. Text sources are parsed, not converted,
        // so "1.50" read as 1.5 is not a change.
        let is_text = matches!(source.data_type(), DataType::Utf8 | DataType::LargeUtf8);
        let round_trip = if is_text {
            None
        } else {
            cast_with_options(&cast, source.data_type(), &cast_options).ok()
        };
        let format_error = |error: arrow::error::ArrowError| {
            IngestError::InvalidInput(format!(
                "column {:?} has {origin} type {}, whose values cannot be shown: {error}",
                column.name,
                source.data_type()
            ))
        };
        let formatter = ArrayFormatter::try_new(source.as_ref(), &FormatOptions::default())
            .map_err(format_error)?;
        let back_formatter = match &round_trip {
            Some(back) => Some(
                ArrayFormatter::try_new(back.as_ref(), &FormatOptions::default())
                    .map_err(format_error)?,
            ),
            None => None,
        };
        for index in 0..source.len() {
            if !source.is_valid(index) {
                continue;
            }
            let changed = match (&round_trip, &back_formatter) {
                (Some(back), Some(back_formatter)) => {
                    back.is_null(index)
                        || back_formatter.value(index).to_string()
                            != formatter.value(index).to_string()
                }
                _ => false,
            };
            if cast.is_null(index) || changed {
                let message = format!(
                    "cannot convert {} to {} without changing the value",
                    quote(&formatter.value(index).to_string()),
                    column.column_type.as_str()
                );
                failures.push((
                    index,
                    Failure::column(CheckKind::Type, &column.name, message),
                ));
            }
        }
        columns.push(cast);
    }
    Ok(ParsedBatch {
        columns,
        rows: batch.num_rows(),
        first_row,
        row_numbers: None,
        failures,
    })
}

impl BatchSource for ParquetSource {
    fn next_batch(&mut self) -> Result<Option<ParsedBatch>, IngestError> {
        let Some(batch) = self.reader.next() else {
            return Ok(None);
        };
        let batch = batch.map_err(parquet_read_error)?;
        let parsed = self.convert(&batch)?;
        self.next_row += batch.num_rows() as u64;
        Ok(Some(parsed))
    }
}

/// Rows of one in-memory record batch, converted to the schema in slices of `batch_rows`
/// rows. Slicing shares the batch's buffers, so only conversions copy.
pub(crate) struct RecordBatchSource {
    batch: RecordBatch,
    schema: DatasetSchema,
    batch_rows: usize,
    offset: usize,
}

impl RecordBatchSource {
    /// Checks that `batch` has every declared column; other columns are ignored, as in a
    /// Parquet file.
    pub(crate) fn new(
        batch: RecordBatch,
        schema: &DatasetSchema,
        batch_rows: usize,
    ) -> Result<Self, IngestError> {
        let missing: Vec<&str> = schema
            .columns
            .iter()
            .filter(|column| batch.column_by_name(&column.name).is_none())
            .map(|column| column.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(IngestError::InvalidInput(format!(
                "the record batch lacks the declared columns {missing:?}"
            )));
        }
        Ok(Self {
            batch,
            schema: schema.clone(),
            batch_rows: batch_rows.max(1),
            offset: 0,
        })
    }
}

impl BatchSource for RecordBatchSource {
    fn next_batch(&mut self) -> Result<Option<ParsedBatch>, IngestError> {
        let remaining = self.batch.num_rows() - self.offset;
        if remaining == 0 {
            return Ok(None);
        }
        let rows = remaining.min(self.batch_rows);
        let slice = self.batch.slice(self.offset, rows);
        let parsed =
            convert_arrow_batch(&self.schema, &slice, "record batch", self.offset as u64 + 1)?;
        self.offset += rows;
        Ok(Some(parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_batches_are_capped_by_bytes() {
        let schema = DatasetSchema::from_yaml("columns: [{name: name, type: string}]").unwrap();
        let values: Vec<String> = (0..100).map(|index| format!("{index:0>1000}")).collect();
        let batch = RecordBatch::try_new(
            schema.arrow_schema(),
            vec![Arc::new(arrow::array::StringArray::from(values))],
        )
        .unwrap();
        let file = tempfile::tempfile().unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file.try_clone().unwrap(), batch.schema(), None)
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();

        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let mut options = ReadOptions::new(InputFormat::Parquet);
        options.max_batch_bytes = 10_000;
        let rows = parquet_batch_rows(&builder, &schema, &options).unwrap();
        assert!((1..=10).contains(&rows), "{rows} rows of about 1000 bytes");

        options.max_batch_bytes = DEFAULT_MAX_BATCH_BYTES;
        let rows = parquet_batch_rows(&builder, &schema, &options).unwrap();
        assert_eq!(rows, DEFAULT_BATCH_ROWS);
    }

    #[test]
    fn fixed_offsets_are_recognised() {
        for zone in ["+00:00", "+04:00", "-05:30", "+0400", "+04", "-23:59"] {
            assert!(is_fixed_offset(zone), "{zone}");
        }
        for zone in [
            "UTC",
            "04:00",
            "+4:00",
            "+24:00",
            "+04:60",
            "+04:00:00",
            "+",
            "+0a:00",
        ] {
            assert!(!is_fixed_offset(zone), "{zone}");
        }
    }

    #[test]
    fn zone_names_relabelled_or_rejected() {
        let values = arrow::array::TimestampNanosecondArray::from(vec![Some(1_500), None]);
        for zone in ["UTC", "utc", "Z", "Etc/UTC", "GMT"] {
            let source: ArrayRef = Arc::new(values.clone().with_timezone(zone));
            let relabelled = utc_relabelled(&source, "at").unwrap().expect("relabelled");
            assert_eq!(
                relabelled.data_type(),
                &DataType::Timestamp(
                    arrow::datatypes::TimeUnit::Nanosecond,
                    Some("+00:00".into())
                )
            );
            assert_eq!(relabelled.to_data().buffers(), source.to_data().buffers());
            assert!(relabelled.is_null(1));
        }
        let offset: ArrayRef = Arc::new(values.clone().with_timezone("+04:00"));
        assert!(utc_relabelled(&offset, "at").unwrap().is_none());
        let naive: ArrayRef = Arc::new(values.clone());
        assert!(utc_relabelled(&naive, "at").unwrap().is_none());

        let named: ArrayRef = Arc::new(values.with_timezone("Asia/Dubai"));
        let error = utc_relabelled(&named, "at").unwrap_err();
        assert!(matches!(error, IngestError::InvalidInput(_)), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("\"at\"") && message.contains("\"Asia/Dubai\""),
            "{message}"
        );
    }
}
