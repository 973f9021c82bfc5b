//! Run, metric and logged-model routes.

use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ghaf_auth::Action;
use ghaf_tracking::filter::{Comparator, Literal, RunFilter, parse_clauses, parse_run_order};
use ghaf_tracking::{
    Batch, LifecycleStage, LoggedModelStatus, MAX_BATCH_ENTITIES, MAX_BATCH_METRICS,
    MAX_BATCH_PARAMS, MAX_BATCH_TAGS, MAX_HISTORY_RESULTS, MAX_PARAM_VALUE_LEN, MAX_SEARCH_RESULTS,
    MAX_TAG_VALUE_LEN, Metric, ModelOutput, NewLoggedModel, NewRun, Param, RunQuery, RunStatus,
    RunUpdate, Tag, TrackingError, validate_key, validate_value,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::experiments::parse_view;
use super::wire::{self, Double, Int, KeyValue};
use super::{Ctx, Params, body_route, get_route, max_results, page_offset, page_token, post_route};
use crate::api::ApiRouter;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::middleware::{AuditDetails, AuditRecorded};

/// Response of a run write: the audit details that name the run, and the JSON body.
type Audited = Result<(Extension<AuditDetails>, Json<Value>), ApiError>;

/// Names the run a write changed, and the keys in `extra`, in the call's audit entry. Metric,
/// param and tag values stay out of the audit log.
fn audited(run_id: &str, extra: Value, body: Value) -> Audited {
    let mut details = json!({ "run_id": run_id });
    if let (Value::Object(target), Value::Object(more)) = (&mut details, extra) {
        target.extend(more);
    }
    Ok((Extension(AuditDetails(details)), Json(body)))
}

pub fn register(api: &mut ApiRouter) {
    use Action::{TrackingRead, TrackingWrite};

    api.add(
        post_route(
            "/api/2.0/mlflow/runs/create",
            TrackingWrite,
            "Create a run (MLflow)",
        ),
        create,
    );
    api.add(
        get_route(
            "/api/2.0/mlflow/runs/get",
            TrackingRead,
            "Get a run (MLflow)",
        )
        .query(&[("run_id", "Id of the run.")]),
        get,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/runs/update",
            TrackingWrite,
            "Update a run's status, end time or name (MLflow)",
        ),
        update,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/runs/delete",
            TrackingWrite,
            "Soft-delete a run (MLflow)",
        ),
        delete,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/runs/restore",
            TrackingWrite,
            "Restore a deleted run (MLflow)",
        ),
        restore,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/runs/log-parameter",
            TrackingWrite,
            "Log a param (MLflow)",
        )
        .audit_in_transaction(),
        log_parameter,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/runs/log-metric",
            TrackingWrite,
            "Log a metric value (MLflow)",
        )
        .audit_in_transaction(),
        log_metric,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/runs/log-batch",
            TrackingWrite,
            "Log metrics, params and tags at once (MLflow)",
        )
        .audit_in_transaction(),
        log_batch,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/runs/set-tag",
            TrackingWrite,
            "Set a run tag (MLflow)",
        )
        .audit_in_transaction(),
        set_tag,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/runs/delete-tag",
            TrackingWrite,
            "Delete a run tag (MLflow)",
        ),
        delete_tag,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/runs/search",
            TrackingRead,
            "Search runs with a filter and order (MLflow)",
        ),
        search,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/runs/outputs",
            TrackingWrite,
            "Record models logged by a run (MLflow)",
        ),
        outputs,
    );
    api.add(
        get_route(
            "/api/2.0/mlflow/metrics/get-history",
            TrackingRead,
            "Get the full history of a metric (MLflow)",
        )
        .query(&[
            ("run_id", "Id of the run."),
            ("metric_key", "Metric key."),
            ("max_results", "Page size, at most 25,000."),
            ("page_token", "Token of the page to return."),
        ]),
        metric_history,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/logged-models",
            TrackingWrite,
            "Create a logged model (MLflow)",
        ),
        create_logged_model,
    );
    api.add(
        get_route(
            "/api/2.0/mlflow/logged-models/{model_id}",
            TrackingRead,
            "Get a logged model (MLflow)",
        ),
        get_logged_model,
    );
    api.add(
        body_route(
            Method::PATCH,
            "/api/2.0/mlflow/logged-models/{model_id}",
            TrackingWrite,
            "Finalize a logged model's status (MLflow)",
        ),
        finalize_logged_model,
    );
    api.add(
        body_route(
            Method::PATCH,
            "/api/2.0/mlflow/logged-models/{model_id}/tags",
            TrackingWrite,
            "Set logged-model tags (MLflow)",
        ),
        set_logged_model_tags,
    );
    api.add(
        post_route(
            "/api/2.0/mlflow/logged-models/search",
            TrackingRead,
            "Search logged models by name (MLflow)",
        ),
        search_logged_models,
    );
}

