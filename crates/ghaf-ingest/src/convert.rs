//! Conversion of input values (CSV text, JSON values) into typed Arrow columns. A value that
//! cannot be converted becomes null in the column and a type failure for its row.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};

use crate::schema::{ColumnSpec, ColumnType};

/// Longest input value quoted back in a failure message, in characters.
const QUOTED_VALUE_CHARS: usize = 80;

/// Builds one typed Arrow column from input values.
pub(crate) struct ColumnBuilder {
    inner: Inner,
    offset: FixedOffset,
    timezone: String,
}

enum Inner {
    Integer(Int64Builder),
    Float(Float64Builder),
    String(StringBuilder),
    Boolean(BooleanBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    pub(crate) fn new(spec: &ColumnSpec, capacity: usize) -> Self {
        let inner = match spec.column_type {
            ColumnType::Integer => Inner::Integer(Int64Builder::with_capacity(capacity)),
            ColumnType::Float => Inner::Float(Float64Builder::with_capacity(capacity)),
            ColumnType::String => {
                Inner::String(StringBuilder::with_capacity(capacity, capacity * 8))
            }
            ColumnType::Boolean => Inner::Boolean(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Date => Inner::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Timestamp => {
                Inner::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
        };
        Self {
            inner,
            offset: spec.offset(),
            timezone: spec.timezone_name(),
        }
    }

    pub(crate) fn append_null(&mut self) {
        match &mut self.inner {
            Inner::Integer(builder) => builder.append_null(),
            Inner::Float(builder) => builder.append_null(),
            Inner::String(builder) => builder.append_null(),
            Inner::Boolean(builder) => builder.append_null(),
            Inner::Date(builder) => builder.append_null(),
            Inner::Timestamp(builder) => builder.append_null(),
        }
    }

    /// Appends the value of a text field. On a parse failure a null is appended and the
    /// message says why.
    pub(crate) fn append_text(&mut self, text: &str) -> Result<(), String> {
        let result = match &mut self.inner {
            Inner::String(builder) => {
                builder.append_value(text);
                return Ok(());
            }
            Inner::Integer(builder) => match text.trim().parse::<i64>() {
                Ok(value) => {
                    builder.append_value(value);
                    Ok(())
                }
                Err(error) => {
                    use std::num::IntErrorKind;
                    if matches!(
                        error.kind(),
                        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
                    ) {
                        builder.append_null();
                        return Err(format!(
                            "{} is outside the range of a 64-bit integer ({} to {})",
                            quote(text),
                            i64::MIN,
                            i64::MAX
                        ));
                    }
                    Err("integer")
                }
            },
            Inner::Float(builder) => match text.trim().parse::<f64>() {
                Ok(value) if value.is_infinite() && !names_infinity(text.trim()) => {
                    builder.append_null();
                    return Err(format!(
                        "{} is outside the range of a 64-bit float (magnitude at most {:e})",
                        quote(text),
                        f64::MAX
                    ));
                }
                Ok(value) => {
                    builder.append_value(value);
                    Ok(())
                }
                Err(_) => Err("float"),
            },
            Inner::Boolean(builder) => parse_bool(text.trim())
                .map(|value| builder.append_value(value))
                .ok_or("boolean"),
            Inner::Date(builder) => parse_date(text.trim())
                .map(|value| builder.append_value(value))
                .map_err(|_| "date (YYYY-MM-DD)"),
            Inner::Timestamp(builder) => parse_timestamp(text.trim(), self.offset)
                .map(|value| builder.append_value(value))
                .map_err(|_| "timestamp (RFC 3339, such as 2013-01-01T10:00:00Z)"),
        };
        result.map_err(|expected| {
            self.append_null();
            format!("cannot parse {} as {expected}", quote(text))
        })
    }

    /// Appends a JSON value. JSON `null` appends null; a value of the wrong JSON type or
    /// an unparseable string appends null and returns the reason.
    pub(crate) fn append_json(&mut self, value: &serde_json::Value) -> Result<(), String> {
        use serde_json::Value;
        if value.is_null() {
            self.append_null();
            return Ok(());
        }
        let result = match (&mut self.inner, value) {
            (Inner::Integer(builder), Value::Number(number)) => number
                .as_i64()
                .map(|value| builder.append_value(value))
                .ok_or("integer"),
            (Inner::Float(builder), Value::Number(number)) => number
                .as_f64()
                .map(|value| builder.append_value(value))
                .ok_or("float"),
            (Inner::Boolean(builder), Value::Bool(flag)) => {
                builder.append_value(*flag);
                Ok(())
            }
            (Inner::String(builder), Value::String(text)) => {
                builder.append_value(text);
                Ok(())
            }
            (Inner::Date(_) | Inner::Timestamp(_), Value::String(text)) => {
                return self.append_text(text);
            }
            (Inner::Integer(_), _) => Err("integer"),
            (Inner::Float(_), _) => Err("float"),
            (Inner::Boolean(_), _) => Err("boolean"),
            (Inner::String(_), _) => Err("string"),
            (Inner::Date(_), _) => Err("date string"),
            (Inner::Timestamp(_), _) => Err("timestamp string"),
        };
        result.map_err(|expected| {
            self.append_null();
            format!(
                "expected a JSON {expected}, found {}",
                quote(&value.to_string())
            )
        })
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match &mut self.inner {
            Inner::Integer(builder) => Arc::new(builder.finish()),
            Inner::Float(builder) => Arc::new(builder.finish()),
            Inner::String(builder) => Arc::new(builder.finish()),
            Inner::Boolean(builder) => Arc::new(builder.finish()),
            Inner::Date(builder) => Arc::new(builder.finish()),
            Inner::Timestamp(builder) => {
                Arc::new(builder.finish().with_timezone(self.timezone.as_str()))
            }
        }
    }
}

/// Whether a float text spells infinity (`inf`, `+Infinity`, …) rather than overflowing to
/// it, as `1e400` does.
fn names_infinity(text: &str) -> bool {
    let unsigned = text.trim_start_matches(['+', '-']);
    unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity")
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
pub(crate) fn parse_date(text: &str) -> Result<i32, ()> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| ())?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    i32::try_from(date.signed_duration_since(epoch).num_days()).map_err(|_| ())
}

/// Parses an RFC 3339 timestamp, or one without an offset (`YYYY-MM-DD HH:MM:SS[.f]`, with a
/// space or `T`) read in `offset`, into microseconds since the epoch.
pub(crate) fn parse_timestamp(text: &str, offset: FixedOffset) -> Result<i64, ()> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.timestamp_micros());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return naive
                .and_local_timezone(offset)
                .single()
                .map(|instant| instant.timestamp_micros())
                .ok_or(());
        }
    }
    Err(())
}

