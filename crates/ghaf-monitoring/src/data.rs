//! Reading dataset versions into columns, and choosing the segments a window covers.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use ghaf_core::{TenantId, UnixMillis};
use ghaf_ingest::{DatasetVersion, IngestService};
use ghaf_monitor::Column;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::MonitoringError;
use crate::spec::Window;

/// Values of one column gathered from one or more dataset versions.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// Integers and floats as `f64`; NaN marks a missing value.
    Number(Vec<f64>),
    /// Strings and booleans (`true`/`false`); `None` marks a missing value.
    Text(Vec<Option<String>>),
    /// Timestamps in Unix milliseconds; `None` marks a missing value.
    Time(Vec<Option<UnixMillis>>),
}

impl Values {
    fn empty_like(&self) -> Self {
        match self {
            Values::Number(_) => Values::Number(Vec::new()),
            Values::Text(_) => Values::Text(Vec::new()),
            Values::Time(_) => Values::Time(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Values::Number(values) => values.len(),
            Values::Text(values) => values.len(),
            Values::Time(values) => values.len(),
        }
    }

    fn push_from(&mut self, other: &Values, index: usize) {
        match (self, other) {
            (Values::Number(to), Values::Number(from)) => to.push(from[index]),
            (Values::Text(to), Values::Text(from)) => to.push(from[index].clone()),
            (Values::Time(to), Values::Time(from)) => to.push(from[index]),
            _ => {}
        }
    }

    fn append(&mut self, other: Values) -> bool {
        match (self, other) {
            (Values::Number(to), Values::Number(from)) => to.extend(from),
            (Values::Text(to), Values::Text(from)) => to.extend(from),
            (Values::Time(to), Values::Time(from)) => to.extend(from),
            _ => return false,
        }
        true
    }
}

/// Named columns of equal length.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    pub rows: usize,
    pub columns: BTreeMap<String, Values>,
}

impl Frame {
    /// Converts the columns of a record batch that have a supported type. Other columns
    /// (dates, nested types) are left out.
    pub fn from_batch(batch: &RecordBatch) -> Self {
        let mut columns = BTreeMap::new();
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            if let Some(values) = convert(array.as_ref()) {
                columns.insert(field.name().clone(), values);
            }
        }
        Self {
            rows: batch.num_rows(),
            columns,
        }
    }

    /// Appends another frame's rows. A column missing from one side, or with another type,
    /// is dropped, so the result has only the columns every part has.
    pub fn append(&mut self, other: Frame) {
        if self.columns.is_empty() && self.rows == 0 {
            *self = other;
            return;
        }
        let mut other_columns = other.columns;
        self.columns
            .retain(|name, values| match other_columns.remove(name) {
                Some(more) => values.append(more),
                None => false,
            });
        self.rows += other.rows;
    }

    /// Keeps the rows where `keep` is true.
    pub fn filter(&self, keep: &[bool]) -> Frame {
        let mut columns = BTreeMap::new();
        for (name, values) in &self.columns {
            let mut kept = values.empty_like();
            for (index, &flag) in keep.iter().enumerate() {
                if flag {
                    kept.push_from(values, index);
                }
            }
            columns.insert(name.clone(), kept);
        }
        let rows = columns.values().next().map_or(0, Values::len);
        Frame { rows, columns }
    }

    /// Keeps the last `count` rows.
    pub fn tail(&self, count: usize) -> Frame {
        if self.rows <= count {
            return self.clone();
        }
        let skip = self.rows - count;
        let keep: Vec<bool> = (0..self.rows).map(|index| index >= skip).collect();
        self.filter(&keep)
    }

    pub fn numbers(&self, name: &str) -> Option<&[f64]> {
        match self.columns.get(name) {
            Some(Values::Number(values)) => Some(values),
            _ => None,
        }
    }

    pub fn texts(&self, name: &str) -> Option<&[Option<String>]> {
        match self.columns.get(name) {
            Some(Values::Text(values)) => Some(values),
            _ => None,
        }
    }

    pub fn times(&self, name: &str) -> Option<&[Option<UnixMillis>]> {
        match self.columns.get(name) {
            Some(Values::Time(values)) => Some(values),
            _ => None,
        }
    }

    /// Returns the column as input for the drift statistics: numbers as numeric, text as
    /// categorical; `None` for time columns and absent names.
    pub fn monitor_column(&self, name: &str) -> Option<Column> {
        match self.columns.get(name)? {
            Values::Number(values) => Some(Column::numeric(name, values.clone())),
            Values::Text(values) => Some(Column::categorical(name, values.clone())),
            Values::Time(_) => None,
        }
    }

    /// Returns whether the column can be watched for drift (numeric or categorical).
    pub fn is_watchable(&self, name: &str) -> bool {
        matches!(
            self.columns.get(name),
            Some(Values::Number(_) | Values::Text(_))
        )
    }
}

