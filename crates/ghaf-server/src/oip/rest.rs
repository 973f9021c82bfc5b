//! REST routes of the Open Inference Protocol under `/v2`.

use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ghaf_auth::{Action, Caller};
use ghaf_core::ErrorCode;
use ghaf_meta::Project;
use ghaf_serving::{EndpointScope, InferContext, ServingError, ServingService};
use serde::Deserialize;

use super::codec::{self, HEADER_CONTENT_LENGTH};
use super::{EXTENSIONS, OipError, SERVER_NAME};
use crate::api::{Access, ApiRouter, RouteInfo};
use crate::state::AppState;

/// Registers the `/v2` routes. Health and server metadata are public like `/healthz`; model
/// routes need `endpoints.infer` on the project from the `X-Ghaf-Project` header, else the
/// token's project, else the bootstrap project.
pub fn register(api: &mut ApiRouter) {
    let public = |path, summary| RouteInfo::new(Method::GET, path, Access::Public, summary).oip();
    api.add(
        public(
            "/v2/health/live",
            "Open Inference Protocol: server liveness",
        ),
        live,
    );
    api.add(
        public(
            "/v2/health/ready",
            "Open Inference Protocol: server readiness (the metadata database answers)",
        ),
        ready,
    );
    api.add(
        public(
            "/v2",
            "Open Inference Protocol: server name, version and extensions",
        ),
        server_metadata,
    );

    let model = |method, path, summary| {
        RouteInfo::new(
            method,
            path,
            Access::Action(Action::EndpointsInfer),
            summary,
        )
        .project_from_header()
        .oip()
    };
    api.add(
        model(
            Method::GET,
            "/v2/models/{name}",
            "Open Inference Protocol: endpoint metadata (inputs, outputs, versions)",
        ),
        model_metadata,
    );
    api.add(
        model(
            Method::GET,
            "/v2/models/{name}/versions/{version}",
            "Open Inference Protocol: metadata of one model version of an endpoint",
        ),
        model_metadata,
    );
    api.add(
        model(
            Method::GET,
            "/v2/models/{name}/ready",
            "Open Inference Protocol: endpoint readiness; 503 while not ready",
        ),
        model_ready,
    );
    api.add(
        model(
            Method::GET,
            "/v2/models/{name}/versions/{version}/ready",
            "Open Inference Protocol: readiness of one model version; 503 while not ready",
        ),
        model_ready,
    );
    api.add(
        model(
            Method::POST,
            "/v2/models/{name}/infer",
            "Open Inference Protocol: inference, JSON or binary tensor data",
        ),
        infer,
    );
    api.add(
        model(
            Method::POST,
            "/v2/models/{name}/versions/{version}/infer",
            "Open Inference Protocol: inference on one model version",
        ),
        infer,
    );
}

/// Request bodies and response tensors larger than this many bytes are decoded or encoded on
/// tokio's blocking pool, so that one large JSON document does not hold an async worker
/// thread. Smaller ones are handled inline.
const BLOCKING_CODEC_BYTES: usize = 1 << 20;

/// Runs `work` inline when `size` is at most [`BLOCKING_CODEC_BYTES`], else on the blocking
/// pool. `operation` names the work in the error of a task that panicked.
async fn run_codec<T, F>(size: usize, operation: &str, work: F) -> Result<T, OipError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, OipError> + Send + 'static,
{
    if size <= BLOCKING_CODEC_BYTES {
        return work();
    }
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        OipError::new(
            ErrorCode::Internal,
            format!("the task that {operation} failed: {error}"),
        )
    })?
}

#[derive(Deserialize)]
struct ModelPath {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "live": true }))
}

/// `200 {"ready": true}` when the metadata database responds, else `503 {"ready": false}`:
/// clients such as tritonclient read readiness from the status code.
async fn ready(State(state): State<AppState>) -> Response {
    match state.store().ping().await {
        Ok(()) => Json(serde_json::json!({ "ready": true })).into_response(),
        Err(error) => {
            tracing::warn!(%error, "server not ready: the metadata database does not respond");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "ready": false })),
            )
                .into_response()
        }
    }
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

fn serving(state: &AppState) -> Result<&ServingService, OipError> {
    state
        .serving()
        .map(|service| service.as_ref())
        .ok_or_else(OipError::serving_unavailable)
}

