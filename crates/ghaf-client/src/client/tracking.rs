//! Tracking and registry routes: run search, registered models, versions and aliases.
//! Bodies are returned as JSON values; the server's OpenAPI document describes their shape.

use reqwest::Method;
use serde_json::{Value, json};

use super::{ApiResponse, Client};
use crate::error::ClientError;

/// A run search: every field is optional.
#[derive(Clone, Debug, Default)]
pub struct RunSearch {
    /// Experiment ids or names; empty means every active experiment.
    pub experiments: Vec<String>,
    /// MLflow filter, such as `metrics.acc > 0.9 and params.model = 'rf'`.
    pub filter: Option<String>,
    /// Entries such as `metrics.acc DESC`.
    pub order_by: Vec<String>,
    pub max_results: Option<u32>,
    pub page_token: Option<String>,
}

impl Client {
    /// Searches the runs of a project.
    pub async fn search_runs(
        &self,
        project: &str,
        search: &RunSearch,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let mut url = self.url(&["api", "v1", "projects", project, "runs"])?;
        {
            let mut query = url.query_pairs_mut();
            for experiment in &search.experiments {
                query.append_pair("experiment", experiment);
            }
            if let Some(filter) = &search.filter {
                query.append_pair("filter", filter);
            }
            for order in &search.order_by {
                query.append_pair("order_by", order);
            }
            if let Some(max) = search.max_results {
                query.append_pair("max_results", &max.to_string());
            }
            if let Some(token) = &search.page_token {
                query.append_pair("page_token", token);
            }
        }
        self.execute(self.http.get(url.clone()), &url).await
    }

    pub async fn list_models(&self, project: &str) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&["api", "v1", "projects", project, "models"])
            .await
    }

    /// Lists a registered model's versions, newest first.
    pub async fn list_model_versions(
        &self,
        project: &str,
        model: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&[
            "api", "v1", "projects", project, "models", model, "versions",
        ])
        .await
    }

    /// Verifies a version's signed manifest and the digest of every file.
    pub async fn verify_model_version(
        &self,
        project: &str,
        model: &str,
        version: i64,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let version = version.to_string();
        let segments = [
            "api", "v1", "projects", project, "models", model, "versions", &version, "verify",
        ];
        self.post(&segments, &json!({})).await
    }

    /// Points `alias` at `version`.
    pub async fn set_model_alias(
        &self,
        project: &str,
        model: &str,
        alias: &str,
        version: i64,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let url = self.url(&[
            "api", "v1", "projects", project, "models", model, "aliases", alias,
        ])?;
        let request = self
            .http
            .request(Method::PUT, url.clone())
            .json(&json!({ "version": version }));
        self.execute(request, &url).await
    }

    pub async fn delete_model_alias(
        &self,
        project: &str,
        model: &str,
        alias: &str,
    ) -> Result<ApiResponse<()>, ClientError> {
        let url = self.url(&[
            "api", "v1", "projects", project, "models", model, "aliases", alias,
        ])?;
        self.execute(self.http.request(Method::DELETE, url.clone()), &url)
            .await
    }
}
