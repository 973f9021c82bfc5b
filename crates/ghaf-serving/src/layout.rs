//! Mapping of each input and output element to its prediction log column.

use ghaf_ingest::schema::DatasetSchema;
use ghaf_runtime::{DataType, Tensor, TensorMeta};
use serde_json::{Map, Value};

use crate::loader::{LoadedModel, tensor_f64_prefix};
use crate::log::{FIXED_COLUMNS, json_f64, predictions_schema};

/// One log column read from element `index` of each row of tensor `tensor`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogColumn {
    pub column: String,
    pub tensor: String,
    pub index: usize,
}

/// The log columns of a loaded model.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLayout {
    pub inputs: Vec<LogColumn>,
    /// `prediction` first when the model has one, then `<output>_<j>` columns.
    pub outputs: Vec<LogColumn>,
    pub label: Option<LogColumn>,
}

/// Elements per row of a tensor: the product of the dimensions after the first, a variable
/// dimension counting as 1.
fn row_width(meta: &TensorMeta) -> usize {
    meta.shape
        .iter()
        .skip(1)
        .map(|&d| usize::try_from(d).unwrap_or(1).max(1))
        .product::<usize>()
        .max(1)
}

fn is_float(datatype: DataType) -> bool {
    matches!(datatype, DataType::Fp16 | DataType::Fp32 | DataType::Fp64)
}

fn is_integer(datatype: DataType) -> bool {
    matches!(
        datatype,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Uint8
            | DataType::Uint16
            | DataType::Uint32
            | DataType::Uint64
            | DataType::Bool
    )
}

/// Makes a tensor name usable as a column name.
fn column_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".to_owned()
    } else {
        cleaned
    }
}

impl LogLayout {
    pub fn new(model: &LoadedModel) -> Self {
        let signature = model.predictor.signature();
        let reserved: Vec<&str> = FIXED_COLUMNS
            .iter()
            .map(|(name, _)| *name)
            .chain(["prediction", "label"])
            .collect();
        let mut used: Vec<String> = reserved.iter().map(|s| (*s).to_owned()).collect();
        let mut claim = |wanted: String| -> String {
            let mut name = wanted.clone();
            if used.contains(&name) {
                name = format!("feature_{wanted}");
            }
            let mut n = 1;
            while used.contains(&name) {
                n += 1;
                name = format!("feature_{wanted}_{n}");
            }
            used.push(name.clone());
            name
        };

        let mut inputs = Vec::new();
        match signature.inputs.as_slice() {
            [only] if !model.features.is_empty() && row_width(only) == model.features.len() => {
                for (index, feature) in model.features.iter().enumerate() {
                    inputs.push(LogColumn {
                        column: claim(feature.name.clone()),
                        tensor: only.name.clone(),
                        index,
                    });
                }
            }
            [only] => {
                for index in 0..row_width(only) {
                    inputs.push(LogColumn {
                        column: claim(format!("input_{index}")),
                        tensor: only.name.clone(),
                        index,
                    });
                }
            }
            many => {
                for meta in many {
                    let width = row_width(meta);
                    for index in 0..width {
                        let column = if width == 1 {
                            column_name(&meta.name)
                        } else {
                            format!("{}_{index}", column_name(&meta.name))
                        };
                        inputs.push(LogColumn {
                            column: claim(column),
                            tensor: meta.name.clone(),
                            index,
                        });
                    }
                }
            }
        }

        let mut outputs = Vec::new();
        let mut label = None;
        let mut prediction_taken = false;
        for meta in &signature.outputs {
            let width = row_width(meta);
            if is_integer(meta.datatype) {
                if label.is_none() && width == 1 {
                    label = Some(LogColumn {
                        column: "label".to_owned(),
                        tensor: meta.name.clone(),
                        index: 0,
                    });
                }
                continue;
            }
            if !is_float(meta.datatype) {
                continue;
            }
            if !prediction_taken && (width == 1 || width == 2) {
                prediction_taken = true;
                // Two columns are the probabilities of class 0 and class 1.
                outputs.insert(
                    0,
                    LogColumn {
                        column: "prediction".to_owned(),
                        tensor: meta.name.clone(),
                        index: width - 1,
                    },
                );
                continue;
            }
            for index in 0..width {
                outputs.push(LogColumn {
                    column: claim(format!("{}_{index}", column_name(&meta.name))),
                    tensor: meta.name.clone(),
                    index,
                });
            }
        }
        Self {
            inputs,
            outputs,
            label,
        }
    }

    /// The prediction log dataset's schema.
    pub fn schema(&self) -> DatasetSchema {
        let inputs: Vec<String> = self.inputs.iter().map(|c| c.column.clone()).collect();
        let outputs: Vec<String> = self.outputs.iter().map(|c| c.column.clone()).collect();
        predictions_schema(&inputs, &outputs, self.label.is_some())
    }

