//! MLflow-compatible REST routes under `/api/2.0/mlflow/…` and
//! `/api/2.0/mlflow-artifacts/…`, mapped onto Ghaf's tracking and registry.
//!
//! The routes follow MLflow 3.17's wire format: GET fields in the query string, POST, PATCH
//! and DELETE fields in a JSON body, snake_case proto3 JSON responses, ids as strings, and
//! errors as `{"error_code", "message"}` with MLflow's HTTP statuses. Authentication is
//! Ghaf's: `MLFLOW_TRACKING_TOKEN` is a Ghaf API token. The project comes from the
//! `X-Ghaf-Project` header, else from the token's project restriction, else it is the
//! bootstrap project (`default`).

mod artifacts;
mod experiments;
mod registry;
mod runs;
mod wire;

pub use registry::check_alias;
pub use wire::{MlflowMessage, double as wire_double};

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use ghaf_auth::{Action, Caller};
use ghaf_core::ErrorCode;
use ghaf_meta::{MetaStore, Project};
use ghaf_tracking::{Scope, TrackingService};

use crate::api::{Access, ApiRouter, RouteInfo};
use crate::error::{ApiError, ErrorInfo};
use crate::middleware::AuditInTransaction;
use crate::state::AppState;

/// Path prefix of the tracking and registry routes.
pub const PREFIX: &str = "/api/2.0/mlflow";

/// Registers every MLflow-compatible route.
pub fn register(api: &mut ApiRouter) {
    experiments::register(api);
    runs::register(api);
    registry::register(api);
    artifacts::register(api);
}

/// Builds a GET route of the MLflow API, whose fields are in the query string.
pub(crate) fn get_route(path: &'static str, action: Action, summary: &'static str) -> RouteInfo {
    RouteInfo::new(Method::GET, path, Access::Action(action), summary)
        .response("MlflowMessage")
        .mlflow()
}

/// Builds a route of the MLflow API that takes a JSON body.
pub(crate) fn body_route(
    method: Method,
    path: &'static str,
    action: Action,
    summary: &'static str,
) -> RouteInfo {
    RouteInfo::new(method, path, Access::Action(action), summary)
        .request("MlflowMessage")
        .response("MlflowMessage")
        .mlflow()
}

pub(crate) fn post_route(path: &'static str, action: Action, summary: &'static str) -> RouteInfo {
    body_route(Method::POST, path, action, summary)
}

/// Context of an MLflow handler: the tracking service, the project scope and the caller.
pub struct Ctx {
    pub service: TrackingService,
    pub scope: Scope,
    pub caller: Caller,
    /// The metadata store, which holds the audit log.
    pub meta: Arc<dyn MetaStore>,
    /// The call's audit entry, on routes whose handler appends it in its own transaction.
    pub audit: Option<AuditInTransaction>,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let wiring = |what: &str| {
            ApiError::new(
                ErrorCode::Internal,
                format!("the route guard attached no {what} to an MLflow request"),
            )
        };
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| wiring("caller"))?;
        let project = parts
            .extensions
            .get::<Project>()
            .cloned()
            .ok_or_else(|| wiring("project"))?;
        let service = state.tracking().cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                "experiment tracking is not configured on this server",
            )
        })?;
        Ok(Ctx {
            service,
            scope: Scope {
                tenant: caller.tenant.clone(),
                project: project.id,
            },
            caller,
            meta: state.store_handle(),
            audit: parts.extensions.get::<AuditInTransaction>().cloned(),
        })
    }
}

/// Query-string fields of a GET request; a field may repeat (`order_by=a&order_by=b`).
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(Params(
            form_urlencoded::parse(query.as_bytes())
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        ))
    }
}

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, value)| value.clone())
            .collect()
    }

    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| missing(key))
    }

    /// Returns the first of `keys` that is present, such as `run_id` or its legacy twin
    /// `run_uuid`.
    pub fn first_of(&self, keys: &[&str]) -> Result<&str, ApiError> {
        keys.iter()
            .find_map(|key| self.get(key).filter(|v| !v.is_empty()))
            .ok_or_else(|| missing(keys[0]))
    }

    pub fn number(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .filter(|value| !value.is_empty())
            .map(|value| {
                value.parse::<i64>().map_err(|_| {
                    ApiError::invalid_field(
                        key,
                        format!(
                            "invalid value {value:?} for parameter '{key}': expected an integer"
                        ),
                    )
                })
            })
            .transpose()
    }
}

