//! MLflow's JSON wire format: lenient decoding of request fields, and the response shapes
//! of experiments, runs, metrics, logged models and registry objects.

use ghaf_tracking::{
    Experiment, LoggedModel, Metric, ModelVersion, RegisteredModel, Run, RunInfo, Tag,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Value, json};

use crate::error::ApiError;

/// An integer sent as a JSON number or, as proto3 JSON encodes int64, as a string.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        .map(|f| f as i64)
                })
                .map(Int)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a 64-bit integer"))),
            Value::String(s) => s
                .trim()
                .parse()
                .map(Int)
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer"))),
            other => Err(serde::de::Error::custom(format!(
                "expected an integer, found {other}"
            ))),
        }
    }
}

/// A double sent as a JSON number or as a string, including proto3 JSON's `"NaN"`,
/// `"Infinity"` and `"-Infinity"`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Double(pub f64);

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Number(n) => n
                .as_f64()
                .map(Double)
                .ok_or_else(|| serde::de::Error::custom("not a double")),
            Value::String(s) => match s.trim() {
                "NaN" | "nan" => Ok(Double(f64::NAN)),
                "Infinity" | "inf" => Ok(Double(f64::INFINITY)),
                "-Infinity" | "-inf" => Ok(Double(f64::NEG_INFINITY)),
                other => other
                    .parse()
                    .map(Double)
                    .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number"))),
            },
            other => Err(serde::de::Error::custom(format!(
                "expected a number, found {other}"
            ))),
        }
    }
}

/// A key-value pair as MLflow sends tags and params.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct KeyValue {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

impl KeyValue {
    pub fn tag(&self) -> Tag {
        Tag {
            key: self.key.clone(),
            value: self.value.clone(),
        }
    }
}

pub fn tags(values: &[KeyValue]) -> Vec<Tag> {
    values.iter().map(KeyValue::tag).collect()
}

/// Parses an experiment id: a string of digits, as MLflow's ids are.
pub fn experiment_id(field: &str, value: &str) -> Result<i64, ApiError> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| {
            ApiError::invalid_field(
                field,
                format!(
                    "invalid experiment id {value:?}: experiment ids are non-negative integers"
                ),
            )
        })
}

/// Parses a model version number.
pub fn version_number(value: &str) -> Result<i64, ApiError> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "version",
                format!("invalid version {value:?}: versions are positive integers"),
            )
        })
}

/// Encodes a double as proto3 JSON does: non-finite values become strings.
pub fn double(value: f64) -> Value {
    if value.is_nan() {
        json!("NaN")
    } else if value == f64::INFINITY {
        json!("Infinity")
    } else if value == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(value)
    }
}

pub fn key_values<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Array(
        pairs
            .into_iter()
            .map(|(key, value)| json!({ "key": key, "value": value }))
            .collect(),
    )
}

pub fn tag_list(tags: &[Tag]) -> Value {
    key_values(tags.iter().map(|t| (t.key.as_str(), t.value.as_str())))
}

pub fn metric(metric: &Metric) -> Value {
    let mut value = json!({
        "key": metric.key,
        "value": double(metric.value),
        "timestamp": metric.timestamp,
        "step": metric.step,
    });
    if !metric.model_id.is_empty() {
        value["model_id"] = json!(metric.model_id);
    }
    value
}

pub fn experiment(experiment: &Experiment) -> Value {
    json!({
        "experiment_id": experiment.experiment_id.to_string(),
        "name": experiment.name,
        "artifact_location": experiment.artifact_location,
        "lifecycle_stage": experiment.lifecycle_stage.as_str(),
        "creation_time": experiment.creation_time,
        "last_update_time": experiment.last_update_time,
        "tags": tag_list(&experiment.tags),
    })
}

pub fn run_info(info: &RunInfo) -> Value {
    let mut value = json!({
        "run_id": info.run_id,
        "run_uuid": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id.to_string(),
        "user_id": info.user_id,
        "status": info.status.as_str(),
        "start_time": info.start_time,
        "artifact_uri": info.artifact_uri,
        "lifecycle_stage": info.lifecycle_stage.as_str(),
    });
    if let Some(end_time) = info.end_time {
        value["end_time"] = json!(end_time);
    }
    value
}

pub fn run(run: &Run) -> Value {
    serde_json::to_value(WireRun::from(run)).unwrap_or(Value::Null)
}

/// Encodes a double as proto3 JSON does, like [`double`], without building a [`Value`].
struct WireDouble(f64);

impl Serialize for WireDouble {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.0;
        if value.is_nan() {
            serializer.serialize_str("NaN")
        } else if value == f64::INFINITY {
            serializer.serialize_str("Infinity")
        } else if value == f64::NEG_INFINITY {
            serializer.serialize_str("-Infinity")
        } else {
            serializer.serialize_f64(value)
        }
    }
}

#[derive(Serialize)]
struct WireKeyValue<'a> {
    key: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct WireMetric<'a> {
    key: &'a str,
    value: WireDouble,
    timestamp: i64,
    step: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    model_id: &'a str,
}

impl<'a> From<&'a Metric> for WireMetric<'a> {
    fn from(metric: &'a Metric) -> Self {
        Self {
            key: &metric.key,
            value: WireDouble(metric.value),
            timestamp: metric.timestamp,
            step: metric.step,
            model_id: &metric.model_id,
        }
    }
}