fn scope(project: &Project) -> EndpointScope {
    EndpointScope {
        tenant: project.tenant.clone(),
        project: project.id.clone(),
    }
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(path): Path<ModelPath>,
    Extension(project): Extension<Project>,
) -> Result<Json<serde_json::Value>, OipError> {
    let metadata = serving(&state)?
        .model_metadata(&scope(&project), &path.name, path.version.as_deref())
        .await?;
    Ok(Json(serde_json::json!({
        "name": metadata.name,
        "versions": metadata.versions,
        "platform": metadata.signature.platform,
        "inputs": metadata.signature.inputs,
        "outputs": metadata.signature.outputs,
    })))
}

/// `200 {"name", "ready": true}` when ready, `503 {"name", "ready": false}` (with
/// `Retry-After` while loading) when not: tritonclient's `is_model_ready` is true only on
/// `200`. Unknown endpoints and versions get `404`.
async fn model_ready(
    State(state): State<AppState>,
    Path(path): Path<ModelPath>,
    Extension(project): Extension<Project>,
) -> Result<Response, OipError> {
    let result = serving(&state)?
        .model_ready(&scope(&project), &path.name, path.version.as_deref())
        .await;
    let (ready, retry_after) = match result {
        Ok(ready) => (ready, None),
        Err(ServingError::NotReady {
            retry_after_secs, ..
        }) => (false, Some(retry_after_secs)),
        Err(ServingError::LoadFailed { .. }) => (false, None),
        Err(other) => return Err(other.into()),
    };
    let body = Json(serde_json::json!({ "name": path.name, "ready": ready }));
    if ready {
        return Ok(body.into_response());
    }
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    Ok(response)
}

async fn infer(
    State(state): State<AppState>,
    Path(path): Path<ModelPath>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    request: Request,
) -> Result<Response, OipError> {
    let limits = super::limits(&state);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, limits.max_body_bytes)
        .await
        .map_err(|error| {
            OipError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "cannot read the request body: {error}; the limit is {} bytes \
                     (oip.max_body_bytes)",
                    limits.max_body_bytes
                ),
            )
        })?;
    let header_length = match parts.headers.get(HEADER_CONTENT_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    OipError::new(
                        ErrorCode::InvalidArgument,
                        "the Inference-Header-Content-Length header is not a byte count",
                    )
                })?
                .to_owned(),
        ),
    };
    let mut decoded = run_codec(body.len(), "decodes the request", move || {
        let (json, binary) = codec::split_body(&body, header_length.as_deref())?;
        Ok(codec::decode_request(json, binary, &limits)?)
    })
    .await?;
    let infer_request = std::mem::take(&mut decoded.request);

    let request_id = infer_request.id.clone();
    let context = InferContext {
        principal: caller.principal.to_string(),
        headers: forwarded_headers(&parts.headers),
    };
    let service = serving(&state)?;
    let mut response = service
        .infer(
            &scope(&project),
            &path.name,
            path.version.as_deref(),
            infer_request,
            &context,
        )
        .await?;
    if response.id.is_none() {
        response.id = request_id;
    }
    if response.model_name.is_empty() {
        response.model_name = path.name.clone();
    }

    let output_bytes = response
        .outputs
        .iter()
        .map(|tensor| codec::binary_size(&tensor.data))
        .sum();
    let failure = format!("endpoint {:?} in project {}", path.name, project.id);
    let encoded = run_codec(output_bytes, "encodes the response", move || {
        codec::encode_response(&response, |tensor| {
            codec::output_goes_binary(tensor, decoded.output_is_binary(&tensor.name))
        })
        .map_err(|error| {
            OipError::new(
                ErrorCode::Internal,
                format!("cannot encode the response of {failure}: {error}"),
            )
        })
    })
    .await?;
    let mut http_response = encoded.body.into_response();
    let headers = http_response.headers_mut();
    match encoded.json_length {
        Some(length) => {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(length));
        }
        None => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(http_response)
}

/// Returns the request headers that serving may route on, in lower case, without
/// credentials.
pub(crate) fn forwarded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "authorization" | "cookie" | "proxy-authorization"
            )
        })
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|value| (name.as_str().to_owned(), value.to_owned()))
        })
        .collect()
}