fn convert(array: &dyn Array) -> Option<Values> {
    let rows = array.len();
    let millis = |value: i64, unit: TimeUnit| match unit {
        TimeUnit::Second => value.saturating_mul(1000),
        TimeUnit::Millisecond => value,
        TimeUnit::Microsecond => value.div_euclid(1000),
        TimeUnit::Nanosecond => value.div_euclid(1_000_000),
    };
    Some(match array.data_type() {
        DataType::Float64 => {
            let typed = array.as_primitive::<Float64Type>();
            Values::Number(
                (0..rows)
                    .map(|i| {
                        if typed.is_null(i) {
                            f64::NAN
                        } else {
                            typed.value(i)
                        }
                    })
                    .collect(),
            )
        }
        DataType::Int64 => {
            let typed = array.as_primitive::<Int64Type>();
            Values::Number(
                (0..rows)
                    .map(|i| {
                        if typed.is_null(i) {
                            f64::NAN
                        } else {
                            typed.value(i) as f64
                        }
                    })
                    .collect(),
            )
        }
        DataType::Utf8 => {
            let typed = array.as_string::<i32>();
            Values::Text(
                (0..rows)
                    .map(|i| (!typed.is_null(i)).then(|| typed.value(i).to_owned()))
                    .collect(),
            )
        }
        DataType::LargeUtf8 => {
            let typed = array.as_string::<i64>();
            Values::Text(
                (0..rows)
                    .map(|i| (!typed.is_null(i)).then(|| typed.value(i).to_owned()))
                    .collect(),
            )
        }
        DataType::Boolean => {
            let typed = array.as_boolean();
            Values::Text(
                (0..rows)
                    .map(|i| (!typed.is_null(i)).then(|| typed.value(i).to_string()))
                    .collect(),
            )
        }
        DataType::Timestamp(unit, _) => {
            let unit = *unit;
            let raw: Vec<Option<i64>> = match unit {
                TimeUnit::Second => array.as_primitive::<TimestampSecondType>().iter().collect(),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .iter()
                    .collect(),
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .collect(),
                TimeUnit::Nanosecond => array
                    .as_primitive::<TimestampNanosecondType>()
                    .iter()
                    .collect(),
            };
            Values::Time(
                raw.into_iter()
                    .map(|value| value.map(|value| millis(value, unit)))
                    .collect(),
            )
        }
        _ => return None,
    })
}

/// Reads a dataset version's Parquet file from the blob store into a frame.
pub async fn read_version(
    ingest: &IngestService,
    tenant: &TenantId,
    version: &DatasetVersion,
) -> Result<Frame, MonitoringError> {
    let digest = IngestService::digest(&version.content_digest)?;
    let bytes = ingest.blobs().get(tenant, &digest).await?;
    tokio::task::spawn_blocking(move || {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        let mut frame = Frame::default();
        for batch in reader {
            frame.append(Frame::from_batch(&batch?));
        }
        Ok(frame)
    })
    .await
    .map_err(|error| MonitoringError::Worker(format!("the read worker stopped: {error}")))?
}

