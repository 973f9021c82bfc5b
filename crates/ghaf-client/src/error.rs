//! Errors of the client and the parsing of the server's error bodies.

use reqwest::StatusCode;

/// Response header that carries the id the server assigned to a request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Largest part of a non-JSON error body that is kept as the error message, in characters.
const MAX_RAW_MESSAGE_CHARS: usize = 2_000;

/// Error of a call to the Ghaf server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL given to [`crate::Client::new`] is not an `http` or `https` URL.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The token contains characters that cannot be sent in an HTTP header.
    #[error(
        "invalid token: it contains characters that are not allowed in an HTTP header; copy it again"
    )]
    InvalidToken,

    /// A name or id that would become an empty, `.` or `..` URL path segment.
    #[error("invalid name {segment:?}: names and ids in a URL path must not be empty, `.` or `..`")]
    InvalidPathSegment { segment: String },

    /// A project name that cannot be sent in the `X-Ghaf-Project` header.
    #[error(
        "invalid project name {project:?}: it contains characters that are not allowed in an HTTP header"
    )]
    InvalidProject { project: String },

    /// The HTTP client could not be built, such as when no TLS backend is usable.
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),

    /// No connection could be made to the server.
    #[error(
        "the Ghaf server is not reachable at {url} ({cause}); start it with `ghaf server` or check --url",
        cause = root_cause(source)
    )]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server did not respond within the client's time limit.
    #[error(
        "the request to {url} timed out after {seconds} s; the server is overloaded or stuck, retry later"
    )]
    Timeout { url: String, seconds: u64 },

    /// Sending the request or reading the response failed after the connection was made.
    #[error("the request to {url} failed: {cause}", cause = root_cause(source))]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server responded with an error status.
    #[error("{message} (code {code}, HTTP {status})")]
    Api {
        /// HTTP status code.
        status: u16,
        /// Stable error code such as `not_found`, or `http_<status>` when the body was not a
        /// Ghaf error body.
        code: String,
        /// The server's message, or the raw response text when the body was not JSON.
        message: String,
        /// Structured context from the error body; `null` when there was none.
        details: serde_json::Value,
        /// Value of the `x-request-id` response header, or of `details.request_id`.
        request_id: Option<String>,
    },

    /// A success response did not contain the JSON that the route returns.
    #[error("the response from {url} is not the expected JSON: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Returns the stable error code of an API error, such as `unauthenticated`.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Returns the HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Returns the request id of an API error, for quoting to an operator.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientError::Api { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// Classifies a reqwest error raised while sending a request to `url` on the server at
    /// `server_url`. A connection error names the server, the other errors the request.
    pub(crate) fn from_transport(
        server_url: &str,
        url: &str,
        source: reqwest::Error,
        timeout_seconds: u64,
    ) -> Self {
        let url = url.to_owned();
        if source.is_connect() {
            ClientError::Connect {
                url: server_url.to_owned(),
                source,
            }
        } else if source.is_timeout() {
            ClientError::Timeout {
                url,
                seconds: timeout_seconds,
            }
        } else {
            ClientError::Request { url, source }
        }
    }
}

/// Builds the [`ClientError::Api`] for an error response.
///
/// A body of the form `{"error": {"code", "message", "details"}}` gives the code, message and
/// details; an MLflow-compatible route's `{"error_code", "message"}` gives MLflow's code,
/// such as `RESOURCE_DOES_NOT_EXIST`. Any other body becomes the message as text, with the
/// code `http_<status>`. The request id comes from the response header and, failing that,
/// from `details.request_id`.
pub fn api_error(status: StatusCode, request_id: Option<String>, body: &str) -> ClientError {
    if let Ok(mlflow) = serde_json::from_str::<MlflowErrorBody>(body) {
        return ClientError::Api {
            status: status.as_u16(),
            code: mlflow.error_code,
            message: mlflow.message,
            details: serde_json::Value::Null,
            request_id,
        };
    }
    match serde_json::from_str::<ghaf_core::ErrorBody>(body) {
        Ok(parsed) => {
            let detail = parsed.error;
            let request_id = request_id.or_else(|| {
                detail
                    .details
                    .get("request_id")
                    .and_then(|value| value.as_str())
                    .map(str::to_owned)
            });
            ClientError::Api {
                status: status.as_u16(),
                code: detail.code,
                message: detail.message,
                details: detail.details,
                request_id,
            }
        }
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            message: raw_message(status, body),
            details: serde_json::Value::Null,
            request_id,
        },
    }
}

