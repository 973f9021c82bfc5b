//! [`MonitoringService`]: monitors, evaluations, alert rules, alerts and their delivery, the
//! retraining action, and the evaluator loop that runs due monitors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ghaf_core::{ProjectId, TenantId, UnixMillis};
use ghaf_ingest::{Dataset, DatasetVersion, IngestError, IngestService};
use ghaf_jobs::{JobInput, JobSpec, JobStore};
use ghaf_monitor::drift::ghaf::ReferenceColumn;
use ghaf_tracking::{Scope, TrackingService};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::MonitoringError;
use crate::data::{self, Frame};
use crate::delivery::{AlertEvent, DeliveryConfig, Dispatcher, SinkOutcome, format_time};
use crate::report::{self, DriftSummary, FittedReference, Freshness, Report, WindowInfo};
use crate::rules;
use crate::spec::{
    AlertRuleSpec, DatasetRef, DriftMode, LABELS_SUFFIX, LOG_COLUMNS, MonitorSpec, RuleAction,
    Target, Window,
};
use crate::store::{
    Alert, AlertRule, AlertState, Delivery, Evaluation, Monitor, MonitorStore, ReferenceRecord,
};

/// Fitted references kept in memory, so scheduled evaluations do not read the blob again.
const CACHED_REFERENCES: usize = 16;

/// Settings of the service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub delivery: DeliveryConfig,
    /// Most monitors one evaluator tick runs.
    pub max_due_per_tick: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            delivery: DeliveryConfig::default(),
            max_due_per_tick: 100,
        }
    }
}

struct Inner {
    store: MonitorStore,
    ingest: IngestService,
    jobs: JobStore,
    tracking: Option<TrackingService>,
    dispatcher: Dispatcher,
    config: ServiceConfig,
    references: Mutex<Vec<(String, Arc<FittedReference>)>>,
}

/// The monitoring service; cloning shares it.
#[derive(Clone)]
pub struct MonitoringService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MonitoringService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitoringService").finish_non_exhaustive()
    }
}

/// Series over stored evaluations, oldest first, ready to plot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// RFC 3339 evaluation times; every other series has one entry per time.
    pub times: Vec<String>,
    pub rows: Vec<u64>,
    pub drift_share: Vec<Option<f64>>,
    /// Per feature (and `prediction`): score, drifted and null share.
    pub features: BTreeMap<String, FeatureSeries>,
    /// Per performance subject (`all` or `<variant>:v<version>`) and metric.
    pub performance: BTreeMap<String, BTreeMap<String, Vec<Option<f64>>>>,
}

/// Series of one feature.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureSeries {
    pub score: Vec<Option<f64>>,
    pub drifted: Vec<Option<bool>>,
    pub null_share: Vec<Option<f64>>,
}

impl Series {
    /// Builds the series of evaluations given newest first (as stored listings return them).
    pub fn from_evaluations(evaluations: &[Evaluation]) -> Self {
        let mut series = Series::default();
        let ordered: Vec<&Evaluation> = evaluations.iter().rev().collect();
        let count = ordered.len();
        for (index, evaluation) in ordered.iter().enumerate() {
            let report = &evaluation.report;
            series.times.push(format_time(evaluation.evaluated_at));
            series.rows.push(evaluation.rows);
            series
                .drift_share
                .push(report.drift.as_ref().map(|drift| drift.share));
            let mut feature_drift: Vec<&report::FeatureDrift> = Vec::new();
            if let Some(drift) = &report.drift {
                feature_drift.extend(drift.features.iter());
            }
            if let Some(prediction) = &report.prediction_drift {
                feature_drift.push(prediction);
            }
            for drift in feature_drift {
                let entry = series.features.entry(drift.feature.clone()).or_default();
                pad_feature(entry, index);
                entry.score.push(Some(drift.score));
                entry.drifted.push(Some(drift.drifted));
            }
            for missing in &report.missing {
                let entry = series.features.entry(missing.feature.clone()).or_default();
                while entry.null_share.len() < index {
                    entry.null_share.push(None);
                }
                entry.null_share.push(Some(missing.null_share));
            }
            if let Some(performance) = &report.performance {
                let mut groups = vec![("all".to_owned(), &performance.overall)];
                groups.extend(performance.groups.iter().map(|g| (g.subject(), g)));
                for (subject, group) in groups {
                    let metrics = series.performance.entry(subject).or_default();
                    for (name, value) in [
                        ("auc", group.auc),
                        ("accuracy", group.accuracy),
                        ("f1", group.f1),
                        ("rmse", group.rmse),
                        ("mae", group.mae),
                        ("label_coverage", Some(group.label_coverage)),
                    ] {
                        let values = metrics.entry(name.to_owned()).or_default();
                        while values.len() < index {
                            values.push(None);
                        }
                        values.push(value);
                    }
                }
            }
        }
        for entry in series.features.values_mut() {
            pad_feature(entry, count);
            while entry.null_share.len() < count {
                entry.null_share.push(None);
            }
        }
        for metrics in series.performance.values_mut() {
            for values in metrics.values_mut() {
                while values.len() < count {
                    values.push(None);
                }
            }
        }
        series
    }
}

