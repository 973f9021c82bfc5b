//! A feature view version compiled against its dataset's schema, and the feature table it
//! computes from the dataset's rows: keys, event and created times, and one column per
//! feature.

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Date32Type, Schema, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;

use crate::FeatureError;
use crate::asof::AsOfIndex;
use crate::definition::{
    AggregateFunction, Entity, FeatureViewSpec, KeyType, MICROS_PER_SECOND, parse_duration,
};
use crate::expr::Expr;
use crate::window::rolling;

/// Microseconds per day, for date event-time columns.
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

#[derive(Clone, Debug)]
enum FeatureKind {
    Expression(Expr),
    Rolling {
        function: AggregateFunction,
        input: Expr,
        window: i64,
    },
}

/// One compiled feature.
#[derive(Clone, Debug)]
pub struct CompiledFeature {
    pub name: String,
    pub data_type: DataType,
    kind: FeatureKind,
    /// The expression text as written (the aggregation's input for a rolling feature), for
    /// errors.
    expression: String,
}

/// One join key of a view: its column and type.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinKey {
    pub column: String,
    pub key_type: KeyType,
}

impl JoinKey {
    pub fn arrow_type(&self) -> DataType {
        match self.key_type {
            KeyType::Integer => DataType::Int64,
            KeyType::String => DataType::Utf8,
        }
    }
}

/// A feature view version, checked against its dataset's schema.
#[derive(Clone, Debug)]
pub struct CompiledView {
    pub name: String,
    pub version: i64,
    pub spec: FeatureViewSpec,
    pub keys: Vec<JoinKey>,
    pub ttl: Option<i64>,
    pub features: Vec<CompiledFeature>,
    event_index: Option<usize>,
    created_index: Option<usize>,
    key_indices: Vec<usize>,
}

fn check_time_column(
    schema: &Schema,
    view: &str,
    role: &str,
    name: &str,
) -> Result<usize, FeatureError> {
    let index = schema.index_of(name).map_err(|_| {
        FeatureError::definition(format!(
            "feature view {view:?}: the {role} column {name:?} is not in the dataset"
        ))
    })?;
    match schema.field(index).data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) | DataType::Date32 => Ok(index),
        other => Err(FeatureError::definition(format!(
            "feature view {view:?}: the {role} column {name:?} has type {other}; it must be a timestamp or date"
        ))),
    }
}

impl CompiledView {
    /// Checks `spec` against `schema` (the dataset's Arrow schema) and `entities` (every
    /// entity the view names) and compiles its expressions.
    pub fn compile(
        spec: &FeatureViewSpec,
        version: i64,
        entities: &[Entity],
        schema: &Schema,
    ) -> Result<Self, FeatureError> {
        let view = &spec.name;
        let mut keys = Vec::with_capacity(spec.entities.len());
        let mut key_indices = Vec::with_capacity(spec.entities.len());
        for name in &spec.entities {
            let entity = entities.iter().find(|e| &e.name == name).ok_or_else(|| {
                FeatureError::definition(format!("feature view {view:?}: unknown entity {name:?}"))
            })?;
            let column = entity.join_key();
            let index = schema.index_of(column).map_err(|_| {
                FeatureError::definition(format!(
                    "feature view {view:?}: the join key {column:?} of entity {name:?} is not a column of dataset {:?}",
                    spec.source.dataset
                ))
            })?;
            let key = JoinKey {
                column: column.to_owned(),
                key_type: entity.value_type,
            };
            let actual = schema.field(index).data_type();
            if actual != &key.arrow_type() {
                return Err(FeatureError::definition(format!(
                    "feature view {view:?}: join key {column:?} is declared {} but the dataset column has type {actual}",
                    entity.value_type.as_str()
                )));
            }
            keys.push(key);
            key_indices.push(index);
        }
        let event_index = spec
            .event_time
            .as_deref()
            .map(|name| check_time_column(schema, view, "event_time", name))
            .transpose()?;
        let created_index = spec
            .created_time
            .as_deref()
            .map(|name| check_time_column(schema, view, "created_time", name))
            .transpose()?;

        let mut features = Vec::with_capacity(spec.features.len());
        for feature in &spec.features {
            let invalid = |expression: &str, message: String| FeatureError::InvalidExpression {
                feature: format!("{view}:{}", feature.name),
                expression: expression.to_owned(),
                message,
            };
            let (kind, data_type) = match (&feature.expression, &feature.aggregation) {
                (_, Some(aggregation)) => {
                    let input = Expr::compile(&aggregation.expression, schema)
                        .map_err(|m| invalid(&aggregation.expression, m))?;
                    if !matches!(
                        input.data_type(),
                        DataType::Int64 | DataType::Float64 | DataType::Boolean
                    ) {
                        return Err(invalid(
                            &aggregation.expression,
                            format!(
                                "{} needs numbers, not {}",
                                aggregation.function.as_str(),
                                input.data_type()
                            ),
                        ));
                    }
                    let window = parse_duration(&aggregation.window)
                        .map_err(|m| invalid(&aggregation.window, format!("window {m}")))?;
                    let data_type = match aggregation.function {
                        AggregateFunction::Count => DataType::Int64,
                        _ => DataType::Float64,
                    };
                    let kind = FeatureKind::Rolling {
                        function: aggregation.function,
                        input,
                        window,
                    };
                    (kind, data_type)
                }
                (Some(expression), None) => {
                    let expr =
                        Expr::compile(expression, schema).map_err(|m| invalid(expression, m))?;
                    let data_type = expr.data_type().clone();
                    (FeatureKind::Expression(expr), data_type)
                }
                (None, None) => {
                    let expr =
                        Expr::compile(&format!("\"{}\"", feature.name), schema).map_err(|m| {
                            invalid(
                                &feature.name,
                                format!("{m}; give the feature an expression"),
                            )
                        })?;
                    let data_type = expr.data_type().clone();
                    (FeatureKind::Expression(expr), data_type)
                }
            };
            if data_type == DataType::Null {
                return Err(invalid(
                    feature.expression.as_deref().unwrap_or_default(),
                    "the expression is always NULL; cast it to a type".to_owned(),
                ));
            }
            let expression = match (&feature.expression, &feature.aggregation) {
                (_, Some(aggregation)) => aggregation.expression.clone(),
                (Some(expression), None) => expression.clone(),
                (None, None) => format!("\"{}\"", feature.name),
            };
            features.push(CompiledFeature {
                name: feature.name.clone(),
                data_type,
                kind,
                expression,
            });
        }
        Ok(CompiledView {
            name: spec.name.clone(),
            version,
            spec: spec.clone(),
            keys,
            ttl: spec.ttl_micros()?,
            features,
            event_index,
            created_index,
            key_indices,
        })
    }

