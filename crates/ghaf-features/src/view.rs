//! A feature view version compiled against its dataset's schema, and the feature table it
//! computes from the dataset's rows: keys, event and created times, and one column per
//! feature.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
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
            features.push(CompiledFeature {
                name: feature.name.clone(),
                data_type,
                kind,
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
            let column = match &feature.kind {
                FeatureKind::Expression(expr) => expr.evaluate(batch)?,
                FeatureKind::Rolling {
                    function,
                    input,
                    window,
                } => rolling(&index, &input.evaluate(batch)?, *function, *window)?,
            };
            let column = if column.data_type() == &feature.data_type {
                column
            } else {
                cast(&column, &feature.data_type)?
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
        DataType::Date32 => Ok(column
            .as_primitive::<Date32Type>()
            .iter()
            .map(|d| d.map(|days| i64::from(days) * MICROS_PER_DAY))
            .collect()),
        other => Err(FeatureError::InvalidArgument {
            argument: "timestamp column",
            message: format!("type {other} is not a timestamp or date"),
        }),
    }
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
