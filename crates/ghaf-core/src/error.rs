//! The one table of error codes Ghaf returns over HTTP and gRPC.
//!
//! Every crate's error enum maps each variant to one [`ErrorCode`]; the transports map the
//! code to a status exactly once, here. Codes are part of the public API: they never change
//! meaning, and clients match on them instead of on messages.

use serde::{Deserialize, Serialize};

/// The party that acts on an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is wrong; the caller fixes it.
    User,
    /// The caller is not authenticated or not allowed.
    Auth,
    /// Ghaf or one of its backends failed; an operator looks at the logs.
    Internal,
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($name:literal, $kind:ident, $http:literal, $grpc:literal), )*) => {
        /// A stable, machine-readable error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// Returns the code as it appears on the wire, in `snake_case`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            pub fn kind(self) -> ErrorKind {
                match self { $(ErrorCode::$variant => ErrorKind::$kind,)* }
            }

            /// HTTP status code sent with this error.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $http,)* }
            }

            /// gRPC status code (`google.rpc.Code`) sent with this error.
            pub fn grpc_code(self) -> i32 {
                match self { $(ErrorCode::$variant => $grpc,)* }
            }
        }
    };
}

error_codes! {
    /// The body is not valid JSON, or not the JSON shape the route takes.
    MalformedBody => ("malformed_body", User, 400, 3),
    /// A field, path segment or query parameter has an invalid value.
    InvalidArgument => ("invalid_argument", User, 400, 3),
    /// The body has a content type the route does not accept.
    UnsupportedMediaType => ("unsupported_media_type", User, 415, 3),
    /// The body is larger than the configured limit.
    PayloadTooLarge => ("payload_too_large", User, 413, 11),
    /// No credentials, or credentials that match no token.
    Unauthenticated => ("unauthenticated", Auth, 401, 16),
    /// The token's expiry time has passed.
    TokenExpired => ("token_expired", Auth, 401, 16),
    /// The token was revoked.
    TokenRevoked => ("token_revoked", Auth, 401, 16),
    /// The caller is authenticated but its roles do not allow the action.
    PermissionDenied => ("permission_denied", Auth, 403, 7),
    /// The resource does not exist or belongs to another tenant.
    NotFound => ("not_found", User, 404, 5),
    /// No route matches the request path.
    RouteNotFound => ("route_not_found", User, 404, 12),
    /// The route exists but not for this HTTP method.
    MethodNotAllowed => ("method_not_allowed", User, 405, 12),
    /// A resource with the same name already exists.
    AlreadyExists => ("already_exists", User, 409, 6),
    /// The resource is in a state that does not allow the action.
    FailedPrecondition => ("failed_precondition", User, 409, 9),
    /// Stored data failed an integrity check, such as a digest mismatch.
    DataCorrupted => ("data_corrupted", Internal, 500, 15),
    /// A backend (database, object store) is unreachable or timed out.
    Unavailable => ("unavailable", Internal, 503, 14),
    /// An unexpected failure; the server log has the details under the request id.
    Internal => ("internal", Internal, 500, 13),
}

/// The JSON error body: `{"error": {"code", "message", "details"}}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Fields of an error body.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable code from the error-code table, such as `not_found`.
    pub code: String,
    /// Description of what failed, on which value, and what to do next.
    pub message: String,
    /// Structured context, such as the failing `field` or the `request_id`.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>, details: serde_json::Value) -> Self {
        Self {
            error: ErrorDetail {
                code: code.as_str().to_owned(),
                message: message.into(),
                details,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "duplicate code {name}");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{name}\""));
        }
    }

    #[test]
    fn user_errors_are_4xx_and_internal_are_5xx() {
        for code in ErrorCode::ALL {
            let status = code.http_status();
            match code.kind() {
                ErrorKind::User | ErrorKind::Auth => assert!((400..500).contains(&status)),
                ErrorKind::Internal => assert!((500..600).contains(&status)),
            }
        }
    }
}