    pub fn feature(&self, name: &str) -> Option<&CompiledFeature> {
        self.features.iter().find(|f| f.name == name)
    }

    /// Computes the feature table from the dataset rows.
    pub fn table(&self, batch: &RecordBatch) -> Result<FeatureTable, FeatureError> {
        let rows = batch.num_rows();
        let keys: Vec<ArrayRef> = self
            .key_indices
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let events = match self.event_index {
            Some(index) => micros(batch.column(index))?,
            // Static attributes are valid from the earliest instant on.
            None => vec![Some(i64::MIN); rows],
        };
        let created = self
            .created_index
            .map(|index| micros(batch.column(index)))
            .transpose()?;
        let index = AsOfIndex::build(&keys, &events, created.as_deref())?;

        let mut columns = Vec::with_capacity(self.features.len());
        for feature in &self.features {
            // An expression that type-checked can still fail on the rows (a cast of a text
            // that is no number); the error names the feature and its expression.
            let failed = |error: arrow::error::ArrowError| FeatureError::InvalidExpression {
                feature: format!("{}:{}", self.name, feature.name),
                expression: feature.expression.clone(),
                message: format!("evaluating it over the dataset's rows failed: {error}"),
            };
            let column = match &feature.kind {
                FeatureKind::Expression(expr) => expr.evaluate(batch).map_err(failed)?,
                FeatureKind::Rolling {
                    function,
                    input,
                    window,
                } => rolling(
                    &index,
                    &input.evaluate(batch).map_err(failed)?,
                    *function,
                    *window,
                )?,
            };
            let column = if column.data_type() == &feature.data_type {
                column
            } else {
                cast(&column, &feature.data_type).map_err(failed)?
            };
            columns.push(column);
        }
        Ok(FeatureTable {
            keys,
            events,
            created,
            features: columns,
            index,
        })
    }
}

/// Converts a timestamp or date column to microseconds since the Unix epoch.
pub fn micros(column: &ArrayRef) -> Result<Vec<Option<i64>>, FeatureError> {
    match column.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => Ok(column
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect()),
        DataType::Timestamp(_, _) => {
            let converted = cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            Ok(converted
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect())
        }
        // Date32 holds ±2^31 days, about ±5.9 million years, while microseconds in an i64
        // reach only ±292,000 years: a date outside that range is an error, not a wrapped
        // (or, in debug builds, panicking) multiplication.
        DataType::Date32 => column
            .as_primitive::<Date32Type>()
            .iter()
            .map(|d| {
                d.map(|days| {
                    i64::from(days).checked_mul(MICROS_PER_DAY).ok_or_else(|| {
                        FeatureError::InvalidArgument {
                            argument: "date column",
                            message: format!(
                                "the date {} is out of range: dates must lie within \
                                 about 292,000 years of 1970-01-01 (day {days} since the epoch)",
                                date32_text(days)
                            ),
                        }
                    })
                })
                .transpose()
            })
            .collect(),
        other => Err(FeatureError::InvalidArgument {
            argument: "timestamp column",
            message: format!("type {other} is not a timestamp or date"),
        }),
    }
}

