//! Batch scoring: every row of a dataset version is scored by a verified model version, in
//! chunks, and written as a new version of an output dataset with the kept input columns,
//! `prediction` (and `label` when the model outputs class labels).
//!
//! The model is evaluated through the same loader and predictor as online endpoints, so a
//! row scores the same in both.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use ghaf_core::{ProjectId, TenantId};
use ghaf_ingest::schema::{ColumnSpec, ColumnType, DatasetSchema};
use ghaf_ingest::{IngestInput, IngestService};
use ghaf_ingest::{InputFormat, ReadOptions};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::layout::LogLayout;
use crate::loader::{LoadedModel, ModelFeature, ModelLoader};

/// Default rows scored per chunk.
pub const DEFAULT_CHUNK_ROWS: usize = 10_000;

/// Input, model and output of a batch scoring run.
#[derive(Clone, Debug)]
pub struct BatchRequest {
    pub tenant: TenantId,
    pub project: ProjectId,
    pub project_name: String,
    pub dataset: String,
    /// Input version; the latest when `None`.
    pub dataset_version: Option<i64>,
    pub model: String,
    pub model_version: i64,
    pub output_dataset: String,
    /// Input columns copied to the output; every input column when empty.
    pub passthrough: Vec<String>,
    pub chunk_rows: usize,
    pub execution_provider: String,
    pub actor: String,
}

/// Result of a batch scoring run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchOutcome {
    pub input: String,
    pub input_version: i64,
    pub model: String,
    pub model_version: i64,
    pub output_dataset: String,
    pub output_version: i64,
    pub rows: u64,
    pub columns: Vec<String>,
}

/// A batch scoring failure: `retryable` when another attempt may succeed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BatchError {
    pub message: String,
    pub retryable: bool,
}

fn permanent(message: impl Into<String>) -> BatchError {
    BatchError {
        message: message.into(),
        retryable: false,
    }
}

fn transient(message: impl Into<String>) -> BatchError {
    BatchError {
        message: message.into(),
        retryable: true,
    }
}

/// Converts an input column to the model's numbers: numeric and boolean columns as f64 (null
/// is NaN), text columns as category indexes (unknown or null is NaN).
fn feature_column(array: &ArrayRef, feature: &ModelFeature) -> Result<Vec<f64>, String> {
    match (array.data_type(), &feature.categories) {
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, Some(categories)) => {
            let text = cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
            let text = text.as_string::<i32>();
            Ok((0..text.len())
                .map(|row| {
                    if text.is_null(row) {
                        return f64::NAN;
                    }
                    categories
                        .iter()
                        .position(|c| c == text.value(row))
                        .map_or(f64::NAN, |i| i as f64)
                })
                .collect())
        }
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, None) => Err(format!(
            "column {:?} is text, but the model's feature is numeric",
            feature.name
        )),
        _ => {
            let numbers = cast(array, &DataType::Float64).map_err(|error| {
                format!(
                    "column {:?} of type {} cannot be read as a number: {error}",
                    feature.name,
                    array.data_type()
                )
            })?;
            let numbers = numbers.as_primitive::<arrow::datatypes::Float64Type>();
            Ok((0..numbers.len())
                .map(|row| {
                    if numbers.is_null(row) {
                        f64::NAN
                    } else {
                        numbers.value(row)
                    }
                })
                .collect())
        }
    }
}

/// Scores one chunk; returns the output columns in layout order, then the label.
fn score_chunk(
    model: &LoadedModel,
    layout: &LogLayout,
    batch: &RecordBatch,
) -> Result<Vec<ArrayRef>, BatchError> {
    let rows = batch.num_rows();
    let n = model.features.len();
    let mut matrix = vec![f64::NAN; rows * n];
    for (j, feature) in model.features.iter().enumerate() {
        let array = batch.column_by_name(&feature.name).ok_or_else(|| {
            permanent(format!(
                "the model needs column {:?}, which the input does not have",
                feature.name
            ))
        })?;
        let values = feature_column(array, feature).map_err(permanent)?;
        for (row, value) in values.into_iter().enumerate() {
            matrix[row * n + j] = value;
        }
    }
    let outputs = model
        .predict_matrix(rows, matrix)
        .map_err(|error| permanent(format!("scoring failed: {error}")))?;
    // Each output is converted once per chunk.
    let converted: Vec<(&str, Option<Vec<f64>>)> = outputs
        .iter()
        .map(|t| (t.name.as_str(), crate::loader::tensor_f64(&t.data)))
        .collect();
    let value = |tensor: &str, index: usize, row: usize| -> Option<f64> {
        let values = converted
            .iter()
            .find(|(name, _)| *name == tensor)?
            .1
            .as_ref()?;
        let width = values.len().checked_div(rows).unwrap_or(0);
        (index < width).then(|| values[row * width + index])
    };
    let mut columns: Vec<ArrayRef> = Vec::new();
    for column in &layout.outputs {
        let array: Float64Array = (0..rows)
            .map(|row| value(&column.tensor, column.index, row).filter(|v| !v.is_nan()))
            .collect();
        columns.push(Arc::new(array));
    }
    if let Some(column) = &layout.label {
        let array: Int64Array = (0..rows)
            .map(|row| value(&column.tensor, column.index, row).map(|v| v as i64))
            .collect();
        columns.push(Arc::new(array));
    }
    Ok(columns)
}

