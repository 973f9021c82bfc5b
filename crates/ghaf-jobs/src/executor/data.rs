//! Reading a dataset version's Parquet file into the columns the built-in trainers take.

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use bytes::Bytes;
use ghaf_train::{Column, Dataset};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::ExecError;

/// The training table of a job: features and labels, in Parquet row order.
pub struct TrainingTable {
    pub dataset: Dataset,
    /// Rows read from the file, including those left out for a missing label.
    pub rows_read: usize,
    /// Rows left out because the label is missing.
    pub rows_without_label: usize,
    /// Columns not used as features because their type is not numeric, boolean or text.
    pub skipped_columns: Vec<String>,
}

enum Kind {
    Numeric,
    Text,
}

fn kind_of(data_type: &DataType) -> Option<Kind> {
    match data_type {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _) => Some(Kind::Numeric),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Kind::Text),
        DataType::Dictionary(_, value)
            if matches!(**value, DataType::Utf8 | DataType::LargeUtf8) =>
        {
            Some(Kind::Text)
        }
        _ => None,
    }
}

/// Decodes the Parquet file into features and a numeric label. Numeric and boolean columns
/// become numeric features (null is missing); text columns become categorical features.
/// `features` selects and orders the feature columns; empty means every usable column
/// except the label. Rows with a null label are left out.
pub fn read_training_table(
    parquet: Bytes,
    label: &str,
    features: &[String],
) -> Result<TrainingTable, ExecError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(parquet).map_err(|error| {
        ExecError::permanent(format!("the input is not a readable Parquet file: {error}"))
    })?;
    let schema = builder.schema().clone();

    let label_field = schema.field_with_name(label).map_err(|_| {
        ExecError::permanent(format!(
            "label column {label:?} is not in the input; its columns are {}",
            column_names(&schema)
        ))
    })?;
    if !matches!(kind_of(label_field.data_type()), Some(Kind::Numeric)) {
        return Err(ExecError::permanent(format!(
            "label column {label:?} has type {}; it must be numeric or boolean",
            label_field.data_type()
        )));
    }

    let mut skipped_columns = Vec::new();
    let selected: Vec<(usize, Kind)> = if features.is_empty() {
        let mut selected = Vec::new();
        for (index, field) in schema.fields().iter().enumerate() {
            if field.name() == label {
                continue;
            }
            match kind_of(field.data_type()) {
                Some(kind) => selected.push((index, kind)),
                None => skipped_columns.push(field.name().clone()),
            }
        }
        selected
    } else {
        let mut selected = Vec::new();
        for name in features {
            if name == label {
                return Err(ExecError::permanent(format!(
                    "feature {name:?} is also the label; remove it from the feature list"
                )));
            }
            let index = schema.index_of(name).map_err(|_| {
                ExecError::permanent(format!(
                    "feature column {name:?} is not in the input; its columns are {}",
                    column_names(&schema)
                ))
            })?;
            let kind = kind_of(schema.field(index).data_type()).ok_or_else(|| {
                ExecError::permanent(format!(
                    "feature column {name:?} has type {}; use numeric, boolean or text columns",
                    schema.field(index).data_type()
                ))
            })?;
            selected.push((index, kind));
        }
        selected
    };
    if selected.is_empty() {
        return Err(ExecError::permanent(
            "the input has no numeric, boolean or text column besides the label",
        ));
    }
    let label_index = schema
        .index_of(label)
        .map_err(|_| ExecError::permanent("label column vanished"))?;

    let reader = builder
        .build()
        .map_err(|error| ExecError::permanent(format!("cannot read the Parquet file: {error}")))?;
    let mut numeric: Vec<Vec<f64>> = vec![Vec::new(); selected.len()];
    let mut text: Vec<Vec<Option<String>>> = vec![Vec::new(); selected.len()];
    let mut labels = Vec::new();
    let mut rows_read = 0;
    let mut rows_without_label = 0;
    for batch in reader {
        let batch = batch.map_err(|error| {
            ExecError::permanent(format!("cannot decode the Parquet file: {error}"))
        })?;
        rows_read += batch.num_rows();
        let label_values = to_f64(batch.column(label_index))?;
        let keep: Vec<usize> = (0..batch.num_rows())
            .filter(|&row| !label_values.is_null(row))
            .collect();
        rows_without_label += batch.num_rows() - keep.len();
        labels.extend(keep.iter().map(|&row| label_values.value(row)));
        for (slot, (index, kind)) in selected.iter().enumerate() {
            let column = batch.column(*index);
            match kind {
                Kind::Numeric => {
                    let values = to_f64(column)?;
                    numeric[slot].extend(keep.iter().map(|&row| {
                        if values.is_null(row) {
                            f64::NAN
                        } else {
                            values.value(row)
                        }
                    }));
                }
                Kind::Text => {
                    let values = cast(column, &DataType::Utf8).map_err(|error| {
                        ExecError::permanent(format!("cannot read a text column: {error}"))
                    })?;
                    let values = values.as_string::<i32>();
                    text[slot].extend(
                        keep.iter().map(|&row| {
                            (!values.is_null(row)).then(|| values.value(row).to_owned())
                        }),
                    );
                }
            }
        }
    }

    let columns: Vec<Column> = selected
        .iter()
        .enumerate()
        .map(|(slot, (index, kind))| {
            let name = schema.field(*index).name().clone();
            match kind {
                Kind::Numeric => Column::f64(name, std::mem::take(&mut numeric[slot])),
                Kind::Text => Column::categorical_from_strings(name, &text[slot]),
            }
        })
        .collect();
    let dataset =
        Dataset::new(columns, labels).map_err(|error| ExecError::permanent(error.to_string()))?;
    if dataset.n_rows() == 0 {
        return Err(ExecError::permanent(format!(
            "no row of the input has a value in label column {label:?}"
        )));
    }
    Ok(TrainingTable {
        dataset,
        rows_read,
        rows_without_label,
        skipped_columns,
    })
}

fn to_f64(column: &ArrayRef) -> Result<Float64Array, ExecError> {
    let values = cast(column, &DataType::Float64)
        .map_err(|error| ExecError::permanent(format!("cannot read a numeric column: {error}")))?;
    Ok(values
        .as_primitive::<arrow::datatypes::Float64Type>()
        .clone())
}

fn column_names(schema: &arrow::datatypes::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|field| field.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
