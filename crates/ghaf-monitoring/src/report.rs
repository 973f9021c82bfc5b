//! The evaluation report: drift per feature and for the prediction column, performance per
//! model version once labels exist, null shares and freshness. Also the fitted reference that
//! the report is computed against.

use std::collections::{BTreeMap, HashMap};

use ghaf_core::UnixMillis;
use ghaf_monitor::drift::evidently::{self, EvidentlyOptions};
use ghaf_monitor::drift::ghaf::{GhafOptions, Reference, ReferenceColumn, decide};
use ghaf_monitor::drift::{ColumnDrift, DatasetDrift, DriftMethod};
use ghaf_monitor::{Column, ColumnKind, ColumnValues, DatasetProfile, ProfileOptions};
use serde::{Deserialize, Serialize};

use crate::MonitoringError;
use crate::data::Frame;
use crate::spec::DriftMode;

/// Stored values of one reference column (Evidently-compatible mode keeps raw values,
/// because Evidently's bins depend on the current data).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredColumn {
    Numeric {
        name: String,
        values: Vec<f64>,
    },
    Categorical {
        name: String,
        values: Vec<Option<String>>,
    },
}

impl StoredColumn {
    fn from_column(column: &Column) -> Self {
        match &column.values {
            ColumnValues::Numeric(values) => StoredColumn::Numeric {
                name: column.name.clone(),
                values: values.clone(),
            },
            ColumnValues::Categorical(values) => StoredColumn::Categorical {
                name: column.name.clone(),
                values: values.clone(),
            },
        }
    }

    fn to_column(&self) -> Column {
        match self {
            StoredColumn::Numeric { name, values } => Column::numeric(name, values.clone()),
            StoredColumn::Categorical { name, values } => Column::categorical(name, values.clone()),
        }
    }

    fn name(&self) -> &str {
        match self {
            StoredColumn::Numeric { name, .. } | StoredColumn::Categorical { name, .. } => name,
        }
    }
}

/// The reference side of a monitor, fitted once at creation and stored as a blob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FittedReference {
    pub dataset: String,
    pub version: i64,
    pub rows: u64,
    pub features: Vec<String>,
    pub mode: DriftMode,
    /// Default mode: bins, counts and sorted values frozen on the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Reference>,
    /// Evidently-compatible mode: the reference values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidently: Vec<StoredColumn>,
}

impl FittedReference {
    /// Fits the reference of `features` on a reference frame.
    pub fn fit(
        dataset: &str,
        version: i64,
        frame: &Frame,
        features: &[String],
        mode: DriftMode,
    ) -> Result<Self, MonitoringError> {
        let mut columns = Vec::with_capacity(features.len());
        for feature in features {
            let column = frame.monitor_column(feature).ok_or_else(|| {
                MonitoringError::FailedPrecondition(format!(
                    "feature {feature:?} is not a numeric or categorical column of the \
                     reference {dataset}@{version}"
                ))
            })?;
            columns.push(column);
        }
        let mut fitted = Self {
            dataset: dataset.to_owned(),
            version,
            rows: frame.rows as u64,
            features: features.to_vec(),
            mode,
            default: None,
            evidently: Vec::new(),
        };
        match mode {
            DriftMode::Default => {
                fitted.default = Some(Reference::fit(&columns, GhafOptions::default()).map_err(
                    |error| {
                        MonitoringError::FailedPrecondition(format!(
                            "cannot fit the reference {dataset}@{version}: {error}"
                        ))
                    },
                )?);
            }
            DriftMode::Evidently => {
                fitted.evidently = columns.iter().map(StoredColumn::from_column).collect();
            }
        }
        Ok(fitted)
    }
}

/// Drift of one column, flattened for JSON and tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub kind: ColumnKind,
    pub method: DriftMethod,
    /// The method's p-value or distance.
    pub score: f64,
    /// Threshold that `score` (Evidently mode) or the adjusted p-value (default mode) is
    /// compared against.
    pub threshold: f64,
    /// p-value: Benjamini–Hochberg adjusted in the default mode; the raw one for p-value
    /// methods in the Evidently mode; `None` for distance methods there.
    pub p_value: Option<f64>,
    pub psi: Option<f64>,
    pub jensen_shannon: Option<f64>,
    pub wasserstein_normed: Option<f64>,
    pub reference_count: usize,
    pub current_count: usize,
    pub drifted: bool,
}

