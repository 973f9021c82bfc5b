//! Feature store: plan and apply definitions, list them with their versions, build
//! point-in-time training sets, materialise views into the online store, and read online
//! features in Feast's request and response shape.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use ghaf_auth::{Action, Caller};
use ghaf_core::ErrorCode;
use ghaf_features::{
    Definitions, EntitySource, FeatureError, FeatureSelection, FeatureStore, OnlineRequest,
    OnlineResponse, TrainingSetRequest,
};
use ghaf_meta::Project;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

pub fn register(api: &mut ApiRouter) {
    use Access::Action as A;
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/features",
            A(Action::FeaturesRead),
            "List the project's entities, feature views (latest versions) and feature services",
        )
        .response("FeatureRegistryView"),
        list_definitions,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/features/plan",
            A(Action::FeaturesRead),
            "Compare definitions with the stored ones and check them against their datasets, \
             without writing",
        )
        .request("ApplyFeaturesRequest")
        .response("FeaturePlanView"),
        plan,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/features/apply",
            A(Action::FeaturesApply),
            "Apply definitions: a changed schema or transformation makes a new view version",
        )
        .request("ApplyFeaturesRequest")
        .response("FeaturePlanView"),
        apply,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/feature-views/{view}/versions",
            A(Action::FeaturesRead),
            "List every version of a feature view, with the materialised intervals of the latest",
        )
        .response("FeatureViewVersionsView"),
        list_versions,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/training-sets",
            A(Action::FeaturesTrainingSetCreate),
            "Build a point-in-time training set for the rows of a dataset version and store it \
             as a new version of the output dataset",
        )
        .request("TrainingSetBody")
        .response("TrainingSetView")
        .status(201),
        training_set,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/feature-views/{view}/materialize",
            A(Action::FeaturesMaterialize),
            "Write the latest row per key of an event-time range to the online store; without \
             `start`, continue from the last materialised interval",
        )
        .request("MaterializeBody")
        .response("MaterializeView"),
        materialize,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/get-online-features",
            A(Action::FeaturesOnlineRead),
            "Read online features in Feast's shape: join keys first, then the features in the \
             requested order, each with values, statuses and event timestamps",
        )
        .request("OnlineFeaturesRequest")
        .response("OnlineFeaturesResponse"),
        get_online_features,
    );
    // Feast clients post to these paths at the server root; the project comes from the
    // `X-Ghaf-Project` header, else the token's project, else the bootstrap project.
    api.add(
        RouteInfo::new(
            Method::POST,
            "/get-online-features",
            A(Action::FeaturesOnlineRead),
            "Feast-compatible path of `get-online-features`; the project comes from the \
             X-Ghaf-Project header",
        )
        .project_from_header()
        .request("OnlineFeaturesRequest")
        .response("OnlineFeaturesResponse"),
        get_online_features,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/push",
            A(Action::FeaturesPush),
            "Feast-compatible path of `push`; the project comes from the X-Ghaf-Project header",
        )
        .project_from_header()
        .request("FeaturePushRequest")
        .response("FeaturePushResponse"),
        push,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/push",
            A(Action::FeaturesPush),
            "Push rows in Feast's shape for the dataset `push_source_name`: offline as a \
             validated segment, online into every online view over the dataset, or both",
        )
        .request("FeaturePushRequest")
        .response("FeaturePushResponse"),
        push,
    );
}

/// Feast's push request. `push_source_name` names the dataset the rows belong to.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FeaturePushRequest {
    pub push_source_name: String,
    /// Columns of values, one value per row.
    #[schema(value_type = Object)]
    pub df: serde_json::Map<String, serde_json::Value>,
    /// `online`, `offline` or `online_and_offline`; Feast's default is `online`.
    #[serde(default = "default_push_target")]
    #[schema(value_type = String)]
    pub to: ghaf_features::PushTarget,
    /// Accepted for Feast compatibility and ignored: Ghaf reads definitions from the
    /// database on every push.
    #[serde(default)]
    pub allow_registry_cache: Option<bool>,
    /// Accepted for Feast compatibility and ignored: Ghaf has no on-demand views.
    #[serde(default)]
    pub transform_on_write: Option<bool>,
}

