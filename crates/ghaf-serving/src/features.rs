//! Online feature join of endpoints bound to a feature service: entity keys and request-time
//! features come in the request, the other features from the online store, and the model's
//! input matrix is built in the model's feature order.

use std::collections::{BTreeMap, HashMap};

use ghaf_core::{ProjectId, TenantId};
use ghaf_features::online::FieldStatus;
use ghaf_features::{FeatureError, FeatureSelection, FeatureStore, KeyType, OnlineRequest};
use ghaf_runtime::{DataType, Tensor, TensorData, TensorMeta};
use serde_json::Value;

use crate::ServingError;
use crate::loader::{ModelFeature, tensor_f64};

/// A join key the request must carry.
#[derive(Clone, Debug, PartialEq)]
pub struct JoinKey {
    pub name: String,
    pub key_type: KeyType,
}

/// How an endpoint's feature service maps onto its model.
#[derive(Clone, Debug)]
pub struct FeatureBinding {
    pub service: String,
    /// Join keys of the service's entities, in first-use order.
    pub join_keys: Vec<JoinKey>,
    /// Model features the service provides.
    pub served: Vec<String>,
    /// Model features the request must carry, in model order.
    pub request_time: Vec<String>,
}

impl FeatureBinding {
    /// Resolves the service's join keys and features against the model's features.
    pub async fn resolve(
        store: &FeatureStore,
        tenant: &TenantId,
        project: &ProjectId,
        service: &str,
        features: &[ModelFeature],
    ) -> Result<Self, String> {
        let registry = store
            .registry(tenant, project)
            .await
            .map_err(|error| format!("cannot read the feature registry: {error}"))?;
        let spec = registry
            .feature_services
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| format!("feature service {service:?} does not exist in this project"))?;
        let mut join_keys: Vec<JoinKey> = Vec::new();
        let mut provided: Vec<String> = Vec::new();
        for reference in &spec.features {
            let (view_part, feature) = match reference.split_once(':') {
                Some((view, feature)) => (view, Some(feature)),
                None => (reference.as_str(), None),
            };
            let view_name = view_part.split('@').next().unwrap_or(view_part);
            let view = registry
                .feature_views
                .iter()
                .find(|v| v.name == view_name)
                .ok_or_else(|| {
                    format!(
                        "feature service {service:?} names view {view_name:?}, which does not exist"
                    )
                })?;
            for entity_name in &view.spec.entities {
                let entity = registry
                    .entities
                    .iter()
                    .find(|e| &e.name == entity_name)
                    .ok_or_else(|| format!("entity {entity_name:?} does not exist"))?;
                if !join_keys.iter().any(|k| k.name == entity.join_key()) {
                    join_keys.push(JoinKey {
                        name: entity.join_key().to_owned(),
                        key_type: entity.value_type,
                    });
                }
            }
            match feature {
                Some(feature) => provided.push(feature.to_owned()),
                None => provided.extend(view.spec.features.iter().map(|f| f.name.clone())),
            }
        }
        let served: Vec<String> = features
            .iter()
            .filter(|f| provided.contains(&f.name))
            .map(|f| f.name.clone())
            .collect();
        let request_time = features
            .iter()
            .filter(|f| !provided.contains(&f.name))
            .map(|f| f.name.clone())
            .collect();
        if let Some(clash) = join_keys
            .iter()
            .find(|k| features.iter().any(|f| f.name == k.name))
        {
            return Err(format!(
                "the model uses the join key {:?} as a feature, so a request cannot tell the key from the feature; retrain without it",
                clash.name
            ));
        }
        Ok(Self {
            service: service.to_owned(),
            join_keys,
            served,
            request_time,
        })
    }

    /// Inputs of the endpoint in protocol terms: the join keys, then the request-time
    /// features.
    pub fn inputs(&self) -> Vec<TensorMeta> {
        let mut inputs: Vec<TensorMeta> = self
            .join_keys
            .iter()
            .map(|key| TensorMeta {
                name: key.name.clone(),
                datatype: match key.key_type {
                    KeyType::Integer => DataType::Int64,
                    KeyType::String => DataType::Bytes,
                },
                shape: vec![-1],
            })
            .collect();
        inputs.extend(self.request_time.iter().map(|name| TensorMeta {
            name: name.clone(),
            datatype: DataType::Fp64,
            shape: vec![-1],
        }));
        inputs
    }
}