/// The run id of a request, sent as `run_id` or as its legacy twin `run_uuid`.
#[derive(Default, Deserialize)]
struct RunRef {
    #[serde(default)]
    run_id: String,
    #[serde(default)]
    run_uuid: String,
}

impl RunRef {
    fn id(&self) -> Result<&str, ApiError> {
        [&self.run_id, &self.run_uuid]
            .into_iter()
            .find(|id| !id.is_empty())
            .map(String::as_str)
            .ok_or_else(|| super::missing("run_id"))
    }
}

fn run_status(value: &str) -> Result<RunStatus, ApiError> {
    RunStatus::parse(value).ok_or_else(|| {
        ApiError::invalid_field(
            "status",
            format!(
                "invalid run status {value:?}: use RUNNING, SCHEDULED, FINISHED, FAILED or KILLED"
            ),
        )
    })
}

fn check_tag(tag: &Tag) -> Result<(), ApiError> {
    validate_key("tags", &tag.key)?;
    validate_value("tags", &tag.key, &tag.value, MAX_TAG_VALUE_LEN)?;
    Ok(())
}

fn check_param(param: &Param) -> Result<(), ApiError> {
    validate_key("params", &param.key)?;
    validate_value("params", &param.key, &param.value, MAX_PARAM_VALUE_LEN)?;
    Ok(())
}

#[derive(Deserialize)]
struct CreateRequest {
    #[serde(default)]
    experiment_id: Option<String>,
    #[serde(default)]
    run_name: Option<String>,
    #[serde(default)]
    start_time: Option<Int>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create(ctx: Ctx, ApiJson(body): ApiJson<CreateRequest>) -> Audited {
    let experiment_id = match body.experiment_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => wire::experiment_id("experiment_id", id)?,
        None => ghaf_tracking::DEFAULT_EXPERIMENT_ID,
    };
    let tags = wire::tags(&body.tags);
    for tag in &tags {
        check_tag(tag)?;
    }
    // The run's user is the authenticated principal. The user a client claims (its OS
    // login) stays in the `mlflow.user` tag the client sends.
    let user_id = ctx.caller.principal_name.clone();
    let run = ctx
        .service
        .store()
        .create_run(
            &ctx.scope,
            &NewRun {
                experiment_id,
                user_id,
                run_name: body.run_name,
                start_time: body.start_time.map(|t| t.0),
                tags,
            },
        )
        .await?;
    audited(
        &run.info.run_id,
        json!({ "experiment_id": run.info.experiment_id.to_string() }),
        json!({ "run": wire::run(&run) }),
    )
}

async fn get(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let run_id = params.first_of(&["run_id", "run_uuid"])?;
    let run = ctx.service.store().get_run(&ctx.scope, run_id).await?;
    Ok(Json(json!({ "run": wire::run(&run) })))
}

#[derive(Deserialize)]
struct UpdateRequest {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    end_time: Option<Int>,
    #[serde(default)]
    run_name: Option<String>,
}

