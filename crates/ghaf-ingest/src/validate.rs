//! Row checks over typed Arrow batches: not-null, range, allowed set, pattern and unique
//! key, with a failure count per declared check.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};

use crate::IngestError;
use crate::convert::quote;
use crate::schema::{Bound, ColumnSpec, ColumnType, DatasetSchema};

/// The kind of check a row failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The row cannot be read: wrong number of CSV fields, a line that is not a JSON object.
    Format,
    /// A field is not valid UTF-8.
    Encoding,
    /// A field or line is larger than the configured limit.
    FieldSize,
    /// A value cannot be converted to the column's type.
    Type,
    /// A non-nullable column is null.
    NotNull,
    /// A value is outside `min`..=`max`.
    Range,
    /// A value is not in the `allowed` set.
    Allowed,
    /// A string does not match the column's `pattern`.
    Pattern,
    /// A value of a `unique` column, or the `unique_key` columns, repeats an earlier row.
    Unique,
}

/// The failure of one row in one check, with its reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub check: CheckKind,
    /// The column, or `None` for whole-row failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub message: String,
}

impl Failure {
    pub(crate) fn row(check: CheckKind, message: String) -> Self {
        Self {
            check,
            column: None,
            message,
        }
    }

    pub(crate) fn column(check: CheckKind, column: &str, message: String) -> Self {
        Self {
            check,
            column: Some(column.to_owned()),
            message,
        }
    }
}

/// Number of rows that failed one check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckCount {
    pub check: CheckKind,
    /// The column, or the comma-joined key columns; `None` for whole-row checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub failed: u64,
}

/// Checks of one column, prepared once per ingest.
struct ColumnChecks {
    index: usize,
    name: String,
    column_type: ColumnType,
    not_null: bool,
    min: Option<Bound>,
    max: Option<Bound>,
    allowed_text: Option<HashSet<String>>,
    allowed_integer: Option<HashSet<i64>>,
    pattern: Option<regex::Regex>,
}

/// A unique constraint: one `unique` column or the `unique_key` columns.
struct UniqueCheck {
    label: String,
    columns: Vec<usize>,
    converter: RowConverter,
    seen: KeySet,
}

/// Seed of the unique-key hash. It is fixed so that runs and profiles are reproducible; the
/// set compares the key bytes, so the seed never changes a result.
const KEY_HASH_SEED: u64 = 0x6768_6166_6b65_7973;

/// A set of byte keys kept back to back in one arena, with a hash table of key indices, so
/// that inserting a key costs no allocation of its own.
struct KeySet {
    bytes: Vec<u8>,
    /// End offset of each key in `bytes`; key `i` starts at the end of key `i - 1`.
    ends: Vec<usize>,
    /// (hash, key index) of every key.
    table: hashbrown::HashTable<(u64, usize)>,
    state: foldhash::fast::FixedState,
}

impl KeySet {
    fn new() -> Self {
        Self {
            bytes: Vec::new(),
            ends: Vec::new(),
            table: hashbrown::HashTable::new(),
            state: foldhash::fast::FixedState::with_seed(KEY_HASH_SEED),
        }
    }

    fn key(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.bytes[start..self.ends[index]]
    }

    /// Inserts `key`; returns false when the set already contains it.
    fn insert(&mut self, key: &[u8]) -> bool {
        use std::hash::BuildHasher;
        let hash = self.state.hash_one(key);
        let (bytes, ends) = (&self.bytes, &self.ends);
        let stored = |index: usize| {
            let start = if index == 0 { 0 } else { ends[index - 1] };
            &bytes[start..ends[index]]
        };
        if self
            .table
            .find(hash, |&(entry_hash, index)| {
                entry_hash == hash && stored(index) == key
            })
            .is_some()
        {
            return false;
        }
        let index = self.ends.len();
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
        self.table
            .insert_unique(hash, (hash, index), |&(entry_hash, _)| entry_hash);
        debug_assert_eq!(self.key(index), key);
        true
    }
}

/// Runs the declared checks over batches and counts failures per check.
pub(crate) struct Validator {
    columns: Vec<ColumnChecks>,
    unique: Vec<UniqueCheck>,
    counts: BTreeMap<(CheckKind, Option<String>), u64>,
}

impl Validator {
    pub(crate) fn new(schema: &DatasetSchema) -> Result<Self, IngestError> {
        let mut counts = BTreeMap::new();
        counts.insert((CheckKind::Format, None), 0);
        let mut columns = Vec::new();
        let mut unique = Vec::new();
        let arrow_schema = schema.arrow_schema();

        for (index, spec) in schema.columns.iter().enumerate() {
            let checks = prepare_column(index, spec)?;
            counts.insert((CheckKind::Type, Some(spec.name.clone())), 0);
            let mut declare = |present: bool, kind: CheckKind| {
                if present {
                    counts.insert((kind, Some(spec.name.clone())), 0);
                }
            };
            declare(checks.not_null, CheckKind::NotNull);
            declare(
                checks.min.is_some() || checks.max.is_some(),
                CheckKind::Range,
            );
            declare(
                checks.allowed_text.is_some() || checks.allowed_integer.is_some(),
                CheckKind::Allowed,
            );
            declare(checks.pattern.is_some(), CheckKind::Pattern);
            columns.push(checks);
            if spec.unique {
                unique.push(unique_check(&[index], &arrow_schema, spec.name.clone())?);
            }
        }
        if !schema.unique_key.is_empty() {
            let indices: Vec<usize> = schema
                .unique_key
                .iter()
                .filter_map(|name| {
                    schema
                        .columns
                        .iter()
                        .position(|column| &column.name == name)
                })
                .collect();
            unique.push(unique_check(
                &indices,
                &arrow_schema,
                schema.unique_key.join(","),
            )?);
        }
        for check in &unique {
            counts.insert((CheckKind::Unique, Some(check.label.clone())), 0);
        }
        Ok(Self {
            columns,
            unique,
            counts,
        })
    }

