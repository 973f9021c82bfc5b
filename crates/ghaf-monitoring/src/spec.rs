//! Monitor and alert-rule specifications, as JSON documents, with their validation.

use ghaf_core::Name;
use serde::{Deserialize, Serialize};

use crate::MonitoringError;

/// Shortest evaluation interval, in seconds.
pub const MIN_INTERVAL_SECONDS: u64 = 10;
/// Maximum duration window, in seconds (one year).
pub const MAX_WINDOW_SECONDS: u64 = 366 * 86_400;
/// Largest row-count window.
pub const MAX_WINDOW_ROWS: u64 = 10_000_000;
/// Maximum number of webhooks per rule.
pub const MAX_WEBHOOKS: usize = 10;

/// Columns of a prediction log that describe the request rather than the model input.
pub const LOG_COLUMNS: [&str; 12] = [
    "request_id",
    "row",
    "timestamp",
    "endpoint",
    "variant",
    "model_name",
    "model_version",
    "latency_us",
    "client_request_id",
    "principal",
    "prediction",
    "label",
];

/// Suffix of the dataset holding an endpoint's prediction log.
pub const PREDICTIONS_SUFFIX: &str = "-predictions";
/// Suffix of the dataset holding an endpoint's ground-truth labels.
pub const LABELS_SUFFIX: &str = "-labels";

/// What a monitor watches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// An endpoint's prediction log, the dataset `<name>-predictions`, joined with its labels
    /// in `<name>-labels`.
    Endpoint { name: String },
    /// Any dataset of the project.
    Dataset {
        name: String,
        /// Timestamp column that places rows in time windows; without it only the
        /// `latest_version` window is available.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp_column: Option<String>,
    },
}

impl Target {
    /// Returns the dataset the monitor reads its windows from.
    pub fn dataset(&self) -> String {
        match self {
            Target::Endpoint { name } => format!("{name}{PREDICTIONS_SUFFIX}"),
            Target::Dataset { name, .. } => name.clone(),
        }
    }

    /// Returns the timestamp column of the watched dataset, if any.
    pub fn timestamp_column(&self) -> Option<&str> {
        match self {
            Target::Endpoint { .. } => Some("timestamp"),
            Target::Dataset {
                timestamp_column, ..
            } => timestamp_column.as_deref(),
        }
    }
}

/// A dataset version used as the reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    pub dataset: String,
    /// Version number; the newest version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// Which drift statistics a monitor uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMode {
    /// Two-sample tests with Benjamini–Hochberg correction, an effect-size floor and bins
    /// frozen on the reference.
    #[default]
    Default,
    /// Evidently 0.7's data drift preset, for comparison with existing Evidently reports.
    Evidently,
}

impl DriftMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftMode::Default => "default",
            DriftMode::Evidently => "evidently",
        }
    }
}

/// The rows one evaluation looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// Rows whose timestamp is in the last `seconds` before the evaluation.
    Duration { seconds: u64 },
    /// The newest `count` rows.
    Rows { count: u64 },
    /// The newest version of the dataset.
    LatestVersion,
}

/// A monitor as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    pub name: String,
    pub target: Target,
    /// Reference dataset version. For an endpoint it defaults to the training set recorded in
    /// the lineage of the model version that served the newest logged prediction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<DatasetRef>,
    /// Features to watch; empty means every numeric or categorical column present in both
    /// the reference and the watched dataset, except the prediction log's own columns.
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub mode: DriftMode,
    pub window: Window,
    /// Time between scheduled evaluations.
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
}

fn default_interval() -> u64 {
    3600
}

impl MonitorSpec {
    /// Parses and validates a JSON spec.
    pub fn from_json(value: serde_json::Value) -> Result<Self, MonitoringError> {
        let spec: Self = serde_path_deserialize(value, "monitor")?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), MonitoringError> {
        Name::parse(&self.name)
            .map_err(|error| MonitoringError::invalid("name", error.to_string()))?;
        let target_name = match &self.target {
            Target::Endpoint { name } | Target::Dataset { name, .. } => name,
        };
        Name::parse(target_name)
            .map_err(|error| MonitoringError::invalid("target.name", error.to_string()))?;
        if self.interval_seconds < MIN_INTERVAL_SECONDS {
            return Err(MonitoringError::invalid(
                "interval_seconds",
                format!(
                    "interval_seconds is {}; use at least {MIN_INTERVAL_SECONDS}",
                    self.interval_seconds
                ),
            ));
        }
        match &self.window {
            Window::Duration { seconds } => {
                if *seconds == 0 || *seconds > MAX_WINDOW_SECONDS {
                    return Err(MonitoringError::invalid(
                        "window.seconds",
                        format!("window.seconds is {seconds}; use 1 to {MAX_WINDOW_SECONDS}"),
                    ));
                }
                if self.target.timestamp_column().is_none() {
                    return Err(MonitoringError::invalid(
                        "window",
                        "a duration window needs target.timestamp_column on a dataset target; \
                         set it or use a rows or latest_version window",
                    ));
                }
            }
            Window::Rows { count } => {
                if *count == 0 || *count > MAX_WINDOW_ROWS {
                    return Err(MonitoringError::invalid(
                        "window.count",
                        format!("window.count is {count}; use 1 to {MAX_WINDOW_ROWS}"),
                    ));
                }
            }
            Window::LatestVersion => {}
        }
        for (index, feature) in self.features.iter().enumerate() {
            if feature.is_empty() {
                return Err(MonitoringError::invalid(
                    &format!("features[{index}]"),
                    "a feature name must not be empty",
                ));
            }
        }
        Ok(())
    }
}