fn default_push_target() -> ghaf_features::PushTarget {
    ghaf_features::PushTarget::Online
}

/// Result of a push.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeaturePushResponse {
    /// The offline push: accepted, duplicate and dead-lettered counts and the segment.
    #[schema(value_type = Option<Object>)]
    pub offline: Option<ghaf_ingest::PushOutcome>,
    /// Online writes per view: `view`, `version`, `written`, `skipped` (older than stored).
    #[schema(value_type = Vec<Object>)]
    pub online: Vec<ghaf_features::OnlinePush>,
    /// Online views over the dataset left out because they have rolling aggregations.
    pub skipped_views: Vec<String>,
}

/// Body of the plan and apply routes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyFeaturesRequest {
    /// `entities`, `feature_views` and `feature_services`, as in a definitions file.
    #[schema(value_type = Object)]
    pub definitions: serde_json::Value,
}

/// The changes an apply makes (or made).
#[derive(Debug, Serialize, ToSchema)]
pub struct FeaturePlanView {
    /// One entry per object: `kind`, `name`, `action` (`create`, `new_version`, `update`,
    /// `unchanged`) and the changed `fields`.
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<ghaf_features::PlannedChange>,
    /// Stored objects the definitions do not mention; apply keeps them.
    pub kept: Vec<String>,
    /// The plan as a diff, as `ghaf features apply` prints it.
    pub text: String,
    /// Whether the definitions were written.
    pub applied: bool,
}

/// The stored definitions of a project.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureRegistryView {
    #[schema(value_type = Vec<Object>)]
    pub entities: Vec<ghaf_features::Entity>,
    /// The latest version of each view.
    #[schema(value_type = Vec<Object>)]
    pub feature_views: Vec<ghaf_features::StoredView>,
    #[schema(value_type = Vec<Object>)]
    pub feature_services: Vec<ghaf_features::FeatureServiceSpec>,
}

/// Versions of one view.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureViewVersionsView {
    /// Oldest first.
    #[schema(value_type = Vec<Object>)]
    pub versions: Vec<ghaf_features::StoredView>,
    /// Materialisation runs of the latest version, the latest end first.
    #[schema(value_type = Vec<Object>)]
    pub materializations: Vec<ghaf_features::Materialization>,
}

/// Body of `POST /projects/{project}/training-sets`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingSetBody {
    /// Dataset whose rows are the entity table: join keys, a timestamp, and pass-through
    /// columns such as labels.
    pub entity_dataset: String,
    /// Version of the entity dataset; the latest when unset.
    #[serde(default)]
    pub entity_version: Option<i64>,
    /// Feature references `view:feature` or `view@vN:feature`; or give `feature_service`.
    #[serde(default)]
    pub features: Option<Vec<String>>,
    #[serde(default)]
    pub feature_service: Option<String>,
    /// Entity-table column with each row's lookup time; defaults to `event_timestamp`, else
    /// the table's only timestamp column.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Name feature columns `view__feature` instead of `feature`.
    #[serde(default)]
    pub full_feature_names: bool,
    /// Dataset that receives the training set as a new version; created when missing.
    pub output_dataset: String,
}

/// A stored training set.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrainingSetView {
    pub dataset: String,
    pub version: i64,
    pub rows: u64,
    pub columns: Vec<String>,
    /// Lineage: the entity table and each view version with the dataset version it read.
    pub source: String,
    pub content_digest: String,
}