/// A Date32 value as `YYYY-MM-DD`, or its day number when chrono cannot represent it.
fn date32_text(days: i32) -> String {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(i64::from(days))))
        .map(|date| date.to_string())
        .unwrap_or_else(|| format!("day {days}"))
}

/// The computed rows of one view version, indexed for as-of lookups.
pub struct FeatureTable {
    pub keys: Vec<ArrayRef>,
    pub events: Vec<Option<i64>>,
    pub created: Option<Vec<Option<i64>>>,
    /// One column per feature of the view, in definition order.
    pub features: Vec<ArrayRef>,
    pub index: AsOfIndex,
}

impl FeatureTable {
    pub fn row_count(&self) -> usize {
        self.events.len()
    }

    /// Returns the table with its indexed rows in index order (key run, event time,
    /// created time) and the rows the index skipped dropped, so row `i` is sorted position
    /// `i`. Lookups return the same feature values as on the original table, under the new
    /// row numbers.
    pub fn into_sorted(self) -> Result<FeatureTable, FeatureError> {
        let order = UInt32Array::from(self.index.sorted_rows().to_vec());
        let take_all = |columns: &[ArrayRef]| -> Result<Vec<ArrayRef>, FeatureError> {
            columns
                .iter()
                .map(|column| Ok(take(column.as_ref(), &order, None)?))
                .collect()
        };
        let keys = take_all(&self.keys)?;
        let features = take_all(&self.features)?;
        let rows = order.values();
        let events = rows.iter().map(|&row| self.events[row as usize]).collect();
        let created = self
            .created
            .as_ref()
            .map(|created| rows.iter().map(|&row| created[row as usize]).collect());
        Ok(FeatureTable {
            keys,
            events,
            created,
            features,
            index: self.index.into_sorted(),
        })
    }

    /// Builds a table from columns already in index order, as [`FeatureTable::into_sorted`]
    /// returns them. Rows out of that order fail with `Corrupt`.
    pub fn from_sorted(
        keys: Vec<ArrayRef>,
        events: &[i64],
        created: Option<Vec<Option<i64>>>,
        features: Vec<ArrayRef>,
    ) -> Result<FeatureTable, FeatureError> {
        let index = AsOfIndex::from_sorted(&keys, events, created.as_deref())?;
        Ok(FeatureTable {
            keys,
            events: events.iter().copied().map(Some).collect(),
            created,
            features,
            index,
        })
    }

    /// Returns the created time of a row, `None` when the view has no created-time column.
    pub fn created_at(&self, row: usize) -> Option<i64> {
        self.created.as_ref().and_then(|c| c[row])
    }
}

/// Casts lookup key columns to the view's key types, with an error that names the column.
pub fn cast_keys(keys: &[JoinKey], columns: Vec<ArrayRef>) -> Result<Vec<ArrayRef>, FeatureError> {
    keys.iter()
        .zip(columns)
        .map(|(key, column)| {
            if column.data_type() == &key.arrow_type() {
                return Ok(column);
            }
            let compatible = matches!(
                (column.data_type(), key.key_type),
                (
                    DataType::Int8
                        | DataType::Int16
                        | DataType::Int32
                        | DataType::Int64
                        | DataType::UInt8
                        | DataType::UInt16
                        | DataType::UInt32
                        | DataType::UInt64
                        | DataType::Null,
                    KeyType::Integer
                ) | (
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null,
                    KeyType::String
                )
            );
            if !compatible {
                return Err(FeatureError::InvalidArgument {
                    argument: "entity keys",
                    message: format!(
                        "column {:?} has type {}, but the join key is {}",
                        key.column,
                        column.data_type(),
                        key.key_type.as_str()
                    ),
                });
            }
            Ok(cast(&column, &key.arrow_type())?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Date32Array;

    use super::*;

    #[test]
    fn date_columns_convert_to_micros() {
        let column: ArrayRef = Arc::new(Date32Array::from(vec![Some(0), Some(1), None, Some(-1)]));
        assert_eq!(
            micros(&column).unwrap(),
            vec![Some(0), Some(MICROS_PER_DAY), None, Some(-MICROS_PER_DAY)]
        );
    }

    #[test]
    fn date_out_of_micros_range_is_an_error() {
        // i32::MAX days times 86,400,000,000 overflows i64; this used to wrap or panic.
        for days in [i32::MAX, i32::MIN, 106_751_992] {
            let column: ArrayRef = Arc::new(Date32Array::from(vec![Some(0), Some(days)]));
            let error = micros(&column).unwrap_err();
            assert!(
                matches!(error, FeatureError::InvalidArgument { .. }),
                "{error}"
            );
            assert!(error.to_string().contains("out of range"), "{error}");
        }
        // The largest day that fits.
        let last = (i64::MAX / MICROS_PER_DAY) as i32;
        let column: ArrayRef = Arc::new(Date32Array::from(vec![last]));
        assert_eq!(
            micros(&column).unwrap(),
            vec![Some(i64::from(last) * MICROS_PER_DAY)]
        );
    }
}
