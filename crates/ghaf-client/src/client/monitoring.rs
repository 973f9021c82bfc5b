//! Monitoring routes: monitors, evaluation, reports, alert rules, alerts and ad-hoc drift.
//! Bodies are returned as JSON values; the server's OpenAPI document describes their shape.

use reqwest::Method;
use serde_json::Value;

use super::{ApiResponse, Client};
use crate::error::ClientError;

impl Client {
    /// Creates a monitor; `spec` is the monitor spec as JSON.
    pub async fn create_monitor(
        &self,
        project: &str,
        spec: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(&["api", "v1", "projects", project, "monitors"], spec)
            .await
    }

    pub async fn list_monitors(&self, project: &str) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&["api", "v1", "projects", project, "monitors"])
            .await
    }

    pub async fn get_monitor(
        &self,
        project: &str,
        monitor: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&["api", "v1", "projects", project, "monitors", monitor])
            .await
    }

    /// Replaces a monitor's spec; the server fits its reference again.
    pub async fn update_monitor(
        &self,
        project: &str,
        monitor: &str,
        spec: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let url = self.url(&["api", "v1", "projects", project, "monitors", monitor])?;
        self.execute(self.http.request(Method::PUT, url.clone()).json(spec), &url)
            .await
    }

    pub async fn delete_monitor(
        &self,
        project: &str,
        monitor: &str,
    ) -> Result<ApiResponse<()>, ClientError> {
        let url = self.url(&["api", "v1", "projects", project, "monitors", monitor])?;
        self.execute(self.http.request(Method::DELETE, url.clone()), &url)
            .await
    }

    /// Evaluates a monitor now and returns the stored evaluation with its report.
    pub async fn evaluate_monitor(
        &self,
        project: &str,
        monitor: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(
            &[
                "api", "v1", "projects", project, "monitors", monitor, "evaluate",
            ],
            &serde_json::json!({}),
        )
        .await
    }

    /// Lists stored reports, newest first, with plot-ready series.
    pub async fn monitor_reports(
        &self,
        project: &str,
        monitor: &str,
        limit: Option<u32>,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let url = self.url(&[
            "api", "v1", "projects", project, "monitors", monitor, "reports",
        ])?;
        let query: Vec<(&str, String)> = limit
            .map(|limit| vec![("limit", limit.to_string())])
            .unwrap_or_default();
        self.execute(self.http.get(url.clone()).query(&query), &url)
            .await
    }

    pub async fn list_alert_rules(
        &self,
        project: &str,
        monitor: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&[
            "api",
            "v1",
            "projects",
            project,
            "monitors",
            monitor,
            "alert-rules",
        ])
        .await
    }

    /// Creates an alert rule; the response contains the webhook signing secret, shown once.
    pub async fn create_alert_rule(
        &self,
        project: &str,
        monitor: &str,
        spec: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(
            &[
                "api",
                "v1",
                "projects",
                project,
                "monitors",
                monitor,
                "alert-rules",
            ],
            spec,
        )
        .await
    }

    pub async fn update_alert_rule(
        &self,
        project: &str,
        monitor: &str,
        rule: &str,
        spec: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let url = self.url(&[
            "api",
            "v1",
            "projects",
            project,
            "monitors",
            monitor,
            "alert-rules",
            rule,
        ])?;
        self.execute(self.http.request(Method::PUT, url.clone()).json(spec), &url)
            .await
    }

    pub async fn delete_alert_rule(
        &self,
        project: &str,
        monitor: &str,
        rule: &str,
    ) -> Result<ApiResponse<()>, ClientError> {
        let url = self.url(&[
            "api",
            "v1",
            "projects",
            project,
            "monitors",
            monitor,
            "alert-rules",
            rule,
        ])?;
        self.execute(self.http.request(Method::DELETE, url.clone()), &url)
            .await
    }

    /// Lists alerts, newest first, optionally only those in `state` (firing or resolved).
    pub async fn list_alerts(
        &self,
        project: &str,
        monitor: &str,
        state: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let url = self.url(&[
            "api", "v1", "projects", project, "monitors", monitor, "alerts",
        ])?;
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(state) = state {
            query.push(("state", state.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.execute(self.http.get(url.clone()).query(&query), &url)
            .await
    }

    pub async fn acknowledge_alert(
        &self,
        project: &str,
        monitor: &str,
        alert: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(
            &[
                "api", "v1", "projects", project, "monitors", monitor, "alerts", alert, "ack",
            ],
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn alert_deliveries(
        &self,
        project: &str,
        monitor: &str,
        alert: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&[
            "api",
            "v1",
            "projects",
            project,
            "monitors",
            monitor,
            "alerts",
            alert,
            "deliveries",
        ])
        .await
    }

    /// Computes drift between two dataset versions; `request` has `reference`, `current`,
    /// and optionally `features` and `mode`.
    pub async fn adhoc_drift(
        &self,
        project: &str,
        request: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(&["api", "v1", "projects", project, "drift"], request)
            .await
    }
}
