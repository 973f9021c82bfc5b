//! Quickstart stage: deploy an endpoint bound to the feature service that follows the
//! `champion` alias with a canary policy, and send flights to it through the Open Inference
//! Protocol REST route.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ghaf_client::{Client, ClientError};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::features::{FEATURE_SERVICE, REQUEST_CATEGORY, REQUEST_FEATURES};
use super::flights::Flight;
use super::http::Http;
use super::training::{CHAMPION, REGISTERED_MODEL};

/// Endpoint the quickstart deploys.
pub const ENDPOINT: &str = "flights-delay";

/// Maximum wait for the endpoint's model to load.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Maximum attempts of one inference request that gets 503 (a model loading).
const INFER_ATTEMPTS: u32 = 50;

/// Outcome of the deployment.
pub struct Deployed {
    pub created: bool,
    /// Whether the server took `follow_alias`; without it the endpoint stays on its version.
    pub follows_alias: bool,
    /// Whether the server took the canary policy; false when the route is missing.
    pub canary_policy: bool,
    /// Reason the policy was not set, when it was not.
    pub policy_error: Option<String>,
    pub version: i64,
}

/// Canary settings scaled to the traffic: `min_requests` per step and `min_labels` for the
/// quality check.
pub struct CanarySettings {
    pub min_requests: u64,
    pub min_labels: u64,
}

/// Creates the endpoint unless it exists and sets its canary policy.
pub async fn deploy(
    client: &Client,
    http: &Http,
    project: &str,
    version: i64,
    canary: &CanarySettings,
) -> anyhow::Result<Deployed> {
    let existing = match client.get_endpoint(project, ENDPOINT).await {
        Ok(found) => Some(found.value),
        Err(ClientError::Api { status: 404, .. }) => None,
        Err(error) => return Err(error).context("cannot read the endpoint"),
    };
    let (created, follows_alias, version) = match existing {
        Some(endpoint) => {
            let serving = endpoint["variants"][0]["version"]
                .as_i64()
                .unwrap_or(version);
            (
                false,
                endpoint.get("follow_alias").is_some_and(|a| a == CHAMPION),
                serving,
            )
        }
        None => {
            let mut body = json!({
                "name": ENDPOINT,
                "model": REGISTERED_MODEL,
                "version": version,
                "feature_service": FEATURE_SERVICE,
                "follow_alias": CHAMPION,
                "description": "Created by ghaf quickstart: predicts arr_delay > 15",
            });
            let follows = match client.create_endpoint(project, &body).await {
                Ok(_) => true,
                // A server without rollouts rejects the unknown field `follow_alias`.
                Err(ClientError::Api {
                    status: 400,
                    ref message,
                    ..
                }) if message.contains("follow_alias") => {
                    if let Some(fields) = body.as_object_mut() {
                        fields.remove("follow_alias");
                    }
                    client
                        .create_endpoint(project, &body)
                        .await
                        .context("cannot create the endpoint")?;
                    false
                }
                Err(error) => return Err(error).context("cannot create the endpoint"),
            };
            (true, follows, version)
        }
    };

    let policy = json!({
        "policy": {
            "kind": "canary",
            "steps": [10, 50],
            "interval_secs": 2,
            "min_requests": canary.min_requests,
            "failure_threshold": 2,
            "checks": {
                "max_error_rate": 0.02,
                "quality": {"metric": "auc", "max_drop": 0.02, "min_labels": canary.min_labels},
            },
        },
        "follow_alias": CHAMPION,
    });
    let path = format!("/api/v1/projects/{project}/endpoints/{ENDPOINT}/policy");
    let reply = http.send(Method::PUT, &path, Some(&policy)).await?;
    let (canary_policy, policy_error) = if reply.status.is_success() {
        (true, None)
    } else if matches!(
        reply.status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) {
        (
            false,
            Some(format!(
                "PUT {path} answered HTTP {}: this server has no traffic policies",
                reply.status.as_u16()
            )),
        )
    } else {
        bail!(
            "setting the canary policy failed with HTTP {}: {}",
            reply.status,
            reply.body
        );
    };
    Ok(Deployed {
        created,
        follows_alias: follows_alias || canary_policy,
        canary_policy,
        policy_error,
        version,
    })
}

