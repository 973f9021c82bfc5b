//! Reading an endpoint's logged predictions and their labels per variant, for the quality
//! check of a canary and the A/B analysis.

use std::collections::BTreeMap;

use ghaf_core::{ProjectId, TenantId, UnixMillis};
use ghaf_ingest::{IngestError, IngestService};
use ghaf_monitoring::Window;
use ghaf_monitoring::data::{self, Frame};
use ghaf_monitoring::report::label_index;

use crate::RolloutError;
use crate::analysis::metric_value;
use crate::canary::QualityWindow;

/// Logged predictions of one (variant, model version) in a window, with their labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelledPredictions {
    /// Prediction rows logged in the window.
    pub logged: u64,
    /// (label, prediction) of each row that has a label.
    pub pairs: Vec<(f64, f64)>,
}

/// Labelled predictions per (variant, model version).
pub type LabelledByVariant = BTreeMap<(String, i64), LabelledPredictions>;

async fn read_dataset_versions(
    ingest: &IngestService,
    tenant: &TenantId,
    project: &ProjectId,
    name: &str,
) -> Result<Vec<ghaf_ingest::DatasetVersion>, RolloutError> {
    let dataset = match ingest.store().get_dataset(tenant, project, name).await {
        Ok(dataset) => dataset,
        Err(IngestError::NotFound { .. }) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    Ok(ingest.store().list_versions(tenant, &dataset.id).await?)
}

/// Reads the predictions that `endpoint` logged at or after `since` and joins them with
/// their labels, grouped by variant and model version.
///
/// NOTE: the window's segments are read into memory whole, so a window over a very busy
/// endpoint costs memory in proportion to its rows.
pub async fn read_labelled(
    ingest: &IngestService,
    tenant: &TenantId,
    project: &ProjectId,
    endpoint: &str,
    since: UnixMillis,
    now: UnixMillis,
) -> Result<LabelledByVariant, RolloutError> {
    let predictions = ghaf_serving::predictions_dataset(endpoint);
    let versions = read_dataset_versions(ingest, tenant, project, &predictions).await?;
    if versions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let seconds = u64::try_from((now - since).max(0) / 1000 + 1).unwrap_or(u64::MAX);
    let window = Window::Duration { seconds };
    let end = now.saturating_add(1);
    let segments = data::select_segments(&versions, &window, Some("timestamp"), Some(since), end);
    let frame = data::read_window(
        ingest,
        tenant,
        &segments,
        &window,
        Some("timestamp"),
        Some(since),
        end,
    )
    .await?;
    if frame.rows == 0 {
        return Ok(BTreeMap::new());
    }

    let labels_name = ghaf_serving::labels_dataset(endpoint);
    let label_versions = read_dataset_versions(ingest, tenant, project, &labels_name).await?;
    let mut labels = Frame::default();
    for version in label_versions.iter().rev() {
        // Labels come after their predictions, so a segment whose newest label predates the
        // window contains none of the window's labels.
        if let Some((_, newest)) = data::time_range(version, "labelled_at")
            && newest < since
        {
            continue;
        }
        labels.append(data::read_version(ingest, tenant, version).await?);
    }
    Ok(group(&frame, &label_index(&labels)))
}

/// Groups a window of the prediction log by (variant, model version) and joins labels.
pub fn group(
    frame: &Frame,
    labels: &std::collections::HashMap<(String, i64), f64>,
) -> LabelledByVariant {
    let mut groups: LabelledByVariant = BTreeMap::new();
    let (Some(variants), Some(versions), Some(ids), Some(rows), Some(predictions)) = (
        frame.texts("variant"),
        frame.numbers("model_version"),
        frame.texts("request_id"),
        frame.numbers("row"),
        frame.numbers("prediction"),
    ) else {
        return groups;
    };
    for i in 0..frame.rows {
        let (Some(variant), version) = (&variants[i], versions[i]) else {
            continue;
        };
        if version.is_nan() {
            continue;
        }
        let entry = groups.entry((variant.clone(), version as i64)).or_default();
        entry.logged += 1;
        let (Some(id), row, prediction) = (&ids[i], rows[i], predictions[i]) else {
            continue;
        };
        if row.is_nan() || !prediction.is_finite() {
            continue;
        }
        if let Some(&label) = labels.get(&(id.clone(), row as i64)) {
            entry.pairs.push((label, prediction));
        }
    }
    groups
}

/// Computes the quality window of a canary from grouped labelled predictions.
pub fn quality_window(
    metric: &str,
    groups: &LabelledByVariant,
    candidate: (&str, i64),
    stable: (&str, i64),
) -> QualityWindow {
    let empty = LabelledPredictions::default();
    let of = |(variant, version): (&str, i64)| {
        groups.get(&(variant.to_owned(), version)).unwrap_or(&empty)
    };
    let candidate = of(candidate);
    let stable = of(stable);
    QualityWindow {
        metric: metric.to_owned(),
        candidate: metric_value(metric, &candidate.pairs),
        candidate_labels: candidate.pairs.len() as u64,
        stable: metric_value(metric, &stable.pairs),
        stable_labels: stable.pairs.len() as u64,
    }
}