impl FeatureDrift {
    fn from_column(drift: &ColumnDrift) -> Self {
        let p_value = drift
            .adjusted_p_value
            .or_else(|| drift.method.is_p_value().then_some(drift.score));
        Self {
            feature: drift.column.clone(),
            kind: drift.kind,
            method: drift.method,
            score: drift.score,
            threshold: drift.threshold,
            p_value,
            psi: drift.distances.map(|d| d.psi),
            jensen_shannon: drift.distances.map(|d| d.jensen_shannon),
            wasserstein_normed: drift.distances.and_then(|d| d.wasserstein_normed),
            reference_count: drift.reference_count,
            current_count: drift.current_count,
            drifted: drift.drifted,
        }
    }
}

/// A feature left out of the drift test, with the reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkippedFeature {
    pub feature: String,
    pub reason: String,
}

/// Dataset-level drift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftSummary {
    pub mode: DriftMode,
    pub tested: usize,
    pub drifted: usize,
    /// Drifted features over tested features.
    pub share: f64,
    /// Share at or above which the dataset counts as drifted.
    pub drift_share: f64,
    pub dataset_drifted: bool,
    pub features: Vec<FeatureDrift>,
    #[serde(default)]
    pub skipped: Vec<SkippedFeature>,
}

impl DriftSummary {
    fn from_dataset(mode: DriftMode, drift: &DatasetDrift, skipped: Vec<SkippedFeature>) -> Self {
        Self {
            mode,
            tested: drift.columns.len(),
            drifted: drift.drifted_columns,
            share: drift.share,
            drift_share: drift.drift_share,
            dataset_drifted: drift.dataset_drifted,
            features: drift
                .columns
                .iter()
                .map(FeatureDrift::from_column)
                .collect(),
            skipped,
        }
    }
}

/// Returns whether a column has at least one value a drift test can use.
fn has_values(column: &Column) -> bool {
    match &column.values {
        ColumnValues::Numeric(values) => values.iter().any(|value| value.is_finite()),
        ColumnValues::Categorical(values) => values.iter().any(Option::is_some),
    }
}

/// Computes drift of the window's features against the fitted reference. Features the window
/// lacks, or has no usable value of, are listed as skipped.
pub fn drift(reference: &FittedReference, window: &Frame) -> Result<DriftSummary, MonitoringError> {
    let mut skipped = Vec::new();
    let mut current = Vec::new();
    for feature in &reference.features {
        match window.monitor_column(feature) {
            None => skipped.push(SkippedFeature {
                feature: feature.clone(),
                reason: "the column is missing from the window".to_owned(),
            }),
            Some(column) if !has_values(&column) => skipped.push(SkippedFeature {
                feature: feature.clone(),
                reason: "the window has no non-missing value".to_owned(),
            }),
            Some(column) => current.push(column),
        }
    }
    match reference.mode {
        DriftMode::Default => {
            let fitted = reference
                .default
                .as_ref()
                .ok_or_else(|| MonitoringError::Corrupt {
                    what: "monitor reference",
                    message: "the default-mode reference is missing".to_owned(),
                })?;
            let mut results = Vec::new();
            for column in &current {
                let Some(reference_column) =
                    fitted.columns.iter().find(|c| c.name() == column.name)
                else {
                    continue;
                };
                match reference_column.test(column) {
                    Ok(result) => results.push(result),
                    Err(error) => skipped.push(SkippedFeature {
                        feature: column.name.clone(),
                        reason: error.to_string(),
                    }),
                }
            }
            let dataset = decide(results, &fitted.options);
            Ok(DriftSummary::from_dataset(
                DriftMode::Default,
                &dataset,
                skipped,
            ))
        }
        DriftMode::Evidently => {
            let mut results = Vec::new();
            for column in &current {
                let Some(stored) = reference.evidently.iter().find(|c| c.name() == column.name)
                else {
                    continue;
                };
                match evidently::column_drift(&stored.to_column(), column, None) {
                    Ok(result) => results.push(result),
                    Err(error) => skipped.push(SkippedFeature {
                        feature: column.name.clone(),
                        reason: error.to_string(),
                    }),
                }
            }
            let dataset =
                DatasetDrift::from_columns(results, EvidentlyOptions::default().drift_share);
            Ok(DriftSummary::from_dataset(
                DriftMode::Evidently,
                &dataset,
                skipped,
            ))
        }
    }
}

