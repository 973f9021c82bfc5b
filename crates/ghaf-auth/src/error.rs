use ghaf_core::ErrorCode;
use ghaf_meta::MetaError;

/// Errors of authentication, authorisation and tenancy operations.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send an `Authorization: Bearer <token>` header")]
    MissingCredentials,

    #[error(
        "invalid token: it is malformed or unknown; create a new one with `ghaf tokens create`"
    )]
    InvalidToken,

    #[error("token {token_id} expired at {expired_at}; create a new one with `ghaf tokens create`")]
    TokenExpired {
        token_id: String,
        expired_at: String,
    },

    #[error("token {token_id} was revoked; create a new one with `ghaf tokens create`")]
    TokenRevoked { token_id: String },

    #[error("principal {principal} is disabled")]
    PrincipalDisabled { principal: String },

    #[error("permission denied: {action} needs {needs}")]
    PermissionDenied { action: &'static str, needs: String },

    /// Also returned for objects of other tenants, so their existence does not leak.
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },

    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::MissingCredentials | AuthError::InvalidToken => ErrorCode::Unauthenticated,
            AuthError::PrincipalDisabled { .. } => ErrorCode::Unauthenticated,
            AuthError::TokenExpired { .. } => ErrorCode::TokenExpired,
            AuthError::TokenRevoked { .. } => ErrorCode::TokenRevoked,
            AuthError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            AuthError::NotFound { .. } => ErrorCode::NotFound,
            AuthError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            AuthError::Meta(error) => error.code(),
        }
    }

    /// Returns true when the error is an authentication or authorisation rejection, which
    /// the audit log records as `denied`.
    pub fn is_denial(&self) -> bool {
        matches!(self.code().kind(), ghaf_core::ErrorKind::Auth)
    }
}