fn column_type(data_type: &DataType) -> Option<ColumnType> {
    Some(match data_type {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => ColumnType::Integer,
        DataType::Float32 | DataType::Float64 => ColumnType::Float,
        DataType::Utf8 | DataType::LargeUtf8 => ColumnType::String,
        DataType::Boolean => ColumnType::Boolean,
        DataType::Date32 => ColumnType::Date,
        DataType::Timestamp(..) => ColumnType::Timestamp,
        _ => return None,
    })
}

fn output_schema(schema: &Schema) -> Result<DatasetSchema, BatchError> {
    let mut columns = Vec::new();
    for field in schema.fields() {
        let column_type = column_type(field.data_type()).ok_or_else(|| {
            permanent(format!(
                "column {:?} has type {}, which a dataset cannot store; leave it out of passthrough",
                field.name(),
                field.data_type()
            ))
        })?;
        let timezone = match field.data_type() {
            DataType::Timestamp(_, Some(zone)) => Some(zone.to_string()),
            _ => None,
        };
        columns.push(ColumnSpec {
            name: field.name().clone(),
            column_type,
            nullable: true,
            classification: None,
            description: String::new(),
            timezone,
            min: None,
            max: None,
            allowed: None,
            pattern: None,
            unique: false,
        });
    }
    Ok(DatasetSchema {
        columns,
        event_time: None,
        unique_key: Vec::new(),
        acceptance: Default::default(),
    })
}