/// Parses a profile bound of a timestamp column (RFC 3339) into Unix milliseconds.
fn profile_time(value: Option<&serde_json::Value>) -> Option<UnixMillis> {
    let text = value?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.timestamp_millis())
}

/// Returns the earliest and latest value of a timestamp column in a version, read from the
/// profile stored with it. Returns `None` when the column is absent or has only nulls.
pub fn time_range(version: &DatasetVersion, column: &str) -> Option<(UnixMillis, UnixMillis)> {
    let profile = version
        .profile
        .columns
        .iter()
        .find(|profile| profile.name == column)?;
    Some((
        profile_time(profile.min.as_ref())?,
        profile_time(profile.max.as_ref())?,
    ))
}

/// Picks the versions (segments) a window needs, from `versions` listed newest first.
/// Duration windows use the time range in each version's profile, so segments outside the
/// window are never read.
pub fn select_segments<'a>(
    versions: &'a [DatasetVersion],
    window: &Window,
    timestamp_column: Option<&str>,
    start: Option<UnixMillis>,
    end: UnixMillis,
) -> Vec<&'a DatasetVersion> {
    match window {
        Window::LatestVersion => versions.iter().take(1).collect(),
        Window::Rows { count } => {
            let mut total = 0;
            let mut picked = Vec::new();
            for version in versions {
                if total >= *count {
                    break;
                }
                total += version.row_count;
                picked.push(version);
            }
            picked.reverse();
            picked
        }
        Window::Duration { .. } => {
            let (Some(column), Some(start)) = (timestamp_column, start) else {
                return Vec::new();
            };
            let mut picked: Vec<&DatasetVersion> = versions
                .iter()
                .filter(|version| {
                    time_range(version, column).is_some_and(|(min, max)| max >= start && min < end)
                })
                .collect();
            picked.reverse();
            picked
        }
    }
}

/// Reads the window's rows from the selected segments, oldest first. For duration windows
/// only rows with `start <= timestamp < end` are kept; for row windows the newest `count`.
pub async fn read_window(
    ingest: &IngestService,
    tenant: &TenantId,
    segments: &[&DatasetVersion],
    window: &Window,
    timestamp_column: Option<&str>,
    start: Option<UnixMillis>,
    end: UnixMillis,
) -> Result<Frame, MonitoringError> {
    let mut frame = Frame::default();
    for segment in segments {
        let mut part = read_version(ingest, tenant, segment).await?;
        if let (Window::Duration { .. }, Some(column), Some(start)) =
            (window, timestamp_column, start)
        {
            let keep: Vec<bool> = match part.times(column) {
                Some(times) => times
                    .iter()
                    .map(|time| time.is_some_and(|time| time >= start && time < end))
                    .collect(),
                None => vec![false; part.rows],
            };
            part = part.filter(&keep);
        }
        frame.append(part);
    }
    if let Window::Rows { count } = window {
        frame = frame.tail(usize::try_from(*count).unwrap_or(usize::MAX));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(columns: Vec<(&str, Values)>) -> Frame {
        let rows = columns.first().map_or(0, |(_, values)| values.len());
        Frame {
            rows,
            columns: columns
                .into_iter()
                .map(|(name, values)| (name.to_owned(), values))
                .collect(),
        }
    }

    #[test]
    fn append_keeps_shared_columns() {
        let mut a = frame(vec![
            ("x", Values::Number(vec![1.0])),
            ("y", Values::Text(vec![Some("a".into())])),
        ]);
        let b = frame(vec![("x", Values::Number(vec![2.0]))]);
        a.append(b);
        assert_eq!(a.rows, 2);
        assert_eq!(a.numbers("x"), Some(&[1.0, 2.0][..]));
        assert!(a.texts("y").is_none());
    }

    #[test]
    fn tail_keeps_newest_rows() {
        let a = frame(vec![("x", Values::Number(vec![1.0, 2.0, 3.0]))]);
        assert_eq!(a.tail(2).numbers("x"), Some(&[2.0, 3.0][..]));
    }
}