    /// Builds the log rows of one request: the first `logged` of its `rows` rows. Only the
    /// elements of the logged rows are converted.
    pub fn rows(
        &self,
        meta: &RowMeta,
        rows: usize,
        logged: usize,
        inputs: &[Tensor],
        outputs: &[Tensor],
    ) -> Vec<Map<String, Value>> {
        let logged = logged.min(rows);
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        // (tensor name, elements per row, elements of the logged rows)
        let decode = |tensors: &[Tensor]| -> Vec<(String, usize, Vec<f64>)> {
            tensors
                .iter()
                .filter_map(|t| {
                    let width = t.data.len().checked_div(rows).unwrap_or(0);
                    tensor_f64_prefix(&t.data, width.saturating_mul(logged))
                        .map(|values| (t.name.clone(), width, values))
                })
                .collect()
        };
        let input_values = decode(inputs);
        let output_values = decode(outputs);
        let value = |source: &[(String, usize, Vec<f64>)], column: &LogColumn, row: usize| -> f64 {
            source
                .iter()
                .find(|(name, _, _)| name == &column.tensor)
                .and_then(|(_, width, values)| {
                    (column.index < *width)
                        .then(|| values.get(row * width + column.index).copied())
                        .flatten()
                })
                .unwrap_or(f64::NAN)
        };
        let client_id = meta
            .client_request_id
            .as_deref()
            .map_or(Value::Null, Value::from);
        (0..logged)
            .map(|row| {
                let mut map = Map::new();
                map.insert("request_id".into(), Value::from(meta.request_id.clone()));
                map.insert("row".into(), Value::from(row as i64));
                map.insert("timestamp".into(), Value::from(timestamp.clone()));
                map.insert("endpoint".into(), Value::from(meta.endpoint.clone()));
                map.insert("variant".into(), Value::from(meta.variant.clone()));
                map.insert("model_name".into(), Value::from(meta.model_name.clone()));
                map.insert("model_version".into(), Value::from(meta.model_version));
                map.insert("latency_us".into(), Value::from(meta.latency_us));
                map.insert("client_request_id".into(), client_id.clone());
                map.insert("principal".into(), Value::from(meta.principal.clone()));
                for column in &self.inputs {
                    map.insert(
                        column.column.clone(),
                        json_f64(value(&input_values, column, row)),
                    );
                }
                for column in &self.outputs {
                    map.insert(
                        column.column.clone(),
                        json_f64(value(&output_values, column, row)),
                    );
                }
                if let Some(column) = &self.label {
                    let label = value(&output_values, column, row);
                    map.insert(
                        "label".into(),
                        if label.is_finite() {
                            Value::from(label as i64)
                        } else {
                            Value::Null
                        },
                    );
                }
                map
            })
            .collect()
    }
}

/// The per-request values of a prediction log row.
#[derive(Clone, Debug)]
pub struct RowMeta {
    /// The server-generated request id.
    pub request_id: String,
    /// The id the caller sent, if any.
    pub client_request_id: Option<String>,
    pub principal: String,
    pub endpoint: String,
    pub variant: String,
    pub model_name: String,
    pub model_version: i64,
    pub latency_us: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ghaf_runtime::TensorData;

    fn layout() -> LogLayout {
        LogLayout {
            inputs: vec![
                LogColumn {
                    column: "a".into(),
                    tensor: "input".into(),
                    index: 0,
                },
                LogColumn {
                    column: "b".into(),
                    tensor: "input".into(),
                    index: 1,
                },
            ],
            outputs: vec![LogColumn {
                column: "prediction".into(),
                tensor: "out".into(),
                index: 0,
            }],
            label: None,
        }
    }

    #[test]
    fn rows_are_capped_and_carry_ids() {
        let meta = RowMeta {
            request_id: "server".into(),
            client_request_id: Some("client".into()),
            principal: "alice".into(),
            endpoint: "e".into(),
            variant: "primary".into(),
            model_name: "m".into(),
            model_version: 1,
            latency_us: 5,
        };
        let inputs = [Tensor::new(
            "input",
            vec![3, 2],
            TensorData::Fp64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        )];
        let outputs = [Tensor::new(
            "out",
            vec![3, 1],
            TensorData::Fp32(vec![0.5, 0.25, 0.125]),
        )];
        let rows = layout().rows(&meta, 3, 2, &inputs, &outputs);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["a"], 3.0);
        assert_eq!(rows[1]["b"], 4.0);
        assert_eq!(rows[1]["prediction"], 0.25);
        assert_eq!(rows[0]["request_id"], "server");
        assert_eq!(rows[0]["client_request_id"], "client");
        assert_eq!(rows[0]["principal"], "alice");
        let anonymous = RowMeta {
            client_request_id: None,
            ..meta
        };
        let rows = layout().rows(&anonymous, 3, 10, &inputs, &outputs);
        assert_eq!(rows.len(), 3);
        assert!(rows[2]["client_request_id"].is_null());
        assert_eq!(rows[2]["b"], 6.0);
    }
}