async fn update(ctx: Ctx, ApiJson(body): ApiJson<UpdateRequest>) -> Audited {
    let status = body.status.as_deref().map(run_status).transpose()?;
    let info = ctx
        .service
        .store()
        .update_run(
            &ctx.scope,
            body.run.id()?,
            &RunUpdate {
                status,
                end_time: body.end_time.map(|t| t.0),
                run_name: body.run_name,
            },
        )
        .await?;
    audited(
        &info.run_id,
        json!({ "status": info.status.as_str() }),
        json!({ "run_info": wire::run_info(&info) }),
    )
}

async fn delete(ctx: Ctx, ApiJson(body): ApiJson<RunRef>) -> Audited {
    let run_id = body.id()?;
    ctx.service
        .store()
        .set_run_stage(&ctx.scope, run_id, LifecycleStage::Deleted)
        .await?;
    audited(run_id, json!({}), json!({}))
}

async fn restore(ctx: Ctx, ApiJson(body): ApiJson<RunRef>) -> Audited {
    let run_id = body.id()?;
    ctx.service
        .store()
        .set_run_stage(&ctx.scope, run_id, LifecycleStage::Active)
        .await?;
    audited(run_id, json!({}), json!({}))
}

#[derive(Deserialize)]
struct KeyValueRequest {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

/// Logs a batch and its audit entry. With the guard's entry and a store that can append in a
/// caller's transaction, both commit in one transaction. Otherwise the handler checks the
/// audit chain first, as the guard does for other routes, and the guard appends the entry.
async fn log_audited(ctx: &Ctx, batch: Batch<'_>, extra: Value) -> Result<Response, ApiError> {
    let store = ctx.service.store();
    if let (Some(template), Some(audit)) = (&ctx.audit, ctx.meta.transactional_audit()) {
        let mut details = json!({ "run_id": batch.run_id });
        if let (Value::Object(target), Value::Object(more)) = (&mut details, extra) {
            target.extend(more);
        }
        let entry = template.success(details);
        store
            .log_batch_audited(&ctx.scope, &batch, audit, &entry)
            .await?;
        return Ok((Extension(AuditRecorded), Json(json!({}))).into_response());
    }
    if let Err(error) = ctx.meta.check_audit_chain(ctx.scope.tenant.as_str()).await {
        return Err(TrackingError::AuditRefused {
            tenant: ctx.scope.tenant.to_string(),
            source: error,
        }
        .into());
    }
    store
        .log_batch(
            &ctx.scope,
            batch.run_id,
            batch.metrics,
            batch.params,
            batch.tags,
        )
        .await?;
    Ok(audited(batch.run_id, extra, json!({}))?.into_response())
}

async fn log_parameter(
    ctx: Ctx,
    ApiJson(body): ApiJson<KeyValueRequest>,
) -> Result<Response, ApiError> {
    let run_id = body.run.id()?;
    let param = Param {
        key: body.key.clone(),
        value: body.value.clone(),
    };
    check_param(&param)?;
    let batch = Batch {
        run_id,
        metrics: &[],
        params: std::slice::from_ref(&param),
        tags: &[],
    };
    log_audited(&ctx, batch, json!({ "params": [body.key] })).await
}

async fn set_tag(ctx: Ctx, ApiJson(body): ApiJson<KeyValueRequest>) -> Result<Response, ApiError> {
    let run_id = body.run.id()?;
    let tag = Tag {
        key: body.key.clone(),
        value: body.value.clone(),
    };
    check_tag(&tag)?;
    let batch = Batch {
        run_id,
        metrics: &[],
        params: &[],
        tags: std::slice::from_ref(&tag),
    };
    log_audited(&ctx, batch, json!({ "tags": [body.key] })).await
}

async fn delete_tag(ctx: Ctx, ApiJson(body): ApiJson<KeyValueRequest>) -> Audited {
    let run_id = body.run.id()?;
    ctx.service
        .store()
        .delete_run_tag(&ctx.scope, run_id, &body.key)
        .await?;
    audited(run_id, json!({ "deleted_tags": [body.key] }), json!({}))
}

#[derive(Deserialize)]
struct MetricBody {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: Option<Double>,
    #[serde(default)]
    timestamp: Option<Int>,
    #[serde(default)]
    step: Option<Int>,
    #[serde(default)]
    model_id: String,
}

impl MetricBody {
    fn metric(self) -> Result<Metric, ApiError> {
        validate_key("metrics", &self.key)?;
        let value = self.value.ok_or_else(|| super::missing("value"))?;
        Ok(Metric {
            key: self.key,
            value: value.0,
            timestamp: self.timestamp.map_or_else(ghaf_core::now_millis, |t| t.0),
            step: self.step.map_or(0, |s| s.0),
            model_id: self.model_id,
        })
    }
}

#[derive(Deserialize)]
struct LogMetricRequest {
    #[serde(flatten)]
    run: RunRef,
    #[serde(flatten)]
    metric: MetricBody,
}

async fn log_metric(
    ctx: Ctx,
    ApiJson(body): ApiJson<LogMetricRequest>,
) -> Result<Response, ApiError> {
    let run_id = body.run.id()?.to_owned();
    let metric = body.metric.metric()?;
    let details = json!({ "metrics": [metric.key], "step": metric.step });
    let batch = Batch {
        run_id: &run_id,
        metrics: std::slice::from_ref(&metric),
        params: &[],
        tags: &[],
    };
    log_audited(&ctx, batch, details).await
}

#[derive(Deserialize)]
struct LogBatchRequest {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default)]
    metrics: Vec<MetricBody>,
    #[serde(default)]
    params: Vec<KeyValue>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn log_batch(
    ctx: Ctx,
    ApiJson(body): ApiJson<LogBatchRequest>,
) -> Result<Response, ApiError> {
    let limits = [
        ("metrics", body.metrics.len(), MAX_BATCH_METRICS),
        ("params", body.params.len(), MAX_BATCH_PARAMS),
        ("tags", body.tags.len(), MAX_BATCH_TAGS),
        (
            "metrics",
            body.metrics.len() + body.params.len() + body.tags.len(),
            MAX_BATCH_ENTITIES,
        ),
    ];
    for (field, count, max) in limits {
        if count > max {
            return Err(ApiError::invalid_field(
                field,
                format!(
                    "a batch may log at most {MAX_BATCH_METRICS} metrics, {MAX_BATCH_PARAMS} \
                     params, {MAX_BATCH_TAGS} tags and {MAX_BATCH_ENTITIES} entities in all; \
                     this one has {count} {field}, more than {max}"
                ),
            ));
        }
    }
    let run_id = body.run.id()?.to_owned();
    let metrics = body
        .metrics
        .into_iter()
        .map(MetricBody::metric)
        .collect::<Result<Vec<_>, _>>()?;
    let params: Vec<Param> = body
        .params
        .iter()
        .map(|p| Param {
            key: p.key.clone(),
            value: p.value.clone(),
        })
        .collect();
    for param in &params {
        check_param(param)?;
    }
    let tags = wire::tags(&body.tags);
    for tag in &tags {
        check_tag(tag)?;
    }
    let details = json!({
        "metrics": distinct_keys(metrics.iter().map(|m| m.key.as_str())),
        "metric_values": metrics.len(),
        "params": distinct_keys(params.iter().map(|p| p.key.as_str())),
        "tags": distinct_keys(tags.iter().map(|t| t.key.as_str())),
    });
    let batch = Batch {
        run_id: &run_id,
        metrics: &metrics,
        params: &params,
        tags: &tags,
    };
    log_audited(&ctx, batch, details).await
}