/// Waits until every variant of the endpoint is ready, and fails with the reason of a
/// variant that failed to load.
pub async fn wait_ready(client: &Client, project: &str) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        let endpoint = client
            .get_endpoint(project, ENDPOINT)
            .await
            .context("cannot read the endpoint")?
            .value;
        let statuses = endpoint["status"].as_array().cloned().unwrap_or_default();
        if let Some(failed) = statuses.iter().find(|s| s["state"] == "failed") {
            bail!(
                "endpoint {ENDPOINT} failed to load {}@{}: {}",
                failed["model"].as_str().unwrap_or("?"),
                failed["version"],
                failed["reason"].as_str().unwrap_or("no reason given")
            );
        }
        if !statuses.is_empty() && statuses.iter().all(|s| s["state"] == "ready") {
            return Ok(endpoint);
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "endpoint {ENDPOINT} was not ready within {} s: {}",
                READY_TIMEOUT.as_secs(),
                Value::Array(statuses)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The endpoint's response to one request.
pub struct Answer {
    pub request_id: String,
    pub model_version: i64,
    /// Probability of a delay, one per row.
    pub scores: Vec<f64>,
}

/// Builds the inference request for `rows`: the three join keys, the request-time numbers
/// and the destination as text.
pub fn infer_body(rows: &[&Flight]) -> Value {
    let n = rows.len();
    let text = |name: &str, value: fn(&Flight) -> &str| {
        json!({"name": name, "shape": [n], "datatype": "BYTES",
               "data": rows.iter().map(|f| value(f)).collect::<Vec<_>>()})
    };
    let number = |name: &str, value: fn(&Flight) -> i64| {
        json!({"name": name, "shape": [n], "datatype": "FP64",
               "data": rows.iter().map(|f| value(f) as f64).collect::<Vec<_>>()})
    };
    debug_assert_eq!(REQUEST_FEATURES, ["hour", "day_of_week", "distance"]);
    json!({"inputs": [
        text("origin", |f| f.origin.as_str()),
        text("tailnum", |f| f.tailnum.as_str()),
        text("carrier", |f| f.carrier.as_str()),
        number("hour", |f| f.hour),
        number("day_of_week", |f| f.day_of_week),
        number("distance", |f| f.distance),
        text(REQUEST_CATEGORY, |f| f.dest.as_str()),
    ]})
}

/// Sends one inference request of `rows` rows built by [`infer_body`], retrying while the
/// server returns 503 (a model loading).
pub async fn infer(http: &Http, body: &Value, rows: usize) -> anyhow::Result<Answer> {
    let path = format!("/v2/models/{ENDPOINT}/infer");
    let mut attempt = 0;
    let reply = loop {
        attempt += 1;
        let reply = http.send(Method::POST, &path, Some(body)).await?;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE && attempt < INFER_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        break reply;
    };
    let body = reply.success(&format!("inference on {ENDPOINT}"))?;
    let output = body["outputs"]
        .as_array()
        .and_then(|outputs| outputs.iter().find(|o| o["name"] == "probability"))
        .with_context(|| format!("the inference response has no probability output: {body}"))?;
    let scores: Vec<f64> = output["data"]
        .as_array()
        .context("the probability output has no data")?
        .iter()
        .map(|value| value.as_f64().unwrap_or(f64::NAN))
        .collect();
    if scores.len() != rows {
        bail!(
            "the endpoint returned {} probabilities for {rows} rows",
            scores.len()
        );
    }
    Ok(Answer {
        request_id: body["parameters"]["ghaf_request_id"]
            .as_str()
            .context("the inference response has no ghaf_request_id")?
            .to_owned(),
        model_version: body["model_version"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .context("the inference response has no numeric model_version")?,
        scores,
    })
}

/// Reads the endpoint's rollout decisions; none when the route is missing.
pub async fn history(http: &Http, project: &str) -> anyhow::Result<Option<Vec<Value>>> {
    let path = format!("/api/v1/projects/{project}/endpoints/{ENDPOINT}/history");
    let reply = http.send(Method::GET, &path, None).await?;
    if matches!(
        reply.status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) {
        return Ok(None);
    }
    let body = reply.success("reading the rollout history")?;
    let entries = body
        .get("history")
        .or_else(|| body.get("decisions"))
        .or_else(|| body.get("entries"))
        .and_then(Value::as_array)
        .cloned()
        .or_else(|| body.as_array().cloned())
        .unwrap_or_default();
    Ok(Some(entries))
}