/// Computes drift between two frames without a stored reference (ad-hoc reports).
pub fn drift_between(
    reference: &Frame,
    current: &Frame,
    features: &[String],
    mode: DriftMode,
) -> Result<DriftSummary, MonitoringError> {
    let fitted = FittedReference::fit("reference", 0, reference, features, mode)?;
    drift(&fitted, current)
}

/// Fits the reference of the prediction column on a window, in the default mode.
pub fn fit_prediction_reference(window: &Frame) -> Option<ReferenceColumn> {
    let column = window.monitor_column("prediction")?;
    if !has_values(&column) {
        return None;
    }
    ReferenceColumn::fit(&column, &GhafOptions::default()).ok()
}

/// Tests the window's prediction column against its reference, in the default mode.
pub fn prediction_drift(reference: &ReferenceColumn, window: &Frame) -> Option<FeatureDrift> {
    let column = window.monitor_column("prediction")?;
    if !has_values(&column) {
        return None;
    }
    let result = reference.test(&column).ok()?;
    let dataset = decide(vec![result], &GhafOptions::default());
    dataset.columns.first().map(FeatureDrift::from_column)
}

/// Kind of model a prediction log belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// `prediction` is the probability of class 1 and the log has a `label` column.
    Binary,
    /// `prediction` is the predicted value.
    Regression,
}

/// Performance of one group of predictions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupPerformance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<i64>,
    pub predictions: u64,
    /// Predictions with a label.
    pub labelled: u64,
    /// `labelled / predictions`.
    pub label_coverage: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
}

impl GroupPerformance {
    /// Returns a metric by name.
    pub fn metric(&self, metric: crate::spec::PerformanceMetric) -> Option<f64> {
        use crate::spec::PerformanceMetric as M;
        match metric {
            M::Auc => self.auc,
            M::Accuracy => self.accuracy,
            M::F1 => self.f1,
            M::Rmse => self.rmse,
            M::Mae => self.mae,
        }
    }

    /// Returns the subject name alerts use for this group.
    pub fn subject(&self) -> String {
        match (&self.variant, self.model_version) {
            (None, None) => "all".to_owned(),
            (variant, version) => format!(
                "{}:v{}",
                variant.as_deref().unwrap_or("-"),
                version.map_or_else(|| "-".to_owned(), |v| v.to_string())
            ),
        }
    }
}

/// Threshold of the positive class for accuracy and F1.
pub const CLASSIFICATION_THRESHOLD: f64 = 0.5;

fn group_metrics(task: Task, pairs: &[(f64, f64)], group: &mut GroupPerformance) {
    group.labelled = pairs.len() as u64;
    group.label_coverage = if group.predictions == 0 {
        0.0
    } else {
        group.labelled as f64 / group.predictions as f64
    };
    if pairs.is_empty() {
        return;
    }
    let labels: Vec<f64> = pairs.iter().map(|(label, _)| *label).collect();
    let predictions: Vec<f64> = pairs.iter().map(|(_, prediction)| *prediction).collect();
    let finite = |value: f64| value.is_finite().then_some(value);
    match task {
        Task::Binary => {
            group.auc = finite(ghaf_train::metrics::auc(&labels, &predictions));
            group.accuracy = finite(ghaf_train::metrics::accuracy(
                &labels,
                &predictions,
                CLASSIFICATION_THRESHOLD,
            ));
            group.f1 = finite(ghaf_train::metrics::f1(
                &labels,
                &predictions,
                CLASSIFICATION_THRESHOLD,
            ));
        }
        Task::Regression => {
            group.rmse = finite(ghaf_train::metrics::rmse(&labels, &predictions));
            group.mae = finite(ghaf_train::metrics::mae(&labels, &predictions));
        }
    }
}