#[derive(Serialize)]
struct WireRunInfo<'a> {
    run_id: &'a str,
    run_uuid: &'a str,
    run_name: &'a str,
    experiment_id: String,
    user_id: &'a str,
    status: &'static str,
    start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    artifact_uri: &'a str,
    lifecycle_stage: &'static str,
}

impl<'a> From<&'a RunInfo> for WireRunInfo<'a> {
    fn from(info: &'a RunInfo) -> Self {
        Self {
            run_id: &info.run_id,
            run_uuid: &info.run_id,
            run_name: &info.run_name,
            experiment_id: info.experiment_id.to_string(),
            user_id: &info.user_id,
            status: info.status.as_str(),
            start_time: info.start_time,
            end_time: info.end_time,
            artifact_uri: &info.artifact_uri,
            lifecycle_stage: info.lifecycle_stage.as_str(),
        }
    }
}

#[derive(Serialize)]
struct WireRunData<'a> {
    metrics: Vec<WireMetric<'a>>,
    params: Vec<WireKeyValue<'a>>,
    tags: Vec<WireKeyValue<'a>>,
}

#[derive(Serialize)]
struct WireModelOutput<'a> {
    model_id: &'a str,
    step: i64,
}

#[derive(Serialize)]
struct WireRunOutputs<'a> {
    model_outputs: Vec<WireModelOutput<'a>>,
}

/// An empty proto3 message, `{}`.
#[derive(Serialize)]
struct WireEmpty {}

/// A run in MLflow's wire format, serialised straight from the [`Run`]: a page of 1,000 runs
/// is written without building a [`Value`] tree first.
#[derive(Serialize)]
pub struct WireRun<'a> {
    info: WireRunInfo<'a>,
    data: WireRunData<'a>,
    inputs: WireEmpty,
    outputs: WireRunOutputs<'a>,
}

impl<'a> From<&'a Run> for WireRun<'a> {
    fn from(run: &'a Run) -> Self {
        Self {
            info: WireRunInfo::from(&run.info),
            data: WireRunData {
                metrics: run.metrics.iter().map(WireMetric::from).collect(),
                params: run
                    .params
                    .iter()
                    .map(|p| WireKeyValue {
                        key: &p.key,
                        value: &p.value,
                    })
                    .collect(),
                tags: run
                    .tags
                    .iter()
                    .map(|t| WireKeyValue {
                        key: &t.key,
                        value: &t.value,
                    })
                    .collect(),
            },
            inputs: WireEmpty {},
            outputs: WireRunOutputs {
                model_outputs: run
                    .outputs
                    .iter()
                    .map(|o| WireModelOutput {
                        model_id: &o.model_id,
                        step: o.step,
                    })
                    .collect(),
            },
        }
    }
}

/// The response of `runs/search`.
#[derive(Serialize)]
pub struct WireRunPage<'a> {
    pub runs: Vec<WireRun<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

pub fn logged_model(model: &LoggedModel) -> Value {
    json!({
        "info": {
            "model_id": model.model_id,
            "experiment_id": model.experiment_id.to_string(),
            "name": model.name,
            "model_type": model.model_type,
            "source_run_id": model.source_run_id,
            "status": model.status.as_str(),
            "artifact_uri": model.artifact_uri,
            "creation_timestamp_ms": model.creation_time,
            "last_updated_timestamp_ms": model.last_updated_time,
            "tags": tag_list(&model.tags),
            "registrations": [],
        },
        "data": {
            "params": key_values(model.params.iter().map(|p| (p.key.as_str(), p.value.as_str()))),
            "metrics": [],
        },
    })
}

pub fn model_version(version: &ModelVersion) -> Value {
    json!({
        "name": version.name,
        "version": version.version.to_string(),
        "creation_timestamp": version.creation_time,
        "last_updated_timestamp": version.last_updated_time,
        "user_id": version.user_id,
        "current_stage": version.current_stage.as_str(),
        "description": version.description,
        "source": version.source,
        "run_id": version.run_id,
        "model_id": version.model_id,
        "status": version.status,
        "tags": tag_list(&version.tags),
        "aliases": version.aliases,
    })
}

pub fn registered_model(model: &RegisteredModel) -> Value {
    json!({
        "name": model.name,
        "creation_timestamp": model.creation_time,
        "last_updated_timestamp": model.last_updated_time,
        "user_id": model.user_id,
        "description": model.description,
        "latest_versions": model.latest_versions.iter().map(model_version).collect::<Vec<_>>(),
        "tags": tag_list(&model.tags),
        "aliases": model.aliases.iter().map(|(alias, version)| json!({
            "alias": alias,
            "version": version.to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// Adds `next_page_token` to a response when there is a next page.
pub fn with_token(mut value: Value, token: Option<String>) -> Value {
    if let Some(token) = token {
        value["next_page_token"] = json!(token);
    }
    value
}

/// A request or response body of MLflow's REST API: proto3 JSON with the fields of MLflow
/// 3.17's `service.proto` and `model_registry.proto`.
pub struct MlflowMessage;

impl utoipa::PartialSchema for MlflowMessage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .description(Some(
                "An MLflow 3.17 REST message in proto3 JSON; see MLflow's REST API reference.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for MlflowMessage {
    fn name() -> std::borrow::Cow<'static, str> {
        "MlflowMessage".into()
    }
}