/// Most keys of each kind that the audit entry of a batch lists.
const MAX_AUDITED_KEYS: usize = 100;

/// The distinct keys of a batch in first-seen order, at most [`MAX_AUDITED_KEYS`], so the
/// audit entry of a batch of 1,000 metrics stays small.
fn distinct_keys<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    keys.filter(|key| seen.insert(*key))
        .take(MAX_AUDITED_KEYS)
        .collect()
}

#[derive(Deserialize)]
struct SearchRequest {
    #[serde(default)]
    experiment_ids: Vec<String>,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    run_view_type: Option<String>,
    #[serde(default)]
    max_results: Option<Int>,
    #[serde(default)]
    order_by: Vec<String>,
    #[serde(default)]
    page_token: Option<String>,
}

async fn search(ctx: Ctx, ApiJson(body): ApiJson<SearchRequest>) -> Result<Response, ApiError> {
    let experiment_ids = body
        .experiment_ids
        .iter()
        .map(|id| wire::experiment_id("experiment_ids", id))
        .collect::<Result<Vec<_>, _>>()?;
    let filter = RunFilter::parse(&body.filter)
        .map_err(|error| ApiError::invalid_field("filter", error.to_string()))?;
    let order_by = body
        .order_by
        .iter()
        .map(|entry| parse_run_order(entry))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::invalid_field("order_by", error.to_string()))?;
    let view = parse_view(body.run_view_type.as_deref(), "run_view_type")?;
    let max = max_results(body.max_results.map(|m| m.0), 1000, MAX_SEARCH_RESULTS)?;
    let offset = page_offset(body.page_token.as_deref())?;
    let query = RunQuery {
        experiment_ids,
        filter,
        view,
        order_by,
        max_results: max,
        offset,
    };
    let page = ctx.service.store().search_runs(&ctx.scope, &query).await?;
    let body = wire::WireRunPage {
        runs: page.items.iter().map(wire::WireRun::from).collect(),
        next_page_token: page_token(page.next_offset),
    };
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
struct OutputsRequest {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default)]
    models: Vec<OutputBody>,
}

