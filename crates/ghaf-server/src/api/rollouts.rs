//! Rollouts of an endpoint: start a canary to a model version, promote, pause, resume or
//! abort it, read the endpoint's history with the evidence of each decision, and read the
//! A/B analysis of its variants.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ghaf_auth::{Action, Caller};
use ghaf_core::ErrorCode;
use ghaf_meta::Project;
use ghaf_rollout::canary::ManualAction;
use ghaf_rollout::{AnalysisRequest, RolloutError, RolloutService, StartRequest};
use ghaf_serving::policy::{CanarySpec, RolloutState, TrafficPolicy};
use ghaf_serving::{Endpoint, EndpointScope, Variant};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::AuditEntryView;
use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

const ROLLOUT: &str = "/api/v1/projects/{project}/endpoints/{endpoint}/rollout";

pub fn register(api: &mut ApiRouter) {
    use Access::Action as A;
    api.add(
        RouteInfo::new(
            Method::POST,
            ROLLOUT,
            A(Action::EndpointsDeploy),
            "Start a canary from the version the endpoint serves to another model version",
        )
        .request("StartRolloutRequest")
        .response("RolloutView")
        .status(201),
        start,
    );
    for (path, summary, handler) in [
        (
            "/api/v1/projects/{project}/endpoints/{endpoint}/rollout/promote",
            "Promote the rollout's candidate to all traffic, skipping the remaining steps",
            ManualAction::Promote,
        ),
        (
            "/api/v1/projects/{project}/endpoints/{endpoint}/rollout/pause",
            "Pause the rollout: traffic keeps its weights and no check is judged",
            ManualAction::Pause,
        ),
        (
            "/api/v1/projects/{project}/endpoints/{endpoint}/rollout/resume",
            "Resume a paused rollout; the current step runs again on a new check window",
            ManualAction::Resume,
        ),
        (
            "/api/v1/projects/{project}/endpoints/{endpoint}/rollout/abort",
            "Abort the rollout: all traffic goes back to the stable version at once",
            ManualAction::Abort,
        ),
    ] {
        let info = RouteInfo::new(Method::POST, path, A(Action::EndpointsDeploy), summary)
            .response("RolloutView");
        match handler {
            ManualAction::Promote => api.add(info, promote),
            ManualAction::Pause => api.add(info, pause),
            ManualAction::Resume => api.add(info, resume),
            ManualAction::Abort => api.add(info, abort),
        }
    }
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/endpoints/{endpoint}/history",
            A(Action::EndpointsGet),
            "List the endpoint's rollout decisions with their evidence and its recorded changes, newest last",
        )
        .response("EndpointHistory")
        .query(&[(
            "limit",
            "Maximum number of entries, the newest ones, 1 to 1000; default 100",
        )]),
        history,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/endpoints/{endpoint}/analysis",
            A(Action::EndpointsGet),
            "Compare the endpoint's variants: requests, errors, latency and quality with significance tests",
        )
        .response("AnalysisView")
        .query(&[
            (
                "since",
                "Join predictions logged at or after this time (RFC 3339) with labels; default: the endpoint's last change",
            ),
            ("metric", "Quality metric: accuracy, auc, rmse or mae; default: the policy's"),
            (
                "min_samples",
                "Requests (and labelled rows) each variant needs before a winner is called",
            ),
            ("confidence", "Confidence level of the tests, such as 0.95"),
        ]),
        analysis,
    );
}

/// Body of `POST .../endpoints/{endpoint}/rollout`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRolloutRequest {
    /// Registered model of the candidate; the model the endpoint serves when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Registered model version of the candidate.
    pub version: i64,
    /// Canary settings (`steps`, `interval_secs`, `min_requests`, `failure_threshold`,
    /// `checks`) that replace the endpoint's policy; the endpoint's canary policy when
    /// absent.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub canary: Option<CanarySpec>,
}

/// An endpoint's routing and its current or last rollout.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutView {
    pub endpoint: String,
    pub generation: i64,
    /// The traffic policy: `{"kind": "single" | "ab" | "canary", ...}`.
    #[schema(value_type = Object)]
    pub policy: TrafficPolicy,
    /// Variants with model, version and weight.
    #[schema(value_type = Vec<Object>)]
    pub variants: Vec<Variant>,
    /// Rollout id, status, stable and candidate versions, step, failures and the reason of
    /// the last decision.
    #[schema(value_type = Option<Object>)]
    pub rollout: Option<RolloutState>,
}

impl From<Endpoint> for RolloutView {
    fn from(endpoint: Endpoint) -> Self {
        let rollout = endpoint.rollout.map(|mut state| {
            // The baseline counters are internal to the controller and can be long.
            state.baseline.clear();
            state
        });
        Self {
            endpoint: endpoint.name,
            generation: endpoint.generation,
            policy: endpoint.policy,
            variants: endpoint.variants,
            rollout,
        }
    }
}

