//! Column profiles of a dataset version: row count, nulls, min, max, mean and an estimate
//! of the number of distinct values, computed in the same pass that writes the version.

use std::hash::{BuildHasher, Hash};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use serde::{Deserialize, Serialize};

use crate::schema::{ColumnType, DatasetSchema};

/// Profile of one stored version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub row_count: u64,
    pub columns: Vec<ColumnProfile>,
}

/// Statistics of one column over the accepted rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    pub null_count: u64,
    /// Smallest value: a number, `true`/`false`, or an ISO date or RFC 3339 timestamp. A
    /// string is cut to its first [`PROFILE_TEXT_CHARS`] characters, so a cut `max` is a
    /// prefix of the largest value and may sort below it.
    pub min: Option<serde_json::Value>,
    pub max: Option<serde_json::Value>,
    /// Arithmetic mean of integer and float columns; `None` for other types.
    pub mean: Option<f64>,
    /// HyperLogLog estimate of distinct non-null values; its standard error is about 1.6 %.
    pub distinct_estimate: u64,
}

/// Number of HyperLogLog index bits: 2^12 registers give a standard error of
/// 1.04 / sqrt(4096), about 1.6 %.
const HLL_BITS: u32 = 12;
const HLL_REGISTERS: usize = 1 << HLL_BITS;

/// Seed of the sketch hash. It is fixed, so the same values always give the same estimate.
const HLL_HASH_SEED: u64 = 0x6768_6166_686c_6c31;

/// Longest string `min` or `max` kept in a profile, in characters. Longer values are cut to
/// this prefix, so the stored and returned profile stays small.
pub const PROFILE_TEXT_CHARS: usize = 256;

/// A HyperLogLog distinct-count sketch (Flajolet et al., 2007) with the small-range
/// correction. Values are hashed with foldhash's quality variant and a fixed seed.
struct HyperLogLog {
    registers: Vec<u8>,
    hasher: foldhash::quality::FixedState,
}

impl HyperLogLog {
    fn new() -> Self {
        Self {
            registers: vec![0; HLL_REGISTERS],
            hasher: foldhash::quality::FixedState::with_seed(HLL_HASH_SEED),
        }
    }

    fn insert<T: Hash + ?Sized>(&mut self, value: &T) {
        let hash = self.hasher.hash_one(value);
        let index = (hash >> (64 - HLL_BITS)) as usize;
        let rest = (hash << HLL_BITS) | (1 << (HLL_BITS - 1));
        let rank = u8::try_from(rest.leading_zeros() + 1).unwrap_or(u8::MAX);
        if rank > self.registers[index] {
            self.registers[index] = rank;
        }
    }

    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    fn estimate(&self) -> u64 {
        let m = HLL_REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self
            .registers
            .iter()
            .map(|&rank| 2f64.powi(-i32::from(rank)))
            .sum();
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|&&rank| rank == 0).count();
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

/// Accumulates the profile of one column.
struct ColumnAccumulator {
    name: String,
    column_type: ColumnType,
    null_count: u64,
    min_number: Option<f64>,
    max_number: Option<f64>,
    min_integer: Option<i64>,
    max_integer: Option<i64>,
    min_text: Option<String>,
    max_text: Option<String>,
    sum: f64,
    count: u64,
    seen_true: bool,
    seen_false: bool,
    sketch: HyperLogLog,
}

/// Accumulates the profile of every column over accepted batches.
pub(crate) struct Profiler {
    columns: Vec<ColumnAccumulator>,
    rows: u64,
}

impl Profiler {
    pub(crate) fn new(schema: &DatasetSchema) -> Self {
        let columns = schema
            .columns
            .iter()
            .map(|column| ColumnAccumulator {
                name: column.name.clone(),
                column_type: column.column_type,
                null_count: 0,
                min_number: None,
                max_number: None,
                min_integer: None,
                max_integer: None,
                min_text: None,
                max_text: None,
                sum: 0.0,
                count: 0,
                seen_true: false,
                seen_false: false,
                sketch: HyperLogLog::new(),
            })
            .collect();
        Self { columns, rows: 0 }
    }

    pub(crate) fn update(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows() as u64;
        for (accumulator, array) in self.columns.iter_mut().zip(batch.columns()) {
            accumulator.update(array.as_ref());
        }
    }