#[derive(Deserialize)]
struct OutputBody {
    #[serde(default)]
    model_id: String,
    #[serde(default)]
    step: Option<Int>,
}

async fn outputs(ctx: Ctx, ApiJson(body): ApiJson<OutputsRequest>) -> Audited {
    let outputs: Vec<ModelOutput> = body
        .models
        .iter()
        .map(|m| ModelOutput {
            model_id: m.model_id.clone(),
            step: m.step.map_or(0, |s| s.0),
        })
        .collect();
    if outputs.iter().any(|o| o.model_id.is_empty()) {
        return Err(super::missing("models.model_id"));
    }
    let run_id = body.run.id()?;
    ctx.service
        .store()
        .log_outputs(&ctx.scope, run_id, &outputs)
        .await?;
    let models: Vec<&str> = outputs.iter().map(|o| o.model_id.as_str()).collect();
    audited(run_id, json!({ "models": models }), json!({}))
}

async fn metric_history(ctx: Ctx, params: Params) -> Result<Json<Value>, ApiError> {
    let run_id = params.first_of(&["run_id", "run_uuid"])?;
    let key = params.required("metric_key")?;
    let max = max_results(
        params.number("max_results")?,
        MAX_HISTORY_RESULTS,
        MAX_HISTORY_RESULTS,
    )?;
    let offset = page_offset(params.get("page_token"))?;
    let page = ctx
        .service
        .store()
        .metric_history(&ctx.scope, run_id, key, max, offset)
        .await?;
    let metrics: Vec<Value> = page.items.iter().map(wire::metric).collect();
    Ok(Json(wire::with_token(
        json!({ "metrics": metrics }),
        page_token(page.next_offset),
    )))
}

