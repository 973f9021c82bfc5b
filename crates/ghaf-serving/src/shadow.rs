//! Shadow traffic: a mirrored copy of a request runs on the shadow variant after the
//! primary has responded, on a task of its own, and the two outputs are compared row by row
//! into the dataset `<endpoint>-shadow` through the prediction log writer.
//!
//! Comparison rule, per row: when both models have an integer class output (the `label`
//! column of the prediction log), the row agrees when the classes are equal. Otherwise it
//! agrees when both have a `prediction` value and `abs_diff <= 1e-9`. A row where either
//! side lacks a comparable output disagrees. A request counts as disagreeing when any of its
//! rows disagrees. A shadow that fails writes one row with `shadow_error` set and counts as
//! an error of the shadow variant; every failure counts, invalid input included, because
//! the request was valid for the primary.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ghaf_ingest::schema::{ColumnSpec, ColumnType, DatasetSchema};
use ghaf_runtime::{Tensor, TensorData};
use serde_json::{Map, Value};

use crate::layout::{LogColumn, LogLayout};
use crate::loader::tensor_f64_prefix;
use crate::log::{self, LogTarget, json_f64};
use crate::{
    DATASET_RETRY_AFTER, EndpointRuntime, EndpointScope, INLINE_LOG_ROWS, Inner, ReadyModel,
    ServingError, VariantRuntime, VariantState, features, loader, lock_read, predict,
    shadow_dataset,
};

/// Suffix of the shadow comparison dataset's name.
pub const SHADOW_SUFFIX: &str = "-shadow";
/// Largest absolute difference of two predictions that still agree, for models without a
/// class output.
pub const AGREE_TOLERANCE: f64 = 1e-9;

/// One mirrored request.
pub(crate) struct Mirror {
    pub inner: Arc<Inner>,
    pub scope: EndpointScope,
    pub runtime: Arc<EndpointRuntime>,
    pub primary: Arc<VariantRuntime>,
    pub primary_ready: Arc<ReadyModel>,
    pub shadow: Arc<VariantRuntime>,
    /// The server-generated id of the primary request.
    pub request_id: String,
    /// The request's inputs as the caller sent them, before any feature join.
    pub inputs: Vec<Tensor>,
    pub primary_outputs: Vec<Tensor>,
    pub rows: usize,
}

/// Maximum mirrored requests running at once on one server, over all endpoints. Without
/// it, a shadow slower than the request rate piles up tasks that each keep a copy of their
/// request and take CPU time from the primaries. Requests beyond it are not mirrored and
/// are counted in [`crate::ServingService::skipped_mirrors`].
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;

/// Runs the mirrored request on a task of its own; a flush of the log waits for it.
pub(crate) fn spawn(mirror: Mirror) {
    // A shadow still loading receives nothing, so a new shadow does not count as failing.
    if matches!(
        &*lock_read(&mirror.shadow.slot.state),
        VariantState::Loading | VariantState::Retrying { .. }
    ) {
        return;
    }
    let inner = mirror.inner.clone();
    if inner.mirroring.fetch_add(1, Ordering::AcqRel) >= MAX_MIRRORS_IN_FLIGHT {
        inner.mirroring.fetch_sub(1, Ordering::AcqRel);
        let skipped = inner.skipped_mirrors.fetch_add(1, Ordering::Relaxed);
        // Logged on the first skip and every 10,000th after it.
        if skipped.is_multiple_of(10_000) {
            tracing::warn!(
                tenant = %mirror.scope.tenant,
                project = %mirror.scope.project,
                endpoint = %mirror.runtime.record.name,
                shadow = %mirror.shadow.variant.name,
                in_flight = MAX_MIRRORS_IN_FLIGHT,
                skipped = skipped + 1,
                "shadow requests are not keeping up; requests beyond the in-flight limit are not mirrored"
            );
        }
        return;
    }
    tokio::spawn(async move {
        run(mirror).await;
        inner.mirroring.fetch_sub(1, Ordering::AcqRel);
    });
}