    pub(crate) fn finish(self) -> Profile {
        Profile {
            row_count: self.rows,
            columns: self
                .columns
                .into_iter()
                .map(ColumnAccumulator::finish)
                .collect(),
        }
    }
}

impl ColumnAccumulator {
    #[allow(clippy::cast_precision_loss)]
    fn add_integer(&mut self, value: i64) {
        self.min_integer = Some(self.min_integer.map_or(value, |min| min.min(value)));
        self.max_integer = Some(self.max_integer.map_or(value, |max| max.max(value)));
        self.sum += value as f64;
        self.count += 1;
        self.sketch.insert(&value);
    }

    fn update(&mut self, array: &dyn Array) {
        self.null_count += array.null_count() as u64;
        match array.data_type() {
            DataType::Int64 => {
                for value in array.as_primitive::<Int64Type>().iter().flatten() {
                    self.add_integer(value);
                }
            }
            DataType::Date32 => {
                let values = array.as_primitive::<arrow::datatypes::Date32Type>();
                for value in values.iter().flatten() {
                    self.add_integer(i64::from(value));
                }
            }
            DataType::Timestamp(_, _) => {
                let values = array.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                for value in values.iter().flatten() {
                    self.add_integer(value);
                }
            }
            DataType::Float64 => {
                for value in array.as_primitive::<Float64Type>().iter().flatten() {
                    if !value.is_nan() {
                        self.min_number = Some(self.min_number.map_or(value, |min| min.min(value)));
                        self.max_number = Some(self.max_number.map_or(value, |max| max.max(value)));
                    }
                    self.sum += value;
                    self.count += 1;
                    self.sketch.insert(&value.to_bits());
                }
            }
            DataType::Utf8 => {
                for value in array.as_string::<i32>().iter().flatten() {
                    if self.min_text.as_deref().is_none_or(|min| value < min) {
                        self.min_text = Some(value.to_owned());
                    }
                    if self.max_text.as_deref().is_none_or(|max| value > max) {
                        self.max_text = Some(value.to_owned());
                    }
                    self.sketch.insert(value);
                }
            }
            DataType::Boolean => {
                for value in array.as_boolean().iter().flatten() {
                    if value {
                        self.seen_true = true;
                    } else {
                        self.seen_false = true;
                    }
                    self.sketch.insert(&value);
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn finish(self) -> ColumnProfile {
        use serde_json::Value;
        let (min, max) = match self.column_type {
            ColumnType::Integer => (
                self.min_integer.map(Value::from),
                self.max_integer.map(Value::from),
            ),
            ColumnType::Float => (
                self.min_number.map(Value::from),
                self.max_number.map(Value::from),
            ),
            ColumnType::Date => {
                let show = |days: i64| {
                    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
                    Value::from((epoch + chrono::Duration::days(days)).to_string())
                };
                (self.min_integer.map(show), self.max_integer.map(show))
            }
            ColumnType::Timestamp => {
                let show = |micros: i64| {
                    chrono::DateTime::from_timestamp_micros(micros).map_or(
                        Value::from(micros),
                        |instant| {
                            Value::from(
                                instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                            )
                        },
                    )
                };
                (self.min_integer.map(show), self.max_integer.map(show))
            }
            ColumnType::String => (
                self.min_text
                    .map(|text| Value::from(truncate_chars(text, PROFILE_TEXT_CHARS))),
                self.max_text
                    .map(|text| Value::from(truncate_chars(text, PROFILE_TEXT_CHARS))),
            ),
            ColumnType::Boolean => {
                let any = self.seen_true || self.seen_false;
                (
                    any.then(|| Value::from(!self.seen_false)),
                    any.then(|| Value::from(self.seen_true)),
                )
            }
        };
        let numeric = matches!(self.column_type, ColumnType::Integer | ColumnType::Float);
        ColumnProfile {
            name: self.name,
            column_type: self.column_type,
            null_count: self.null_count,
            min,
            max,
            mean: (numeric && self.count > 0).then(|| self.sum / self.count as f64),
            distinct_estimate: self.sketch.estimate(),
        }
    }
}

/// Cuts `text` to its first `max_chars` characters.
pub(crate) fn truncate_chars(mut text: String, max_chars: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max_chars) {
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperloglog_estimates_within_five_percent() {
        for true_count in [0u64, 1, 10, 1_000, 100_000] {
            let mut sketch = HyperLogLog::new();
            for value in 0..true_count {
                sketch.insert(&value);
                sketch.insert(&value);
            }
            let estimate = sketch.estimate();
            let error = estimate.abs_diff(true_count);
            assert!(
                error <= true_count / 20 + 1,
                "{true_count} distinct values estimated as {estimate}"
            );
        }
    }
}
