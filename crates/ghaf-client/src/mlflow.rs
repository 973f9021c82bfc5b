//! Experiments, runs, metrics, artifacts and the model registry as the MLflow-compatible
//! routes (`/api/2.0/mlflow/…`) send them, for [`crate::Tracking`].
//!
//! Response types accept missing and unknown fields. Ids are strings, as MLflow's are; times
//! are milliseconds since the Unix epoch. Metric values may be NaN or infinite, which the
//! server sends as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A key and a value: a tag, or a param of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    pub creation_time: i64,
    pub last_update_time: i64,
    pub tags: Vec<KeyValue>,
}

/// One value of a metric.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metric {
    pub key: String,
    #[serde(
        serialize_with = "serialize_double",
        deserialize_with = "deserialize_double"
    )]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub step: i64,
    /// Logged model the value belongs to; empty for none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model_id: String,
}

impl Metric {
    pub fn new(key: impl Into<String>, value: f64, timestamp: i64, step: i64) -> Self {
        Self {
            key: key.into(),
            value,
            timestamp,
            step,
            model_id: String::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    pub run_id: String,
    pub run_name: String,
    pub experiment_id: String,
    /// The Ghaf principal that created the run.
    pub user_id: String,
    /// `RUNNING`, `SCHEDULED`, `FINISHED`, `FAILED` or `KILLED`.
    pub status: String,
    pub start_time: i64,
    pub end_time: Option<i64>,
    /// `mlflow-artifacts:/<experiment>/<run>/artifacts`.
    pub artifact_uri: String,
    pub lifecycle_stage: String,
}

impl RunInfo {
    /// Returns the artifact path of `file` in this run's artifact directory, as the artifact
    /// methods of [`crate::Tracking`] take it, such as `1/<run id>/artifacts/model.onnx`.
    pub fn artifact_path(&self, file: &str) -> String {
        let root = self
            .artifact_uri
            .strip_prefix(ARTIFACT_SCHEME)
            .unwrap_or(&self.artifact_uri)
            .trim_matches('/');
        let file = file.trim_start_matches('/');
        if file.is_empty() {
            root.to_owned()
        } else {
            format!("{root}/{file}")
        }
    }
}

/// Scheme of the artifact URIs of runs and model versions.
pub const ARTIFACT_SCHEME: &str = "mlflow-artifacts:";

/// Latest value of each metric, params and tags of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunData {
    pub metrics: Vec<Metric>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
}

impl Run {
    /// Returns the latest value of the metric `key`.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.data
            .metrics
            .iter()
            .find(|metric| metric.key == key)
            .map(|metric| metric.value)
    }

    /// Returns the value of the param `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.data
            .params
            .iter()
            .find(|param| param.key == key)
            .map(|param| param.value.as_str())
    }

    /// Returns the value of the tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.data
            .tags
            .iter()
            .find(|tag| tag.key == key)
            .map(|tag| tag.value.as_str())
    }
}

/// A new run; every field but the experiment is optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewRun {
    /// Experiment id; the project's `Default` experiment `"0"` when empty.
    pub experiment_id: String,
    pub run_name: Option<String>,
    /// Milliseconds since the Unix epoch; the server's time when `None`.
    pub start_time: Option<i64>,
    pub tags: Vec<KeyValue>,
}

/// Status of a run, set with [`crate::Tracking::update_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Scheduled,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// A run search of [`crate::Tracking::search_runs`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunQuery {
    /// Experiment ids to search; at least one.
    pub experiment_ids: Vec<String>,
    /// MLflow filter, such as `metrics.acc > 0.9 and params.model = 'rf'`; empty for all.
    pub filter: String,
    /// Entries such as `metrics.acc DESC`.
    pub order_by: Vec<String>,
    /// Page size; the server's default (1,000) when `None`.
    pub max_results: Option<u32>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// One page of runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunPage {
    pub runs: Vec<Run>,
    /// Token of the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// An entry of an artifact directory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileInfo {
    /// Name of the file or directory, without its directory.
    pub path: String,
    pub is_dir: bool,
    /// Size in bytes; `None` for directories.
    pub file_size: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelVersion {
    pub name: String,
    /// Version number as a string, as MLflow sends it.
    pub version: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub user_id: String,
    /// `None`, `Staging`, `Production` or `Archived`.
    pub current_stage: String,
    pub description: String,
    pub source: String,
    pub run_id: String,
    pub model_id: String,
    /// `READY` once registered.
    pub status: String,
    pub tags: Vec<KeyValue>,
    pub aliases: Vec<String>,
}

impl ModelVersion {
    /// Returns the version number; 0 when the server sent something else.
    pub fn number(&self) -> i64 {
        self.version.parse().unwrap_or(0)
    }
}

/// An alias of a registered model and the version it points at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelAlias {
    pub alias: String,
    pub version: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegisteredModel {
    pub name: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub user_id: String,
    pub description: String,
    pub latest_versions: Vec<ModelVersion>,
    pub tags: Vec<KeyValue>,
    pub aliases: Vec<ModelAlias>,
}

/// A new model version of [`crate::Tracking::create_model_version`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NewModelVersion {
    /// Name of the registered model.
    pub name: String,
    /// Where the files are: `runs:/<run id>/<path>`, `models:/<logged model id>` or
    /// `mlflow-artifacts:/<path>`. The server signs a manifest of every file below it.
    pub source: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValue>,
}

fn serialize_double<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_nan() {
        serializer.serialize_str("NaN")
    } else if *value == f64::INFINITY {
        serializer.serialize_str("Infinity")
    } else if *value == f64::NEG_INFINITY {
        serializer.serialize_str("-Infinity")
    } else {
        serializer.serialize_f64(*value)
    }
}

fn deserialize_double<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a double"))),
        serde_json::Value::String(text) => match text.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("{other:?} is not a number"))),
        },
        other => Err(serde::de::Error::custom(format!(
            "expected a number, found {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_metrics_round_trip() {
        for value in [f64::INFINITY, f64::NEG_INFINITY, 0.25] {
            let metric = Metric::new("loss", value, 1, 2);
            let json = serde_json::to_string(&metric).unwrap();
            let back: Metric = serde_json::from_str(&json).unwrap();
            assert_eq!(back, metric, "{json}");
        }
        let json = serde_json::to_string(&Metric::new("loss", f64::NAN, 1, 2)).unwrap();
        assert!(json.contains("\"NaN\""), "{json}");
        let back: Metric = serde_json::from_str(&json).unwrap();
        assert!(back.value.is_nan());
    }

    #[test]
    fn artifact_path_is_below_the_run_root() {
        let info = RunInfo {
            artifact_uri: "mlflow-artifacts:/1/abc/artifacts".into(),
            ..RunInfo::default()
        };
        assert_eq!(
            info.artifact_path("model/m.onnx"),
            "1/abc/artifacts/model/m.onnx"
        );
        assert_eq!(
            info.artifact_path("/notes.txt"),
            "1/abc/artifacts/notes.txt"
        );
        assert_eq!(info.artifact_path(""), "1/abc/artifacts");
    }
}
