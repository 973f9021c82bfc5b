//! Quickstart stage: log the training run and register the model through the server's
//! MLflow-compatible REST API (`/api/2.0/mlflow`), the API the `mlflow` client uses.
//! `ghaf-client` has no calls for creating runs or uploading artifacts, so this stage sends
//! the MLflow requests itself.

use anyhow::{Context as _, bail};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// Header that selects the project of an MLflow request.
const PROJECT_HEADER: &str = "x-ghaf-project";

/// Path of the model file below the run's artifact root.
const MODEL_DIR: &str = "model";
const MODEL_FILE: &str = "model.json";

/// What the stage logged.
pub struct Logged {
    pub run_id: String,
    pub model_version: String,
}

/// Params, metrics and the model file of one run.
pub struct RunRecord<'a> {
    pub experiment: &'a str,
    pub run_name: &'a str,
    pub params: Vec<(&'static str, String)>,
    pub metrics: Vec<(String, f64)>,
    pub model_bytes: &'a [u8],
    pub registered_model: &'a str,
}

struct Mlflow {
    http: reqwest::Client,
    base: String,
}

impl Mlflow {
    fn new(url: &str, token: &str, project: &str) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        let mut bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
        bearer.set_sensitive(true);
        headers.insert(AUTHORIZATION, bearer);
        headers.insert(PROJECT_HEADER, HeaderValue::from_str(project)?);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(ghaf_client::REQUEST_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends a request and returns the JSON body of a success, or the status and the error
    /// body, which has MLflow's `error_code` and `message`.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<Result<Value, (u16, Value)>> {
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(Ok(body))
        } else {
            Ok(Err((status.as_u16(), body)))
        }
    }

    async fn post(&self, route: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}/api/2.0/mlflow/{route}", self.base);
        match self.send(self.http.post(&url).json(body)).await? {
            Ok(value) => Ok(value),
            Err((status, error)) => bail!("POST {route} failed with HTTP {status}: {error}"),
        }
    }
}

/// Creates the experiment unless it exists, logs a finished run with its params, metrics and
/// model file, and registers the file as a new version of the registered model.
pub async fn log_run(
    url: &str,
    token: &str,
    project: &str,
    record: &RunRecord<'_>,
) -> anyhow::Result<Logged> {
    let mlflow = Mlflow::new(url, token, project)?;

    let lookup = mlflow.http.get(format!(
        "{}/api/2.0/mlflow/experiments/get-by-name",
        mlflow.base
    ));
    let experiment_id = match mlflow
        .send(lookup.query(&[("experiment_name", record.experiment)]))
        .await?
    {
        Ok(found) => json_str(&found["experiment"]["experiment_id"])?,
        Err((404, _)) => {
            let created = mlflow
                .post("experiments/create", &json!({ "name": record.experiment }))
                .await?;
            json_str(&created["experiment_id"])?
        }
        Err((status, error)) => {
            bail!("GET experiments/get-by-name failed with HTTP {status}: {error}")
        }
    };

    let now = ghaf_core::now_millis();
    let run = mlflow
        .post(
            "runs/create",
            &json!({ "experiment_id": experiment_id, "run_name": record.run_name, "start_time": now }),
        )
        .await?;
    let run_id = json_str(&run["run"]["info"]["run_id"])?;
    let artifact_uri = json_str(&run["run"]["info"]["artifact_uri"])?;

    let params: Vec<Value> = record
        .params
        .iter()
        .map(|(key, value)| json!({ "key": key, "value": value }))
        .collect();
    let metrics: Vec<Value> = record
        .metrics
        .iter()
        .map(|(key, value)| json!({ "key": key, "value": value, "timestamp": now, "step": 0 }))
        .collect();
    mlflow
        .post(
            "runs/log-batch",
            &json!({ "run_id": run_id, "params": params, "metrics": metrics }),
        )
        .await?;

    // The artifact proxy takes paths below the project's artifact root, which
    // `artifact_uri` names as `mlflow-artifacts:/<path>`.
    let root = artifact_uri
        .strip_prefix("mlflow-artifacts:/")
        .with_context(|| format!("unexpected artifact URI {artifact_uri:?}"))?;
    let upload = mlflow
        .http
        .put(format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{root}/{MODEL_DIR}/{MODEL_FILE}",
            mlflow.base
        ))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(record.model_bytes.to_vec());
    if let Err((status, error)) = mlflow.send(upload).await? {
        bail!("uploading the model file failed with HTTP {status}: {error}");
    }

    mlflow
        .post(
            "runs/update",
            &json!({ "run_id": run_id, "status": "FINISHED", "end_time": ghaf_core::now_millis() }),
        )
        .await?;

    let create_model = mlflow.http.post(format!(
        "{}/api/2.0/mlflow/registered-models/create",
        mlflow.base
    ));
    match mlflow
        .send(create_model.json(&json!({ "name": record.registered_model })))
        .await?
    {
        Ok(_) => {}
        // MLflow answers RESOURCE_ALREADY_EXISTS with HTTP 400.
        Err((_, error)) if error["error_code"] == "RESOURCE_ALREADY_EXISTS" => {}
        Err((status, error)) => {
            bail!("POST registered-models/create failed with HTTP {status}: {error}")
        }
    }
    let version = mlflow
        .post(
            "model-versions/create",
            &json!({
                "name": record.registered_model,
                "source": format!("runs:/{run_id}/{MODEL_DIR}"),
                "run_id": run_id,
            }),
        )
        .await?;
    let model_version = json_str(&version["model_version"]["version"])?;
    Ok(Logged {
        run_id,
        model_version,
    })
}

fn json_str(value: &Value) -> anyhow::Result<String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        other => bail!("the MLflow response has {other} where a string id was expected"),
    }
}