/// Scores `request.dataset` with the model and stores the output dataset version.
pub async fn score(
    ingest: &IngestService,
    loader: &dyn ModelLoader,
    request: &BatchRequest,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<BatchOutcome, BatchError> {
    let store = ingest.store();
    let dataset = store
        .get_dataset(&request.tenant, &request.project, &request.dataset)
        .await
        .map_err(|error| permanent(format!("input dataset {:?}: {error}", request.dataset)))?;
    let version = match request.dataset_version {
        Some(number) => store
            .get_version(&request.tenant, &dataset.id, number)
            .await
            .map_err(|error| permanent(format!("input {}@{number}: {error}", request.dataset)))?,
        None => store
            .list_versions(&request.tenant, &dataset.id)
            .await
            .map_err(|error| transient(error.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| permanent(format!("dataset {:?} has no versions", request.dataset)))?,
    };
    let scope = ghaf_tracking::Scope {
        tenant: request.tenant.clone(),
        project: request.project.clone(),
    };
    let model = loader
        .load(
            &scope,
            &request.model,
            request.model_version,
            &request.execution_provider,
        )
        .await
        .map_err(|error| {
            let message = format!(
                "model {} version {}: {error}",
                request.model, request.model_version
            );
            // Verification failures and bad model files stay failed; store or runtime
            // outages are retried.
            if error.is_transient() {
                transient(message)
            } else {
                permanent(message)
            }
        })?;
    if model.features.is_empty() {
        return Err(permanent(format!(
            "model {} version {} does not name its input features, so dataset columns cannot be matched to it",
            request.model, request.model_version
        )));
    }
    let layout = LogLayout::new(&model);
    progress(format!(
        "scoring {}@{} ({} rows) with {} version {}",
        request.dataset, version.version, version.row_count, request.model, request.model_version
    ));

    let digest = IngestService::digest(&version.content_digest)
        .map_err(|error| permanent(error.to_string()))?;
    let bytes = ingest
        .blobs()
        .get(&request.tenant, &digest)
        .await
        .map_err(|error| transient(format!("cannot read the input: {error}")))?;
    let staging = ingest.staging_dir().to_owned();
    std::fs::create_dir_all(&staging).map_err(|error| transient(error.to_string()))?;
    let file = tempfile::Builder::new()
        .prefix("batch-score-")
        .suffix(".parquet")
        .tempfile_in(&staging)
        .map_err(|error| transient(format!("cannot create a staging file: {error}")))?;
    let path = file.path().to_owned();

    let chunk_rows = request.chunk_rows.max(1);
    let passthrough = request.passthrough.clone();
    let output_names: Vec<String> = layout
        .outputs
        .iter()
        .map(|c| c.column.clone())
        .chain(layout.label.iter().map(|c| c.column.clone()))
        .collect();
    let write_path = path.clone();
    let scored = tokio::task::spawn_blocking(move || -> Result<(Schema, u64), BatchError> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|error| permanent(format!("the input is not readable Parquet: {error}")))?
            .with_batch_size(chunk_rows)
            .build()
            .map_err(|error| permanent(error.to_string()))?;
        let input_schema = reader.schema();
        let kept: Vec<usize> = if passthrough.is_empty() {
            (0..input_schema.fields().len()).collect()
        } else {
            passthrough
                .iter()
                .map(|name| {
                    input_schema.index_of(name).map_err(|_| {
                        permanent(format!("passthrough column {name:?} is not in the input"))
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let mut fields: Vec<Field> = kept
            .iter()
            .map(|&i| input_schema.field(i).clone().with_nullable(true))
            .collect();
        for name in &output_names {
            if fields.iter().any(|f| f.name() == name) {
                return Err(permanent(format!(
                    "the input already has a column {name:?}; leave it out of passthrough"
                )));
            }
            let data_type = if Some(name) == layout.label.as_ref().map(|c| &c.column) {
                DataType::Int64
            } else {
                DataType::Float64
            };
            fields.push(Field::new(name, data_type, true));
        }
        let schema = Arc::new(Schema::new(fields));
        let out = std::fs::File::create(&write_path)
            .map_err(|error| transient(format!("cannot write the staging file: {error}")))?;
        let mut writer = ArrowWriter::try_new(out, schema.clone(), None)
            .map_err(|error| transient(error.to_string()))?;
        let mut rows = 0u64;
        for batch in reader {
            let batch =
                batch.map_err(|error| permanent(format!("cannot decode the input: {error}")))?;
            let mut columns: Vec<ArrayRef> =
                kept.iter().map(|&i| batch.column(i).clone()).collect();
            columns.extend(score_chunk(&model, &layout, &batch)?);
            let out_batch = RecordBatch::try_new(schema.clone(), columns)
                .map_err(|error| permanent(error.to_string()))?;
            writer
                .write(&out_batch)
                .map_err(|error| transient(error.to_string()))?;
            rows += batch.num_rows() as u64;
        }
        writer
            .close()
            .map_err(|error| transient(error.to_string()))?;
        Ok((schema.as_ref().clone(), rows))
    })
    .await
    .map_err(|error| transient(format!("the scoring worker stopped: {error}")))??;
    let (schema, rows) = scored;
    progress(format!("scored {rows} rows"));

    let output = match store
        .get_dataset(&request.tenant, &request.project, &request.output_dataset)
        .await
    {
        Ok(existing) => existing,
        Err(ghaf_ingest::IngestError::NotFound { .. }) => ingest
            .create_dataset(
                &request.tenant,
                &request.project,
                &request.output_dataset,
                &format!(
                    "Batch scores of {} by model {}",
                    request.dataset, request.model
                ),
                &output_schema(&schema)?,
                &request.actor,
            )
            .await
            .map_err(|error| permanent(format!("cannot create the output dataset: {error}")))?,
        Err(error) => return Err(transient(error.to_string())),
    };
    let expected: Vec<&str> = output
        .schema
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let actual: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if expected != actual {
        return Err(permanent(format!(
            "output dataset {:?} has the columns {expected:?}, but the scores have {actual:?}; choose another output dataset",
            request.output_dataset
        )));
    }
    // The source names both inputs, so the OpenLineage event of the ingest links the new
    // version to the input dataset version and the model version.
    let source = format!(
        "batch_score:dataset:{}@{}+model:{}@{}",
        request.dataset, version.version, request.model, request.model_version
    );
    let options = ReadOptions::new(InputFormat::Parquet);
    let outcome = ingest
        .ingest(
            &output,
            &request.project_name,
            IngestInput {
                path: &path,
                options: &options,
                source: &source,
                progress: None,
            },
            &request.actor,
        )
        .await
        .map_err(|error| transient(format!("cannot store the scores: {error}")))?;
    drop(file);
    Ok(BatchOutcome {
        input: request.dataset.clone(),
        input_version: version.version,
        model: request.model.clone(),
        model_version: request.model_version,
        output_dataset: request.output_dataset.clone(),
        output_version: outcome.version.version,
        rows,
        columns: actual.iter().map(|s| (*s).to_owned()).collect(),
    })
}
