//! Ghaf's own routes for experiments, runs and the model registry, under
//! `/api/v1/projects/{project}/…`: the same objects as the MLflow-compatible routes, in
//! Ghaf's JSON and error format, plus what MLflow has no call for: signed manifests, model
//! cards, lineage and verification.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::Method;
use ghaf_auth::Action;
use ghaf_tracking::filter::{RunFilter, parse_run_order};
use ghaf_tracking::{
    Experiment, Lineage, ModelCard, ModelVersion, RegisteredModel, Run, RunQuery, Tag, ViewType,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::mlflow::{Ctx, Params, max_results, page_offset, page_token};
use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};

pub fn register(api: &mut ApiRouter) {
    let route = |method, path, action, summary| {
        RouteInfo::new(method, path, Access::Action(action), summary)
    };
    api.add(
        route(
            Method::GET,
            "/api/v1/projects/{project}/experiments",
            Action::TrackingRead,
            "List the project's active experiments",
        )
        .response("ExperimentList"),
        list_experiments,
    );
    api.add(
        route(
            Method::GET,
            "/api/v1/projects/{project}/runs",
            Action::TrackingRead,
            "Search runs with MLflow's filter grammar",
        )
        .response("RunList")
        .query(&[
            (
                "experiment",
                "Experiment id or name; repeatable. Default: every active experiment.",
            ),
            (
                "filter",
                "MLflow filter, such as metrics.acc > 0.9 and params.model = 'rf'.",
            ),
            ("order_by", "Repeatable, such as metrics.acc DESC."),
            ("max_results", "Page size, 1 to 50,000; default 100."),
            ("page_token", "next_page_token of the previous page."),
        ]),
        search_runs,
    );
    api.add(
        route(
            Method::GET,
            "/api/v1/projects/{project}/models",
            Action::ModelsRead,
            "List registered models",
        )
        .response("ModelList"),
        list_models,
    );
    api.add(
        route(
            Method::GET,
            "/api/v1/projects/{project}/models/{model}/versions",
            Action::ModelsRead,
            "List a model's versions, newest first",
        )
        .response("ModelVersionList"),
        list_versions,
    );
    api.add(
        route(
            Method::GET,
            "/api/v1/projects/{project}/models/{model}/versions/{version}",
            Action::ModelsRead,
            "Show a version with its signed manifest, model card and lineage",
        )
        .response("ModelVersionView"),
        get_version,
    );
    api.add(
        route(
            Method::POST,
            "/api/v1/projects/{project}/models/{model}/versions/{version}/verify",
            Action::ModelsRead,
            "Verify a version's manifest signature and every file digest",
        )
        .response("VerificationView"),
        verify_version,
    );
    api.add(
        route(
            Method::PUT,
            "/api/v1/projects/{project}/models/{model}/versions/{version}/card",
            Action::ModelsWrite,
            "Set a version's model card and lineage links",
        )
        .request("ModelCardRequest")
        .response("ModelVersionView"),
        set_card,
    );
    api.add(
        route(
            Method::PUT,
            "/api/v1/projects/{project}/models/{model}/aliases/{alias}",
            Action::ModelsPromote,
            "Point an alias such as champion at a version",
        )
        .request("SetAliasRequest")
        .response("RegisteredModelView"),
        set_alias,
    );
    api.add(
        route(
            Method::DELETE,
            "/api/v1/projects/{project}/models/{model}/aliases/{alias}",
            Action::ModelsPromote,
            "Delete an alias",
        )
        .status(204),
        delete_alias,
    );
}