/// Body of `POST /projects/{project}/feature-views/{view}/materialize`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaterializeBody {
    /// View version; the latest when unset.
    #[serde(default)]
    pub version: Option<i64>,
    /// RFC 3339 start of the event-time range (inclusive); unset continues from the end of
    /// the last materialised interval, or starts at `end - ttl`.
    #[serde(default)]
    pub start: Option<String>,
    /// RFC 3339 end of the range (inclusive); now when unset.
    #[serde(default)]
    pub end: Option<String>,
}

/// Result of a materialisation run.
#[derive(Debug, Serialize, ToSchema)]
pub struct MaterializeView {
    #[schema(value_type = Object)]
    pub materialization: ghaf_features::Materialization,
    /// Online store backend: `redb` or `redis`.
    pub backend: String,
    pub start: String,
    pub end: String,
}

/// Feast's online read request: `features` or `feature_service`, `entities` (join key to
/// one value per row) and `full_feature_names`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OnlineFeaturesRequest {
    #[serde(default)]
    pub features: Option<Vec<String>>,
    #[serde(default)]
    pub feature_service: Option<String>,
    #[schema(value_type = Object)]
    pub entities: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
    #[serde(default)]
    pub full_feature_names: bool,
}

/// Feast's online read response.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnlineFeaturesResponse {
    /// `feature_names`: join keys, then the features in the requested order.
    #[schema(value_type = Object)]
    pub metadata: ghaf_features::OnlineMetadata,
    /// One entry per name: `values`, `statuses` (PRESENT, NULL_VALUE, NOT_FOUND,
    /// OUTSIDE_MAX_AGE) and `event_timestamps`.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<ghaf_features::OnlineColumn>,
}

impl From<FeatureError> for ApiError {
    fn from(error: FeatureError) -> Self {
        let details = match &error {
            FeatureError::InvalidArgument { argument, .. } => {
                serde_json::json!({ "field": argument })
            }
            FeatureError::InvalidExpression {
                feature,
                expression,
                ..
            } => {
                serde_json::json!({ "feature": feature, "expression": expression })
            }
            FeatureError::Ingest(inner) => inner.details(),
            _ => serde_json::Value::Null,
        };
        ApiError::new(error.code(), error.to_string()).with_details(details)
    }
}

fn store(state: &AppState) -> Result<&FeatureStore, ApiError> {
    state.features().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "the feature store is not configured on this server",
        )
    })
}

fn parse_time(field: &str, text: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|error| {
            ApiError::invalid_field(
                field,
                format!("{text:?} is not an RFC 3339 time such as 2026-01-01T00:00:00Z: {error}"),
            )
        })
}

fn parse_definitions(value: serde_json::Value) -> Result<Definitions, ApiError> {
    serde_json::from_value(value).map_err(|error| {
        ApiError::invalid_field("definitions", format!("invalid definitions: {error}"))
    })
}

async fn list_definitions(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
) -> Result<Json<FeatureRegistryView>, ApiError> {
    let registry = store(&state)?
        .registry(&project.tenant, &project.id)
        .await?;
    Ok(Json(FeatureRegistryView {
        entities: registry.entities,
        feature_views: registry.feature_views,
        feature_services: registry.feature_services,
    }))
}

async fn plan_or_apply(
    state: &AppState,
    caller: &Caller,
    project: &Project,
    body: ApplyFeaturesRequest,
    write: bool,
) -> Result<Json<FeaturePlanView>, ApiError> {
    let definitions = parse_definitions(body.definitions)?;
    let store = store(state)?;
    let plan = store
        .plan(&project.tenant, &project.id, &definitions)
        .await?;
    if write {
        store
            .apply(
                &project.tenant,
                &project.id,
                &plan,
                caller.principal.as_str(),
            )
            .await?;
    }
    Ok(Json(FeaturePlanView {
        text: plan.render(),
        changes: plan.changes,
        kept: plan.kept,
        applied: write,
    }))
}

