//! Experiments, runs, metrics, artifacts and the model registry through the server's
//! MLflow-compatible routes, with typed requests and responses.

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ApiResponse, Client, display_url};
use crate::error::{ClientError, REQUEST_ID_HEADER, api_error};
use crate::mlflow::*;

/// Header that selects the project of an MLflow-compatible request.
pub const PROJECT_HEADER: &str = "x-ghaf-project";

/// Page size the client asks for when it reads a whole metric history.
const HISTORY_PAGE: u32 = 25_000;

/// Tracking and registry calls on one project, made with [`Client::tracking`].
///
/// The calls use the MLflow-compatible routes under `/api/2.0/mlflow`, so they see exactly
/// what the MLflow Python client sees, with the project chosen by the `X-Ghaf-Project`
/// header. Error responses become [`ClientError::Api`] with MLflow's error code, such as
/// `RESOURCE_DOES_NOT_EXIST`.
#[derive(Clone, Debug)]
pub struct Tracking {
    client: Client,
    project: HeaderValue,
}

impl Client {
    /// Returns a handle for tracking and registry calls on `project`.
    pub fn tracking(&self, project: &str) -> Result<Tracking, ClientError> {
        let project =
            HeaderValue::from_str(project.trim()).map_err(|_| ClientError::InvalidProject {
                project: project.to_owned(),
            })?;
        Ok(Tracking {
            client: self.clone(),
            project,
        })
    }
}

impl Tracking {
    /// Returns the project the calls go to.
    pub fn project(&self) -> &str {
        self.project.to_str().unwrap_or_default()
    }

    // --- Experiments --------------------------------------------------------------------

    /// Creates an experiment and returns its id.
    pub async fn create_experiment(
        &self,
        name: &str,
        tags: &[KeyValue],
    ) -> Result<String, ClientError> {
        #[derive(serde::Deserialize)]
        struct Created {
            experiment_id: String,
        }
        let body = json!({ "name": name, "tags": tags });
        let created: Created = self.post("experiments/create", &body).await?;
        Ok(created.experiment_id)
    }

    pub async fn get_experiment(&self, experiment_id: &str) -> Result<Experiment, ClientError> {
        let response: ExperimentResponse = self
            .get("experiments/get", &[("experiment_id", experiment_id)])
            .await?;
        Ok(response.experiment)
    }

    /// Finds an experiment by name; `RESOURCE_DOES_NOT_EXIST` when there is none.
    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Experiment, ClientError> {
        let response: ExperimentResponse = self
            .get("experiments/get-by-name", &[("experiment_name", name)])
            .await?;
        Ok(response.experiment)
    }