/// Encodes a metric value as JSON: NaN and infinities become `"NaN"`, `"Infinity"` and
/// `"-Infinity"`.
fn metric_value(value: f64) -> Value {
    super::mlflow::wire_double(value)
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

/// An experiment.
#[derive(Serialize, ToSchema)]
pub struct ExperimentView {
    pub experiment_id: String,
    pub name: String,
    pub lifecycle_stage: String,
    pub artifact_location: String,
    pub creation_time: i64,
    pub last_update_time: i64,
    pub tags: BTreeMap<String, String>,
}

impl From<&Experiment> for ExperimentView {
    fn from(e: &Experiment) -> Self {
        Self {
            experiment_id: e.experiment_id.to_string(),
            name: e.name.clone(),
            lifecycle_stage: e.lifecycle_stage.as_str().to_owned(),
            artifact_location: e.artifact_location.clone(),
            creation_time: e.creation_time,
            last_update_time: e.last_update_time,
            tags: tag_map(&e.tags),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ExperimentList {
    pub experiments: Vec<ExperimentView>,
}

/// A run with its params, tags and the latest value of each metric.
#[derive(Serialize, ToSchema)]
pub struct RunView {
    pub run_id: String,
    pub experiment_id: String,
    pub run_name: String,
    pub user_id: String,
    pub status: String,
    /// Milliseconds since the epoch.
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub lifecycle_stage: String,
    pub artifact_uri: String,
    /// Latest value per metric key: a number, or "NaN", "Infinity" or "-Infinity".
    #[schema(value_type = Object)]
    pub metrics: BTreeMap<String, Value>,
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

impl From<&Run> for RunView {
    fn from(run: &Run) -> Self {
        let info = &run.info;
        Self {
            run_id: info.run_id.clone(),
            experiment_id: info.experiment_id.to_string(),
            run_name: info.run_name.clone(),
            user_id: info.user_id.clone(),
            status: info.status.as_str().to_owned(),
            start_time: info.start_time,
            end_time: info.end_time,
            lifecycle_stage: info.lifecycle_stage.as_str().to_owned(),
            artifact_uri: info.artifact_uri.clone(),
            metrics: run
                .metrics
                .iter()
                .map(|m| (m.key.clone(), metric_value(m.value)))
                .collect(),
            params: run
                .params
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect(),
            tags: tag_map(&run.tags),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
    /// Pass as `page_token` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A registered model.
#[derive(Serialize, ToSchema)]
pub struct RegisteredModelView {
    pub name: String,
    pub description: String,
    /// Alias name to version number.
    pub aliases: BTreeMap<String, i64>,
    pub tags: BTreeMap<String, String>,
    /// Newest version number, if the model has versions.
    pub latest_version: Option<i64>,
    pub creation_time: i64,
    pub last_updated_time: i64,
}

impl From<&RegisteredModel> for RegisteredModelView {
    fn from(m: &RegisteredModel) -> Self {
        Self {
            name: m.name.clone(),
            description: m.description.clone(),
            aliases: m.aliases.iter().cloned().collect(),
            tags: tag_map(&m.tags),
            latest_version: m.latest_versions.iter().map(|v| v.version).max(),
            creation_time: m.creation_time,
            last_updated_time: m.last_updated_time,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<RegisteredModelView>,
}

/// One file of a version's signed manifest.
#[derive(Serialize, ToSchema)]
pub struct ManifestFileView {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// A model version with its signed manifest and registry details.
#[derive(Serialize, ToSchema)]
pub struct ModelVersionView {
    pub name: String,
    pub version: i64,
    pub stage: String,
    pub aliases: Vec<String>,
    pub source: String,
    pub run_id: String,
    pub model_id: String,
    pub description: String,
    pub user_id: String,
    pub creation_time: i64,
    pub tags: BTreeMap<String, String>,
    /// Id of the tenant key that signed the manifest.
    pub signing_key_id: String,
    /// Files of the signed manifest; empty when the manifest cannot be read.
    pub files: Vec<ManifestFileView>,
    /// Input and output signature from the model's `MLmodel` file.
    #[schema(value_type = Object)]
    pub signature: Option<Value>,
    /// Latest metrics of the source run at registration.
    #[schema(value_type = Object)]
    pub metrics: BTreeMap<String, Value>,
    #[schema(value_type = Object)]
    pub lineage: Lineage,
    #[schema(value_type = Object)]
    pub model_card: Option<ModelCard>,
}

impl From<&ModelVersion> for ModelVersionView {
    fn from(v: &ModelVersion) -> Self {
        // Listing the unverified manifest is informational; `verify` checks it.
        let files = serde_json::from_str::<ghaf_tracking::ArtifactManifest>(&v.manifest.manifest)
            .map(|m| {
                m.files
                    .into_iter()
                    .map(|f| ManifestFileView {
                        path: f.path,
                        sha256: f.sha256,
                        size: f.size,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            name: v.name.clone(),
            version: v.version,
            stage: v.current_stage.as_str().to_owned(),
            aliases: v.aliases.clone(),
            source: v.source.clone(),
            run_id: v.run_id.clone(),
            model_id: v.model_id.clone(),
            description: v.description.clone(),
            user_id: v.user_id.clone(),
            creation_time: v.creation_time,
            tags: tag_map(&v.tags),
            signing_key_id: v.manifest.key_id.clone(),
            files,
            signature: v.details.signature.clone(),
            metrics: v
                .details
                .metrics
                .iter()
                .map(|m| (m.key.clone(), metric_value(m.value)))
                .collect(),
            lineage: v.details.lineage.clone(),
            model_card: v.details.model_card.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ModelVersionList {
    pub versions: Vec<ModelVersionView>,
}

/// The outcome of a successful verification; a failed one is a `data_corrupted` error that
/// names the file or the signature.
#[derive(Serialize, ToSchema)]
pub struct VerificationView {
    pub name: String,
    pub version: i64,
    pub signing_key_id: String,
    /// Number of files whose digest was checked.
    pub files: usize,
}

/// Body of `PUT …/card`. The model card replaces the stored one, and `lineage`, when given,
/// replaces the stored links.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelCardRequest {
    #[schema(value_type = Object)]
    pub model_card: ModelCard,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub lineage: Option<Lineage>,
}

/// Body of `PUT …/aliases/{alias}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAliasRequest {
    pub version: i64,
}

#[derive(Deserialize)]
struct ModelPath {
    #[allow(dead_code)]
    project: String,
    model: String,
}

#[derive(Deserialize)]
struct VersionPath {
    #[allow(dead_code)]
    project: String,
    model: String,
    version: i64,
}

#[derive(Deserialize)]
struct AliasPath {
    #[allow(dead_code)]
    project: String,
    model: String,
    alias: String,
}

async fn list_experiments(ctx: Ctx) -> Result<Json<ExperimentList>, ApiError> {
    let page = ctx
        .service
        .store()
        .search_experiments(&ctx.scope, ViewType::ActiveOnly, &[], &[], 50_000, 0)
        .await?;
    Ok(Json(ExperimentList {
        experiments: page.items.iter().map(ExperimentView::from).collect(),
    }))
}

async fn search_runs(ctx: Ctx, params: Params) -> Result<Json<RunList>, ApiError> {
    let store = ctx.service.store();
    let mut experiment_ids = Vec::new();
    for experiment in params.all("experiment") {
        let id = match experiment.parse::<i64>() {
            Ok(id) => id,
            Err(_) => {
                store
                    .get_experiment_by_name(&ctx.scope, &experiment)
                    .await?
                    .experiment_id
            }
        };
        experiment_ids.push(id);
    }
    if experiment_ids.is_empty() {
        let all = store
            .search_experiments(&ctx.scope, ViewType::ActiveOnly, &[], &[], 50_000, 0)
            .await?;
        experiment_ids = all.items.iter().map(|e| e.experiment_id).collect();
    }
    let filter = RunFilter::parse(params.get("filter").unwrap_or_default())
        .map_err(|error| ApiError::invalid_field("filter", error.to_string()))?;
    let order_by = params
        .all("order_by")
        .iter()
        .map(|entry| parse_run_order(entry))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::invalid_field("order_by", error.to_string()))?;
    let query = RunQuery {
        experiment_ids,
        filter,
        view: ViewType::ActiveOnly,
        order_by,
        max_results: max_results(params.number("max_results")?, 100, 50_000)?,
        offset: page_offset(params.get("page_token"))?,
    };
    let page = store.search_runs(&ctx.scope, &query).await?;
    Ok(Json(RunList {
        runs: page.items.iter().map(RunView::from).collect(),
        next_page_token: page_token(page.next_offset),
    }))
}

async fn list_models(ctx: Ctx) -> Result<Json<ModelList>, ApiError> {
    let page = ctx
        .service
        .store()
        .search_registered_models(&ctx.scope, &[], &[], 50_000, 0)
        .await?;
    Ok(Json(ModelList {
        models: page.items.iter().map(RegisteredModelView::from).collect(),
    }))
}

async fn list_versions(
    ctx: Ctx,
    ApiPath(path): ApiPath<ModelPath>,
) -> Result<Json<ModelVersionList>, ApiError> {
    let store = ctx.service.store();
    store.get_registered_model(&ctx.scope, &path.model).await?;
    let filter = [ghaf_tracking::filter::RegistryClause {
        field: ghaf_tracking::filter::RegistryField::Name,
        comparator: ghaf_tracking::filter::Comparator::Eq,
        value: ghaf_tracking::filter::Literal::String(path.model.clone()),
    }];
    let order = [ghaf_tracking::filter::OrderBy {
        field: "version",
        ascending: false,
    }];
    let page = store
        .search_model_versions(&ctx.scope, &filter, &order, 50_000, 0)
        .await?;
    Ok(Json(ModelVersionList {
        versions: page.items.iter().map(ModelVersionView::from).collect(),
    }))
}

async fn get_version(
    ctx: Ctx,
    ApiPath(path): ApiPath<VersionPath>,
) -> Result<Json<ModelVersionView>, ApiError> {
    let version = ctx
        .service
        .store()
        .get_model_version(&ctx.scope, &path.model, path.version)
        .await?;
    Ok(Json(ModelVersionView::from(&version)))
}

async fn verify_version(
    ctx: Ctx,
    ApiPath(path): ApiPath<VersionPath>,
) -> Result<Json<VerificationView>, ApiError> {
    let version = ctx
        .service
        .store()
        .get_model_version(&ctx.scope, &path.model, path.version)
        .await?;
    let manifest = ctx.service.verify_version(&ctx.scope, &version).await?;
    Ok(Json(VerificationView {
        name: version.name,
        version: version.version,
        signing_key_id: version.manifest.key_id,
        files: manifest.files.len(),
    }))
}

async fn set_card(
    ctx: Ctx,
    ApiPath(path): ApiPath<VersionPath>,
    ApiJson(body): ApiJson<ModelCardRequest>,
) -> Result<Json<ModelVersionView>, ApiError> {
    let store = ctx.service.store();
    let current = store
        .get_model_version(&ctx.scope, &path.model, path.version)
        .await?;
    let mut details = current.details;
    details.model_card = Some(body.model_card);
    if let Some(lineage) = body.lineage {
        details.lineage = lineage;
    }
    let version = store
        .update_model_version(&ctx.scope, &path.model, path.version, None, Some(&details))
        .await?;
    Ok(Json(ModelVersionView::from(&version)))
}

async fn set_alias(
    ctx: Ctx,
    ApiPath(path): ApiPath<AliasPath>,
    ApiJson(body): ApiJson<SetAliasRequest>,
) -> Result<Json<RegisteredModelView>, ApiError> {
    super::mlflow::check_alias(&path.alias)?;
    let store = ctx.service.store();
    store
        .set_alias(&ctx.scope, &path.model, &path.alias, body.version)
        .await?;
    let model = store.get_registered_model(&ctx.scope, &path.model).await?;
    Ok(Json(RegisteredModelView::from(&model)))
}

async fn delete_alias(
    ctx: Ctx,
    ApiPath(path): ApiPath<AliasPath>,
) -> Result<axum::http::StatusCode, ApiError> {
    ctx.service
        .store()
        .delete_alias(&ctx.scope, &path.model, &path.alias)
        .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
