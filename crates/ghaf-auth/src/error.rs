use ghaf_core::ErrorCode;
use ghaf_meta::MetaError;

/// The owner of a token that was found but rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub tenant: ghaf_core::TenantId,
    pub principal: ghaf_core::PrincipalId,
    pub token: ghaf_core::TokenId,
}

/// Errors of authentication, authorisation and tenancy operations.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send an `Authorization: Bearer <token>` header")]
    MissingCredentials,

    #[error(
        "invalid token: it is malformed or unknown; create a new one with `ghaf tokens create`"
    )]
    InvalidToken,

    /// A known token id presented with the wrong secret. The message is the same as for
    /// an unknown token, so a caller learns nothing; the subject goes to the audit log.
    #[error(
        "invalid token: it is malformed or unknown; create a new one with `ghaf tokens create`"
    )]
    WrongSecret { subject: Subject },

    #[error("token {token_id} expired at {expired_at}; create a new one with `ghaf tokens create`")]
    TokenExpired {
        token_id: String,
        expired_at: String,
        subject: Subject,
    },

    #[error("token {token_id} was revoked; create a new one with `ghaf tokens create`")]
    TokenRevoked { token_id: String, subject: Subject },

    #[error("principal {principal} is disabled")]
    PrincipalDisabled { principal: String, subject: Subject },

    #[error("{message}")]
    FailedPrecondition { message: String },

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
            AuthError::MissingCredentials
            | AuthError::InvalidToken
            | AuthError::WrongSecret { .. } => ErrorCode::Unauthenticated,
            AuthError::FailedPrecondition { .. } => ErrorCode::FailedPrecondition,
            AuthError::PrincipalDisabled { .. } => ErrorCode::Unauthenticated,
            AuthError::TokenExpired { .. } => ErrorCode::TokenExpired,
            AuthError::TokenRevoked { .. } => ErrorCode::TokenRevoked,
            AuthError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            AuthError::NotFound { .. } => ErrorCode::NotFound,
            AuthError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            AuthError::Meta(error) => error.code(),
        }
    }

    /// Returns the tenant and principal a rejected token belongs to, when the token was
    /// found, so the rejection is audited in that tenant's chain.
    pub fn subject(&self) -> Option<&Subject> {
        match self {
            AuthError::WrongSecret { subject }
            | AuthError::TokenExpired { subject, .. }
            | AuthError::TokenRevoked { subject, .. }
            | AuthError::PrincipalDisabled { subject, .. } => Some(subject),
            _ => None,
        }
    }

    /// Returns true when the error is an authentication or authorisation rejection, which
    /// the audit log records as `denied`.
    pub fn is_denial(&self) -> bool {
        matches!(self.code().kind(), ghaf_core::ErrorKind::Auth)
    }
}