/// Quotes an input value for a message, shortened to [`QUOTED_VALUE_CHARS`] characters.
pub(crate) fn quote(text: &str) -> String {
    if text.chars().count() <= QUOTED_VALUE_CHARS {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(QUOTED_VALUE_CHARS).collect();
        format!("{head:?}… ({} bytes)", text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_with_and_without_offset() {
        let utc = FixedOffset::east_opt(0).unwrap();
        let dubai = FixedOffset::east_opt(4 * 3600).unwrap();
        let expected = 1_357_034_400_000_000;
        assert_eq!(parse_timestamp("2013-01-01T10:00:00Z", utc), Ok(expected));
        assert_eq!(
            parse_timestamp("2013-01-01T14:00:00+04:00", utc),
            Ok(expected)
        );
        assert_eq!(parse_timestamp("2013-01-01 10:00:00", utc), Ok(expected));
        assert_eq!(parse_timestamp("2013-01-01 14:00:00", dubai), Ok(expected));
        assert_eq!(
            parse_timestamp("2013-01-01 10:00:00.5", utc),
            Ok(expected + 500_000)
        );
        assert!(parse_timestamp("2013-13-01 10:00:00", utc).is_err());
        assert!(parse_timestamp("yesterday", utc).is_err());
    }

    #[test]
    fn dates_parse_as_days_since_epoch() {
        assert_eq!(parse_date("1970-01-02"), Ok(1));
        assert_eq!(parse_date("1969-12-31"), Ok(-1));
        assert!(parse_date("2013-02-30").is_err());
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = "x".repeat(10_000);
        let quoted = quote(&long);
        assert!(quoted.len() < 120, "{quoted}");
        assert!(quoted.contains("10000 bytes"));
    }
}