/// The model's input matrix for one request, with the features missing per row.
pub struct JoinedInput {
    pub rows: usize,
    /// Row-major, one column per model feature.
    pub matrix: Vec<f64>,
    /// Names of the features whose value was missing (unknown entity, expired or null), per
    /// row.
    pub missing: Vec<Vec<String>>,
}

fn invalid(input: &str, reason: impl Into<String>) -> ServingError {
    ServingError::InvalidInput {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

/// Rows of a tensor of shape `[N]` or `[N, 1]`.
fn column_rows(tensor: &Tensor) -> Result<usize, ServingError> {
    match tensor.shape.as_slice() {
        [n] | [n, 1] if *n >= 0 => {
            let rows = *n as usize;
            if tensor.data.len() != rows {
                return Err(invalid(
                    &tensor.name,
                    format!(
                        "shape {:?} needs {rows} elements, got {}",
                        tensor.shape,
                        tensor.data.len()
                    ),
                ));
            }
            Ok(rows)
        }
        other => Err(invalid(
            &tensor.name,
            format!("shape {other:?} is not [N] or [N, 1]"),
        )),
    }
}

fn key_values(tensor: &Tensor, key: &JoinKey) -> Result<Vec<Value>, ServingError> {
    match (&tensor.data, key.key_type) {
        (TensorData::Bytes(values), KeyType::String) => values
            .iter()
            .map(|bytes| {
                String::from_utf8(bytes.clone())
                    .map(Value::String)
                    .map_err(|_| invalid(&tensor.name, "an entity key is not valid UTF-8"))
            })
            .collect(),
        (TensorData::Int64(values), KeyType::Integer) => {
            Ok(values.iter().map(|&v| Value::from(v)).collect())
        }
        (TensorData::Int32(values), KeyType::Integer) => {
            Ok(values.iter().map(|&v| Value::from(v)).collect())
        }
        (_, KeyType::String) => Err(invalid(
            &tensor.name,
            format!(
                "datatype {} is not BYTES, the type of this string key",
                tensor.datatype()
            ),
        )),
        (_, KeyType::Integer) => Err(invalid(
            &tensor.name,
            format!(
                "datatype {} is not INT64, the type of this integer key",
                tensor.datatype()
            ),
        )),
    }
}

/// Converts a request-time or online value to the model's number: category index for
/// categorical features (NaN for an unknown category), NaN for null.
fn feature_number(feature: &ModelFeature, value: &Value) -> f64 {
    match (value, &feature.categories) {
        (Value::String(text), Some(categories)) => categories
            .iter()
            .position(|c| c == text)
            .map_or(f64::NAN, |i| i as f64),
        (Value::Number(number), _) => number.as_f64().unwrap_or(f64::NAN),
        (Value::Bool(flag), _) => f64::from(u8::from(*flag)),
        (Value::String(text), None) => text.trim().parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

fn request_time_values(tensor: &Tensor, feature: &ModelFeature) -> Result<Vec<f64>, ServingError> {
    if let TensorData::Bytes(values) = &tensor.data {
        return values
            .iter()
            .map(|bytes| {
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| invalid(&tensor.name, "a value is not valid UTF-8"))?;
                Ok(feature_number(feature, &Value::String(text.to_owned())))
            })
            .collect();
    }
    tensor_f64(&tensor.data).ok_or_else(|| {
        invalid(
            &tensor.name,
            format!(
                "datatype {} is not supported; send FP64, FP32, an integer type or BYTES",
                tensor.datatype()
            ),
        )
    })
}

fn feature_error(error: FeatureError) -> ServingError {
    let error_text = error.to_string();
    match error {
        FeatureError::InvalidArgument { argument, message } => invalid(argument, message),
        // The online store or the registry is unreachable: a later request can succeed. The
        // caller fills in the endpoint name.
        FeatureError::Online(_)
        | FeatureError::Meta(_)
        | FeatureError::Database(_)
        | FeatureError::Blob(_)
        | FeatureError::Io(_) => ServingError::NotReady {
            endpoint: String::new(),
            reason: format!("online feature read failed: {error_text}"),
            retry_after_secs: crate::RETRY_AFTER_SECS,
        },
        other => ServingError::Internal(format!("online feature read failed: {other}")),
    }
}

/// Reads the online features of the request's entities and builds the model's matrix.
pub async fn join(
    store: &FeatureStore,
    tenant: &TenantId,
    project: &ProjectId,
    binding: &FeatureBinding,
    features: &[ModelFeature],
    inputs: &[Tensor],
) -> Result<JoinedInput, ServingError> {
    let by_name: HashMap<&str, &Tensor> = inputs.iter().map(|t| (t.name.as_str(), t)).collect();
    if let Some(unknown) = inputs.iter().find(|t| {
        !binding.join_keys.iter().any(|k| k.name == t.name)
            && !binding.request_time.contains(&t.name)
            && !binding.served.contains(&t.name)
    }) {
        return Err(invalid(
            &unknown.name,
            format!(
                "not an input of this endpoint; its inputs are the join keys {} and the request-time features [{}]",
                binding
                    .join_keys
                    .iter()
                    .map(|k| format!("{:?}", k.name))
                    .collect::<Vec<_>>()
                    .join(", "),
                binding.request_time.join(", ")
            ),
        ));
    }
    let mut rows: Option<usize> = None;
    let mut check_rows = |tensor: &Tensor| -> Result<(), ServingError> {
        let n = column_rows(tensor)?;
        match rows {
            Some(expected) if expected != n => Err(invalid(
                &tensor.name,
                format!("has {n} rows, another input has {expected}"),
            )),
            _ => {
                rows = Some(n);
                Ok(())
            }
        }
    };
    let mut entities = BTreeMap::new();
    for key in &binding.join_keys {
        let tensor = by_name
            .get(key.name.as_str())
            .ok_or_else(|| invalid(&key.name, "missing: every request needs this entity key"))?;
        check_rows(tensor)?;
        entities.insert(key.name.clone(), key_values(tensor, key)?);
    }
    let mut given: HashMap<&str, Vec<f64>> = HashMap::new();
    for feature in features {
        if let Some(tensor) = by_name.get(feature.name.as_str()) {
            check_rows(tensor)?;
            given.insert(feature.name.as_str(), request_time_values(tensor, feature)?);
        } else if binding.request_time.contains(&feature.name) {
            return Err(invalid(
                &feature.name,
                "missing: the feature service does not provide this feature, so the request must carry it",
            ));
        }
    }
    let rows = rows.unwrap_or(0);

    let needs_online = features
        .iter()
        .any(|f| binding.served.contains(&f.name) && !given.contains_key(f.name.as_str()));
    let mut online: HashMap<String, (Vec<Value>, Vec<FieldStatus>)> = HashMap::new();
    if needs_online && rows > 0 {
        let response = store
            .get_online_features(
                tenant,
                project,
                &OnlineRequest {
                    selection: FeatureSelection {
                        features: None,
                        feature_service: Some(binding.service.clone()),
                    },
                    entities,
                    full_feature_names: false,
                },
            )
            .await
            .map_err(feature_error)?;
        for (name, column) in response
            .metadata
            .feature_names
            .into_iter()
            .zip(response.results)
        {
            online.insert(name, (column.values, column.statuses));
        }
    }

    let mut matrix = vec![f64::NAN; rows * features.len()];
    let mut missing = vec![Vec::new(); rows];
    for (j, feature) in features.iter().enumerate() {
        if let Some(values) = given.get(feature.name.as_str()) {
            for (row, value) in values.iter().enumerate() {
                matrix[row * features.len() + j] = *value;
            }
            continue;
        }
        match online.get(&feature.name) {
            Some((values, statuses)) => {
                for row in 0..rows {
                    let status = statuses.get(row).copied().unwrap_or(FieldStatus::NotFound);
                    let value = match status {
                        FieldStatus::Present => feature_number(feature, &values[row]),
                        _ => f64::NAN,
                    };
                    if value.is_nan() {
                        missing[row].push(feature.name.clone());
                    }
                    matrix[row * features.len() + j] = value;
                }
            }
            None => {
                for entry in missing.iter_mut() {
                    entry.push(feature.name.clone());
                }
            }
        }
    }
    Ok(JoinedInput {
        rows,
        matrix,
        missing,
    })
}
