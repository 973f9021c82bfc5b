//! OpenLineage run events (spec 2-0-2) for ingest runs: START when a run begins, COMPLETE
//! with the stored version, FAIL with the error. Each event names the input and the output
//! dataset, and the output carries a schema facet.

use ghaf_core::TenantId;
use serde_json::{Value, json};

use crate::schema::DatasetSchema;

/// URL that identifies Ghaf as the producer of an event, as the spec requires.
pub const PRODUCER: &str = "https://github.com/ghaf-platform/ghaf/tree/main/crates/ghaf-ingest";
const RUN_EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const SCHEMA_FACET: &str =
    "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
const VERSION_FACET: &str = "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet";
const ERROR_FACET: &str = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";

/// The run state an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Start,
    Complete,
    Fail,
    /// The run was stopped before it finished (server shutdown, or the request ended).
    Abort,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Start => "START",
            RunState::Complete => "COMPLETE",
            RunState::Fail => "FAIL",
            RunState::Abort => "ABORT",
        }
    }
}

/// What an ingest run event describes.
pub struct IngestRun<'a> {
    pub run_id: &'a str,
    pub tenant: &'a TenantId,
    pub project: &'a str,
    pub dataset: &'a str,
    pub schema: &'a DatasetSchema,
    /// Where the input came from: a file path or `upload:<name>`.
    pub source: &'a str,
}

impl IngestRun<'_> {
    /// Namespace of Ghaf's datasets and jobs in a project: `ghaf://<tenant>/<project>`.
    pub fn namespace(&self) -> String {
        format!("ghaf://{}/{}", self.tenant, self.project)
    }

    /// Name of the ingest job of the dataset.
    pub fn job_name(&self) -> String {
        format!("ingest.{}", self.dataset)
    }

    /// Builds the run event for `state`. `version` is the stored version for COMPLETE and
    /// `error` the message for FAIL and ABORT.
    pub fn event(
        &self,
        state: RunState,
        event_time: &str,
        version: Option<i64>,
        error: Option<&str>,
    ) -> Value {
        let fields: Vec<Value> = self
            .schema
            .columns
            .iter()
            .map(|column| {
                let mut field = json!({ "name": column.name, "type": column.column_type.as_str() });
                if !column.description.is_empty() {
                    field["description"] = column.description.clone().into();
                }
                field
            })
            .collect();
        let mut output_facets = json!({
            "schema": { "_producer": PRODUCER, "_schemaURL": SCHEMA_FACET, "fields": fields },
        });
        if let Some(version) = version {
            output_facets["version"] = json!({
                "_producer": PRODUCER,
                "_schemaURL": VERSION_FACET,
                "datasetVersion": version.to_string(),
            });
        }
        let mut run = json!({ "runId": self.run_id });
        if let Some(message) = error {
            run["facets"] = json!({
                "errorMessage": {
                    "_producer": PRODUCER,
                    "_schemaURL": ERROR_FACET,
                    "message": message,
                    "programmingLanguage": "rust",
                }
            });
        }
        let (input_namespace, input_name) = match self.source.split_once(':') {
            Some(("upload", name)) => ("upload".to_owned(), name.to_owned()),
            // OpenLineage names an S3 object by namespace `s3://bucket` and its key.
            Some(("s3", rest)) => match rest.trim_start_matches('/').split_once('/') {
                Some((bucket, key)) => (format!("s3://{bucket}"), key.to_owned()),
                None => ("file".to_owned(), self.source.to_owned()),
            },
            _ => ("file".to_owned(), self.source.to_owned()),
        };
        json!({
            "eventType": state.as_str(),
            "eventTime": event_time,
            "run": run,
            "job": { "namespace": self.namespace(), "name": self.job_name() },
            "inputs": [{ "namespace": input_namespace, "name": input_name }],
            "outputs": [{ "namespace": self.namespace(), "name": self.dataset, "facets": output_facets }],
            "producer": PRODUCER,
            "schemaURL": RUN_EVENT_SCHEMA,
        })
    }
}
