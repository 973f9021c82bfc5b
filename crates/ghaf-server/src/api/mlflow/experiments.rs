//! Experiment routes.

use axum::Json;
use ghaf_auth::Action;
use ghaf_tracking::filter::{parse_experiment_filter, parse_experiment_order};
use ghaf_tracking::{LifecycleStage, Tag, ViewType};
use serde::Deserialize;
use serde_json::{Value, json};

use super::wire::{self, KeyValue};
use super::{Ctx, Params, max_results, page_offset, page_token};
use crate::api::ApiRouter;
use crate::error::ApiError;
use crate::extract::ApiJson;

/// Maximum length of an experiment name.
const MAX_NAME_LEN: usize = 500;

pub fn register(api: &mut ApiRouter) {
    use super::{get_route, post_route};
    use Action::{TrackingRead, TrackingWrite};

    let get_by_name_route = get_route(
        "/api/2.0/mlflow/experiments/get-by-name",
        TrackingRead,
        "Get an experiment by name (MLflow)",
    );
    api.add(
        get_by_name_route.query(&[("experiment_name", "Name of the experiment.")]),
        get_by_name,
    );
    let get_by_id_route = get_route(
        "/api/2.0/mlflow/experiments/get",
        TrackingRead,
        "Get an experiment by id (MLflow)",
    );
    api.add(
        get_by_id_route.query(&[("experiment_id", "Id of the experiment.")]),
        get,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/experiments/create",
            TrackingWrite,
            "Create an experiment (MLflow)",
        ),
        create,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/experiments/search",
            TrackingRead,
            "Search experiments (MLflow)",
        ),
        search,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/experiments/update",
            TrackingWrite,
            "Rename an experiment (MLflow)",
        ),
        update,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/experiments/delete",
            TrackingWrite,
            "Soft-delete an experiment and its runs (MLflow)",
        ),
        delete,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/experiments/restore",
            TrackingWrite,
            "Restore a deleted experiment and its runs (MLflow)",
        ),
        restore,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/experiments/set-experiment-tag",
            TrackingWrite,
            "Set an experiment tag (MLflow)",
        ),
        set_tag,
    );
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "name",
            "invalid experiment name: it must not be empty",
        ));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::invalid_field(
            "name",
            format!("invalid experiment name: it has more than {MAX_NAME_LEN} characters"),
        ));
    }
    Ok(())
}

async fn get_by_name(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let name = params.required("experiment_name")?;
    let experiment = ctx
        .service
        .store()
        .get_experiment_by_name(&ctx.scope, name)
        .await?;
    Ok(Json(json!({ "experiment": wire::experiment(&experiment) })))
}

async fn get(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let id = wire::experiment_id("experiment_id", params.required("experiment_id")?)?;
    let experiment = ctx.service.store().get_experiment(&ctx.scope, id).await?;
    Ok(Json(json!({ "experiment": wire::experiment(&experiment) })))
}

#[derive(Deserialize)]
struct CreateRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    artifact_location: String,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create(ctx: Ctx, ApiJson(body): ApiJson<CreateRequest>) -> Result<Json<Value>, ApiError> {
    validate_name(&body.name)?;
    if !body.artifact_location.is_empty() {
        // Artifacts go through the server's proxy into the blob store; another location would
        // make clients write to storage Ghaf does not control.
        return Err(ApiError::invalid_field(
            "artifact_location",
            format!(
                "artifact_location {:?} is not supported: Ghaf stores artifacts itself, so \
                 leave it empty",
                body.artifact_location
            ),
        ));
    }
    let experiment = ctx
        .service
        .store()
        .create_experiment(&ctx.scope, &body.name, None, &wire::tags(&body.tags))
        .await?;
    Ok(Json(
        json!({ "experiment_id": experiment.experiment_id.to_string() }),
    ))
}

#[derive(Deserialize)]
struct SearchRequest {
    #[serde(default)]
    max_results: Option<wire::Int>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    order_by: Vec<String>,
    #[serde(default)]
    view_type: Option<String>,
}

