use ghaf_core::ErrorCode;
use ghaf_meta::MetaError;

/// Errors of tracking and the registry.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    #[error("{what} {name:?} already exists")]
    AlreadyExists { what: &'static str, name: String },

    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },

    #[error("{0}")]
    InvalidState(String),

    /// A signed artifact manifest or the files it lists failed verification.
    #[error("model {name} version {version} failed verification: {reason}")]
    VerificationFailed {
        name: String,
        version: i64,
        reason: String,
    },

    #[error("signing key error: {0}")]
    Key(String),

    #[error(transparent)]
    Blob(#[from] ghaf_blob::BlobError),

    #[error(transparent)]
    Meta(#[from] MetaError),

    /// The audit entry of a change could not be appended in the change's transaction, so
    /// the change was rolled back.
    #[error(
        "the audit log of tenant {tenant} cannot record this call, so it was refused: {source}"
    )]
    AuditRefused { tenant: String, source: MetaError },
}

impl TrackingError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TrackingError::NotFound { .. } => ErrorCode::NotFound,
            TrackingError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            TrackingError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            TrackingError::InvalidState(_) => ErrorCode::FailedPrecondition,
            TrackingError::VerificationFailed { .. } => ErrorCode::DataCorrupted,
            TrackingError::Key(_) => ErrorCode::Internal,
            TrackingError::Blob(error) => error.code(),
            TrackingError::Meta(error) => error.code(),
            TrackingError::AuditRefused { .. } => ErrorCode::Unavailable,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        TrackingError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        TrackingError::NotFound {
            what,
            name: name.into(),
        }
    }
}

impl From<sqlx::Error> for TrackingError {
    fn from(error: sqlx::Error) -> Self {
        TrackingError::Meta(MetaError::Database(error))
    }
}
