//! Readers that turn CSV, NDJSON and Parquet input into typed Arrow columns of the declared
//! schema, batch by batch, with the rows that could not be read marked as failures.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
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
    /// and `.parquet`, each optionally followed by `.gz`.
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
    /// Rows per Arrow batch.
    pub batch_rows: usize,
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
            batch_rows: DEFAULT_BATCH_ROWS,
        }
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

struct CsvSource {
    reader: csv::Reader<Box<dyn BufRead + Send>>,
    schema: DatasetSchema,
    /// Input field index of each schema column.
    field_of_column: Vec<usize>,
    expected_fields: usize,
    null_values: Vec<Vec<u8>>,
    max_field_bytes: usize,
    batch_rows: usize,
    record: csv::ByteRecord,
    next_row: u64,
}

impl CsvSource {
    fn open(
        path: &Path,
        schema: &DatasetSchema,
        options: &ReadOptions,
        counter: Arc<AtomicU64>,
    ) -> Result<Self, IngestError> {
        let input = open_text(path, counter)?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(options.delimiter)
            .quote(options.quote)
            .has_headers(false)
            .flexible(true)
            .from_reader(input);

        let (field_of_column, expected_fields) = if options.header {
            let mut header = csv::ByteRecord::new();
            if !reader.read_byte_record(&mut header).map_err(read_error)? {
                return Err(IngestError::InvalidInput(
                    "the input is empty: expected a CSV header line naming the columns".into(),
                ));
            }
            let names = header
                .iter()
                .map(|name| {
                    std::str::from_utf8(name)
                        .map(|name| name.trim().trim_start_matches('\u{feff}').to_owned())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    IngestError::InvalidInput(
                        "the CSV header is not valid UTF-8; is this a CSV file?".into(),
                    )
                })?;
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
            reader,
            schema: schema.clone(),
            field_of_column,
            expected_fields,
            null_values: options
                .null_values
                .iter()
                .map(|token| token.as_bytes().to_vec())
                .collect(),
            max_field_bytes: options.max_field_bytes,
            batch_rows: options.batch_rows,
            record: csv::ByteRecord::new(),
            next_row: 1,
        })
    }
}

impl BatchSource for CsvSource {
    fn next_batch(&mut self) -> Result<Option<ParsedBatch>, IngestError> {
        let mut builders: Vec<ColumnBuilder> = self
            .schema
            .columns
            .iter()
            .map(|column| ColumnBuilder::new(column, self.batch_rows))
            .collect();
        let mut failures = Vec::new();
        let first_row = self.next_row;
        let mut rows = 0;

        while rows < self.batch_rows {
            if !self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(read_error)?
            {
                break;
            }
            let record = &self.record;
            if record.len() != self.expected_fields {
                let message = format!(
                    "row has {} fields, expected {}",
                    record.len(),
                    self.expected_fields
                );
                failures.push((rows, Failure::row(CheckKind::Format, message)));
                builders.iter_mut().for_each(ColumnBuilder::append_null);
            } else {
                for ((builder, column), &field_index) in builders
                    .iter_mut()
                    .zip(&self.schema.columns)
                    .zip(&self.field_of_column)
                {
                    let field = &record[field_index];
                    if self
                        .null_values
                        .iter()
                        .any(|token| token.as_slice() == field)
                    {
                        builder.append_null();
                        continue;
                    }
                    // NOTE: the csv crate reads a whole record into memory before this check,
                    // so a huge field is rejected here but still buffered once.
                    if field.len() > self.max_field_bytes {
                        builder.append_null();
                        let message = format!(
                            "field has {} bytes, more than the limit of {}",
                            field.len(),
                            self.max_field_bytes
                        );
                        failures.push((
                            rows,
                            Failure::column(CheckKind::FieldSize, &column.name, message),
                        ));
                        continue;
                    }
                    match std::str::from_utf8(field) {
                        Ok(text) => {
                            if let Err(message) = builder.append_text(text) {
                                failures.push((
                                    rows,
                                    Failure::column(CheckKind::Type, &column.name, message),
                                ));
                            }
                        }
                        Err(error) => {
                            builder.append_null();
                            let message = format!("invalid UTF-8 at byte {}", error.valid_up_to());
                            failures.push((
                                rows,
                                Failure::column(CheckKind::Encoding, &column.name, message),
                            ));
                        }
                    }
                }
            }
            rows += 1;
            self.next_row += 1;
        }

        if rows == 0 {
            return Ok(None);
        }
        Ok(Some(ParsedBatch {
            columns: builders.iter_mut().map(ColumnBuilder::finish).collect(),
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
                    "line is longer than the limit of {} bytes",
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
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(options.batch_rows)
            .build()
            .map_err(read_error)?;
        Ok(Self {
            reader,
            schema: schema.clone(),
            next_row: 1,
        })
    }

    fn convert(&self, batch: &RecordBatch) -> Result<ParsedBatch, IngestError> {
        let mut columns = Vec::with_capacity(self.schema.columns.len());
        let mut failures = Vec::new();
        let cast_options = CastOptions {
            safe: true,
            ..CastOptions::default()
        };
        for column in &self.schema.columns {
            let source = batch.column_by_name(&column.name).ok_or_else(|| {
                IngestError::InvalidInput(format!(
                    "the Parquet file lacks column {:?}",
                    column.name
                ))
            })?;
            let target = column.arrow_type();
            if source.data_type() == &target {
                columns.push(source.clone());
                continue;
            }
            let cast = cast_with_options(source, &target, &cast_options).map_err(|error| {
                IngestError::InvalidInput(format!(
                    "column {:?} has Parquet type {}, which cannot be read as {}: {error}",
                    column.name,
                    source.data_type(),
                    column.column_type.as_str()
                ))
            })?;
            // A cast can succeed and still change a value (1.5 to the integer 1, 6 to the
            // boolean true). Casting back and comparing catches that, so such a value is a
            // type failure, not a silent conversion. Text sources are parsed, not converted,
            // so "1.50" read as 1.5 is not a change.
            let is_text = matches!(
                source.data_type(),
                arrow::datatypes::DataType::Utf8 | arrow::datatypes::DataType::LargeUtf8
            );
            let round_trip = if is_text {
                None
            } else {
                cast_with_options(&cast, source.data_type(), &cast_options).ok()
            };
            let formatter = ArrayFormatter::try_new(source.as_ref(), &FormatOptions::default())?;
            let back_formatter = match &round_trip {
                Some(back) => Some(ArrayFormatter::try_new(
                    back.as_ref(),
                    &FormatOptions::default(),
                )?),
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
            first_row: self.next_row,
            row_numbers: None,
            failures,
        })
    }
}

impl BatchSource for ParquetSource {
    fn next_batch(&mut self) -> Result<Option<ParsedBatch>, IngestError> {
        let Some(batch) = self.reader.next() else {
            return Ok(None);
        };
        let batch = batch.map_err(read_error)?;
        let parsed = self.convert(&batch)?;
        self.next_row += batch.num_rows() as u64;
        Ok(Some(parsed))
    }
}
