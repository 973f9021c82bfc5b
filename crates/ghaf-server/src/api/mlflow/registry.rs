//! Model registry routes: registered models, versions, aliases and the legacy stages.

use axum::Json;
use axum::http::Method;
use ghaf_auth::Action;
use ghaf_tracking::filter::{OrderBy, RegistryClause, parse_registry_filter, parse_registry_order};
use ghaf_tracking::{
    Lineage, MAX_SEARCH_RESULTS, MAX_TAG_VALUE_LEN, RegisterVersion, Stage, Tag, validate_key,
    validate_value,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::wire::{self, KeyValue};
use super::{Ctx, Params, body_route, get_route, max_results, page_offset, page_token, post_route};
use crate::api::ApiRouter;
use crate::error::ApiError;
use crate::extract::ApiJson;

/// Maximum length of a registered model name and of an alias.
const MAX_NAME_LEN: usize = 256;

pub fn register(api: &mut ApiRouter) {
    use Action::{ModelsPromote, ModelsRead, ModelsWrite};

    api.add(
        post_route(
            "/api/2.0/mlflow/registered-models/create",
            ModelsWrite,
            "Create a registered model (MLflow)",
        ),
        create_model,
    );
    api.add(
        get_route(
            "/api/2.0/mlflow/registered-models/get",
            ModelsRead,
            "Get a registered model (MLflow)",
        )
        .query(&[("name", "Name of the registered model.")]),
        get_model,
    );
    api.add(
        body_route(
            Method::PATCH,
            "/api/2.0/mlflow/registered-models/update",
            ModelsWrite,
            "Change a registered model's description (MLflow)",
        ),
        update_model,
    );
    api.add(
        body_route(
            Method::DELETE,
            "/api/2.0/mlflow/registered-models/delete",
            ModelsPromote,
            "Delete a registered model with its versions (MLflow)",
        ),
        delete_model,
    );
    api.add(
        get_route(
            "/api/2.0/mlflow/registered-models/search",
            ModelsRead,
            "Search registered models (MLflow)",
        )
        .query(SEARCH_QUERY),
        search_models,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/registered-models/get-latest-versions",
            ModelsRead,
            "Get the latest version per stage (MLflow)",
        ),
        latest_versions,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/registered-models/set-tag",
            ModelsWrite,
            "Set a registered-model tag (MLflow)",
        ),
        set_model_tag,
    );
    api.add(
        body_route(
            Method::DELETE,
            "/api/2.0/mlflow/registered-models/delete-tag",
            ModelsWrite,
            "Delete a registered-model tag (MLflow)",
        ),
        delete_model_tag,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/registered-models/alias",
            ModelsPromote,
            "Point an alias at a version (MLflow)",
        ),
        set_alias,
    );
    api.add(
        body_route(
            Method::DELETE,
            "/api/2.0/mlflow/registered-models/alias",
            ModelsPromote,
            "Delete an alias (MLflow)",
        ),
        delete_alias,
    );
    api.add(
        get_route(
            "/api/2.0/mlflow/registered-models/alias",
            ModelsRead,
            "Get the version an alias points at (MLflow)",
        )
        .query(&[("name", "Registered model."), ("alias", "Alias name.")]),
        get_by_alias,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/model-versions/create",
            ModelsWrite,
            "Register a signed model version (MLflow)",
        ),
        create_version,
    );
    api.add(
        get_route(
            "/api/2.0/mlflow/model-versions/get",
            ModelsRead,
            "Get a model version (MLflow)",
        )
        .query(&[
            ("name", "Registered model."),
            ("version", "Version number."),
        ]),
        get_version,
    );
    api.add(
        body_route(
            Method::PATCH,
            "/api/2.0/mlflow/model-versions/update",
            ModelsWrite,
            "Change a model version's description (MLflow)",
        ),
        update_version,
    );
    api.add(
        body_route(
            Method::DELETE,
            "/api/2.0/mlflow/model-versions/delete",
            ModelsPromote,
            "Delete a model version (MLflow)",
        ),
        delete_version,
    );
    api.add(
        get_route(
            "/api/2.0/mlflow/model-versions/search",
            ModelsRead,
            "Search model versions (MLflow)",
        )
        .query(SEARCH_QUERY),
        search_versions,
    );
    api.add(
        get_route(
            "/api/2.0/mlflow/model-versions/get-download-uri",
            ModelsRead,
            "Verify a version's signed manifest and return its artifact URI (MLflow)",
        )
        .query(&[
            ("name", "Registered model."),
            ("version", "Version number."),
        ]),
        download_uri,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/model-versions/transition-stage",
            ModelsPromote,
            "Move a version to a legacy stage (MLflow)",
        ),
        transition_stage,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/model-versions/set-tag",
            ModelsWrite,
            "Set a model-version tag (MLflow)",
        ),
        set_version_tag,
    );
    api.add(
        body_route(
            Method::DELETE,
            "/api/2.0/mlflow/model-versions/delete-tag",
            ModelsWrite,
            "Delete a model-version tag (MLflow)",
        ),
        delete_version_tag,
    );
}

