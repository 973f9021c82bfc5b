//! Endpoints of a project: deploy a registered model version, set the traffic policy over
//! its variants (A/B, canary weights, sticky keys, shadow), read its load status and live
//! variant stats, post labels of logged predictions and read the prediction log. Inference
//! itself is served by the Open Inference Protocol routes.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use ghaf_auth::{Action, Caller};
use ghaf_core::ErrorCode;
use ghaf_meta::Project;
use ghaf_serving::policy::{RolloutState, ShadowSpec, TrafficPolicy};
use ghaf_serving::{
    DeploySpec, EndpointInfo, EndpointScope, LabelInput, LabelOutcome, PolicyUpdate, ServeError,
    ServingService, Variant, VariantStatsView,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

pub fn register(api: &mut ApiRouter) {
    use Access::Action as A;
    const ENDPOINTS: &str = "/api/v1/projects/{project}/endpoints";
    const ENDPOINT: &str = "/api/v1/projects/{project}/endpoints/{endpoint}";
    api.add(
        RouteInfo::new(
            Method::POST,
            ENDPOINTS,
            A(Action::EndpointsDeploy),
            "Create an endpoint that serves a registered model version; the model loads in the background",
        )
        .request("CreateEndpointRequest")
        .response("EndpointView")
        .status(201),
        create,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            ENDPOINTS,
            A(Action::EndpointsList),
            "List the project's endpoints with their load status",
        )
        .response("EndpointList"),
        list,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            ENDPOINT,
            A(Action::EndpointsGet),
            "Get an endpoint with its load status (loading, ready, or failed with the reason)",
        )
        .response("EndpointView"),
        get,
    );
    api.add(
        RouteInfo::new(
            Method::PUT,
            ENDPOINT,
            A(Action::EndpointsDeploy),
            "Deploy another model version (or change settings) on an endpoint and reload it",
        )
        .request("UpdateEndpointRequest")
        .response("EndpointView"),
        update,
    );
    api.add(
        RouteInfo::new(
            Method::DELETE,
            ENDPOINT,
            A(Action::EndpointsDeploy),
            "Delete an endpoint; its prediction log and label datasets stay",
        )
        .status(204),
        delete,
    );
    api.add(
        RouteInfo::new(
            Method::PUT,
            "/api/v1/projects/{project}/endpoints/{endpoint}/policy",
            A(Action::EndpointsDeploy),
            "Set the traffic policy (single, A/B or canary), variants, shadow and followed alias of an endpoint; unchanged models stay loaded",
        )
        .request("PolicyRequest")
        .response("EndpointView"),
        set_policy,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/endpoints/{endpoint}/stats",
            A(Action::EndpointsGet),
            "Read each variant's requests, server errors, latency histogram and shadow comparisons, summed over every replica",
        )
        .response("EndpointStatsView"),
        stats,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/endpoints/{endpoint}/labels",
            A(Action::EndpointsLabel),
            "Store ground-truth labels of logged predictions in the dataset <endpoint>-labels",
        )
        .request("LabelsRequest")
        .response("LabelsResponse"),
        labels,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/endpoints/{endpoint}/predictions",
            A(Action::PredictionsRead),
            "Read the newest rows of the endpoint's prediction log, newest first",
        )
        .response("PredictionList")
        .query(&[("limit", "Maximum number of rows, 1 to 1000; default 100")]),
        predictions,
    );
}