async fn search(ctx: Ctx, ApiJson(body): ApiJson<SearchRequest>) -> Result<Json<Value>, ApiError> {
    let view = parse_view(body.view_type.as_deref(), "view_type")?;
    let filter = parse_experiment_filter(&body.filter)
        .map_err(|error| ApiError::invalid_field("filter", error.to_string()))?;
    let order_by = body
        .order_by
        .iter()
        .map(|entry| parse_experiment_order(entry))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::invalid_field("order_by", error.to_string()))?;
    let max = max_results(body.max_results.map(|m| m.0), 1000, 50_000)?;
    let offset = page_offset(body.page_token.as_deref())?;
    let page = ctx
        .service
        .store()
        .search_experiments(&ctx.scope, view, &filter, &order_by, max, offset)
        .await?;
    let experiments: Vec<Value> = page.items.iter().map(wire::experiment).collect();
    Ok(Json(wire::with_token(
        json!({ "experiments": experiments }),
        page_token(page.next_offset),
    )))
}

/// Parses a view type; absent means active only.
pub(crate) fn parse_view(value: Option<&str>, field: &str) -> Result<ViewType, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(ViewType::ActiveOnly),
        Some(value) => ViewType::parse(value).ok_or_else(|| {
            ApiError::invalid_field(
                field,
                format!("invalid {field} {value:?}: use ACTIVE_ONLY, DELETED_ONLY or ALL"),
            )
        }),
    }
}

#[derive(Deserialize)]
struct IdRequest {
    #[serde(default)]
    experiment_id: Option<wire::Int>,
    #[serde(default)]
    new_name: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

impl IdRequest {
    fn id(&self) -> Result<i64, ApiError> {
        match self.experiment_id {
            Some(wire::Int(id)) if id >= 0 => Ok(id),
            Some(wire::Int(id)) => Err(ApiError::invalid_field(
                "experiment_id",
                format!("invalid experiment id {id}"),
            )),
            None => Err(super::missing("experiment_id")),
        }
    }
}

async fn update(ctx: Ctx, ApiJson(body): ApiJson<IdRequest>) -> Result<Json<Value>, ApiError> {
    validate_name(&body.new_name).map_err(|e| ApiError::invalid_field("new_name", e.message))?;
    ctx.service
        .store()
        .rename_experiment(&ctx.scope, body.id()?, &body.new_name)
        .await?;
    Ok(Json(json!({})))
}

async fn delete(ctx: Ctx, ApiJson(body): ApiJson<IdRequest>) -> Result<Json<Value>, ApiError> {
    let id = body.id()?;
    if id == ghaf_tracking::DEFAULT_EXPERIMENT_ID {
        return Err(ApiError::invalid_field(
            "experiment_id",
            "the default experiment \"0\" cannot be deleted",
        ));
    }
    ctx.service
        .store()
        .set_experiment_stage(&ctx.scope, id, LifecycleStage::Deleted)
        .await?;
    Ok(Json(json!({})))
}

async fn restore(ctx: Ctx, ApiJson(body): ApiJson<IdRequest>) -> Result<Json<Value>, ApiError> {
    ctx.service
        .store()
        .set_experiment_stage(&ctx.scope, body.id()?, LifecycleStage::Active)
        .await?;
    Ok(Json(json!({})))
}

async fn set_tag(ctx: Ctx, ApiJson(body): ApiJson<IdRequest>) -> Result<Json<Value>, ApiError> {
    ghaf_tracking::validate_key("key", &body.key)?;
    ghaf_tracking::validate_value(
        "value",
        &body.key,
        &body.value,
        ghaf_tracking::MAX_TAG_VALUE_LEN,
    )?;
    ctx.service
        .store()
        .set_experiment_tag(
            &ctx.scope,
            body.id()?,
            &Tag {
                key: body.key,
                value: body.value,
            },
        )
        .await?;
    Ok(Json(json!({})))
}