const SEARCH_QUERY: &[(&str, &str)] = &[
    ("filter", "MLflow filter, such as name LIKE 'fraud%'."),
    ("max_results", "Page size."),
    ("order_by", "Repeatable: column and ASC or DESC."),
    ("page_token", "Token of the page to return."),
];

/// Checks a registered model name: non-empty, at most 256 characters, without `/` (which
/// would break `models:/<name>/<version>` URIs) or control characters.
fn check_model_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.trim().is_empty()
        && name.chars().count() <= MAX_NAME_LEN
        && !name.contains('/')
        && !name.chars().any(char::is_control);
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "name",
            format!(
                "invalid registered model name {name:?}: use 1 to {MAX_NAME_LEN} characters \
                 without '/'"
            ),
        ))
    }
}

/// Checks an alias: letters, digits, `_` and `-`, not `latest` and not a version such as
/// `v3`, because `models:/<name>@<alias>` must not be ambiguous.
pub fn check_alias(alias: &str) -> Result<(), ApiError> {
    let charset = !alias.is_empty()
        && alias.len() <= MAX_NAME_LEN
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let reserved = alias.eq_ignore_ascii_case("latest")
        || (alias.len() > 1
            && alias[..1].eq_ignore_ascii_case("v")
            && alias[1..].chars().all(|c| c.is_ascii_digit()));
    if charset && !reserved {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "alias",
            format!(
                "invalid alias {alias:?}: use letters, digits, '_' and '-', and neither 'latest' \
                 nor a version such as 'v3'"
            ),
        ))
    }
}

fn check_tag(tag: &Tag) -> Result<(), ApiError> {
    validate_key("key", &tag.key)?;
    validate_value("value", &tag.key, &tag.value, MAX_TAG_VALUE_LEN)?;
    Ok(())
}

#[derive(Deserialize)]
struct ModelRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Vec<KeyValue>,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    alias: String,
    #[serde(default)]
    version: Option<wire::Int>,
    #[serde(default)]
    stages: Vec<String>,
}

impl ModelRequest {
    fn version(&self) -> Result<i64, ApiError> {
        match self.version {
            Some(wire::Int(v)) if v >= 1 => Ok(v),
            Some(wire::Int(v)) => Err(ApiError::invalid_field(
                "version",
                format!("invalid version {v}: versions are positive integers"),
            )),
            None => Err(super::missing("version")),
        }
    }
}

async fn create_model(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    check_model_name(&body.name)?;
    let tags = wire::tags(&body.tags);
    for tag in &tags {
        check_tag(tag)?;
    }
    let model = ctx
        .service
        .store()
        .create_registered_model(
            &ctx.scope,
            &body.name,
            body.description.as_deref().unwrap_or_default(),
            &ctx.caller.principal_name,
            &tags,
        )
        .await?;
    Ok(Json(
        json!({ "registered_model": wire::registered_model(&model) }),
    ))
}

async fn get_model(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let model = ctx
        .service
        .store()
        .get_registered_model(&ctx.scope, params.required("name")?)
        .await?;
    Ok(Json(
        json!({ "registered_model": wire::registered_model(&model) }),
    ))
}