async fn plan(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<ApplyFeaturesRequest>,
) -> Result<Json<FeaturePlanView>, ApiError> {
    plan_or_apply(&state, &caller, &project, body, false).await
}

async fn apply(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<ApplyFeaturesRequest>,
) -> Result<Json<FeaturePlanView>, ApiError> {
    plan_or_apply(&state, &caller, &project, body, true).await
}

async fn list_versions(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiPath((_, view)): ApiPath<(String, String)>,
) -> Result<Json<FeatureViewVersionsView>, ApiError> {
    let db = store(&state)?.db();
    let versions = db
        .list_view_versions(&project.tenant, &project.id, &view)
        .await?;
    let Some(latest) = versions.last() else {
        return Err(ApiError::not_found("feature view", &view));
    };
    let materializations = db
        .list_materializations(&project.tenant, &project.id, &view, latest.version)
        .await?;
    Ok(Json(FeatureViewVersionsView {
        versions,
        materializations,
    }))
}

async fn training_set(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<TrainingSetBody>,
) -> Result<(StatusCode, Json<TrainingSetView>), ApiError> {
    ghaf_core::Name::parse(&body.output_dataset)
        .map_err(|error| ApiError::invalid_field("output_dataset", error.to_string()))?;
    let request = TrainingSetRequest {
        entities: EntitySource::Dataset {
            name: body.entity_dataset,
            version: body.entity_version,
        },
        selection: FeatureSelection {
            features: body.features,
            feature_service: body.feature_service,
        },
        timestamp_column: body.timestamp_column,
        full_feature_names: body.full_feature_names,
        output_dataset: body.output_dataset,
    };
    let outcome = store(&state)?
        .training_set(
            &project.tenant,
            &project.id,
            project.name.as_str(),
            request,
            caller.principal.as_str(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TrainingSetView {
            dataset: outcome.dataset,
            version: outcome.version.version,
            rows: outcome.rows,
            columns: outcome.columns,
            source: outcome.source,
            content_digest: outcome.version.content_digest,
        }),
    ))
}

async fn materialize(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_, view)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<MaterializeBody>,
) -> Result<Json<MaterializeView>, ApiError> {
    let start = body
        .start
        .as_deref()
        .map(|t| parse_time("start", t))
        .transpose()?;
    let end = match body.end.as_deref() {
        Some(text) => parse_time("end", text)?,
        None => ghaf_core::now_millis().saturating_mul(1_000),
    };
    let outcome = store(&state)?
        .materialize(
            &project.tenant,
            &project.id,
            &view,
            body.version,
            start,
            end,
            caller.principal.as_str(),
        )
        .await?;
    Ok(Json(MaterializeView {
        start: ghaf_features::format_micros(outcome.record.start_micros),
        end: ghaf_features::format_micros(outcome.record.end_micros),
        materialization: outcome.record,
        backend: outcome.backend,
    }))
}

async fn get_online_features(
    State(state): State<AppState>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<OnlineFeaturesRequest>,
) -> Result<Json<OnlineFeaturesResponse>, ApiError> {
    let request = OnlineRequest {
        selection: FeatureSelection {
            features: body.features,
            feature_service: body.feature_service,
        },
        entities: body.entities,
        full_feature_names: body.full_feature_names,
    };
    let OnlineResponse { metadata, results } = store(&state)?
        .get_online_features(&project.tenant, &project.id, &request)
        .await?;
    Ok(Json(OnlineFeaturesResponse { metadata, results }))
}

async fn push(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<FeaturePushRequest>,
) -> Result<Json<FeaturePushResponse>, ApiError> {
    let report = store(&state)?
        .push(
            &project.tenant,
            &project.id,
            project.name.as_str(),
            &body.push_source_name,
            &body.df,
            body.to,
            caller.principal.as_str(),
        )
        .await?;
    Ok(Json(FeaturePushResponse {
        offline: report.offline,
        online: report.online,
        skipped_views: report.skipped_views,
    }))
}
