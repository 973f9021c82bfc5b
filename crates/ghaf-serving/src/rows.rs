//! Decoding dataset Parquet files into JSON rows, for reading the prediction log.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

use crate::log::json_f64;

/// Reads every row of a Parquet file as a JSON object. Strings, integers, floats, booleans
/// and microsecond timestamps (as RFC 3339) are decoded; other types are null.
pub fn parquet_rows(bytes: Bytes) -> Result<Vec<Map<String, Value>>, String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|builder| builder.build())
        .map_err(|error| error.to_string())?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| error.to_string())?;
        let schema = batch.schema();
        let start = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| Map::new()));
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            for row in 0..batch.num_rows() {
                let value = if column.is_null(row) {
                    Value::Null
                } else {
                    match column.data_type() {
                        DataType::Utf8 => Value::from(column.as_string::<i32>().value(row)),
                        DataType::LargeUtf8 => Value::from(column.as_string::<i64>().value(row)),
                        DataType::Int64 => {
                            Value::from(column.as_primitive::<Int64Type>().value(row))
                        }
                        DataType::Float64 => {
                            json_f64(column.as_primitive::<Float64Type>().value(row))
                        }
                        DataType::Boolean => Value::from(column.as_boolean().value(row)),
                        DataType::Timestamp(TimeUnit::Microsecond, _) => {
                            let micros =
                                column.as_primitive::<TimestampMicrosecondType>().value(row);
                            chrono::DateTime::from_timestamp_micros(micros)
                                .map(|t| {
                                    Value::from(
                                        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                                    )
                                })
                                .unwrap_or(Value::Null)
                        }
                        _ => Value::Null,
                    }
                };
                rows[start + row].insert(field.name().clone(), value);
            }
        }
    }
    Ok(rows)
}
