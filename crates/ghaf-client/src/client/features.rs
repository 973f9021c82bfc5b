//! Feature store routes: definitions, plans and applies, view versions, training sets,
//! materialisation and online reads. Bodies are returned as JSON values; the server's
//! OpenAPI document describes their shape.

use serde_json::Value;

use super::{ApiResponse, Client};
use crate::error::ClientError;

impl Client {
    pub async fn list_features(&self, project: &str) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&["api", "v1", "projects", project, "features"])
            .await
    }

    /// Plans definitions without writing; `definitions` has `entities`, `feature_views` and
    /// `feature_services`.
    pub async fn plan_features(
        &self,
        project: &str,
        definitions: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let body = serde_json::json!({ "definitions": definitions });
        self.post(
            &["api", "v1", "projects", project, "features", "plan"],
            &body,
        )
        .await
    }

    /// Applies definitions.
    pub async fn apply_features(
        &self,
        project: &str,
        definitions: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let body = serde_json::json!({ "definitions": definitions });
        self.post(
            &["api", "v1", "projects", project, "features", "apply"],
            &body,
        )
        .await
    }

    pub async fn feature_view_versions(
        &self,
        project: &str,
        view: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&[
            "api",
            "v1",
            "projects",
            project,
            "feature-views",
            view,
            "versions",
        ])
        .await
    }

    /// Materialises a view; `body` has optional `version`, `start` and `end`.
    pub async fn materialize_features(
        &self,
        project: &str,
        view: &str,
        body: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(
            &[
                "api",
                "v1",
                "projects",
                project,
                "feature-views",
                view,
                "materialize",
            ],
            body,
        )
        .await
    }

    /// Builds a training set; see the server's `TrainingSetBody`.
    pub async fn create_training_set(
        &self,
        project: &str,
        body: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(&["api", "v1", "projects", project, "training-sets"], body)
            .await
    }

    /// Reads online features; `body` is Feast's request shape.
    pub async fn get_online_features(
        &self,
        project: &str,
        body: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(
            &["api", "v1", "projects", project, "get-online-features"],
            body,
        )
        .await
    }
}