    /// Lists the project's active experiments, up to `max_results`.
    pub async fn list_experiments(&self, max_results: u32) -> Result<Vec<Experiment>, ClientError> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Page {
            experiments: Vec<Experiment>,
        }
        let page: Page = self
            .post(
                "experiments/search",
                &json!({ "max_results": max_results, "view_type": "ACTIVE_ONLY" }),
            )
            .await?;
        Ok(page.experiments)
    }

    // --- Runs ---------------------------------------------------------------------------

    pub async fn create_run(&self, run: &NewRun) -> Result<Run, ClientError> {
        let mut body = json!({ "tags": run.tags });
        if !run.experiment_id.is_empty() {
            body["experiment_id"] = json!(run.experiment_id);
        }
        if let Some(name) = &run.run_name {
            body["run_name"] = json!(name);
        }
        if let Some(start) = run.start_time {
            body["start_time"] = json!(start);
        }
        let response: RunResponse = self.post("runs/create", &body).await?;
        Ok(response.run)
    }

    /// Returns a run with its params, tags and the latest value of each metric.
    pub async fn get_run(&self, run_id: &str) -> Result<Run, ClientError> {
        let response: RunResponse = self.get("runs/get", &[("run_id", run_id)]).await?;
        Ok(response.run)
    }

    /// Sets a run's status, and its end time when given; this is how a run is ended.
    pub async fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time: Option<i64>,
    ) -> Result<RunInfo, ClientError> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Response {
            run_info: RunInfo,
        }
        let mut body = json!({ "run_id": run_id, "status": status.as_str() });
        if let Some(end) = end_time {
            body["end_time"] = json!(end);
        }
        let response: Response = self.post("runs/update", &body).await?;
        Ok(response.run_info)
    }

    pub async fn log_metric(&self, run_id: &str, metric: &Metric) -> Result<(), ClientError> {
        let mut body = serde_json::to_value(metric).unwrap_or_default();
        body["run_id"] = json!(run_id);
        self.post::<Value>("runs/log-metric", &body).await?;
        Ok(())
    }

    /// Logs a param. Params are immutable: the same value again is accepted, another value
    /// is rejected with `INVALID_PARAMETER_VALUE`.
    pub async fn log_param(&self, run_id: &str, key: &str, value: &str) -> Result<(), ClientError> {
        let body = json!({ "run_id": run_id, "key": key, "value": value });
        self.post::<Value>("runs/log-parameter", &body).await?;
        Ok(())
    }

    pub async fn set_run_tag(
        &self,
        run_id: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ClientError> {
        let body = json!({ "run_id": run_id, "key": key, "value": value });
        self.post::<Value>("runs/set-tag", &body).await?;
        Ok(())
    }

    /// Logs metrics, params and tags in one atomic call: at most 1,000 metrics, 100 params,
    /// 100 tags and 1,000 entries in all.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), ClientError> {
        let body = json!({
            "run_id": run_id,
            "metrics": metrics,
            "params": params,
            "tags": tags,
        });
        self.post::<Value>("runs/log-batch", &body).await?;
        Ok(())
    }

    /// Returns one page of runs of the experiments that match the query.
    pub async fn search_runs(&self, query: &RunQuery) -> Result<RunPage, ClientError> {
        let mut body = json!({
            "experiment_ids": query.experiment_ids,
            "filter": query.filter,
            "order_by": query.order_by,
            "run_view_type": "ACTIVE_ONLY",
        });
        if let Some(max) = query.max_results {
            body["max_results"] = json!(max);
        }
        if let Some(token) = &query.page_token {
            body["page_token"] = json!(token);
        }
        self.post("runs/search", &body).await
    }

    /// Returns the whole history of one metric, ordered by step and then timestamp, reading
    /// as many pages as it has.
    pub async fn metric_history(
        &self,
        run_id: &str,
        key: &str,
    ) -> Result<Vec<Metric>, ClientError> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Page {
            metrics: Vec<Metric>,
            next_page_token: Option<String>,
        }
        let max = HISTORY_PAGE.to_string();
        let mut history = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", max.as_str()),
            ];
            if let Some(token) = &token {
                query.push(("page_token", token.as_str()));
            }
            let page: Page = self.get("metrics/get-history", &query).await?;
            history.extend(page.metrics);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(history),
            }
        }
    }

    // --- Artifacts ----------------------------------------------------------------------

    /// Uploads `content` to the artifact `path`, such as the one
    /// [`RunInfo::artifact_path`] returns, replacing an earlier file.
    pub async fn upload_artifact(
        &self,
        path: &str,
        content: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let url = self.artifact_url(path)?;
        let request = self
            .client
            .http
            .request(Method::PUT, url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(content.into());
        self.send_bytes(request, &url).await?;
        Ok(())
    }

    /// Downloads the artifact file at `path`.
    pub async fn download_artifact(&self, path: &str) -> Result<Bytes, ClientError> {
        let url = self.artifact_url(path)?;
        let request = self.client.http.get(url.clone());
        self.send_bytes(request, &url).await
    }

    /// Lists the files and directories directly inside the artifact directory `dir`; an
    /// empty or missing directory gives an empty list.
    pub async fn list_artifacts(&self, dir: &str) -> Result<Vec<FileInfo>, ClientError> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Listing {
            files: Vec<FileInfo>,
        }
        let mut url = self
            .client
            .url(&["api", "2.0", "mlflow-artifacts", "artifacts"])?;
        url.query_pairs_mut()
            .append_pair("path", dir.trim_matches('/'));
        let listing: Listing = self
            .execute(self.client.http.get(url.clone()), &url)
            .await?;
        Ok(listing.files)
    }

    // --- Model registry -----------------------------------------------------------------

    pub async fn create_registered_model(
        &self,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModel, ClientError> {
        let body = json!({ "name": name, "description": description });
        let response: RegisteredModelResponse =
            self.post("registered-models/create", &body).await?;
        Ok(response.registered_model)
    }

    /// Returns a registered model with its latest versions and aliases.
    pub async fn get_registered_model(&self, name: &str) -> Result<RegisteredModel, ClientError> {
        let response: RegisteredModelResponse =
            self.get("registered-models/get", &[("name", name)]).await?;
        Ok(response.registered_model)
    }

    /// Registers a new version from files stored by Ghaf; the server signs a manifest of
    /// them.
    pub async fn create_model_version(
        &self,
        version: &NewModelVersion,
    ) -> Result<ModelVersion, ClientError> {
        let response: ModelVersionResponse = self.post("model-versions/create", version).await?;
        Ok(response.model_version)
    }

    pub async fn get_model_version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<ModelVersion, ClientError> {
        let version = version.to_string();
        let response: ModelVersionResponse = self
            .get(
                "model-versions/get",
                &[("name", name), ("version", version.as_str())],
            )
            .await?;
        Ok(response.model_version)
    }

    /// Lists the versions of a registered model, newest first.
    pub async fn list_model_versions(&self, name: &str) -> Result<Vec<ModelVersion>, ClientError> {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Page {
            model_versions: Vec<ModelVersion>,
            next_page_token: Option<String>,
        }
        let quoted = name.replace('\\', "\\\\").replace('\'', "\\'");
        let filter = format!("name = '{quoted}'");
        let mut versions = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("filter", filter.as_str()),
                ("order_by", "version_number DESC"),
                ("max_results", "1000"),
            ];
            if let Some(token) = &token {
                query.push(("page_token", token.as_str()));
            }
            let page: Page = self.get("model-versions/search", &query).await?;
            versions.extend(page.model_versions);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(versions),
            }
        }
    }

    /// Verifies a version's signed manifest and files, then returns the artifact URI its
    /// files are downloaded from. A tampered version fails with `DATA_LOSS`.
    pub async fn model_version_download_uri(
        &self,
        name: &str,
        version: i64,
    ) -> Result<String, ClientError> {
        #[derive(serde::Deserialize)]
        struct Location {
            artifact_uri: String,
        }
        let version = version.to_string();
        let location: Location = self
            .get(
                "model-versions/get-download-uri",
                &[("name", name), ("version", version.as_str())],
            )
            .await?;
        Ok(location.artifact_uri)
    }

    /// Points `alias` (such as `champion`) at `version`, moving it from another version.
    pub async fn set_model_alias(
        &self,
        name: &str,
        alias: &str,
        version: i64,
    ) -> Result<(), ClientError> {
        let body = json!({ "name": name, "alias": alias, "version": version.to_string() });
        self.post::<Value>("registered-models/alias", &body).await?;
        Ok(())
    }

    pub async fn delete_model_alias(&self, name: &str, alias: &str) -> Result<(), ClientError> {
        let url = self.route("registered-models/alias")?;
        let request = self
            .client
            .http
            .request(Method::DELETE, url.clone())
            .json(&json!({ "name": name, "alias": alias }));
        self.execute::<Value>(request, &url).await?;
        Ok(())
    }

    /// Returns the version an alias points at.
    pub async fn get_model_version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion, ClientError> {
        let response: ModelVersionResponse = self
            .get(
                "registered-models/alias",
                &[("name", name), ("alias", alias)],
            )
            .await?;
        Ok(response.model_version)
    }

    // --- Transport ----------------------------------------------------------------------

    /// URL of an MLflow route such as `runs/get`.
    fn route(&self, route: &str) -> Result<Url, ClientError> {
        let mut segments = vec!["api", "2.0", "mlflow"];
        segments.extend(route.split('/'));
        self.client.url(&segments)
    }

    /// URL of an artifact file; each part of `path` is one encoded path segment, and empty,
    /// `.` and `..` parts are rejected.
    fn artifact_url(&self, path: &str) -> Result<Url, ClientError> {
        let mut segments = vec!["api", "2.0", "mlflow-artifacts", "artifacts"];
        segments.extend(path.trim_start_matches('/').split('/'));
        self.client.url(&segments)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        route: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let mut url = self.route(route)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().copied());
        }
        self.execute(self.client.http.get(url.clone()), &url).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        route: &str,
        body: &(impl serde::Serialize + ?Sized),
    ) -> Result<T, ClientError> {
        let url = self.route(route)?;
        self.execute(self.client.http.post(url.clone()).json(body), &url)
            .await
    }

    async fn execute<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        url: &Url,
    ) -> Result<T, ClientError> {
        let request = request.header(PROJECT_HEADER, self.project.clone());
        let response: ApiResponse<T> = self.client.execute(request, url).await?;
        Ok(response.value)
    }

    /// Sends a request whose success body is raw bytes.
    async fn send_bytes(&self, request: RequestBuilder, url: &Url) -> Result<Bytes, ClientError> {
        let request_url = display_url(url);
        let server_url = display_url(&self.client.base);
        let server_url = server_url.trim_end_matches('/');
        let seconds = super::REQUEST_TIMEOUT.as_secs();
        let transport =
            |error| ClientError::from_transport(server_url, &request_url, error, seconds);
        let response = request
            .header(PROJECT_HEADER, self.project.clone())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let request_id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(api_error(
                status,
                request_id,
                &String::from_utf8_lossy(&body),
            ));
        }
        Ok(body)
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ExperimentResponse {
    experiment: Experiment,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RunResponse {
    run: Run,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RegisteredModelResponse {
    registered_model: RegisteredModel,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ModelVersionResponse {
    model_version: ModelVersion,
}
