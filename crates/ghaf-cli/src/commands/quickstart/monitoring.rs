//! Quickstart stage: a drift monitor on the endpoint's prediction log, with an alert rule
//! whose `retrain` action submits a training job on the most recent labelled flights.

use anyhow::Context as _;
use ghaf_client::{Client, ClientError};
use serde_json::{Value, json};

use super::features::numeric_features;
use super::serving::ENDPOINT;
use super::training::job_spec;

/// Monitor on the endpoint.
pub const MONITOR: &str = "flights-delay-drift";

/// Alert rule of the monitor.
pub const RULE: &str = "feature-drift";

/// Training set of the recent flights that the retraining job trains on. The retrain action
/// moves the job's input to the newest version when the alert fires.
pub const RECENT_TRAINING_SET: &str = "recent-training-set";

/// Share of drifted features at which the rule fires.
const DRIFT_SHARE: f64 = 0.3;

/// Cool-down of the rule: one day of wall clock, so one run raises one alert.
const COOLDOWN_SECONDS: u64 = 86_400;

/// Interval of scheduled evaluations: one day. The quickstart's server runs no evaluator and
/// evaluates the monitor through the API, but a `ghaf server` started later on the kept data
/// directory runs it on this interval.
const INTERVAL_SECONDS: u64 = 86_400;

/// Creates the monitor and its rule unless they exist. The reference is the training set of
/// the served version; the window holds the newest `window_rows` predictions.
pub async fn ensure_monitor(
    client: &Client,
    project: &str,
    reference: (&str, i64),
    window_rows: u64,
) -> anyhow::Result<bool> {
    match client.get_monitor(project, MONITOR).await {
        Ok(_) => return Ok(false),
        Err(ClientError::Api { status: 404, .. }) => {}
        Err(error) => return Err(error).context("cannot read the monitor"),
    }
    let spec = json!({
        "name": MONITOR,
        "target": {"type": "endpoint", "name": ENDPOINT},
        "reference": {"dataset": reference.0, "version": reference.1},
        "features": numeric_features(),
        "mode": "default",
        "window": {"type": "rows", "count": window_rows},
        "interval_seconds": INTERVAL_SECONDS,
    });
    client
        .create_monitor(project, &spec)
        .await
        .context("cannot create the monitor")?;

    let retrain = job_spec(
        "quickstart-retrain",
        json!({"type": "dataset_version", "dataset": RECENT_TRAINING_SET, "version": 1}),
    );
    let rule = json!({
        "name": RULE,
        "condition": {"type": "drift_share", "at_least": DRIFT_SHARE},
        "cooldown_seconds": COOLDOWN_SECONDS,
        "action": {"type": "retrain", "job": retrain},
    });
    client
        .create_alert_rule(project, MONITOR, &rule)
        .await
        .context("cannot create the alert rule")?;
    Ok(true)
}

/// One evaluation, reduced to what the quickstart prints.
pub struct Evaluated {
    pub rows: u64,
    pub drift_share: f64,
    /// Features by drift score, largest effect first: name, method, score, drifted.
    pub top: Vec<(String, String, f64, bool)>,
    pub prediction_drifted: bool,
}

/// Evaluates the monitor now.
pub async fn evaluate(client: &Client, project: &str) -> anyhow::Result<Evaluated> {
    let evaluation = client
        .evaluate_monitor(project, MONITOR)
        .await
        .context("cannot evaluate the monitor")?
        .value;
    let report = &evaluation["report"];
    let drift = &report["drift"];
    let mut top: Vec<(String, String, f64, bool)> = drift["features"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|feature| {
            // The normalised Wasserstein distance ranks KS-tested features; the
            // Jensen-Shannon distance the others.
            let effect = feature["wasserstein_normed"]
                .as_f64()
                .or_else(|| feature["jensen_shannon"].as_f64())
                .unwrap_or(0.0);
            (
                feature["feature"].as_str().unwrap_or("?").to_owned(),
                feature["method"].as_str().unwrap_or("?").to_owned(),
                effect,
                feature["drifted"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    top.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(Evaluated {
        rows: evaluation["rows"].as_u64().unwrap_or(0),
        drift_share: drift["share"].as_f64().unwrap_or(0.0),
        top,
        prediction_drifted: report["prediction_drift"]["drifted"].as_bool() == Some(true),
    })
}

/// Returns the monitor's alerts, newest first.
pub async fn alerts(client: &Client, project: &str) -> anyhow::Result<Vec<Value>> {
    let listed = client
        .list_alerts(project, MONITOR, None, Some(100))
        .await
        .context("cannot list the monitor's alerts")?
        .value;
    Ok(listed["alerts"].as_array().cloned().unwrap_or_default())
}