/// The error body of MLflow-compatible routes.
#[derive(serde::Deserialize)]
struct MlflowErrorBody {
    error_code: String,
    #[serde(default)]
    message: String,
}

/// Turns a body that is not a Ghaf error body into a one-paragraph message.
fn raw_message(status: StatusCode, body: &str) -> String {
    let text = body.trim();
    let reason = status.canonical_reason().unwrap_or("unknown status");
    if text.is_empty() {
        return format!(
            "the server responded with HTTP {} {reason} and an empty body",
            status.as_u16()
        );
    }
    let mut message: String = text.chars().take(MAX_RAW_MESSAGE_CHARS).collect();
    if text.chars().count() > MAX_RAW_MESSAGE_CHARS {
        message.push('…');
    }
    message
}

/// Returns the message of the innermost error, such as "Connection refused (os error 111)",
/// which is more specific than reqwest's own "error sending request".
fn root_cause(error: &reqwest::Error) -> String {
    let mut current: &dyn std::error::Error = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_fields_are_parsed() {
        let body = r#"{"error": {"code": "not_found", "message": "project \"x\" not found", "details": {"field": "project"}}}"#;
        let error = api_error(StatusCode::NOT_FOUND, Some("req-1".into()), body);
        let ClientError::Api {
            status,
            code,
            message,
            details,
            request_id,
        } = error
        else {
            panic!("expected an API error, got {error:?}");
        };
        assert_eq!(status, 404);
        assert_eq!(code, "not_found");
        assert_eq!(message, "project \"x\" not found");
        assert_eq!(details, serde_json::json!({"field": "project"}));
        assert_eq!(request_id.as_deref(), Some("req-1"));
    }

    #[test]
    fn error_body_without_details_is_parsed() {
        let body = r#"{"error": {"code": "unauthenticated", "message": "invalid token"}}"#;
        let error = api_error(StatusCode::UNAUTHORIZED, None, body);
        assert_eq!(error.code(), Some("unauthenticated"));
        assert_eq!(error.status(), Some(401));
        assert_eq!(error.request_id(), None);
        assert_eq!(
            error.to_string(),
            "invalid token (code unauthenticated, HTTP 401)"
        );
    }

    #[test]
    fn request_id_falls_back_to_details() {
        let body = r#"{"error": {"code": "internal", "message": "internal error", "details": {"request_id": "abc"}}}"#;
        let error = api_error(StatusCode::INTERNAL_SERVER_ERROR, None, body);
        assert_eq!(error.request_id(), Some("abc"));
    }

    #[test]
    fn header_request_id_wins_over_details() {
        let body = r#"{"error": {"code": "internal", "message": "m", "details": {"request_id": "from-body"}}}"#;
        let error = api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("from-header".into()),
            body,
        );
        assert_eq!(error.request_id(), Some("from-header"));
    }

    #[test]
    fn text_body_becomes_message() {
        let error = api_error(
            StatusCode::BAD_GATEWAY,
            Some("r".into()),
            "  upstream connect error\n",
        );
        let ClientError::Api {
            code,
            message,
            details,
            request_id,
            ..
        } = error
        else {
            panic!("expected an API error");
        };
        assert_eq!(code, "http_502");
        assert_eq!(message, "upstream connect error");
        assert!(details.is_null());
        assert_eq!(request_id.as_deref(), Some("r"));
    }

    #[test]
    fn other_json_shape_is_text() {
        let body = r#"{"message": "not a ghaf error"}"#;
        let error = api_error(StatusCode::BAD_REQUEST, None, body);
        assert_eq!(error.code(), Some("http_400"));
        assert!(error.to_string().starts_with(body), "{error}");
    }

    #[test]
    fn empty_body_names_status() {
        let error = api_error(StatusCode::SERVICE_UNAVAILABLE, None, "");
        let message = error.to_string();
        assert!(
            message.contains("HTTP 503 Service Unavailable"),
            "{message}"
        );
        assert!(message.contains("empty body"), "{message}");
    }

    #[test]
    fn long_text_body_is_truncated() {
        let body = "x".repeat(MAX_RAW_MESSAGE_CHARS + 10);
        let ClientError::Api { message, .. } = api_error(StatusCode::BAD_GATEWAY, None, &body)
        else {
            panic!("expected an API error");
        };
        assert_eq!(message.chars().count(), MAX_RAW_MESSAGE_CHARS + 1);
        assert!(message.ends_with('…'));
    }
}