/// Performance over the window and per (variant, model version).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    pub task: Task,
    pub overall: GroupPerformance,
    pub groups: Vec<GroupPerformance>,
}

/// Labels keyed by (request id, row); a later `labelled_at` replaces an earlier label.
pub fn label_index(labels: &Frame) -> HashMap<(String, i64), f64> {
    let mut index: HashMap<(String, i64), (Option<UnixMillis>, f64)> = HashMap::new();
    let (Some(ids), Some(rows), Some(values)) = (
        labels.texts("request_id"),
        labels.numbers("row"),
        labels.numbers("label"),
    ) else {
        return HashMap::new();
    };
    let times = labels.times("labelled_at");
    for i in 0..labels.rows {
        let (Some(id), row, value) = (&ids[i], rows[i], values[i]) else {
            continue;
        };
        if row.is_nan() || !value.is_finite() {
            continue;
        }
        let time = times.and_then(|times| times[i]);
        let key = (id.clone(), row as i64);
        match index.get(&key) {
            Some((Some(existing), _)) if time.is_none_or(|time| time < *existing) => {}
            _ => {
                index.insert(key, (time, value));
            }
        }
    }
    index
        .into_iter()
        .map(|(key, (_, value))| (key, value))
        .collect()
}

/// Joins the window's predictions with labels on (request_id, row) and computes performance
/// per (variant, model version) and overall. `None` when the window has no `prediction`
/// column or no request ids.
pub fn performance(window: &Frame, labels: &HashMap<(String, i64), f64>) -> Option<Performance> {
    let predictions = window.numbers("prediction")?;
    let ids = window.texts("request_id")?;
    let rows = window.numbers("row")?;
    let task = if window.columns.contains_key("label") {
        Task::Binary
    } else {
        Task::Regression
    };
    let variants = window.texts("variant");
    let versions = window.numbers("model_version");

    type GroupKey = (Option<String>, Option<i64>);
    let mut groups: BTreeMap<GroupKey, (u64, Vec<(f64, f64)>)> = BTreeMap::new();
    let mut overall_count = 0;
    let mut overall_pairs = Vec::new();
    for i in 0..window.rows {
        let key = (
            variants.and_then(|v| v[i].clone()),
            versions.and_then(|v| (!v[i].is_nan()).then_some(v[i] as i64)),
        );
        let entry = groups.entry(key).or_default();
        entry.0 += 1;
        overall_count += 1;
        let (Some(id), row, prediction) = (&ids[i], rows[i], predictions[i]) else {
            continue;
        };
        if row.is_nan() || !prediction.is_finite() {
            continue;
        }
        if let Some(&label) = labels.get(&(id.clone(), row as i64)) {
            entry.1.push((label, prediction));
            overall_pairs.push((label, prediction));
        }
    }
    let mut overall = GroupPerformance {
        predictions: overall_count,
        ..GroupPerformance::default()
    };
    group_metrics(task, &overall_pairs, &mut overall);
    let groups = groups
        .into_iter()
        .map(|((variant, model_version), (count, pairs))| {
            let mut group = GroupPerformance {
                variant,
                model_version,
                predictions: count,
                ..GroupPerformance::default()
            };
            group_metrics(task, &pairs, &mut group);
            group
        })
        .collect();
    Some(Performance {
        task,
        overall,
        groups,
    })
}

/// Share of missing values of one column in the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MissingValues {
    pub feature: String,
    pub rows: u64,
    pub nulls: u64,
    pub null_share: f64,
}