    /// Checks every row of a batch. Returns the mask of rows that pass and the failures of
    /// the others, by row index; read failures of the batch are included.
    pub(crate) fn check(
        &mut self,
        columns: &[ArrayRef],
        rows: usize,
        read_failures: Vec<(usize, Failure)>,
    ) -> Result<(BooleanArray, Vec<Vec<Failure>>), IngestError> {
        let mut failures: Vec<Vec<Failure>> = vec![Vec::new(); rows];
        for (row, failure) in read_failures {
            failures[row].push(failure);
        }

        for checks in &self.columns {
            check_column(checks, columns[checks.index].as_ref(), &mut failures);
        }

        // Unique keys are recorded only for rows that passed every other check, so a row that
        // goes to quarantine never blocks a later valid row with the same key.
        for check in &mut self.unique {
            let key_columns: Vec<ArrayRef> = check
                .columns
                .iter()
                .map(|&index| columns[index].clone())
                .collect();
            let keys = check.converter.convert_columns(&key_columns)?;
            for (row, row_failures) in failures.iter_mut().enumerate() {
                if !row_failures.is_empty()
                    || check
                        .columns
                        .iter()
                        .any(|&index| columns[index].is_null(row))
                {
                    continue;
                }
                let key = keys.row(row);
                if !check.seen.insert(key.as_ref()) {
                    row_failures.push(Failure::column(
                        CheckKind::Unique,
                        &check.label,
                        format!("duplicate value of unique {}", check.label),
                    ));
                }
            }
        }

        for row_failures in &failures {
            let mut counted: Vec<(CheckKind, Option<&String>)> = Vec::new();
            for failure in row_failures {
                let key = (failure.check, failure.column.as_ref());
                if counted.contains(&key) {
                    continue;
                }
                counted.push(key);
                *self
                    .counts
                    .entry((failure.check, failure.column.clone()))
                    .or_insert(0) += 1;
            }
        }
        let mask = BooleanArray::from_iter(failures.iter().map(|row| Some(row.is_empty())));
        Ok((mask, failures))
    }

    /// Failure counts of every declared check, zero counts included, in a stable order.
    pub(crate) fn counts(&self) -> Vec<CheckCount> {
        self.counts
            .iter()
            .map(|((check, column), failed)| CheckCount {
                check: *check,
                column: column.clone(),
                failed: *failed,
            })
            .collect()
    }
}

fn unique_check(
    indices: &[usize],
    schema: &arrow::datatypes::Schema,
    label: String,
) -> Result<UniqueCheck, IngestError> {
    let fields = indices
        .iter()
        .map(|&index| SortField::new(schema.field(index).data_type().clone()))
        .collect();
    Ok(UniqueCheck {
        label,
        columns: indices.to_vec(),
        converter: RowConverter::new(fields)?,
        seen: KeySet::new(),
    })
}

fn prepare_column(index: usize, spec: &ColumnSpec) -> Result<ColumnChecks, IngestError> {
    let bound = |value: &Option<serde_json::Value>| -> Result<Option<Bound>, IngestError> {
        value
            .as_ref()
            .map(|value| spec.bound(value).map_err(IngestError::InvalidSchema))
            .transpose()
    };
    let allowed = spec.allowed.as_deref().unwrap_or_default();
    let allowed_text = (!allowed.is_empty() && allowed[0].is_string()).then(|| {
        allowed
            .iter()
            .filter_map(|value| value.as_str().map(str::to_owned))
            .collect()
    });
    let allowed_integer = (!allowed.is_empty() && allowed[0].is_i64()).then(|| {
        allowed
            .iter()
            .filter_map(serde_json::Value::as_i64)
            .collect()
    });
    let pattern = spec
        .pattern
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|error| IngestError::InvalidSchema(error.to_string()))?;
    Ok(ColumnChecks {
        index,
        name: spec.name.clone(),
        column_type: spec.column_type,
        not_null: !spec.nullable,
        min: bound(&spec.min)?,
        max: bound(&spec.max)?,
        allowed_text,
        allowed_integer,
        pattern,
    })
}

fn has_failure_on(failures: &[Failure], column: &str) -> bool {
    failures
        .iter()
        .any(|failure| failure.column.as_deref() == Some(column) || failure.column.is_none())
}

