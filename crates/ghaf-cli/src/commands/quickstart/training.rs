//! Quickstart stage: train gradient-boosted trees through the job system. The job builds a
//! point-in-time training set from the feature service, trains, logs the run, registers a
//! signed model version with lineage and moves the `champion` alias through the quality gate.

use std::time::Duration;

use anyhow::{Context as _, bail};
use ghaf_client::{Client, ClientError};
use serde_json::{Value, json};

use super::features::{FEATURE_SERVICE, model_features};

/// Registered model the jobs register versions of.
pub const REGISTERED_MODEL: &str = "flights-arr-delay";

/// Alias that the quality gate moves and the endpoint follows.
pub const CHAMPION: &str = "champion";

/// Label column of the entity tables: 1 when `arr_delay > 15`.
pub const LABEL: &str = "delayed";

/// Time between two reads of a running job's state.
const JOB_POLL: Duration = Duration::from_millis(200);

/// Maximum wait for one job. Built-in training on every flight takes seconds.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// Trees at most, and rounds without improvement of the holdout loss before training stops.
const N_ESTIMATORS: u64 = 200;
const EARLY_STOPPING_ROUNDS: u64 = 20;

/// A finished training job.
pub struct Finished {
    pub job_id: String,
    pub version: i64,
    pub train_rows: u64,
    pub validation_rows: u64,
    pub holdout_auc: f64,
    /// The gate's decision: whether the alias moved, and why.
    pub promoted: bool,
    pub gate_reason: String,
    pub champion_score: Option<f64>,
}

/// Returns the job spec of a GBDT training job on `input`, registering into the quickstart's
/// model and moving `champion` when the candidate beats the holder on its holdout AUC.
pub fn job_spec(name: &str, input: Value) -> Value {
    json!({
        "name": name,
        "kind": {
            "type": "builtin",
            "trainer": "gbdt",
            "features": model_features(),
            "validation_fraction": 0.2,
            "seed": 42,
        },
        "inputs": [input],
        "label": LABEL,
        "parameters": {
            "n_estimators": N_ESTIMATORS,
            "early_stopping_rounds": EARLY_STOPPING_ROUNDS,
        },
        "max_attempts": 1,
        "register": {
            "model": REGISTERED_MODEL,
            "alias": CHAMPION,
            "gate": {"metric": "auc", "margin": 0.0},
        },
    })
}

/// Returns the input that has the worker build the training set of the feature service over
/// an entity-table version.
pub fn feature_service_input(entity_dataset: &str, entity_version: i64) -> Value {
    json!({
        "type": "feature_service",
        "feature_service": FEATURE_SERVICE,
        "entity_dataset": entity_dataset,
        "entity_version": entity_version,
    })
}

/// Submits a job and waits for it to end.
pub async fn submit_and_wait(
    client: &Client,
    project: &str,
    spec: &Value,
) -> anyhow::Result<Value> {
    let submitted = client
        .submit_job(project, spec)
        .await
        .context("cannot submit the training job")?
        .value;
    let id = submitted["id"]
        .as_str()
        .context("the submit response has no job id")?
        .to_owned();
    wait_for_job(client, project, &id).await
}

/// Polls a job until it succeeded, failed or was cancelled, and returns its last view.
pub async fn wait_for_job(client: &Client, project: &str, id: &str) -> anyhow::Result<Value> {
    let started = std::time::Instant::now();
    loop {
        let job = client
            .get_job(project, id)
            .await
            .with_context(|| format!("cannot read job {id}"))?
            .value;
        match job["state"].as_str() {
            Some("succeeded" | "failed" | "cancelled") => return Ok(job),
            _ if started.elapsed() > JOB_TIMEOUT => bail!(
                "job {id} did not finish within {} s; follow it with `ghaf jobs logs --follow {id}`",
                JOB_TIMEOUT.as_secs()
            ),
            _ => tokio::time::sleep(JOB_POLL).await,
        }
    }
}

/// Reads the outcome of a succeeded job, or fails with its error.
pub fn finished(job: &Value) -> anyhow::Result<Finished> {
    let id = job["id"].as_str().unwrap_or("?").to_owned();
    if job["state"] != "succeeded" {
        bail!(
            "training job {id} ended {}: {}; see `ghaf jobs logs {id} --project quickstart`",
            job["state"].as_str().unwrap_or("?"),
            job["error"].as_str().unwrap_or("no error recorded")
        );
    }
    let result = &job["result"];
    let gate = &result["gate"];
    Ok(Finished {
        job_id: id,
        version: result["model"]["version"]
            .as_i64()
            .context("the job result names no registered version")?,
        train_rows: result["train_rows"].as_u64().unwrap_or(0),
        validation_rows: result["validation_rows"].as_u64().unwrap_or(0),
        holdout_auc: result["metrics"]["auc"].as_f64().unwrap_or(f64::NAN),
        promoted: gate["promoted"].as_bool().unwrap_or(true),
        gate_reason: gate["reason"].as_str().unwrap_or("no gate ran").to_owned(),
        champion_score: gate["champion_score"].as_f64(),
    })
}

/// Returns the version that has the `champion` alias, if the model and the alias exist.
pub async fn champion_version(client: &Client, project: &str) -> anyhow::Result<Option<i64>> {
    let versions = match client.list_model_versions(project, REGISTERED_MODEL).await {
        Ok(response) => response.value,
        Err(ClientError::Api { status: 404, .. }) => return Ok(None),
        Err(error) => {
            return Err(error).context("cannot list the registered model's versions");
        }
    };
    let holder = versions["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|version| {
            version["aliases"]
                .as_array()
                .is_some_and(|aliases| aliases.iter().any(|alias| alias == CHAMPION))
        })
        .and_then(|version| version["version"].as_i64());
    Ok(holder)
}
