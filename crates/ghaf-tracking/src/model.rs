//! Records of tracking and the registry, with the limits MLflow 3.17 enforces on them.

use ghaf_core::{ProjectId, TenantId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::TrackingError;

/// One project of one tenant: the scope of every tracking and registry operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub tenant: TenantId,
    pub project: ProjectId,
}

/// Id of the experiment that exists in every project, named [`DEFAULT_EXPERIMENT_NAME`].
pub const DEFAULT_EXPERIMENT_ID: i64 = 0;
pub const DEFAULT_EXPERIMENT_NAME: &str = "Default";

/// Maximum length of a param, tag or metric key.
pub const MAX_KEY_LEN: usize = 250;
/// Maximum length of a param value.
pub const MAX_PARAM_VALUE_LEN: usize = 6000;
/// Maximum length of a tag value.
pub const MAX_TAG_VALUE_LEN: usize = 8000;
/// Maximum number of metrics, params and tags in one batch.
pub const MAX_BATCH_METRICS: usize = 1000;
pub const MAX_BATCH_PARAMS: usize = 100;
pub const MAX_BATCH_TAGS: usize = 100;
pub const MAX_BATCH_ENTITIES: usize = 1000;
/// Maximum page size of a run search.
pub const MAX_SEARCH_RESULTS: u32 = 50_000;
/// Maximum page size of a metric history.
pub const MAX_HISTORY_RESULTS: u32 = 25_000;

/// Whether an experiment or run is active or soft-deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleStage {
    Active,
    Deleted,
}

impl LifecycleStage {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleStage::Active => "active",
            LifecycleStage::Deleted => "deleted",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "active" => Some(LifecycleStage::Active),
            "deleted" => Some(LifecycleStage::Deleted),
            _ => None,
        }
    }
}

/// Lifecycle stages that a search returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ViewType {
    #[default]
    ActiveOnly,
    DeletedOnly,
    All,
}

impl ViewType {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "ACTIVE_ONLY" => Some(ViewType::ActiveOnly),
            "DELETED_ONLY" => Some(ViewType::DeletedOnly),
            "ALL" => Some(ViewType::All),
            _ => None,
        }
    }

    /// Returns the stages included, as stored.
    pub fn stages(self) -> &'static [&'static str] {
        match self {
            ViewType::ActiveOnly => &["active"],
            ViewType::DeletedOnly => &["deleted"],
            ViewType::All => &["active", "deleted"],
        }
    }
}

/// Status of a run, named as in MLflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "RUNNING" => Some(RunStatus::Running),
            "SCHEDULED" => Some(RunStatus::Scheduled),
            "FINISHED" => Some(RunStatus::Finished),
            "FAILED" => Some(RunStatus::Failed),
            "KILLED" => Some(RunStatus::Killed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub key: String,
    pub value: String,
}

/// One metric value. `value` may be NaN or infinite; both are stored as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    #[serde(with = "json_double")]
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp: UnixMillis,
    pub step: i64,
    /// Logged model the value belongs to; empty when none.
    #[serde(default)]
    pub model_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub experiment_id: i64,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: LifecycleStage,
    pub creation_time: UnixMillis,
    pub last_update_time: UnixMillis,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: i64,
    pub run_name: String,
    pub user_id: String,
    pub status: RunStatus,
    pub start_time: UnixMillis,
    pub end_time: Option<UnixMillis>,
    pub lifecycle_stage: LifecycleStage,
    pub artifact_uri: String,
}

/// A model logged as an output of a run at a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelOutput {
    pub model_id: String,
    pub step: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub info: RunInfo,
    /// The latest value of each metric key.
    pub metrics: Vec<Metric>,
    pub params: Vec<Param>,
    pub tags: Vec<Tag>,
    pub outputs: Vec<ModelOutput>,
}

/// Metrics, params and tags to log to one run at once.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub run_id: &'a str,
    pub metrics: &'a [Metric],
    pub params: &'a [Param],
    pub tags: &'a [Tag],
}