/// Null shares of `columns`, from a mergeable profile of the window.
pub fn missing_values(
    window: &Frame,
    columns: &[String],
) -> Result<Vec<MissingValues>, MonitoringError> {
    let present: Vec<Column> = columns
        .iter()
        .filter_map(|name| window.monitor_column(name))
        .collect();
    let profile = DatasetProfile::from_columns(&present, ProfileOptions::default())?;
    Ok(profile
        .columns
        .iter()
        .map(|column| MissingValues {
            feature: column.name.clone(),
            rows: column.rows,
            nulls: column.nulls,
            null_share: column.null_share().unwrap_or(0.0),
        })
        .collect())
}

/// Time since the newest row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Freshness {
    /// RFC 3339 time of the newest row (its timestamp, else its version's creation time).
    pub last_row_at: Option<String>,
    pub age_seconds: Option<f64>,
}

/// The rows an evaluation looked at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowInfo {
    /// RFC 3339 start of a duration window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    pub end: String,
    pub rows: u64,
    /// Dataset versions (segments) read.
    pub segments: Vec<i64>,
}

/// The stored result of one evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub evaluated_at: String,
    pub dataset: String,
    pub reference: String,
    pub window: WindowInfo,
    /// `None` when the window has no rows.
    pub drift: Option<DriftSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_drift: Option<FeatureDrift>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<Performance>,
    pub missing: Vec<MissingValues>,
    pub freshness: Freshness,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Values;

    fn frame(columns: Vec<(&str, Values)>) -> Frame {
        let rows = match &columns[0].1 {
            Values::Number(v) => v.len(),
            Values::Text(v) => v.len(),
            Values::Time(v) => v.len(),
        };
        Frame {
            rows,
            columns: columns
                .into_iter()
                .map(|(name, values)| (name.to_owned(), values))
                .collect(),
        }
    }

    #[test]
    fn performance_joins_labels_per_group() {
        let window = frame(vec![
            (
                "request_id",
                Values::Text(vec![
                    Some("a".into()),
                    Some("b".into()),
                    Some("c".into()),
                    Some("d".into()),
                ]),
            ),
            ("row", Values::Number(vec![0.0, 0.0, 0.0, 0.0])),
            ("prediction", Values::Number(vec![0.9, 0.2, 0.7, 0.4])),
            ("label", Values::Number(vec![1.0, 0.0, 1.0, 0.0])),
            ("model_version", Values::Number(vec![1.0, 1.0, 2.0, 2.0])),
            (
                "variant",
                Values::Text(vec![
                    Some("main".into()),
                    Some("main".into()),
                    Some("canary".into()),
                    Some("canary".into()),
                ]),
            ),
        ]);
        let labels = HashMap::from([
            (("a".to_owned(), 0), 1.0),
            (("b".to_owned(), 0), 1.0),
            (("c".to_owned(), 0), 1.0),
        ]);
        let performance = performance(&window, &labels).unwrap();
        assert_eq!(performance.task, Task::Binary);
        assert_eq!(performance.overall.predictions, 4);
        assert_eq!(performance.overall.labelled, 3);
        assert_eq!(performance.groups.len(), 2);
        let main = performance
            .groups
            .iter()
            .find(|g| g.variant.as_deref() == Some("main"))
            .unwrap();
        assert_eq!(main.labelled, 2);
        assert_eq!(main.accuracy, Some(0.5));
        // Only positives in the canary group: AUC is undefined.
        let canary = performance
            .groups
            .iter()
            .find(|g| g.variant.as_deref() == Some("canary"))
            .unwrap();
        assert_eq!(canary.auc, None);
        assert_eq!(canary.subject(), "canary:v2");
    }

    #[test]
    fn later_label_wins() {
        let labels = frame(vec![
            (
                "request_id",
                Values::Text(vec![Some("a".into()), Some("a".into())]),
            ),
            ("row", Values::Number(vec![0.0, 0.0])),
            ("label", Values::Number(vec![1.0, 0.0])),
            ("labelled_at", Values::Time(vec![Some(2_000), Some(1_000)])),
        ]);
        let index = label_index(&labels);
        assert_eq!(index[&("a".to_owned(), 0)], 1.0);
    }
}