#[derive(Deserialize)]
struct CreateLoggedModelRequest {
    #[serde(default)]
    experiment_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    model_type: String,
    #[serde(default)]
    source_run_id: String,
    #[serde(default)]
    params: Vec<KeyValue>,
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn create_logged_model(
    ctx: Ctx,
    ApiJson(body): ApiJson<CreateLoggedModelRequest>,
) -> Result<Json<Value>, ApiError> {
    if body.experiment_id.is_empty() {
        return Err(super::missing("experiment_id"));
    }
    let tags = wire::tags(&body.tags);
    for tag in &tags {
        check_tag(tag)?;
    }
    let params: Vec<Param> = body
        .params
        .iter()
        .map(|p| Param {
            key: p.key.clone(),
            value: p.value.clone(),
        })
        .collect();
    for param in &params {
        check_param(param)?;
    }
    let model = ctx
        .service
        .store()
        .create_logged_model(
            &ctx.scope,
            &NewLoggedModel {
                experiment_id: wire::experiment_id("experiment_id", &body.experiment_id)?,
                name: body.name,
                model_type: body.model_type,
                source_run_id: body.source_run_id,
                tags,
                params,
            },
        )
        .await?;
    Ok(Json(json!({ "model": wire::logged_model(&model) })))
}

async fn get_logged_model(
    ctx: Ctx,
    ApiPath(model_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let model = ctx
        .service
        .store()
        .get_logged_model(&ctx.scope, &model_id)
        .await?;
    Ok(Json(json!({ "model": wire::logged_model(&model) })))
}

#[derive(Deserialize)]
struct FinalizeRequest {
    #[serde(default)]
    status: String,
}

async fn finalize_logged_model(
    ctx: Ctx,
    ApiPath(model_id): ApiPath<String>,
    ApiJson(body): ApiJson<FinalizeRequest>,
) -> Result<Json<Value>, ApiError> {
    let status = LoggedModelStatus::parse(&body.status).ok_or_else(|| {
        ApiError::invalid_field(
            "status",
            format!(
                "invalid status {:?}: use LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED",
                body.status
            ),
        )
    })?;
    let model = ctx
        .service
        .store()
        .set_logged_model_status(&ctx.scope, &model_id, status)
        .await?;
    Ok(Json(json!({ "model": wire::logged_model(&model) })))
}

#[derive(Deserialize)]
struct TagsRequest {
    #[serde(default)]
    tags: Vec<KeyValue>,
}

async fn set_logged_model_tags(
    ctx: Ctx,
    ApiPath(model_id): ApiPath<String>,
    ApiJson(body): ApiJson<TagsRequest>,
) -> Result<Json<Value>, ApiError> {
    let tags = wire::tags(&body.tags);
    for tag in &tags {
        check_tag(tag)?;
    }
    ctx.service
        .store()
        .set_logged_model_tags(&ctx.scope, &model_id, &tags)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct SearchLoggedModelsRequest {
    #[serde(default)]
    experiment_ids: Vec<String>,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    max_results: Option<Int>,
    #[serde(default)]
    page_token: Option<String>,
}

async fn search_logged_models(
    ctx: Ctx,
    ApiJson(body): ApiJson<SearchLoggedModelsRequest>,
) -> Result<Json<Value>, ApiError> {
    let experiment_ids = body
        .experiment_ids
        .iter()
        .map(|id| wire::experiment_id("experiment_ids", id))
        .collect::<Result<Vec<_>, _>>()?;
    let clauses = parse_clauses(&body.filter)
        .map_err(|error| ApiError::invalid_field("filter", error.to_string()))?;
    let mut name = None;
    let mut source_run_id = None;
    for clause in clauses {
        match (
            clause.identifier.key.as_str(),
            clause.comparator,
            clause.value,
        ) {
            ("name", Comparator::Eq, Literal::String(value)) => name = Some(value),
            ("source_run_id", Comparator::Eq, Literal::String(value)) => {
                source_run_id = Some(value);
            }
            _ => {
                return Err(ApiError::invalid_field(
                    "filter",
                    format!(
                        "unsupported logged-model filter {:?}: Ghaf supports name = '…' and \
                         source_run_id = '…' joined with AND",
                        body.filter
                    ),
                ));
            }
        }
    }
    let max = max_results(body.max_results.map(|m| m.0), 100, MAX_SEARCH_RESULTS)?;
    let offset = page_offset(body.page_token.as_deref())?;
    let page = ctx
        .service
        .store()
        .search_logged_models(&ctx.scope, &experiment_ids, name.as_deref(), max, offset)
        .await?;
    let models: Vec<Value> = page
        .items
        .iter()
        .filter(|m| {
            source_run_id
                .as_ref()
                .is_none_or(|id| &m.source_run_id == id)
        })
        .map(wire::logged_model)
        .collect();
    Ok(Json(wire::with_token(
        json!({ "models": models }),
        page_token(page.next_offset),
    )))
}