/// Fields of a run to create.
#[derive(Clone, Debug, Default)]
pub struct NewRun {
    pub experiment_id: i64,
    pub user_id: String,
    pub run_name: Option<String>,
    pub start_time: Option<UnixMillis>,
    pub tags: Vec<Tag>,
}

/// Changes to a run; unset fields keep their value.
#[derive(Clone, Debug, Default)]
pub struct RunUpdate {
    pub status: Option<RunStatus>,
    pub end_time: Option<UnixMillis>,
    pub run_name: Option<String>,
}

/// A run search: runs of the experiments that match the filter, in the requested order,
/// one page of at most `max_results` starting at `offset`.
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub experiment_ids: Vec<i64>,
    pub filter: crate::filter::RunFilter,
    pub view: ViewType,
    pub order_by: Vec<crate::filter::OrderBy<crate::filter::RunField>>,
    pub max_results: u32,
    pub offset: u64,
}

/// A page of results and the offset of the next page, if there is one.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_offset: Option<u64>,
}

/// Status of a logged model, named as in MLflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoggedModelStatus {
    #[serde(rename = "LOGGED_MODEL_PENDING")]
    Pending,
    #[serde(rename = "LOGGED_MODEL_READY")]
    Ready,
    #[serde(rename = "LOGGED_MODEL_UPLOAD_FAILED")]
    UploadFailed,
}

impl LoggedModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LoggedModelStatus::Pending => "LOGGED_MODEL_PENDING",
            LoggedModelStatus::Ready => "LOGGED_MODEL_READY",
            LoggedModelStatus::UploadFailed => "LOGGED_MODEL_UPLOAD_FAILED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "LOGGED_MODEL_PENDING" => Some(LoggedModelStatus::Pending),
            "LOGGED_MODEL_READY" => Some(LoggedModelStatus::Ready),
            "LOGGED_MODEL_UPLOAD_FAILED" => Some(LoggedModelStatus::UploadFailed),
            _ => None,
        }
    }
}

/// A model logged by a run (MLflow 3 `LoggedModel`), whose files are artifacts below
/// `artifact_uri`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedModel {
    pub model_id: String,
    pub experiment_id: i64,
    pub name: String,
    pub model_type: String,
    pub source_run_id: String,
    pub status: LoggedModelStatus,
    pub artifact_uri: String,
    pub creation_time: UnixMillis,
    pub last_updated_time: UnixMillis,
    pub tags: Vec<Tag>,
    pub params: Vec<Param>,
}

#[derive(Clone, Debug, Default)]
pub struct NewLoggedModel {
    pub experiment_id: i64,
    pub name: String,
    pub model_type: String,
    pub source_run_id: String,
    pub tags: Vec<Tag>,
    pub params: Vec<Param>,
}

/// One artifact file: its path below the project's artifact root, and its content address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    pub path: String,
    /// Hex SHA-256 of the content, the blob store's address.
    pub digest: String,
    pub size: u64,
}

/// Legacy registry stage of a model version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    None,
    Staging,
    Production,
    Archived,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::None,
        Stage::Staging,
        Stage::Production,
        Stage::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }

    /// Parses a stage name case-insensitively, as MLflow does.
    pub fn parse(value: &str) -> Option<Self> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str().eq_ignore_ascii_case(value))
    }
}

/// A registered model with its tags, aliases and the latest version in each stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModel {
    pub name: String,
    pub description: String,
    pub user_id: String,
    pub creation_time: UnixMillis,
    pub last_updated_time: UnixMillis,
    pub tags: Vec<Tag>,
    /// Alias name and version number.
    pub aliases: Vec<(String, i64)>,
    pub latest_versions: Vec<ModelVersion>,
}

/// A model card: what the model is for and how it was evaluated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    #[serde(default)]
    pub intended_use: String,
    #[serde(default)]
    pub limitations: String,
    /// Names or references of the data sets the model was evaluated on.
    #[serde(default)]
    pub evaluation_data: Vec<String>,
    /// Metric values per subgroup: subgroup name, then metric name to value.
    #[serde(default)]
    pub subgroup_metrics:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
}

/// Links from a model version to the objects it was built from. The training-set and
/// feature-service references are opaque strings until those services exist.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<String>,
}

