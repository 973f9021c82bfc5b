//! Pushes of rows into the feature store, in Feast's `/push` shape: columns of values for
//! one dataset, written to the offline store (a validated segment of the dataset), the
//! online store (every online view over the dataset), or both.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use ghaf_ingest::{ColumnSpec, ColumnType, DatasetSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::FeatureError;

/// Destination of pushed rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushTarget {
    Online,
    Offline,
    OnlineAndOffline,
}

impl PushTarget {
    pub fn online(self) -> bool {
        matches!(self, PushTarget::Online | PushTarget::OnlineAndOffline)
    }

    pub fn offline(self) -> bool {
        matches!(self, PushTarget::Offline | PushTarget::OnlineAndOffline)
    }
}

/// Turns Feast's columnar `df` into row objects, checking that every column has as many
/// values as the others.
pub fn rows_of(
    df: &serde_json::Map<String, Value>,
) -> Result<Vec<serde_json::Map<String, Value>>, FeatureError> {
    let mut count = None;
    for (name, values) in df {
        let Some(values) = values.as_array() else {
            return Err(FeatureError::InvalidArgument {
                argument: "df",
                message: format!("column {name:?} is not a list of values"),
            });
        };
        match count {
            None => count = Some(values.len()),
            Some(expected) if expected != values.len() => {
                return Err(FeatureError::InvalidArgument {
                    argument: "df",
                    message: format!(
                        "column {name:?} has {} values, another has {expected}; give every column one value per row",
                        values.len()
                    ),
                });
            }
            Some(_) => {}
        }
    }
    let count = count.unwrap_or(0);
    Ok((0..count)
        .map(|row| {
            df.iter()
                .map(|(name, values)| (name.clone(), values[row].clone()))
                .collect()
        })
        .collect())
}

fn invalid(row: usize, column: &ColumnSpec, message: String) -> FeatureError {
    FeatureError::InvalidArgument {
        argument: "df",
        message: format!("row {} column {:?}: {message}", row + 1, column.name),
    }
}

/// Converts row objects to a batch of the dataset's schema, checking each value's type and
/// nullability. Columns the schema does not declare are ignored, as in ingestion. The
/// dataset's constraints (ranges, allowed values, patterns) are checked only by an offline
/// push, because that push runs the full ingest validation.
pub fn batch_of(
    schema: &DatasetSchema,
    rows: &[serde_json::Map<String, Value>],
) -> Result<RecordBatch, FeatureError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.columns.len());
    for column in &schema.columns {
        let mut values: Vec<Option<&Value>> = Vec::with_capacity(rows.len());
        for (row, object) in rows.iter().enumerate() {
            let value = object.get(&column.name).filter(|v| !v.is_null());
            if value.is_none() && !column.nullable {
                return Err(invalid(
                    row,
                    column,
                    "the value is missing or null, but the column is not nullable".to_owned(),
                ));
            }
            values.push(value);
        }
        let wrong = |row: usize, value: &Value| {
            invalid(
                row,
                column,
                format!("{value} is not a valid {}", column.column_type.as_str()),
            )
        };
        let array: ArrayRef = match column.column_type {
            ColumnType::Integer => Arc::new(
                values
                    .iter()
                    .enumerate()
                    .map(|(r, v)| v.map(|v| v.as_i64().ok_or_else(|| wrong(r, v))).transpose())
                    .collect::<Result<Int64Array, _>>()?,
            ),
            ColumnType::Float => Arc::new(
                values
                    .iter()
                    .enumerate()
                    .map(|(r, v)| v.map(|v| v.as_f64().ok_or_else(|| wrong(r, v))).transpose())
                    .collect::<Result<Float64Array, _>>()?,
            ),
            ColumnType::String => Arc::new(
                values
                    .iter()
                    .enumerate()
                    .map(|(r, v)| v.map(|v| v.as_str().ok_or_else(|| wrong(r, v))).transpose())
                    .collect::<Result<StringArray, _>>()?,
            ),
            ColumnType::Boolean => Arc::new(
                values
                    .iter()
                    .enumerate()
                    .map(|(r, v)| {
                        v.map(|v| v.as_bool().ok_or_else(|| wrong(r, v)))
                            .transpose()
                    })
                    .collect::<Result<BooleanArray, _>>()?,
            ),
            ColumnType::Date => Arc::new(
                values
                    .iter()
                    .enumerate()
                    .map(|(r, v)| {
                        v.map(|v| {
                            let date = v
                                .as_str()
                                .and_then(|t| chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok())
                                .ok_or_else(|| wrong(r, v))?;
                            let epoch =
                                chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
                            Ok(i32::try_from((date - epoch).num_days()).unwrap_or(i32::MAX))
                        })
                        .transpose()
                    })
                    .collect::<Result<Date32Array, FeatureError>>()?,
            ),
            ColumnType::Timestamp => {
                let micros = values
                    .iter()
                    .enumerate()
                    .map(|(r, v)| {
                        v.map(|v| {
                            v.as_str()
                                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                                .map(|t| t.timestamp_micros())
                                .ok_or_else(|| wrong(r, v))
                        })
                        .transpose()
                    })
                    .collect::<Result<TimestampMicrosecondArray, FeatureError>>()?;
                Arc::new(micros.with_timezone(column.timezone_name()))
            }
        };
        columns.push(array);
    }
    Ok(RecordBatch::try_new(schema.arrow_schema(), columns)?)
}