/// The history of an endpoint, newest last.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointHistory {
    pub entries: Vec<AuditEntryView>,
}

/// The A/B analysis of an endpoint's variants.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalysisView {
    pub endpoint: String,
    /// Per variant: requests, errors, error_rate, p50_ms, p99_ms, logged, labelled and the
    /// quality metric's value.
    #[schema(value_type = Vec<Object>)]
    pub variants: Vec<ghaf_rollout::analysis::VariantSummary>,
    /// Per metric (error rate, then the quality metric): the tests of the best variant
    /// against the others, the winner, the samples still needed and the verdict in words.
    #[schema(value_type = Vec<Object>)]
    pub verdicts: Vec<ghaf_rollout::analysis::MetricVerdict>,
    /// Winner of the quality metric when one is set, else of the error rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
    pub confidence: f64,
    pub min_samples: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalysisQuery {
    since: Option<String>,
    metric: Option<String>,
    min_samples: Option<u64>,
    confidence: Option<f64>,
}

impl From<RolloutError> for ApiError {
    fn from(error: RolloutError) -> Self {
        let details = match error.field() {
            Some(field) => serde_json::json!({ "field": field }),
            None => serde_json::Value::Null,
        };
        ApiError::new(error.code(), error.to_string()).with_details(details)
    }
}

fn service(state: &AppState) -> Result<RolloutService, ApiError> {
    let unavailable = || {
        ApiError::new(
            ErrorCode::Unavailable,
            "serving is not configured on this server, so endpoints have no rollouts",
        )
    };
    let serving: Arc<ghaf_serving::ServingService> =
        state.serving().ok_or_else(unavailable)?.clone();
    let tracking = state.tracking().ok_or_else(unavailable)?.clone();
    let ingest = state.ingest().ok_or_else(unavailable)?.clone();
    Ok(RolloutService::new(
        serving,
        tracking,
        state.store_handle(),
        ingest,
    ))
}

fn scope(project: &Project) -> EndpointScope {
    EndpointScope {
        tenant: project.tenant.clone(),
        project: project.id.clone(),
    }
}

async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<StartRolloutRequest>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    let request = StartRequest {
        model: body.model,
        version: body.version,
        canary: body.canary,
    };
    let updated = service(&state)?
        .start(
            &scope(&project),
            &endpoint,
            &request,
            caller.principal.as_str(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(updated.into())))
}

async fn act(
    state: &AppState,
    caller: &Caller,
    project: &Project,
    endpoint: &str,
    action: ManualAction,
) -> Result<Json<RolloutView>, ApiError> {
    let updated = service(state)?
        .act(&scope(project), endpoint, action, caller.principal.as_str())
        .await?;
    Ok(Json(updated.into()))
}

async fn promote(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
) -> Result<Json<RolloutView>, ApiError> {
    act(&state, &caller, &project, &endpoint, ManualAction::Promote).await
}

async fn pause(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
) -> Result<Json<RolloutView>, ApiError> {
    act(&state, &caller, &project, &endpoint, ManualAction::Pause).await
}

async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
) -> Result<Json<RolloutView>, ApiError> {
    act(&state, &caller, &project, &endpoint, ManualAction::Resume).await
}

async fn abort(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
) -> Result<Json<RolloutView>, ApiError> {
    act(&state, &caller, &project, &endpoint, ManualAction::Abort).await
}

async fn history(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<EndpointHistory>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=ghaf_rollout::evidence::MAX_HISTORY).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "limit is {limit}; ask for 1 to {} entries",
                ghaf_rollout::evidence::MAX_HISTORY
            ),
        )
        .with_details(serde_json::json!({ "field": "limit" })));
    }
    let entries = service(&state)?
        .history(&scope(&project), &endpoint, limit)
        .await?;
    Ok(Json(EndpointHistory {
        entries: entries.into_iter().map(Into::into).collect(),
    }))
}

async fn analysis(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<AnalysisQuery>,
) -> Result<Json<AnalysisView>, ApiError> {
    let since = match query.since.as_deref() {
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|error| {
                    ApiError::new(
                        ErrorCode::InvalidArgument,
                        format!(
                            "since {text:?} is not an RFC 3339 time ({error}); use a time such as 2026-01-31T12:00:00Z"
                        ),
                    )
                    .with_details(serde_json::json!({ "field": "since" }))
                })?
                .timestamp_millis(),
        ),
        None => None,
    };
    let request = AnalysisRequest {
        since,
        metric: query.metric,
        min_samples: query.min_samples,
        confidence: query.confidence,
    };
    let analysis = service(&state)?
        .analysis(&scope(&project), &endpoint, &request)
        .await?;
    Ok(Json(AnalysisView {
        endpoint,
        variants: analysis.variants,
        verdicts: analysis.verdicts,
        winner: analysis.winner,
        confidence: analysis.confidence,
        min_samples: analysis.min_samples,
        metric: analysis.metric,
    }))
}