/// Body of `POST /projects/{project}/endpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// Endpoint name: lowercase letters, digits and `-`, at most 51 characters.
    pub name: String,
    /// Registered model name.
    pub model: String,
    /// Registered model version; may be omitted with `follow_alias`, which then deploys
    /// the version the alias points at.
    #[serde(default)]
    pub version: Option<i64>,
    /// Registered model alias (such as `champion`) the endpoint follows: the rollout
    /// controller moves it to each version the alias is set to.
    #[serde(default)]
    pub follow_alias: Option<String>,
    /// Feature service whose online features are joined to each request.
    #[serde(default)]
    pub feature_service: Option<String>,
    /// `cpu` (default), `cuda` or `cuda:N`.
    #[serde(default)]
    pub execution_provider: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Body of `PUT /projects/{project}/endpoints/{endpoint}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpointRequest {
    pub model: String,
    pub version: i64,
    #[serde(default)]
    pub feature_service: Option<String>,
    #[serde(default)]
    pub execution_provider: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// An endpoint: its settings, variants and their status on the server that handled the request.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub name: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<String>,
    pub execution_provider: String,
    /// Routing: variants with model, version and weight.
    #[schema(value_type = Vec<Object>)]
    pub variants: Vec<ghaf_serving::Variant>,
    /// Traffic policy: `{"kind": "single"}`, `{"kind": "ab", ...}` or
    /// `{"kind": "canary", ...}`.
    #[schema(value_type = Object)]
    pub policy: TrafficPolicy,
    /// Variant that receives mirrored requests, and the share mirrored in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub shadow: Option<ShadowSpec>,
    /// Registered model alias the endpoint follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow_alias: Option<String>,
    /// State of the current or last automated rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rollout: Option<RolloutState>,
    /// Per variant: state (loading, ready, failed), whether it is the shadow, reason,
    /// load_ms, warmup_ms.
    #[schema(value_type = Vec<Object>)]
    pub status: Vec<ghaf_serving::VariantStatus>,
    /// Inputs a request carries, once the model is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub inputs: Option<Vec<ghaf_runtime::TensorMeta>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub outputs: Option<Vec<ghaf_runtime::TensorMeta>>,
    pub predictions_dataset: String,
    pub labels_dataset: String,
    pub generation: i64,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
}

impl From<EndpointInfo> for EndpointView {
    fn from(info: EndpointInfo) -> Self {
        let endpoint = info.endpoint;
        Self {
            name: endpoint.name,
            description: endpoint.description,
            feature_service: endpoint.feature_service,
            execution_provider: endpoint.execution_provider,
            variants: endpoint.variants,
            policy: endpoint.policy,
            shadow: endpoint.shadow,
            follow_alias: endpoint.follow_alias,
            rollout: endpoint.rollout,
            status: info.status,
            inputs: info.inputs,
            outputs: info.outputs,
            predictions_dataset: info.predictions_dataset,
            labels_dataset: info.labels_dataset,
            generation: endpoint.generation,
            created_at: ghaf_core::format_millis(endpoint.created_at),
            created_by: endpoint.created_by,
            updated_at: ghaf_core::format_millis(endpoint.updated_at),
            updated_by: endpoint.updated_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointView>,
}

/// Reads a field that may be absent (unchanged), `null` (removed) or set.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Body of `PUT .../endpoints/{endpoint}/policy`. Absent fields stay as they are;
/// `"shadow": null` removes the shadow and `"follow_alias": null` stops following.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    /// `{"kind": "single"}`, `{"kind": "ab", "sticky": {"from": "header", "name":
    /// "x-user-id"}}` or `{"kind": "canary", "steps": [5, 25, 50, 100], ...}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub policy: Option<TrafficPolicy>,
    /// The full list of variants: `{"name", "model", "version", "weight"}` each.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub variants: Option<Vec<Variant>>,
    /// `{"variant": "shadow", "percent": 10}`; the variant must be listed in `variants`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub shadow: Option<Option<ShadowSpec>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub follow_alias: Option<Option<String>>,
}

/// Live stats of an endpoint's variants, summed over every replica.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointStatsView {
    pub endpoint: String,
    /// Upper bounds of the latency buckets in microseconds; `latency_buckets` has one
    /// more entry, for slower requests.
    pub latency_bounds_us: Vec<u64>,
    /// Per variant: requests, errors, latency_buckets, shadow_compared, shadow_disagreed,
    /// error_rate, and p50_ms and p99_ms (the upper bound of the bucket that contains
    /// the quantile).
    #[schema(value_type = Vec<Object>)]
    pub variants: Vec<VariantStatsView>,
}

/// Body of `POST .../endpoints/{endpoint}/labels`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsRequest {
    /// `{"request_id": "...", "row": 0, "label": 1.0}`; `row` defaults to 0.
    #[schema(value_type = Vec<Object>)]
    pub labels: Vec<LabelInput>,
}

/// Result of posting labels.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelsResponse {
    pub received: u64,
    pub accepted: u64,
    /// Labels of a (request_id, row) labelled before; the first label is kept.
    pub duplicates: u64,
    /// Accepted labels whose request id is not in the prediction log (yet).
    pub unknown_request_ids: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_version: Option<i64>,
}