fn check_column(checks: &ColumnChecks, array: &dyn Array, failures: &mut [Vec<Failure>]) {
    let name = checks.name.as_str();
    if checks.not_null && array.null_count() > 0 {
        for (row, row_failures) in failures.iter_mut().enumerate() {
            if array.is_null(row) && !has_failure_on(row_failures, name) {
                row_failures.push(Failure::column(
                    CheckKind::NotNull,
                    name,
                    "value is null".into(),
                ));
            }
        }
    }

    let has_range = checks.min.is_some() || checks.max.is_some();
    if has_range {
        check_range(checks, array, failures);
    }

    if let Some(allowed) = &checks.allowed_integer
        && let Some(values) = array.as_any().downcast_ref::<Int64Array>()
    {
        for (row, value) in values.iter().enumerate() {
            if let Some(value) = value
                && !allowed.contains(&value)
            {
                failures[row].push(Failure::column(
                    CheckKind::Allowed,
                    name,
                    format!("{value} is not an allowed value"),
                ));
            }
        }
    }
    if checks.allowed_text.is_some() || checks.pattern.is_some() {
        let Some(values) = array.as_any().downcast_ref::<StringArray>() else {
            return;
        };
        for (row, value) in values.iter().enumerate() {
            let Some(value) = value else { continue };
            if let Some(allowed) = &checks.allowed_text
                && !allowed.contains(value)
            {
                failures[row].push(Failure::column(
                    CheckKind::Allowed,
                    name,
                    format!("{} is not an allowed value", quote(value)),
                ));
            }
            if let Some(pattern) = &checks.pattern
                && !pattern.is_match(value)
            {
                failures[row].push(Failure::column(
                    CheckKind::Pattern,
                    name,
                    format!(
                        "{} does not match the pattern {}",
                        quote(value),
                        quote(pattern.as_str())
                    ),
                ));
            }
        }
    }
}

/// Shows a range bound as the schema writes it: ISO dates and RFC 3339 timestamps (UTC)
/// instead of the day and microsecond numbers they compare as.
fn show_bound(bound: &Option<Bound>, column_type: ColumnType) -> String {
    match (bound, column_type) {
        (None, _) => "unbounded".into(),
        (Some(Bound::Integer(days)), ColumnType::Date) => show_date(*days),
        (Some(Bound::Integer(micros)), ColumnType::Timestamp) => show_timestamp(*micros),
        (Some(Bound::Integer(value)), _) => value.to_string(),
        (Some(Bound::Number(number)), _) => number.to_string(),
        (Some(Bound::Text(text)), _) => quote(text),
    }
}

fn show_date(days: i64) -> String {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    chrono::TimeDelta::try_days(days)
        .and_then(|delta| epoch.checked_add_signed(delta))
        .map_or_else(
            || format!("{days} days after 1970-01-01"),
            |date| date.to_string(),
        )
}

fn show_timestamp(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(
        || format!("{micros} µs after 1970-01-01T00:00:00Z"),
        |instant| instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    )
}

fn check_range(checks: &ColumnChecks, array: &dyn Array, failures: &mut [Vec<Failure>]) {
    let name = checks.name.as_str();
    let outside = |value: &Bound| {
        checks.min.as_ref().is_some_and(|min| value < min)
            || checks.max.as_ref().is_some_and(|max| value > max)
    };
    let range = format!(
        "[{}, {}]",
        show_bound(&checks.min, checks.column_type),
        show_bound(&checks.max, checks.column_type)
    );
    let mut report = |row: usize, shown: String| {
        failures[row].push(Failure::column(
            CheckKind::Range,
            name,
            format!("{shown} is outside the range {range}"),
        ));
    };
    match array.data_type() {
        DataType::Int64 => {
            let values: &Int64Array = array.as_primitive();
            for (row, value) in values.iter().enumerate() {
                if let Some(value) = value
                    && outside(&Bound::Integer(value))
                {
                    report(row, value.to_string());
                }
            }
        }
        DataType::Float64 => {
            let values: &Float64Array = array.as_primitive();
            for (row, value) in values.iter().enumerate() {
                if let Some(value) = value
                    && (value.is_nan() || outside(&Bound::Number(value)))
                {
                    report(row, value.to_string());
                }
            }
        }
        DataType::Date32 => {
            let values: &Date32Array = array.as_primitive();
            for (row, value) in values.iter().enumerate() {
                if let Some(value) = value
                    && outside(&Bound::Integer(i64::from(value)))
                {
                    report(row, show_date(i64::from(value)));
                }
            }
        }
        DataType::Timestamp(_, _) => {
            let values: &TimestampMicrosecondArray = array.as_primitive();
            for (row, value) in values.iter().enumerate() {
                if let Some(value) = value
                    && outside(&Bound::Integer(value))
                {
                    report(row, show_timestamp(value));
                }
            }
        }
        DataType::Utf8 => {
            let values: &StringArray = array.as_string();
            for (row, value) in values.iter().enumerate() {
                if let Some(value) = value
                    && outside(&Bound::Text(value.to_owned()))
                {
                    report(row, quote(value));
                }
            }
        }
        _ => {}
    }
}
