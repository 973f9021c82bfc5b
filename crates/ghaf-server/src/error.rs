//! [`ApiError`]: the one error type handlers return, rendered as
//! `{"error": {"code", "message", "details"}}` with the status from the code table.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ghaf_auth::AuthError;
use ghaf_blob::BlobError;
use ghaf_core::{ErrorBody, ErrorCode, ErrorKind};
use ghaf_meta::MetaError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: serde_json::Value,
}

/// Attached to error responses so the request middleware can log internal errors once, with
/// the request's ids, and audit the error code.
#[derive(Clone, Debug)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Builds an `invalid_argument` error that names the offending field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
            .with_details(serde_json::json!({ "field": field }))
    }

    pub fn not_found(what: &str, name: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} {name:?} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Internal errors keep their cause in the log only; the client gets the code and the
        // request id to quote.
        let public_message = match self.code.kind() {
            ErrorKind::Internal if self.code == ErrorCode::Internal => {
                "internal error; the server log has the details under this request's id".to_owned()
            }
            _ => self.message.clone(),
        };
        let info = ErrorInfo {
            code: self.code,
            message: self.message,
        };
        let body = ErrorBody::new(self.code, public_message, self.details);
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(info);
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let details = match &error {
            AuthError::InvalidArgument { field, .. } => serde_json::json!({ "field": field }),
            _ => serde_json::Value::Null,
        };
        ApiError::new(error.code(), error.to_string()).with_details(details)
    }
}

impl From<MetaError> for ApiError {
    fn from(error: MetaError) -> Self {
        ApiError::new(error.code(), error.to_string())
    }
}

impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> Self {
        ApiError::new(error.code(), error.to_string())
    }
}

impl From<ghaf_tracking::TrackingError> for ApiError {
    fn from(error: ghaf_tracking::TrackingError) -> Self {
        let details = match &error {
            ghaf_tracking::TrackingError::InvalidArgument { field, .. } => {
                serde_json::json!({ "field": field })
            }
            _ => serde_json::Value::Null,
        };
        ApiError::new(error.code(), error.to_string()).with_details(details)
    }
}