impl From<LabelOutcome> for LabelsResponse {
    fn from(outcome: LabelOutcome) -> Self {
        Self {
            received: outcome.received,
            accepted: outcome.accepted,
            duplicates: outcome.duplicates,
            unknown_request_ids: outcome.unknown_request_ids,
            dataset_version: outcome.dataset_version,
        }
    }
}

/// Rows of the prediction log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PredictionList {
    #[schema(value_type = Vec<Object>)]
    pub predictions: Vec<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictionsQuery {
    limit: Option<usize>,
}

impl From<ServeError> for ApiError {
    fn from(error: ServeError) -> Self {
        let details = match error.field() {
            Some(field) => serde_json::json!({ "field": field }),
            None => serde_json::Value::Null,
        };
        ApiError::new(error.code(), error.to_string()).with_details(details)
    }
}

fn service(state: &AppState) -> Result<&Arc<ServingService>, ApiError> {
    state.serving().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "serving is not configured on this server",
        )
    })
}

fn scope(project: &Project) -> EndpointScope {
    EndpointScope {
        tenant: project.tenant.clone(),
        project: project.id.clone(),
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<CreateEndpointRequest>,
) -> Result<(StatusCode, Json<EndpointView>), ApiError> {
    let spec = DeploySpec {
        model: body.model,
        // With 0, the service deploys the version `follow_alias` points at.
        version: body.version.unwrap_or(0),
        follow_alias: body.follow_alias,
        feature_service: body.feature_service,
        execution_provider: body.execution_provider,
        description: body.description,
    };
    let info = service(&state)?
        .create(
            &scope(&project),
            &project.name,
            &body.name,
            &spec,
            caller.principal.as_str(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(info.into())))
}

async fn list(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
) -> Result<Json<EndpointList>, ApiError> {
    let infos = service(&state)?.list(&scope(&project)).await?;
    Ok(Json(EndpointList {
        endpoints: infos.into_iter().map(Into::into).collect(),
    }))
}

async fn get(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
) -> Result<Json<EndpointView>, ApiError> {
    let info = service(&state)?.get(&scope(&project), &endpoint).await?;
    Ok(Json(info.into()))
}

async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UpdateEndpointRequest>,
) -> Result<Json<EndpointView>, ApiError> {
    let spec = DeploySpec {
        model: body.model,
        version: body.version,
        follow_alias: None,
        feature_service: body.feature_service,
        execution_provider: body.execution_provider,
        description: body.description,
    };
    let info = service(&state)?
        .update(
            &scope(&project),
            &endpoint,
            &spec,
            caller.principal.as_str(),
        )
        .await?;
    Ok(Json(info.into()))
}

async fn set_policy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PolicyRequest>,
) -> Result<Json<EndpointView>, ApiError> {
    let update = PolicyUpdate {
        policy: body.policy,
        variants: body.variants,
        shadow: body.shadow,
        follow_alias: body.follow_alias,
    };
    let info = service(&state)?
        .set_policy(
            &scope(&project),
            &endpoint,
            update,
            caller.principal.as_str(),
        )
        .await?;
    Ok(Json(info.into()))
}

async fn stats(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
) -> Result<Json<EndpointStatsView>, ApiError> {
    let stats = service(&state)?
        .variant_stats(&scope(&project), &endpoint)
        .await?;
    Ok(Json(EndpointStatsView {
        endpoint,
        latency_bounds_us: ghaf_serving::policy::LATENCY_BOUNDS_US.to_vec(),
        variants: stats.into_iter().map(VariantStatsView::from).collect(),
    }))
}

async fn delete(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    service(&state)?.delete(&scope(&project), &endpoint).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn labels(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<LabelsRequest>,
) -> Result<Json<LabelsResponse>, ApiError> {
    let outcome = service(&state)?
        .post_labels(
            &scope(&project),
            &endpoint,
            &body.labels,
            caller.principal.as_str(),
        )
        .await?;
    Ok(Json(outcome.into()))
}

async fn predictions(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, endpoint)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<PredictionsQuery>,
) -> Result<Json<PredictionList>, ApiError> {
    let rows = service(&state)?
        .recent_predictions(&scope(&project), &endpoint, query.limit.unwrap_or(100))
        .await?;
    Ok(Json(PredictionList { predictions: rows }))
}