fn column(name: &str, column_type: ColumnType, nullable: bool) -> ColumnSpec {
    ColumnSpec {
        name: name.to_owned(),
        column_type,
        nullable,
        classification: None,
        description: String::new(),
        timezone: None,
        min: None,
        max: None,
        allowed: None,
        pattern: None,
        unique: false,
    }
}

/// Schema of a shadow comparison dataset.
pub fn shadow_schema() -> DatasetSchema {
    use ColumnType::{Boolean, Float, Integer, String, Timestamp};
    let columns = [
        ("request_id", String, false),
        ("row", Integer, false),
        ("timestamp", Timestamp, false),
        ("endpoint", String, false),
        ("primary_variant", String, false),
        ("primary_model", String, false),
        ("primary_version", Integer, false),
        ("shadow_variant", String, false),
        ("shadow_model", String, false),
        ("shadow_version", Integer, false),
        ("primary_prediction", Float, true),
        ("shadow_prediction", Float, true),
        ("primary_class", Integer, true),
        ("shadow_class", Integer, true),
        ("abs_diff", Float, true),
        ("agree", Boolean, true),
        ("shadow_latency_us", Integer, false),
        ("shadow_error", String, true),
    ];
    DatasetSchema {
        columns: columns
            .iter()
            .map(|(name, column_type, nullable)| column(name, *column_type, *nullable))
            .collect(),
        event_time: Some("timestamp".to_owned()),
        unique_key: vec!["request_id".to_owned(), "row".to_owned()],
        acceptance: Default::default(),
    }
}

