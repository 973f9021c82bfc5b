//! Endpoint routes: create, update, list, get and delete endpoints, set their traffic
//! policy, read their variant stats, post labels and read the prediction log. Bodies are
//! returned as JSON values; the server's OpenAPI document describes their shape.

use reqwest::Method;
use serde_json::Value;

use super::{ApiResponse, Client};
use crate::error::ClientError;

impl Client {
    /// Creates an endpoint; `body` has `name`, `model`, `version` and optionally
    /// `feature_service`, `execution_provider` and `description`.
    pub async fn create_endpoint(
        &self,
        project: &str,
        body: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(&["api", "v1", "projects", project, "endpoints"], body)
            .await
    }

    /// Deploys another model version (or other settings) on an endpoint.
    pub async fn update_endpoint(
        &self,
        project: &str,
        endpoint: &str,
        body: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let url = self.url(&["api", "v1", "projects", project, "endpoints", endpoint])?;
        self.execute(self.http.request(Method::PUT, url.clone()).json(body), &url)
            .await
    }

    pub async fn list_endpoints(&self, project: &str) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&["api", "v1", "projects", project, "endpoints"])
            .await
    }

    pub async fn get_endpoint(
        &self,
        project: &str,
        endpoint: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&["api", "v1", "projects", project, "endpoints", endpoint])
            .await
    }

    pub async fn delete_endpoint(
        &self,
        project: &str,
        endpoint: &str,
    ) -> Result<ApiResponse<()>, ClientError> {
        let url = self.url(&["api", "v1", "projects", project, "endpoints", endpoint])?;
        self.execute(self.http.request(Method::DELETE, url.clone()), &url)
            .await
    }

    /// Posts labels: `labels` is a list of `{"request_id", "row", "label"}` objects.
    pub async fn post_labels(
        &self,
        project: &str,
        endpoint: &str,
        labels: &[Value],
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(
            &[
                "api",
                "v1",
                "projects",
                project,
                "endpoints",
                endpoint,
                "labels",
            ],
            &serde_json::json!({ "labels": labels }),
        )
        .await
    }

    /// Sets an endpoint's traffic settings; `body` has any of `policy`, `variants`,
    /// `shadow` (`null` removes it) and `follow_alias` (`null` stops following).
    pub async fn set_endpoint_policy(
        &self,
        project: &str,
        endpoint: &str,
        body: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let url = self.url(&[
            "api",
            "v1",
            "projects",
            project,
            "endpoints",
            endpoint,
            "policy",
        ])?;
        self.execute(self.http.request(Method::PUT, url.clone()).json(body), &url)
            .await
    }

    /// Reads each variant's live stats, summed over every replica.
    pub async fn endpoint_stats(
        &self,
        project: &str,
        endpoint: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&[
            "api",
            "v1",
            "projects",
            project,
            "endpoints",
            endpoint,
            "stats",
        ])
        .await
    }

    /// Reads the newest prediction log rows, newest first.
    pub async fn endpoint_predictions(
        &self,
        project: &str,
        endpoint: &str,
        limit: u32,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let url = self.url(&[
            "api",
            "v1",
            "projects",
            project,
            "endpoints",
            endpoint,
            "predictions",
        ])?;
        self.execute(
            self.http
                .get(url.clone())
                .query(&[("limit", limit.to_string())]),
            &url,
        )
        .await
    }
}