async fn update_model(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = ctx
        .service
        .store()
        .update_registered_model(
            &ctx.scope,
            &body.name,
            body.description.as_deref().unwrap_or_default(),
        )
        .await?;
    Ok(Json(
        json!({ "registered_model": wire::registered_model(&model) }),
    ))
}

async fn delete_model(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    ctx.service
        .store()
        .delete_registered_model(&ctx.scope, &body.name)
        .await?;
    Ok(Json(json!({})))
}

/// A parsed registry search: filter clauses, order, page size and offset.
struct RegistryQuery {
    filter: Vec<RegistryClause>,
    order_by: Vec<OrderBy<&'static str>>,
    max: u32,
    offset: u64,
}

fn registry_query(params: &Params, versions: bool) -> Result<RegistryQuery, ApiError> {
    let filter = parse_registry_filter(params.get("filter").unwrap_or_default(), versions)
        .map_err(|error| ApiError::invalid_field("filter", error.to_string()))?;
    let order_by = params
        .all("order_by")
        .iter()
        .map(|entry| parse_registry_order(entry))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::invalid_field("order_by", error.to_string()))?;
    let max = max_results(params.number("max_results")?, 100, MAX_SEARCH_RESULTS)?;
    let offset = page_offset(params.get("page_token"))?;
    Ok(RegistryQuery {
        filter,
        order_by,
        max,
        offset,
    })
}

async fn search_models(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let query = registry_query(&params, false)?;
    let page = ctx
        .service
        .store()
        .search_registered_models(
            &ctx.scope,
            &query.filter,
            &query.order_by,
            query.max,
            query.offset,
        )
        .await?;
    let models: Vec<Value> = page.items.iter().map(wire::registered_model).collect();
    Ok(Json(wire::with_token(
        json!({ "registered_models": models }),
        page_token(page.next_offset),
    )))
}