/// Returns the values of one output column for the first `rows` rows, NaN where missing.
fn column_values(outputs: &[Tensor], column: &LogColumn, rows: usize) -> Vec<f64> {
    let Some(tensor) = outputs.iter().find(|t| t.name == column.tensor) else {
        return vec![f64::NAN; rows];
    };
    let total_rows = tensor
        .shape
        .first()
        .and_then(|&n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    let width = tensor.data.len() / total_rows;
    if column.index >= width {
        return vec![f64::NAN; rows];
    }
    let values = tensor_f64_prefix(&tensor.data, width.saturating_mul(rows)).unwrap_or_default();
    (0..rows)
        .map(|row| {
            values
                .get(row * width + column.index)
                .copied()
                .unwrap_or(f64::NAN)
        })
        .collect()
}

/// Predictions and classes of one side, per row.
struct Answers {
    prediction: Option<Vec<f64>>,
    class: Option<Vec<f64>>,
}

fn answers(layout: &LogLayout, outputs: &[Tensor], rows: usize) -> Answers {
    Answers {
        prediction: layout
            .outputs
            .iter()
            .find(|c| c.column == "prediction")
            .map(|c| column_values(outputs, c, rows)),
        class: layout
            .label
            .as_ref()
            .map(|c| column_values(outputs, c, rows)),
    }
}

fn finite(values: &Option<Vec<f64>>, row: usize) -> Option<f64> {
    values
        .as_ref()
        .and_then(|v| v.get(row).copied())
        .filter(|v| v.is_finite())
}

/// One compared row: (primary prediction, shadow prediction, primary class, shadow class,
/// absolute difference, agree).
type Comparison = (
    Option<f64>,
    Option<f64>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    bool,
);

fn compare_row(primary: &Answers, shadow: &Answers, row: usize) -> Comparison {
    let primary_prediction = finite(&primary.prediction, row);
    let shadow_prediction = finite(&shadow.prediction, row);
    let primary_class = finite(&primary.class, row).map(|v| v as i64);
    let shadow_class = finite(&shadow.class, row).map(|v| v as i64);
    let abs_diff = match (primary_prediction, shadow_prediction) {
        (Some(a), Some(b)) => Some((a - b).abs()),
        _ => None,
    };
    let agree = match (primary_class, shadow_class) {
        (Some(a), Some(b)) => a == b,
        _ => abs_diff.is_some_and(|diff| diff <= AGREE_TOLERANCE),
    };
    (
        primary_prediction,
        shadow_prediction,
        primary_class,
        shadow_class,
        abs_diff,
        agree,
    )
}

/// Runs the shadow's prediction on the mirrored inputs, joining its own online features
/// when the endpoint is bound to a feature service.
async fn shadow_predict(mirror: &Mirror) -> Result<(Arc<ReadyModel>, Vec<Tensor>), ServingError> {
    let endpoint = &mirror.runtime.record.name;
    let ready = crate::slot_ready(endpoint, &mirror.shadow.slot)?;
    let inputs = match &ready.binding {
        Some(binding) => {
            let store = mirror.inner.features.as_ref().ok_or_else(|| {
                ServingError::Internal("the feature store is not configured".to_owned())
            })?;
            let joined = features::join(
                store,
                &mirror.scope.tenant,
                &mirror.scope.project,
                binding,
                &ready.model.features,
                &mirror.inputs,
            )
            .await?;
            let input_name = ready
                .model
                .predictor
                .signature()
                .inputs
                .first()
                .map(|meta| meta.name.clone())
                .unwrap_or_else(|| loader::NATIVE_INPUT.to_owned());
            vec![Tensor::new(
                input_name,
                vec![joined.rows as i64, ready.model.features.len() as i64],
                TensorData::Fp64(joined.matrix),
            )]
        }
        None => mirror.inputs.clone(),
    };
    let (_, outputs) = predict(endpoint, ready.clone(), inputs, false).await?;
    Ok((ready, outputs))
}

async fn run(mirror: Mirror) {
    let started = Instant::now();
    let result = shadow_predict(&mirror).await;
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    mirror.shadow.counters.record(latency_us, result.is_err());
    ensure_dataset(&mirror).await;

    let logged = mirror.rows.min(log::MAX_ROWS_PER_REQUEST);
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut base = Map::new();
    base.insert("request_id".into(), Value::from(mirror.request_id.clone()));
    base.insert("timestamp".into(), Value::from(timestamp));
    base.insert(
        "endpoint".into(),
        Value::from(mirror.runtime.record.name.clone()),
    );
    for (prefix, variant) in [("primary", &mirror.primary), ("shadow", &mirror.shadow)] {
        base.insert(
            format!("{prefix}_variant"),
            Value::from(variant.variant.name.clone()),
        );
        base.insert(
            format!("{prefix}_model"),
            Value::from(variant.variant.model.clone()),
        );
        base.insert(
            format!("{prefix}_version"),
            Value::from(variant.variant.version),
        );
    }
    base.insert(
        "shadow_latency_us".into(),
        Value::from(i64::try_from(latency_us).unwrap_or(i64::MAX)),
    );

    let rows = match result {
        Ok((shadow_ready, shadow_outputs)) => {
            let build = move || {
                let primary = answers(
                    &mirror.primary_ready.layout,
                    &mirror.primary_outputs,
                    logged,
                );
                let shadow = answers(&shadow_ready.layout, &shadow_outputs, logged);
                let mut disagreed = false;
                let rows: Vec<Map<String, Value>> = (0..logged)
                    .map(|row| {
                        let (pp, sp, pc, sc, diff, agree) = compare_row(&primary, &shadow, row);
                        disagreed |= !agree;
                        let mut map = base.clone();
                        map.insert("row".into(), Value::from(row as i64));
                        map.insert(
                            "primary_prediction".into(),
                            pp.map_or(Value::Null, json_f64),
                        );
                        map.insert("shadow_prediction".into(), sp.map_or(Value::Null, json_f64));
                        map.insert("primary_class".into(), pc.map_or(Value::Null, Value::from));
                        map.insert("shadow_class".into(), sc.map_or(Value::Null, Value::from));
                        map.insert("abs_diff".into(), diff.map_or(Value::Null, json_f64));
                        map.insert("agree".into(), Value::from(agree));
                        map.insert("shadow_error".into(), Value::Null);
                        map
                    })
                    .collect();
                mirror.shadow.counters.record_comparison(disagreed);
                (rows, mirror)
            };
            if logged <= INLINE_LOG_ROWS {
                build()
            } else {
                match tokio::task::spawn_blocking(build).await {
                    Ok(built) => built,
                    Err(error) => {
                        tracing::error!(%error, "the shadow comparison task failed; its rows are not logged");
                        return;
                    }
                }
            }
        }
        Err(error) => {
            tracing::debug!(
                tenant = %mirror.scope.tenant,
                project = %mirror.scope.project,
                endpoint = %mirror.runtime.record.name,
                request_id = %mirror.request_id,
                shadow = %mirror.shadow.variant.name,
                %error,
                "shadow prediction failed"
            );
            let mut map = base;
            map.insert("row".into(), Value::from(0));
            for column in [
                "primary_prediction",
                "shadow_prediction",
                "primary_class",
                "shadow_class",
                "abs_diff",
                "agree",
            ] {
                map.insert(column.into(), Value::Null);
            }
            map.insert("shadow_error".into(), Value::from(error.to_string()));
            (vec![map], mirror)
        }
    };
    let (rows, mirror) = rows;
    let target = LogTarget {
        tenant: mirror.scope.tenant.clone(),
        project: mirror.scope.project.clone(),
        project_name: mirror.runtime.record.project_name.clone(),
        dataset: shadow_dataset(&mirror.runtime.record.name),
    };
    mirror.inner.log.record(target, rows);
}

/// Creates the shadow dataset once per endpoint generation on this server, and again at
/// most every [`DATASET_RETRY_AFTER`] after a failure. Rows recorded meanwhile wait in the
/// log writer's retry buffer.
async fn ensure_dataset(mirror: &Mirror) {
    {
        let mut state = mirror
            .runtime
            .shadow_dataset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (ready, tried) = &mut *state;
        if *ready || tried.is_some_and(|at| at.elapsed() < DATASET_RETRY_AFTER) {
            return;
        }
        *tried = Some(Instant::now());
    }
    let record = &mirror.runtime.record;
    let result = log::ensure_dataset(
        &mirror.inner.ingest,
        &record.tenant,
        &record.project,
        &shadow_dataset(&record.name),
        &format!(
            "Answers of endpoint {}'s shadow variant compared with the primary's",
            record.name
        ),
        &shadow_schema(),
        &record.updated_by,
    )
    .await;
    match result {
        Ok(()) => {
            mirror
                .runtime
                .shadow_dataset
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0 = true;
        }
        Err(error) => {
            mirror
                .inner
                .dataset_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                tenant = %record.tenant,
                project = %record.project,
                endpoint = %record.name,
                %error,
                "cannot prepare the endpoint's shadow dataset; mirroring goes on and creation is retried"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers_of(prediction: Option<f64>, class: Option<f64>) -> Answers {
        Answers {
            prediction: prediction.map(|v| vec![v]),
            class: class.map(|v| vec![v]),
        }
    }

    #[test]
    fn classes_decide_agreement() {
        let primary = answers_of(Some(0.9), Some(1.0));
        let shadow = answers_of(Some(0.6), Some(1.0));
        let (_, _, _, _, diff, agree) = compare_row(&primary, &shadow, 0);
        assert!(agree);
        assert!((diff.unwrap() - 0.3).abs() < 1e-12);
    }

    #[test]
    fn regression_agrees_within_tolerance() {
        let primary = answers_of(Some(2.0), None);
        let close = answers_of(Some(2.0 + 1e-12), None);
        let far = answers_of(Some(2.1), None);
        assert!(compare_row(&primary, &close, 0).5);
        assert!(!compare_row(&primary, &far, 0).5);
    }

    #[test]
    fn missing_output_disagrees() {
        let primary = answers_of(Some(2.0), None);
        let shadow = answers_of(None, None);
        assert!(!compare_row(&primary, &shadow, 0).5);
    }
}