/// Drift statistic a feature-drift rule compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftStatistic {
    /// The test's decision; needs no threshold.
    #[default]
    Drifted,
    /// The method's score: a p-value or a distance.
    Score,
    /// The p-value (after Benjamini–Hochberg adjustment in the default mode).
    PValue,
    Psi,
    JensenShannon,
    WassersteinNormed,
}

/// Performance metric of a performance rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerformanceMetric {
    Auc,
    Accuracy,
    F1,
    Rmse,
    Mae,
}

impl PerformanceMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auc => "auc",
            Self::Accuracy => "accuracy",
            Self::F1 => "f1",
            Self::Rmse => "rmse",
            Self::Mae => "mae",
        }
    }
}

/// The condition under which a rule fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// The share of drifted features is at least `at_least`.
    DriftShare { at_least: f64 },
    /// A feature's statistic crosses a threshold; `feature` `*` judges every feature (and the
    /// prediction column) separately.
    FeatureDrift {
        feature: String,
        #[serde(default)]
        statistic: DriftStatistic,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        above: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        below: Option<f64>,
    },
    /// A performance metric crosses a threshold, judged per model version and variant, once
    /// at least `min_labels` predictions of that group have labels.
    Performance {
        metric: PerformanceMetric,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        above: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        below: Option<f64>,
        #[serde(default = "default_min_labels")]
        min_labels: u64,
    },
    /// A feature's share of missing values is above `above`; `feature` `*` judges every one.
    NullShare { feature: String, above: f64 },
    /// The newest row is older than `max_age_seconds`.
    Freshness { max_age_seconds: u64 },
}

fn default_min_labels() -> u64 {
    30
}

/// Training job a `retrain` action submits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleAction {
    /// Submits `job` when the rule fires, with each `dataset_version` input resolved to the
    /// newest version of its dataset at that moment.
    Retrain { job: serde_json::Value },
}

/// A webhook receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// `http` or `https` URL that receives a POST with the alert as JSON.
    pub url: String,
}

/// An alert rule as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleSpec {
    pub name: String,
    pub condition: Condition,
    /// After an alert of this rule and subject fired, no new alert is raised (and no action
    /// runs) for this long, even if the first one resolved meanwhile.
    #[serde(default = "default_cooldown")]
    pub cooldown_seconds: u64,
    #[serde(default)]
    pub webhooks: Vec<WebhookTarget>,
    /// NATS subject alert events are published on, through the server's `monitoring.nats_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_subject: Option<String>,
    /// Kafka topic alert events are produced to, through the server's
    /// `monitoring.kafka_brokers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RuleAction>,
}

fn default_cooldown() -> u64 {
    3600
}

fn check_threshold(
    field: &str,
    above: Option<f64>,
    below: Option<f64>,
) -> Result<(), MonitoringError> {
    match (above, below) {
        (Some(_), Some(_)) | (None, None) => Err(MonitoringError::invalid(
            field,
            "set exactly one of `above` and `below`",
        )),
        (Some(value), None) | (None, Some(value)) if !value.is_finite() => {
            Err(MonitoringError::invalid(
                field,
                format!("the threshold {value} is not a finite number"),
            ))
        }
        _ => Ok(()),
    }
}

