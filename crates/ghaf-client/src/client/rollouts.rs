//! Rollout routes of an endpoint: start a canary, promote, pause, resume or abort it, read
//! the endpoint's history and the A/B analysis of its variants.

use serde_json::Value;

use super::{ApiResponse, Client};
use crate::error::ClientError;

impl Client {
    /// Starts a canary; `body` has `version` and optionally `model` and `canary` (steps,
    /// interval_secs, min_requests, failure_threshold, checks).
    pub async fn start_rollout(
        &self,
        project: &str,
        endpoint: &str,
        body: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(
            &[
                "api",
                "v1",
                "projects",
                project,
                "endpoints",
                endpoint,
                "rollout",
            ],
            body,
        )
        .await
    }

    /// Runs `promote`, `pause`, `resume` or `abort` on the endpoint's rollout.
    pub async fn rollout_action(
        &self,
        project: &str,
        endpoint: &str,
        action: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(
            &[
                "api",
                "v1",
                "projects",
                project,
                "endpoints",
                endpoint,
                "rollout",
                action,
            ],
            &serde_json::json!({}),
        )
        .await
    }

    /// Lists the newest `limit` history entries of an endpoint, newest last.
    pub async fn endpoint_history(
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
            "history",
        ])?;
        self.execute(
            self.http
                .get(url.clone())
                .query(&[("limit", limit.to_string())]),
            &url,
        )
        .await
    }

    /// Reads the A/B analysis; `query` contains `since`, `metric`, `min_samples` or
    /// `confidence` pairs.
    pub async fn endpoint_analysis(
        &self,
        project: &str,
        endpoint: &str,
        query: &[(&str, String)],
    ) -> Result<ApiResponse<Value>, ClientError> {
        let url = self.url(&[
            "api",
            "v1",
            "projects",
            project,
            "endpoints",
            endpoint,
            "analysis",
        ])?;
        self.execute(self.http.get(url.clone()).query(query), &url)
            .await
    }
}