async fn latest_versions(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    let stages = body
        .stages
        .iter()
        .map(|stage| {
            Stage::parse(stage).ok_or_else(|| {
                ApiError::invalid_field(
                    "stages",
                    format!("invalid stage {stage:?}: use None, Staging, Production or Archived"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let model = ctx
        .service
        .store()
        .get_registered_model(&ctx.scope, &body.name)
        .await?;
    let versions: Vec<Value> = model
        .latest_versions
        .iter()
        .filter(|v| stages.is_empty() || stages.contains(&v.current_stage))
        .map(wire::model_version)
        .collect();
    Ok(Json(json!({ "model_versions": versions })))
}

async fn set_model_tag(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    let tag = Tag {
        key: body.key,
        value: body.value,
    };
    check_tag(&tag)?;
    ctx.service
        .store()
        .set_registered_model_tag(&ctx.scope, &body.name, &tag)
        .await?;
    Ok(Json(json!({})))
}

async fn delete_model_tag(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    ctx.service
        .store()
        .delete_registered_model_tag(&ctx.scope, &body.name, &body.key)
        .await?;
    Ok(Json(json!({})))
}

async fn set_alias(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    check_alias(&body.alias)?;
    ctx.service
        .store()
        .set_alias(&ctx.scope, &body.name, &body.alias, body.version()?)
        .await?;
    Ok(Json(json!({})))
}

async fn delete_alias(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    ctx.service
        .store()
        .delete_alias(&ctx.scope, &body.name, &body.alias)
        .await?;
    Ok(Json(json!({})))
}

async fn get_by_alias(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let version = ctx
        .service
        .store()
        .get_version_by_alias(
            &ctx.scope,
            params.required("name")?,
            params.required("alias")?,
        )
        .await?;
    Ok(Json(
        json!({ "model_version": wire::model_version(&version) }),
    ))
}

#[derive(Deserialize)]
struct CreateVersionRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    run_id: String,
    #[serde(default)]
    model_id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create_version(
    ctx: Ctx,
    ApiJson(body): ApiJson<CreateVersionRequest>,
) -> Result<Json<Value>, ApiError> {
    check_model_name(&body.name)?;
    if body.source.is_empty() {
        return Err(super::missing("source"));
    }
    let tags = wire::tags(&body.tags);
    for tag in &tags {
        check_tag(tag)?;
    }
    let version = ctx
        .service
        .register_version(
            &ctx.scope,
            &RegisterVersion {
                name: body.name,
                source: body.source,
                run_id: body.run_id,
                model_id: body.model_id,
                description: body.description,
                user_id: ctx.caller.principal_name.clone(),
                tags,
                lineage: Lineage::default(),
            },
        )
        .await?;
    Ok(Json(
        json!({ "model_version": wire::model_version(&version) }),
    ))
}

fn name_and_version(params: &Params) -> Result<(&str, i64), ApiError> {
    Ok((
        params.required("name")?,
        wire::version_number(params.required("version")?)?,
    ))
}

async fn get_version(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let (name, version) = name_and_version(&params)?;
    let version = ctx
        .service
        .store()
        .get_model_version(&ctx.scope, name, version)
        .await?;
    Ok(Json(
        json!({ "model_version": wire::model_version(&version) }),
    ))
}

async fn update_version(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    let version = ctx
        .service
        .store()
        .update_model_version(
            &ctx.scope,
            &body.name,
            body.version()?,
            body.description.as_deref(),
            None,
        )
        .await?;
    Ok(Json(
        json!({ "model_version": wire::model_version(&version) }),
    ))
}

async fn delete_version(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    ctx.service
        .store()
        .delete_model_version(&ctx.scope, &body.name, body.version()?)
        .await?;
    Ok(Json(json!({})))
}

async fn search_versions(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let query = registry_query(&params, true)?;
    let page = ctx
        .service
        .store()
        .search_model_versions(
            &ctx.scope,
            &query.filter,
            &query.order_by,
            query.max,
            query.offset,
        )
        .await?;
    let versions: Vec<Value> = page.items.iter().map(wire::model_version).collect();
    Ok(Json(wire::with_token(
        json!({ "model_versions": versions }),
        page_token(page.next_offset),
    )))
}

/// Returns where a version's files are, after verifying them: clients download a model
/// through this URI, so a tampered model is refused before any file is read.
async fn download_uri(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let (name, version) = name_and_version(&params)?;
    let version = ctx
        .service
        .store()
        .get_model_version(&ctx.scope, name, version)
        .await?;
    ctx.service.verify_version(&ctx.scope, &version).await?;
    Ok(Json(json!({
        "artifact_uri": format!("{}/{}", ghaf_tracking::ARTIFACT_SCHEME, version.artifact_prefix),
    })))
}

#[derive(Deserialize)]
struct TransitionRequest {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: Option<wire::Int>,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    archive_existing_versions: bool,
}

async fn transition_stage(
    ctx: Ctx,
    ApiJson(body): ApiJson<TransitionRequest>,
) -> Result<Json<Value>, ApiError> {
    let stage = Stage::parse(&body.stage).ok_or_else(|| {
        ApiError::invalid_field(
            "stage",
            format!(
                "invalid stage {:?}: use None, Staging, Production or Archived",
                body.stage
            ),
        )
    })?;
    let version = match body.version {
        Some(wire::Int(v)) if v >= 1 => v,
        _ => return Err(super::missing("version")),
    };
    let version = ctx
        .service
        .store()
        .transition_stage(
            &ctx.scope,
            &body.name,
            version,
            stage,
            body.archive_existing_versions,
            ghaf_core::now_millis(),
        )
        .await?;
    Ok(Json(
        json!({ "model_version": wire::model_version(&version) }),
    ))
}

async fn set_version_tag(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    let tag = Tag {
        key: body.key.clone(),
        value: body.value.clone(),
    };
    check_tag(&tag)?;
    ctx.service
        .store()
        .set_model_version_tag(&ctx.scope, &body.name, body.version()?, &tag)
        .await?;
    Ok(Json(json!({})))
}

async fn delete_version_tag(
    ctx: Ctx,
    ApiJson(body): ApiJson<ModelRequest>,
) -> Result<Json<Value>, ApiError> {
    ctx.service
        .store()
        .delete_model_version_tag(&ctx.scope, &body.name, body.version()?, &body.key)
        .await?;
    Ok(Json(json!({})))
}