/// Registry details beyond MLflow's fields, kept as one JSON document per version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionDetails {
    /// Input and output signature as recorded in the model's `MLmodel` file, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<serde_json::Value>,
    /// Latest metrics of the source run at registration.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub lineage: Lineage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_card: Option<ModelCard>,
}

/// One version of a registered model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: i64,
    pub source: String,
    pub run_id: String,
    pub model_id: String,
    /// Always `READY`: registration completes synchronously.
    pub status: String,
    pub current_stage: Stage,
    pub description: String,
    pub user_id: String,
    pub creation_time: UnixMillis,
    pub last_updated_time: UnixMillis,
    /// Artifact path prefix of the version's files, below the project's artifact root.
    pub artifact_prefix: String,
    pub tags: Vec<Tag>,
    pub aliases: Vec<String>,
    pub details: VersionDetails,
    /// The signed manifest of the version's files.
    pub manifest: crate::SignedManifest,
}

/// Fields of a version to register; the service fills the manifest.
#[derive(Clone, Debug)]
pub struct NewModelVersion {
    pub name: String,
    pub source: String,
    pub run_id: String,
    pub model_id: String,
    pub description: String,
    pub user_id: String,
    pub tags: Vec<Tag>,
    pub artifact_prefix: String,
    pub details: VersionDetails,
    pub manifest: crate::SignedManifest,
}

/// Checks a param, tag or metric key: non-empty, at most 250 characters, and free of path
/// tricks, because MLflow keys also name files (`metrics/<key>`).
pub fn validate_key(field: &str, key: &str) -> Result<(), TrackingError> {
    if key.is_empty() {
        return Err(TrackingError::invalid(field, "a key must not be empty"));
    }
    if key.chars().count() > MAX_KEY_LEN {
        return Err(TrackingError::invalid(
            field,
            format!(
                "key {:?}… is longer than {MAX_KEY_LEN} characters",
                truncate(key)
            ),
        ));
    }
    if key.starts_with('/') || key.split('/').any(|part| part == "..") {
        return Err(TrackingError::invalid(
            field,
            format!("key {key:?} must not start with '/' or contain '..'"),
        ));
    }
    Ok(())
}

/// Checks that `value` has at most `max` characters.
pub fn validate_value(
    field: &str,
    key: &str,
    value: &str,
    max: usize,
) -> Result<(), TrackingError> {
    if value.chars().count() > max {
        return Err(TrackingError::invalid(
            field,
            format!("value of {key:?} is longer than {max} characters"),
        ));
    }
    Ok(())
}

fn truncate(value: &str) -> String {
    value.chars().take(40).collect()
}

/// Serde for an `f64` that may be NaN or infinite. JSON has no such numbers, so they are
/// written as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`, as proto3 JSON writes
/// them. `null`, which serde_json writes for all three by default, reads as NaN.
mod json_double {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
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

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Null => Ok(f64::NAN),
            serde_json::Value::Number(number) => number
                .as_f64()
                .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a double"))),
            serde_json::Value::String(text) => match text.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "{other:?} is not a number; expected a number, \"NaN\", \"Infinity\" or \"-Infinity\""
                ))),
            },
            other => Err(serde::de::Error::custom(format!(
                "expected a number, found {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod json_double_tests {
    use super::Metric;

    #[test]
    fn non_finite_values_round_trip() {
        for value in [f64::INFINITY, f64::NEG_INFINITY, -0.5] {
            let metric = Metric {
                key: "loss".into(),
                value,
                timestamp: 1,
                step: 2,
                model_id: String::new(),
            };
            let json = serde_json::to_string(&metric).unwrap();
            let back: Metric = serde_json::from_str(&json).unwrap();
            assert_eq!(back, metric, "{json}");
        }
        let nan: Metric =
            serde_json::from_str(r#"{"key":"loss","value":"NaN","timestamp":1,"step":2}"#).unwrap();
        assert!(nan.value.is_nan());
    }

    #[test]
    fn null_reads_as_nan() {
        let old: Metric =
            serde_json::from_str(r#"{"key":"loss","value":null,"timestamp":1,"step":2}"#).unwrap();
        assert!(old.value.is_nan());
    }
}
