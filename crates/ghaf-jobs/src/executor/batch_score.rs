//! The `batch_score` executor: scores a dataset version with a registered model version
//! through the serving loader (which verifies the signed manifest first) and stores the
//! scores as a new dataset version.

use async_trait::async_trait;
use ghaf_serving::batch::{BatchRequest, score};
use ghaf_serving::loader::RegistryLoader;
use ghaf_tracking::{Scope, TrackingError};
use serde_json::{Value, json};

use super::{ExecError, Executor, JobContext};
use crate::JobKind;

/// Runs `batch_score` jobs inside the worker process.
pub struct BatchScoreExecutor;

#[async_trait]
impl Executor for BatchScoreExecutor {
    async fn run(&self, context: &JobContext) -> Result<Value, ExecError> {
        let job = &context.job;
        let JobKind::BatchScore {
            dataset,
            dataset_version,
            model,
            model_version,
            model_alias,
            output_dataset,
            passthrough,
            chunk_rows,
        } = &job.spec.kind
        else {
            return Err(ExecError::permanent(
                "the batch_score executor received a job of another kind",
            ));
        };
        let services = &context.services;
        let scope = Scope {
            tenant: job.tenant.clone(),
            project: job.project.clone(),
        };
        let version = match (model_version, model_alias) {
            (Some(version), _) => *version,
            (None, Some(alias)) => {
                services
                    .tracking
                    .store()
                    .get_version_by_alias(&scope, model, alias)
                    .await
                    .map_err(|error| match error {
                        TrackingError::NotFound { .. } => ExecError::permanent(format!(
                            "model {model:?} has no version with alias {alias:?}"
                        )),
                        other => ExecError::transient(format!("cannot resolve the alias: {other}")),
                    })?
                    .version
            }
            (None, None) => {
                return Err(ExecError::permanent("give model_version or model_alias"));
            }
        };
        let project = services
            .meta
            .get_project(&job.tenant, &job.project)
            .await
            .map_err(|error| ExecError::transient(format!("cannot read the project: {error}")))?
            .ok_or_else(|| ExecError::permanent("the job's project no longer exists"))?;
        let request = BatchRequest {
            tenant: job.tenant.clone(),
            project: job.project.clone(),
            project_name: project.name,
            dataset: dataset.clone(),
            dataset_version: *dataset_version,
            model: model.clone(),
            model_version: version,
            output_dataset: output_dataset.clone(),
            passthrough: passthrough.clone(),
            chunk_rows: *chunk_rows,
            execution_provider: "cpu".to_owned(),
            actor: job.created_by.clone(),
        };
        // The server's runtime options (ONNX Runtime library, threads) apply to jobs too.
        let loader = RegistryLoader::new(services.tracking.clone())
            .with_options(ghaf_serving::loader::process_runtime_options());
        let log = context.log.clone();
        let progress = move |line: String| log.system(line);
        let outcome = score(&services.ingest, &loader, &request, &progress)
            .await
            .map_err(|error| ExecError::Failed {
                message: error.message,
                retryable: error.retryable,
            })?;
        context.log.system(format!(
            "stored {} rows as {}@{}",
            outcome.rows, outcome.output_dataset, outcome.output_version
        ));
        Ok(json!({
            "output": {"dataset": outcome.output_dataset, "version": outcome.output_version},
            "rows": outcome.rows,
            "columns": outcome.columns,
            "lineage": {
                "input": format!("dataset:{}@{}", outcome.input, outcome.input_version),
                "model": format!("model:{}@{}", outcome.model, outcome.model_version),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::{JobKind, JobSpec};

    fn spec(kind: serde_json::Value) -> Result<JobSpec, crate::JobError> {
        JobSpec::from_json(serde_json::json!({"name": "score", "kind": kind}))
    }

    #[test]
    fn batch_score_spec_gets_defaults() {
        let parsed = spec(serde_json::json!({
            "type": "batch_score",
            "dataset": "applications",
            "model": "fraud",
            "model_alias": "champion",
            "output_dataset": "application-scores",
        }))
        .unwrap();
        assert_eq!(parsed.kind.name(), "batch_score");
        let JobKind::BatchScore {
            chunk_rows,
            dataset_version,
            ..
        } = parsed.kind
        else {
            panic!("batch_score kind expected");
        };
        assert_eq!(chunk_rows, 10_000);
        assert_eq!(dataset_version, None);
    }

    #[test]
    fn batch_score_spec_needs_one_model_reference() {
        let both = spec(serde_json::json!({
            "type": "batch_score",
            "dataset": "applications",
            "model": "fraud",
            "model_version": 2,
            "model_alias": "champion",
            "output_dataset": "scores",
        }))
        .unwrap_err();
        assert_eq!(both.field(), Some("kind.model_version"));
        let bad_output = spec(serde_json::json!({
            "type": "batch_score",
            "dataset": "applications",
            "model": "fraud",
            "model_version": 2,
            "output_dataset": "Scores!",
        }))
        .unwrap_err();
        assert_eq!(bad_output.field(), Some("kind.output_dataset"));
    }
}