fn pad_feature(entry: &mut FeatureSeries, length: usize) {
    while entry.score.len() < length {
        entry.score.push(None);
        entry.drifted.push(None);
    }
}

/// A rule as created: the stored rule and its webhook secret, returned only here.
#[derive(Clone, Debug)]
pub struct CreatedRule {
    pub rule: AlertRule,
    pub secret: String,
}

fn not_found_is_none<T>(result: Result<T, IngestError>) -> Result<Option<T>, MonitoringError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(IngestError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Parses a lineage reference `dataset:<name>@<version>`.
pub fn parse_training_set(reference: &str) -> Option<(String, i64)> {
    let rest = reference.strip_prefix("dataset:")?;
    let (name, version) = rest.rsplit_once('@')?;
    let version: i64 = version.parse().ok()?;
    (!name.is_empty() && version > 0).then(|| (name.to_owned(), version))
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    hex::encode(bytes)
}

impl MonitoringService {
    pub fn new(
        store: MonitorStore,
        ingest: IngestService,
        jobs: JobStore,
        tracking: Option<TrackingService>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                ingest,
                jobs,
                tracking,
                dispatcher: Dispatcher::new(config.delivery.clone()),
                config,
                references: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn store(&self) -> &MonitorStore {
        &self.inner.store
    }

    fn ingest(&self) -> &IngestService {
        &self.inner.ingest
    }

    async fn dataset(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
    ) -> Result<Option<Dataset>, MonitoringError> {
        not_found_is_none(
            self.ingest()
                .store()
                .get_dataset(tenant, project, name)
                .await,
        )
    }

    async fn dataset_version(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        reference: &DatasetRef,
    ) -> Result<DatasetVersion, MonitoringError> {
        let dataset = self
            .ingest()
            .store()
            .get_dataset(tenant, project, &reference.dataset)
            .await?;
        match reference.version {
            Some(version) => Ok(self
                .ingest()
                .store()
                .get_version(tenant, &dataset.id, version)
                .await?),
            None => self
                .ingest()
                .store()
                .list_versions(tenant, &dataset.id)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    MonitoringError::FailedPrecondition(format!(
                        "dataset {:?} has no version yet; ingest data first",
                        reference.dataset
                    ))
                }),
        }
    }

    /// Finds the training set of the model version that served the newest logged prediction.
    async fn endpoint_reference(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        endpoint: &str,
    ) -> Result<DatasetRef, MonitoringError> {
        let log = format!("{endpoint}{}", crate::spec::PREDICTIONS_SUFFIX);
        let missing = |why: String| {
            MonitoringError::FailedPrecondition(format!(
                "cannot find the default reference of endpoint {endpoint:?}: {why}; set \
                 `reference` to a dataset version"
            ))
        };
        let dataset = self
            .dataset(tenant, project, &log)
            .await?
            .ok_or_else(|| missing(format!("its prediction log {log:?} does not exist yet")))?;
        let newest = self
            .ingest()
            .store()
            .list_versions(tenant, &dataset.id)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| missing(format!("its prediction log {log:?} is empty")))?;
        let frame = data::read_version(self.ingest(), tenant, &newest).await?;
        let last = frame
            .rows
            .checked_sub(1)
            .ok_or_else(|| missing(format!("the newest segment of {log:?} has no rows")))?;
        let model = frame
            .texts("model_name")
            .and_then(|names| names[last].clone())
            .ok_or_else(|| missing("the newest prediction names no model".to_owned()))?;
        let version = frame
            .numbers("model_version")
            .map(|versions| versions[last])
            .filter(|version| version.is_finite())
            .ok_or_else(|| missing("the newest prediction has no model version".to_owned()))?
            as i64;
        let tracking = self
            .inner
            .tracking
            .as_ref()
            .ok_or_else(|| missing("the model registry is not configured".to_owned()))?;
        let scope = Scope {
            tenant: tenant.clone(),
            project: project.clone(),
        };
        let registered = tracking
            .store()
            .get_model_version(&scope, &model, version)
            .await?;
        let lineage = registered.details.lineage.training_set.ok_or_else(|| {
            missing(format!(
                "model {model:?} version {version} records no training set in its lineage"
            ))
        })?;
        let (dataset, version) = parse_training_set(&lineage).ok_or_else(|| {
            missing(format!(
                "the lineage training set {lineage:?} of model {model:?} version {version} is \
                 not a dataset version"
            ))
        })?;
        Ok(DatasetRef {
            dataset,
            version: Some(version),
        })
    }

    /// Resolves the reference, picks the features and fits the stored reference.
    async fn fit_reference(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        spec: &MonitorSpec,
    ) -> Result<ReferenceRecord, MonitoringError> {
        let reference = match (&spec.reference, &spec.target) {
            (Some(reference), _) => reference.clone(),
            (None, Target::Endpoint { name }) => {
                self.endpoint_reference(tenant, project, name).await?
            }
            (None, Target::Dataset { .. }) => {
                return Err(MonitoringError::invalid(
                    "reference",
                    "a dataset monitor needs `reference`: {\"dataset\": NAME, \"version\": N}",
                ));
            }
        };
        let version = self.dataset_version(tenant, project, &reference).await?;
        let frame = data::read_version(self.ingest(), tenant, &version).await?;

        let watched = self
            .dataset(tenant, project, &spec.target.dataset())
            .await?;
        let excluded: BTreeSet<&str> = match &spec.target {
            Target::Endpoint { .. } => LOG_COLUMNS.into_iter().collect(),
            Target::Dataset {
                timestamp_column, ..
            } => timestamp_column.as_deref().into_iter().collect(),
        };
        let features: Vec<String> = if spec.features.is_empty() {
            frame
                .columns
                .keys()
                .filter(|name| frame.is_watchable(name) && !excluded.contains(name.as_str()))
                .filter(|name| {
                    watched.as_ref().is_none_or(|dataset| {
                        dataset.schema.columns.iter().any(|column| {
                            column.name == **name
                                && matches!(
                                    column.column_type,
                                    ghaf_ingest::ColumnType::Integer
                                        | ghaf_ingest::ColumnType::Float
                                        | ghaf_ingest::ColumnType::String
                                        | ghaf_ingest::ColumnType::Boolean
                                )
                        })
                    })
                })
                .cloned()
                .collect()
        } else {
            spec.features.clone()
        };
        if features.is_empty() {
            return Err(MonitoringError::FailedPrecondition(format!(
                "the reference {}@{} and the dataset {:?} share no numeric or categorical \
                 column; list `features` explicitly",
                reference.dataset,
                version.version,
                spec.target.dataset()
            )));
        }
        let fitted = {
            let (name, number, mode, features) = (
                reference.dataset.clone(),
                version.version,
                spec.mode,
                features.clone(),
            );
            tokio::task::spawn_blocking(move || {
                FittedReference::fit(&name, number, &frame, &features, mode)
            })
            .await
            .map_err(|error| {
                MonitoringError::Worker(format!("the fit worker stopped: {error}"))
            })??
        };
        let bytes = serde_json::to_vec(&fitted).map_err(|error| MonitoringError::Corrupt {
            what: "fitted reference",
            message: error.to_string(),
        })?;
        let blob = self
            .ingest()
            .blobs()
            .put_bytes(tenant, Bytes::from(bytes))
            .await?;
        let digest = blob.digest.to_hex();
        self.cache_reference(&digest, Arc::new(fitted));
        Ok(ReferenceRecord {
            dataset: reference.dataset,
            version: version.version,
            rows: version.row_count,
            features,
            digest,
        })
    }

    fn cache_reference(&self, digest: &str, fitted: Arc<FittedReference>) {
        let mut cache = self
            .inner
            .references
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.retain(|(key, _)| key != digest);
        cache.push((digest.to_owned(), fitted));
        if cache.len() > CACHED_REFERENCES {
            cache.remove(0);
        }
    }

    async fn load_reference(
        &self,
        tenant: &TenantId,
        digest: &str,
    ) -> Result<Arc<FittedReference>, MonitoringError> {
        {
            let cache = self
                .inner
                .references
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((_, fitted)) = cache.iter().find(|(key, _)| key == digest) {
                return Ok(fitted.clone());
            }
        }
        let bytes = self
            .ingest()
            .blobs()
            .get(tenant, &IngestService::digest(digest)?)
            .await?;
        let fitted: FittedReference =
            serde_json::from_slice(&bytes).map_err(|error| MonitoringError::Corrupt {
                what: "fitted reference",
                message: error.to_string(),
            })?;
        let fitted = Arc::new(fitted);
        self.cache_reference(digest, fitted.clone());
        Ok(fitted)
    }

    /// Creates a monitor: resolves and fits its reference once, and stores both.
    pub async fn create_monitor(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        spec: &MonitorSpec,
        created_by: &str,
    ) -> Result<Monitor, MonitoringError> {
        spec.validate()?;
        if self
            .inner
            .store
            .get_monitor(tenant, project, &spec.name)
            .await
            .is_ok()
        {
            return Err(MonitoringError::AlreadyExists {
                what: "monitor",
                name: spec.name.clone(),
            });
        }
        let reference = self.fit_reference(tenant, project, spec).await?;
        self.inner
            .store
            .insert_monitor(
                tenant,
                project,
                spec,
                &reference,
                created_by,
                ghaf_core::now_millis(),
            )
            .await
    }

    /// Replaces a monitor's spec and fits its reference again. The name cannot change.
    pub async fn update_monitor(
        &self,
        monitor: &Monitor,
        spec: &MonitorSpec,
    ) -> Result<Monitor, MonitoringError> {
        spec.validate()?;
        if spec.name != monitor.name {
            return Err(MonitoringError::invalid(
                "name",
                format!(
                    "the body names monitor {:?} but the path names {:?}; a monitor cannot be \
                     renamed",
                    spec.name, monitor.name
                ),
            ));
        }
        let reference = self
            .fit_reference(&monitor.tenant, &monitor.project, spec)
            .await?;
        self.inner
            .store
            .update_monitor(monitor, spec, &reference, ghaf_core::now_millis())
            .await
    }

    pub async fn get_monitor(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
    ) -> Result<Monitor, MonitoringError> {
        self.inner.store.get_monitor(tenant, project, name).await
    }

    /// Computes drift between two dataset versions without a monitor.
    pub async fn drift_between(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        reference: &DatasetRef,
        current: &DatasetRef,
        features: &[String],
        mode: DriftMode,
    ) -> Result<DriftSummary, MonitoringError> {
        let reference_version = self.dataset_version(tenant, project, reference).await?;
        let current_version = self.dataset_version(tenant, project, current).await?;
        let reference_frame = data::read_version(self.ingest(), tenant, &reference_version).await?;
        let current_frame = data::read_version(self.ingest(), tenant, &current_version).await?;
        let features: Vec<String> = if features.is_empty() {
            reference_frame
                .columns
                .keys()
                .filter(|name| {
                    reference_frame.is_watchable(name) && current_frame.is_watchable(name)
                })
                .cloned()
                .collect()
        } else {
            features.to_vec()
        };
        if features.is_empty() {
            return Err(MonitoringError::FailedPrecondition(format!(
                "{}@{} and {}@{} share no numeric or categorical column",
                reference.dataset,
                reference_version.version,
                current.dataset,
                current_version.version
            )));
        }
        tokio::task::spawn_blocking(move || {
            report::drift_between(&reference_frame, &current_frame, &features, mode)
        })
        .await
        .map_err(|error| MonitoringError::Worker(format!("the drift worker stopped: {error}")))?
    }

    /// Computes a monitor's report at `now` without storing it.
    pub async fn compute_report(
        &self,
        monitor: &Monitor,
        now: UnixMillis,
    ) -> Result<(Report, Option<UnixMillis>), MonitoringError> {
        let tenant = &monitor.tenant;
        let spec = &monitor.spec;
        let fitted = self
            .load_reference(tenant, &monitor.reference.digest)
            .await?;
        let dataset_name = spec.target.dataset();
        let versions = match self
            .dataset(tenant, &monitor.project, &dataset_name)
            .await?
        {
            Some(dataset) => {
                self.ingest()
                    .store()
                    .list_versions(tenant, &dataset.id)
                    .await?
            }
            None => Vec::new(),
        };
        let timestamp_column = spec.target.timestamp_column();
        let start = match spec.window {
            Window::Duration { seconds } => {
                Some(now - i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX / 2))
            }
            _ => None,
        };
        let end = now.saturating_add(1);
        // NOTE: the window is read into memory whole, and per-segment profiles are not cached
        // between evaluations, so overlapping windows read their shared segments again.
        let segments = data::select_segments(&versions, &spec.window, timestamp_column, start, end);
        let frame = data::read_window(
            self.ingest(),
            tenant,
            &segments,
            &spec.window,
            timestamp_column,
            start,
            end,
        )
        .await?;

        let drift = if frame.rows > 0 {
            let fitted = fitted.clone();
            let window = frame.clone();
            Some(
                tokio::task::spawn_blocking(move || report::drift(&fitted, &window))
                    .await
                    .map_err(|error| {
                        MonitoringError::Worker(format!("the drift worker stopped: {error}"))
                    })??,
            )
        } else {
            None
        };

        let prediction_drift = if frame.rows > 0 && frame.numbers("prediction").is_some() {
            self.prediction_drift(monitor, &frame).await?
        } else {
            None
        };

        let performance = match &spec.target {
            Target::Endpoint { name } if frame.rows > 0 => {
                let labels = self
                    .read_labels(
                        tenant,
                        &monitor.project,
                        &format!("{name}{LABELS_SUFFIX}"),
                        start,
                    )
                    .await?;
                report::performance(&frame, &report::label_index(&labels))
            }
            _ => None,
        };

        let mut missing_columns = fitted.features.clone();
        if frame.numbers("prediction").is_some() {
            missing_columns.push("prediction".to_owned());
        }
        let missing = report::missing_values(&frame, &missing_columns)?;

        let last_row_at = match timestamp_column {
            Some(column) => versions
                .iter()
                .filter_map(|version| data::time_range(version, column).map(|(_, max)| max))
                .max(),
            None => versions.first().map(|version| version.created_at),
        };
        let freshness = Freshness {
            last_row_at: last_row_at.map(format_time),
            age_seconds: last_row_at.map(|last| (now - last).max(0) as f64 / 1000.0),
        };

        let report = Report {
            evaluated_at: format_time(now),
            dataset: dataset_name,
            reference: format!(
                "{}@{}",
                monitor.reference.dataset, monitor.reference.version
            ),
            window: WindowInfo {
                start: start.map(format_time),
                end: format_time(now),
                rows: frame.rows as u64,
                segments: segments.iter().map(|segment| segment.version).collect(),
            },
            drift,
            prediction_drift,
            performance,
            missing,
            freshness,
        };
        Ok((report, start))
    }

    /// Tests the prediction column against its reference. The first window with predictions
    /// becomes that reference, because training sets hold labels, not predictions.
    async fn prediction_drift(
        &self,
        monitor: &Monitor,
        frame: &Frame,
    ) -> Result<Option<report::FeatureDrift>, MonitoringError> {
        let tenant = &monitor.tenant;
        match &monitor.prediction_reference {
            Some(digest) => {
                let bytes = self
                    .ingest()
                    .blobs()
                    .get(tenant, &IngestService::digest(digest)?)
                    .await?;
                let reference: ReferenceColumn =
                    serde_json::from_slice(&bytes).map_err(|error| MonitoringError::Corrupt {
                        what: "prediction reference",
                        message: error.to_string(),
                    })?;
                Ok(report::prediction_drift(&reference, frame))
            }
            None => {
                if let Some(reference) = report::fit_prediction_reference(frame) {
                    let bytes = serde_json::to_vec(&reference).map_err(|error| {
                        MonitoringError::Corrupt {
                            what: "prediction reference",
                            message: error.to_string(),
                        }
                    })?;
                    let blob = self
                        .ingest()
                        .blobs()
                        .put_bytes(tenant, Bytes::from(bytes))
                        .await?;
                    self.inner
                        .store
                        .set_prediction_reference(monitor, &blob.digest.to_hex())
                        .await?;
                }
                Ok(None)
            }
        }
    }

    /// Reads the label segments that can hold labels of predictions made after `since`.
    async fn read_labels(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        name: &str,
        since: Option<UnixMillis>,
    ) -> Result<Frame, MonitoringError> {
        let Some(dataset) = self.dataset(tenant, project, name).await? else {
            return Ok(Frame::default());
        };
        let versions = self
            .ingest()
            .store()
            .list_versions(tenant, &dataset.id)
            .await?;
        let mut frame = Frame::default();
        for version in versions.iter().rev() {
            // Labels come after their predictions, so a segment whose newest label predates
            // the window contains none of its labels.
            if let (Some(since), Some((_, max))) = (since, data::time_range(version, "labelled_at"))
                && max < since
            {
                continue;
            }
            frame.append(data::read_version(self.ingest(), tenant, version).await?);
        }
        Ok(frame)
    }

    /// Evaluates a monitor now: computes and stores the report, then applies the alert rules.
    pub async fn evaluate(&self, monitor: &Monitor) -> Result<Evaluation, MonitoringError> {
        let now = ghaf_core::now_millis();
        let result = self.evaluate_at(monitor, now).await;
        let error = result.as_ref().err().map(ToString::to_string);
        if let Err(store_error) = self
            .inner
            .store
            .set_last_result(monitor, now, error.as_deref())
            .await
        {
            tracing::warn!(monitor_id = %monitor.id, error = %store_error, "cannot record the evaluation outcome");
        }
        result
    }

    async fn evaluate_at(
        &self,
        monitor: &Monitor,
        now: UnixMillis,
    ) -> Result<Evaluation, MonitoringError> {
        let (report, start) = self.compute_report(monitor, now).await?;
        let evaluation = self
            .inner
            .store
            .insert_evaluation(monitor, now, start, Some(now), &report)
            .await?;
        self.apply_rules(monitor, &evaluation, now).await?;
        Ok(evaluation)
    }

    /// Judges an evaluation against every rule of the monitor: raises, repeats and resolves
    /// alerts, runs actions and starts deliveries.
    async fn apply_rules(
        &self,
        monitor: &Monitor,
        evaluation: &Evaluation,
        now: UnixMillis,
    ) -> Result<(), MonitoringError> {
        let store = &self.inner.store;
        let tenant = &monitor.tenant;
        for rule in store.list_rules(monitor).await? {
            let judgement = rules::judge(&rule.spec.condition, &evaluation.report);
            let cooldown =
                i64::try_from(rule.spec.cooldown_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
            let mut firing_subjects = BTreeSet::new();
            for (subject, evidence) in &judgement.firing {
                firing_subjects.insert(subject.clone());
                let latest = store.latest_alert(tenant, &rule.id, subject).await?;
                let repeat = latest.filter(|alert| {
                    alert.state == AlertState::Firing || now - alert.fired_at < cooldown
                });
                if let Some(alert) = repeat {
                    store
                        .record_repeat(tenant, &alert, &evaluation.id, evidence, now)
                        .await?;
                    continue;
                }
                let alert = store
                    .insert_alert(monitor, &rule, subject, &evaluation.id, evidence, now)
                    .await?;
                tracing::info!(
                    tenant = %tenant,
                    monitor_id = %monitor.id,
                    monitor = %monitor.name,
                    rule = %rule.name,
                    alert_id = %alert.id,
                    subject = %subject,
                    "alert fired"
                );
                let alert = self.run_action(monitor, &rule, alert, now).await?;
                self.deliver(monitor, &rule, &alert, "firing");
            }
            for alert in store.firing_alerts(tenant, &rule.id).await? {
                if judgement.judged.contains(&alert.subject)
                    && !firing_subjects.contains(&alert.subject)
                {
                    store.resolve_alert(tenant, &alert, now).await?;
                    let resolved = Alert {
                        state: AlertState::Resolved,
                        resolved_at: Some(now),
                        ..alert
                    };
                    tracing::info!(
                        tenant = %tenant,
                        monitor_id = %monitor.id,
                        rule = %rule.name,
                        alert_id = %resolved.id,
                        subject = %resolved.subject,
                        "alert resolved"
                    );
                    self.deliver(monitor, &rule, &resolved, "resolved");
                }
            }
        }
        Ok(())
    }

    /// Runs the rule's action for a new alert and records the job or the error on it.
    async fn run_action(
        &self,
        monitor: &Monitor,
        rule: &AlertRule,
        alert: Alert,
        now: UnixMillis,
    ) -> Result<Alert, MonitoringError> {
        let Some(RuleAction::Retrain { job }) = &rule.spec.action else {
            return Ok(alert);
        };
        let submitted = self.submit_retraining(monitor, job, now).await;
        let (job_id, error) = match &submitted {
            Ok(job_id) => (Some(job_id.as_str()), None),
            Err(error) => (None, Some(error.to_string())),
        };
        match &submitted {
            Ok(job_id) => tracing::info!(
                tenant = %monitor.tenant,
                monitor_id = %monitor.id,
                rule = %rule.name,
                alert_id = %alert.id,
                job_id = %job_id,
                "alert submitted a retraining job"
            ),
            Err(error) => tracing::error!(
                tenant = %monitor.tenant,
                monitor_id = %monitor.id,
                rule = %rule.name,
                alert_id = %alert.id,
                %error,
                "alert could not submit its retraining job"
            ),
        }
        self.inner
            .store
            .set_alert_action(&monitor.tenant, &alert.id, job_id, error.as_deref())
            .await?;
        Ok(Alert {
            job_id: job_id.map(str::to_owned),
            action_error: error,
            ..alert
        })
    }

    /// Submits the retraining job with every dataset-version input moved to the newest
    /// version of its dataset.
    async fn submit_retraining(
        &self,
        monitor: &Monitor,
        job: &serde_json::Value,
        now: UnixMillis,
    ) -> Result<String, MonitoringError> {
        let mut spec = JobSpec::from_json(job.clone())?;
        for input in &mut spec.inputs {
            if let JobInput::DatasetVersion { dataset, version } = input {
                let newest = self
                    .dataset_version(
                        &monitor.tenant,
                        &monitor.project,
                        &DatasetRef {
                            dataset: dataset.clone(),
                            version: None,
                        },
                    )
                    .await?;
                *version = newest.version;
            }
        }
        let submitted = self
            .inner
            .jobs
            .submit(
                &monitor.tenant,
                &monitor.project,
                &spec,
                &format!("monitor:{}", monitor.name),
                now,
            )
            .await?;
        Ok(submitted.id)
    }

    /// Sends an alert event to the rule's sinks in a background task and stores each
    /// outcome.
    fn deliver(&self, monitor: &Monitor, rule: &AlertRule, alert: &Alert, event: &str) {
        let spec = &rule.spec;
        if spec.webhooks.is_empty() && spec.nats_subject.is_none() && spec.kafka_topic.is_none() {
            return;
        }
        let payload = AlertEvent {
            event: event.to_owned(),
            alert_id: alert.id.clone(),
            project: monitor.project.as_str().to_owned(),
            monitor: monitor.name.clone(),
            rule: rule.name.clone(),
            subject: alert.subject.clone(),
            condition: serde_json::to_value(&spec.condition).unwrap_or_default(),
            fired_at: format_time(alert.fired_at),
            resolved_at: alert.resolved_at.map(format_time),
            evidence: alert.evidence.clone(),
            job_id: alert.job_id.clone(),
        };
        let service = self.clone();
        let tenant = monitor.tenant.clone();
        let monitor_id = monitor.id.clone();
        let secret = rule.secret.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            let dispatcher = &service.inner.dispatcher;
            let mut outcomes: Vec<SinkOutcome> = Vec::new();
            for webhook in &spec.webhooks {
                outcomes.push(dispatcher.webhook(&webhook.url, &secret, &payload).await);
            }
            if let Some(subject) = &spec.nats_subject {
                outcomes.push(dispatcher.nats(subject, &payload).await);
            }
            if let Some(topic) = &spec.kafka_topic {
                outcomes.push(dispatcher.kafka(topic, &payload).await);
            }
            for outcome in outcomes {
                if !outcome.delivered {
                    tracing::error!(
                        tenant = %tenant,
                        monitor_id = %monitor_id,
                        alert_id = %payload.alert_id,
                        sink = outcome.sink,
                        target = %outcome.target,
                        attempts = outcome.attempts,
                        error = outcome.error.as_deref().unwrap_or(""),
                        "alert delivery failed"
                    );
                }
                let delivery = Delivery {
                    id: MonitorStore::new_delivery_id(),
                    alert_id: payload.alert_id.clone(),
                    event: payload.event.clone(),
                    sink: outcome.sink.to_owned(),
                    target: outcome.target,
                    attempts: outcome.attempts,
                    outcome: if outcome.delivered {
                        "delivered".to_owned()
                    } else {
                        "failed".to_owned()
                    },
                    status_code: outcome.status_code,
                    error: outcome.error,
                    finished_at: ghaf_core::now_millis(),
                };
                if let Err(error) = service
                    .inner
                    .store
                    .insert_delivery(&tenant, &delivery)
                    .await
                {
                    tracing::error!(
                        tenant = %tenant,
                        alert_id = %delivery.alert_id,
                        %error,
                        "cannot store the delivery outcome"
                    );
                }
            }
        });
    }

    /// Creates an alert rule and returns it with its webhook secret.
    pub async fn create_rule(
        &self,
        monitor: &Monitor,
        spec: &AlertRuleSpec,
        created_by: &str,
    ) -> Result<CreatedRule, MonitoringError> {
        spec.validate()?;
        let secret = new_secret();
        let rule = self
            .inner
            .store
            .insert_rule(monitor, spec, &secret, created_by, ghaf_core::now_millis())
            .await?;
        Ok(CreatedRule { rule, secret })
    }

    /// Runs every due monitor once, each independently: a failing monitor is logged with its
    /// ids and does not stop the others. Returns the number of monitors run.
    pub async fn run_due(&self) -> usize {
        let now = ghaf_core::now_millis();
        let due = match self
            .inner
            .store
            .due_monitors(now, self.inner.config.max_due_per_tick)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(%error, "cannot list due monitors");
                return 0;
            }
        };
        let mut ran = 0;
        for monitor in due {
            let interval = i64::try_from(monitor.spec.interval_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX / 2);
            let next = now.max(monitor.next_run_at).saturating_add(interval);
            match self
                .inner
                .store
                .claim_run(&monitor, monitor.next_run_at, next)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    tracing::error!(
                        tenant = %monitor.tenant,
                        monitor_id = %monitor.id,
                        %error,
                        "cannot claim a due monitor"
                    );
                    continue;
                }
            }
            ran += 1;
            match self.evaluate(&monitor).await {
                Ok(evaluation) => tracing::debug!(
                    tenant = %monitor.tenant,
                    project_id = %monitor.project,
                    monitor_id = %monitor.id,
                    evaluation_id = %evaluation.id,
                    rows = evaluation.rows,
                    "monitor evaluated"
                ),
                Err(error) => tracing::error!(
                    tenant = %monitor.tenant,
                    project_id = %monitor.project,
                    monitor_id = %monitor.id,
                    monitor = %monitor.name,
                    %error,
                    "monitor evaluation failed"
                ),
            }
        }
        ran
    }

    /// Runs due monitors every `tick` until `stop` turns true.
    pub fn spawn_evaluator(
        &self,
        tick: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            tracing::info!(
                tick_ms = tick.as_millis() as u64,
                "monitor evaluator started"
            );
            loop {
                service.run_due().await;
                tokio::select! {
                    () = tokio::time::sleep(tick) => {}
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            break;
                        }
                    }
                }
            }
            tracing::info!("monitor evaluator stopped");
        })
    }

    /// Lists the alerts' deliveries.
    pub async fn deliveries(
        &self,
        monitor: &Monitor,
        alert_id: &str,
    ) -> Result<Vec<Delivery>, MonitoringError> {
        self.inner
            .store
            .get_alert(&monitor.tenant, &monitor.id, alert_id)
            .await?;
        self.inner
            .store
            .list_deliveries(&monitor.tenant, alert_id)
            .await
    }

    /// Returns the numbers of alerts per state, for listings.
    pub fn count_states(alerts: &[Alert]) -> HashMap<&'static str, usize> {
        let mut counts = HashMap::new();
        for alert in alerts {
            *counts.entry(alert.state.as_str()).or_default() += 1;
        }
        counts
    }
}
