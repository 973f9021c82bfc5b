//! The Open Inference Protocol v2 (KServe V2, as served by Triton and MLServer) over REST
//! and gRPC, on the server's HTTP port.
//!
//! A protocol "model" is a Ghaf endpoint and a protocol "version" is a model version number.
//! Both transports decode requests into [`ghaf_runtime::InferRequest`], call
//! [`ghaf_serving::ServingService`], and encode its response. REST routes are in the route
//! registry, so the route guard authenticates and authorises them; gRPC calls run the same
//! checks in [`grpc`]. gRPC shares the HTTP port: requests whose content type is
//! `application/grpc` go to the gRPC service.

pub mod codec;
pub mod grpc;
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod proto;
mod rest;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ghaf_core::ErrorCode;
use ghaf_serving::ServingError;

use crate::error::ErrorInfo;
use crate::state::AppState;

pub use codec::Limits;
pub use rest::register;

/// Server name in server metadata.
pub const SERVER_NAME: &str = "ghaf";
/// Protocol extensions this server implements, listed in server metadata.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// Returns the decoding limits of the server configuration.
pub fn limits(state: &AppState) -> Limits {
    let config = &state.config().oip;
    Limits {
        max_body_bytes: config.max_body_bytes,
        max_tensor_elements: config.max_tensor_elements,
        max_json_depth: config.max_json_depth,
    }
}

/// An error on either transport, with the Ghaf error code that picks its HTTP status and
/// gRPC code.
#[derive(Debug)]
pub struct OipError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for the `Retry-After` header of a `503` while a model loads.
    pub retry_after_secs: Option<u32>,
}

impl OipError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// Returns the message sent to the client; internal causes stay in the server log.
    pub fn public_message(&self) -> String {
        if self.code == ErrorCode::Internal {
            "internal error; the server log has the details under this request's id".to_owned()
        } else {
            self.message.clone()
        }
    }

    /// Converts the error to a tonic status with the matching gRPC code.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(
            tonic::Code::from_i32(self.code.grpc_code()),
            self.public_message(),
        )
    }

    fn serving_unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "model serving is not enabled on this server",
        )
    }
}

impl From<codec::DecodeError> for OipError {
    fn from(error: codec::DecodeError) -> Self {
        let code = if error.too_large {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::InvalidArgument
        };
        Self::new(code, error.message)
    }
}

impl From<ServingError> for OipError {
    fn from(error: ServingError) -> Self {
        let message = error.to_string();
        match error {
            ServingError::EndpointNotFound { .. } | ServingError::VersionNotFound { .. } => {
                Self::new(ErrorCode::NotFound, message)
            }
            ServingError::InvalidInput { .. } | ServingError::InvalidOutput { .. } => {
                Self::new(ErrorCode::InvalidArgument, message)
            }
            ServingError::NotReady {
                retry_after_secs, ..
            } => Self {
                code: ErrorCode::Unavailable,
                message,
                retry_after_secs: Some(retry_after_secs),
            },
            ServingError::LoadFailed { .. } => Self::new(ErrorCode::Unavailable, message),
            ServingError::Internal(_) => Self::new(ErrorCode::Internal, message),
        }
    }
}

impl From<ghaf_auth::AuthError> for OipError {
    fn from(error: ghaf_auth::AuthError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

/// Marks a response whose body already has the protocol's error shape.
#[derive(Clone, Copy, Debug)]
struct OipErrorBody;

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        let status = axum::http::StatusCode::from_u16(self.code.http_status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": self.public_message() });
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // The request middleware logs server errors once, with the request and caller ids.
        response.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message,
        });
        response.extensions_mut().insert(OipErrorBody);
        response
    }
}

/// Rewrites Ghaf error bodies from the route guard (such as `401` or `404` for the project)
/// into the protocol's `{"error": "<message>"}` body, keeping the status.
pub async fn error_layer(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.extensions().get::<OipErrorBody>().is_some() {
        return response;
    }
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
    let body = serde_json::json!({ "error": message }).to_string();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}
