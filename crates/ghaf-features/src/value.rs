//! Conversion of Arrow values to JSON for the online store and API responses.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use serde_json::Value;

use crate::FeatureError;

/// Returns the JSON form of `array[row]`: numbers, strings, booleans, RFC 3339 timestamps,
/// `YYYY-MM-DD` dates; NULL and non-finite floats become `null`.
pub fn json_value(array: &dyn Array, row: usize) -> Result<Value, FeatureError> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    let value = match array.data_type() {
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => {
            let value = array.as_primitive::<Float64Type>().value(row);
            serde_json::Number::from_f64(value)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(row)),
        DataType::Boolean => Value::from(array.as_boolean().value(row)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            Value::from(crate::service::format_micros(micros))
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            let date = chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
                .map(|t| t.date_naive().to_string())
                .unwrap_or_default();
            Value::from(date)
        }
        other => {
            return Err(FeatureError::InvalidArgument {
                argument: "feature type",
                message: format!("type {other} has no JSON form"),
            });
        }
    };
    Ok(value)
}
