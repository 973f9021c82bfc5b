//! Point-in-time training sets: the entity table's rows, in their order, with the features
//! of each requested view as of each row's timestamp.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use crate::FeatureError;
use crate::view::{CompiledView, FeatureTable, cast_keys, micros};

/// Name of the entity table's timestamp column when the request names none and the table
/// has several timestamp columns, as in Feast.
pub const DEFAULT_TIMESTAMP_COLUMN: &str = "event_timestamp";

/// The features taken from one view.
pub struct ViewSelection<'a> {
    pub view: &'a CompiledView,
    pub table: &'a FeatureTable,
    /// Positions in `view.features`, in output order.
    pub features: Vec<usize>,
    /// Prefix of full feature names: the view name, plus `@vN` for a pinned version.
    pub prefix: String,
}

/// Picks the entity table's timestamp column: the named one, else `event_timestamp`, else
/// the only timestamp column.
pub fn timestamp_column(schema: &Schema, requested: Option<&str>) -> Result<String, FeatureError> {
    if let Some(name) = requested {
        schema
            .index_of(name)
            .map_err(|_| FeatureError::InvalidArgument {
                argument: "timestamp_column",
                message: format!("the entity table has no column {name:?}"),
            })?;
        return Ok(name.to_owned());
    }
    if schema.index_of(DEFAULT_TIMESTAMP_COLUMN).is_ok() {
        return Ok(DEFAULT_TIMESTAMP_COLUMN.to_owned());
    }
    let candidates: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Timestamp(..) | DataType::Date32))
        .map(|f| f.name().as_str())
        .collect();
    match candidates.as_slice() {
        [only] => Ok((*only).to_owned()),
        [] => Err(FeatureError::InvalidArgument {
            argument: "timestamp_column",
            message: "the entity table has no timestamp column; add one named event_timestamp"
                .to_owned(),
        }),
        several => Err(FeatureError::InvalidArgument {
            argument: "timestamp_column",
            message: format!(
                "the entity table has several timestamp columns ({}); name the one to join on",
                several.join(", ")
            ),
        }),
    }
}

/// Joins the selected features to `entities`. The output has every entity column, then one
/// column per selected feature, named `feature` or, with `full_feature_names`,
/// `prefix__feature`. It has exactly one row per entity row, in the same order. A row gets
/// NULL features from a view where no feature row of its key lies in
/// `[timestamp - ttl, timestamp]`. Without a timestamp column every row looks up the latest
/// feature row of its key, which suits views without an event time.
pub fn point_in_time_join(
    entities: &RecordBatch,
    timestamp: Option<&str>,
    selections: &[ViewSelection<'_>],
    full_feature_names: bool,
) -> Result<RecordBatch, FeatureError> {
    let schema = entities.schema();
    let times = match timestamp {
        Some(timestamp) => {
            let index = schema
                .index_of(timestamp)
                .map_err(|_| FeatureError::InvalidArgument {
                    argument: "timestamp_column",
                    message: format!("the entity table has no column {timestamp:?}"),
                })?;
            micros(entities.column(index)).map_err(|_| FeatureError::InvalidArgument {
                argument: "timestamp_column",
                message: format!(
                    "column {timestamp:?} has type {}; it must be a timestamp or date",
                    schema.field(index).data_type()
                ),
            })?
        }
        None => vec![Some(i64::MAX); entities.num_rows()],
    };

    let mut names: HashSet<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = entities.columns().to_vec();

    for selection in selections {
        let view = selection.view;
        let mut key_columns = Vec::with_capacity(view.keys.len());
        for key in &view.keys {
            let column =
                schema
                    .index_of(&key.column)
                    .map_err(|_| FeatureError::InvalidArgument {
                        argument: "entity table",
                        message: format!(
                            "feature view {:?} joins on column {:?}, which the entity table lacks",
                            view.name, key.column
                        ),
                    })?;
            key_columns.push(entities.column(column).clone());
        }
        let key_columns = cast_keys(&view.keys, key_columns)?;
        let matches = selection
            .table
            .index
            .lookup(&key_columns, &times, view.ttl)?;

        let mut gathered =
            take_columns(&selection.table.features, &selection.features, &matches)?.into_iter();
        for &feature in &selection.features {
            let feature_def = &view.features[feature];
            let name = if full_feature_names {
                format!("{}__{}", selection.prefix, feature_def.name)
            } else {
                feature_def.name.clone()
            };
            if !names.insert(name.clone()) {
                return Err(FeatureError::InvalidArgument {
                    argument: "features",
                    message: format!(
                        "two output columns are named {name:?}; request full feature names or rename one"
                    ),
                });
            }
            let values = gathered
                .next()
                .expect("take_columns returns one column per selected feature");
            fields.push(Arc::new(Field::new(
                name,
                feature_def.data_type.clone(),
                true,
            )));
            columns.push(values);
        }
    }
    let output = Schema::new(fields);
    Ok(RecordBatch::try_new(Arc::new(output), columns)?)
}

/// Minimum output rows for which [`take_columns`] uses a second thread. Starting a thread
/// takes tens of microseconds, more than a gather of fewer rows saves (an estimate).
const PARALLEL_TAKE_ROWS: usize = 16_384;

/// Gathers `columns[i]` at `indices` for each `i` in `picks`, in `picks` order. Each gather
/// reads the whole column at random and waits mostly on memory, so the columns are split
/// between this thread and one more.
fn take_columns(
    columns: &[ArrayRef],
    picks: &[usize],
    indices: &UInt32Array,
) -> Result<Vec<ArrayRef>, FeatureError> {
    let take_each = |picks: &[usize]| -> Result<Vec<ArrayRef>, FeatureError> {
        picks
            .iter()
            .map(|&pick| Ok(take(&columns[pick], indices, None)?))
            .collect()
    };
    if picks.len() < 2 || indices.len() < PARALLEL_TAKE_ROWS {
        return take_each(picks);
    }
    let (first, second) = picks.split_at(picks.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| take_each(second));
        let mut taken = take_each(first)?;
        let rest = other
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        taken.extend(rest);
        Ok(taken)
    })
}