pub(crate) fn missing(field: &str) -> ApiError {
    ApiError::invalid_field(
        field,
        format!("missing value for required parameter '{field}'"),
    )
}

/// Encodes the offset of the next page as an opaque token.
pub(crate) fn page_token(offset: Option<u64>) -> Option<String> {
    offset.map(|offset| BASE64.encode(serde_json::json!({ "offset": offset }).to_string()))
}

/// Decodes a page token into an offset; an absent or empty token is the first page.
pub(crate) fn page_offset(token: Option<&str>) -> Result<u64, ApiError> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(0);
    };
    let invalid = || {
        ApiError::invalid_field(
            "page_token",
            "invalid page_token: pass the next_page_token of the previous response unchanged",
        )
    };
    let bytes = BASE64
        .decode(token.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    value["offset"].as_u64().ok_or_else(invalid)
}

/// Checks a `max_results` value against a default and a maximum.
pub(crate) fn max_results(value: Option<i64>, default: u32, max: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if n >= 1 && n <= i64::from(max) => Ok(u32::try_from(n).unwrap_or(max)),
        Some(n) => Err(ApiError::invalid_field(
            "max_results",
            format!(
                "invalid value {n} for parameter 'max_results': it must be between 1 and {max}"
            ),
        )),
    }
}

/// Returns the MLflow error code and HTTP status for a Ghaf error code, as MLflow 3.17
/// sends them.
pub fn mlflow_error(code: ErrorCode) -> (&'static str, StatusCode) {
    match code {
        ErrorCode::NotFound => ("RESOURCE_DOES_NOT_EXIST", StatusCode::NOT_FOUND),
        ErrorCode::RouteNotFound => ("ENDPOINT_NOT_FOUND", StatusCode::NOT_FOUND),
        // MLflow rejects a duplicate name with 400, and its client relies on the code.
        ErrorCode::AlreadyExists => ("RESOURCE_ALREADY_EXISTS", StatusCode::BAD_REQUEST),
        ErrorCode::InvalidArgument | ErrorCode::FailedPrecondition | ErrorCode::PayloadTooLarge => {
            ("INVALID_PARAMETER_VALUE", StatusCode::BAD_REQUEST)
        }
        ErrorCode::MalformedBody
        | ErrorCode::UnsupportedMediaType
        | ErrorCode::MethodNotAllowed => ("BAD_REQUEST", StatusCode::BAD_REQUEST),
        ErrorCode::Unauthenticated | ErrorCode::TokenExpired | ErrorCode::TokenRevoked => {
            ("UNAUTHENTICATED", StatusCode::UNAUTHORIZED)
        }
        ErrorCode::PermissionDenied => ("PERMISSION_DENIED", StatusCode::FORBIDDEN),
        ErrorCode::DataCorrupted => ("DATA_LOSS", StatusCode::INTERNAL_SERVER_ERROR),
        ErrorCode::Unavailable => ("TEMPORARILY_UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
        ErrorCode::Internal => ("INTERNAL_ERROR", StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// Rewrites Ghaf error responses of MLflow routes into MLflow's shape,
/// `{"error_code", "message"}`, keeping the response extensions for logging.
pub async fn error_layer(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let Some(info) = response.extensions().get::<ErrorInfo>().cloned() else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    // Error bodies are small JSON documents written by `ApiError`.
    let message = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|value| value["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| info.message.clone()),
        Err(_) => info.message.clone(),
    };
    let (code, status) = mlflow_error(info.code);
    let body = serde_json::json!({ "error_code": code, "message": message }).to_string();
    parts.status = status;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body)).into_response()
}