impl AlertRuleSpec {
    /// Parses and validates a JSON rule.
    pub fn from_json(value: serde_json::Value) -> Result<Self, MonitoringError> {
        let spec: Self = serde_path_deserialize(value, "alert rule")?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), MonitoringError> {
        Name::parse(&self.name)
            .map_err(|error| MonitoringError::invalid("name", error.to_string()))?;
        match &self.condition {
            Condition::DriftShare { at_least } => {
                if !(0.0..=1.0).contains(at_least) {
                    return Err(MonitoringError::invalid(
                        "condition.at_least",
                        format!("at_least is {at_least}; use a share from 0 to 1"),
                    ));
                }
            }
            Condition::FeatureDrift {
                feature,
                statistic,
                above,
                below,
            } => {
                if feature.is_empty() {
                    return Err(MonitoringError::invalid(
                        "condition.feature",
                        "name a feature, or `*` for every feature",
                    ));
                }
                if *statistic == DriftStatistic::Drifted {
                    if above.is_some() || below.is_some() {
                        return Err(MonitoringError::invalid(
                            "condition",
                            "the `drifted` statistic takes no threshold; pick another \
                             statistic to compare against `above` or `below`",
                        ));
                    }
                } else {
                    check_threshold("condition", *above, *below)?;
                }
            }
            Condition::Performance { above, below, .. } => {
                check_threshold("condition", *above, *below)?;
            }
            Condition::NullShare { feature, above } => {
                if feature.is_empty() {
                    return Err(MonitoringError::invalid(
                        "condition.feature",
                        "name a feature, or `*` for every feature",
                    ));
                }
                if !(0.0..1.0).contains(above) {
                    return Err(MonitoringError::invalid(
                        "condition.above",
                        format!("above is {above}; use a share from 0 to below 1"),
                    ));
                }
            }
            Condition::Freshness { max_age_seconds } => {
                if *max_age_seconds == 0 {
                    return Err(MonitoringError::invalid(
                        "condition.max_age_seconds",
                        "max_age_seconds must be at least 1",
                    ));
                }
            }
        }
        if self.webhooks.len() > MAX_WEBHOOKS {
            return Err(MonitoringError::invalid(
                "webhooks",
                format!(
                    "{} webhooks given; a rule has at most {MAX_WEBHOOKS}",
                    self.webhooks.len()
                ),
            ));
        }
        for (index, webhook) in self.webhooks.iter().enumerate() {
            let parsed = reqwest::Url::parse(&webhook.url).map_err(|error| {
                MonitoringError::invalid(
                    &format!("webhooks[{index}].url"),
                    format!("{:?} is not a URL: {error}", webhook.url),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(MonitoringError::invalid(
                    &format!("webhooks[{index}].url"),
                    format!("{:?} is not an http or https URL", webhook.url),
                ));
            }
        }
        if let Some(subject) = &self.nats_subject
            && (subject.is_empty()
                || subject.contains(|c: char| c.is_whitespace() || c == '*' || c == '>'))
        {
            return Err(MonitoringError::invalid(
                "nats_subject",
                format!("{subject:?} is not a NATS subject to publish on: no spaces or wildcards"),
            ));
        }
        if let Some(topic) = &self.kafka_topic
            && (topic.is_empty()
                || topic.len() > 249
                || !topic
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(MonitoringError::invalid(
                "kafka_topic",
                format!(
                    "{topic:?} is not a Kafka topic name: 1 to 249 of letters, digits, '.', '_' \
                     and '-'"
                ),
            ));
        }
        if let Some(RuleAction::Retrain { job }) = &self.action {
            ghaf_jobs::JobSpec::from_json(job.clone()).map_err(|error| {
                MonitoringError::invalid("action.job", format!("invalid job spec: {error}"))
            })?;
        }
        Ok(())
    }
}

/// Deserialises with the failing field's path in the error.
fn serde_path_deserialize<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T, MonitoringError> {
    serde_json::from_value(value)
        .map_err(|error| MonitoringError::invalid(what, format!("invalid {what}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_spec_defaults() {
        let spec = MonitorSpec::from_json(serde_json::json!({
            "name": "fraud-drift",
            "target": {"type": "endpoint", "name": "fraud"},
            "window": {"type": "duration", "seconds": 86400},
        }))
        .unwrap();
        assert_eq!(spec.mode, DriftMode::Default);
        assert_eq!(spec.interval_seconds, 3600);
        assert_eq!(spec.target.dataset(), "fraud-predictions");
    }

    #[test]
    fn duration_window_needs_timestamp() {
        let error = MonitorSpec::from_json(serde_json::json!({
            "name": "m",
            "target": {"type": "dataset", "name": "d"},
            "window": {"type": "duration", "seconds": 60},
        }))
        .unwrap_err();
        assert_eq!(error.field(), Some("window"));
    }

    #[test]
    fn rule_threshold_rules() {
        let both = AlertRuleSpec::from_json(serde_json::json!({
            "name": "r",
            "condition": {"type": "performance", "metric": "auc", "above": 0.1, "below": 0.2},
        }));
        assert!(both.is_err());
        let drifted_with_threshold = AlertRuleSpec::from_json(serde_json::json!({
            "name": "r",
            "condition": {"type": "feature_drift", "feature": "x", "above": 0.1},
        }));
        assert!(drifted_with_threshold.is_err());
        let bad_url = AlertRuleSpec::from_json(serde_json::json!({
            "name": "r",
            "condition": {"type": "drift_share", "at_least": 0.5},
            "webhooks": [{"url": "ftp://example.org/x"}],
        }));
        assert_eq!(bad_url.unwrap_err().field(), Some("webhooks[0].url"));
        let rule = AlertRuleSpec::from_json(serde_json::json!({
            "name": "r",
            "condition": {"type": "drift_share", "at_least": 0.5},
        }))
        .unwrap();
        assert_eq!(rule.cooldown_seconds, 3600);
    }
}
