//! Errors of rollout actions and of the analysis.

use ghaf_core::ErrorCode;

/// Errors of rollout actions, history reads and the analysis.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    /// The endpoint's rollout is in a state the action does not apply to, or another
    /// request changed the endpoint first.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Serve(#[from] ghaf_serving::ServeError),
    #[error(transparent)]
    Tracking(#[from] ghaf_tracking::TrackingError),
    #[error(transparent)]
    Monitoring(#[from] ghaf_monitoring::MonitoringError),
    #[error(transparent)]
    Ingest(#[from] ghaf_ingest::IngestError),
    #[error(transparent)]
    Meta(#[from] ghaf_meta::MetaError),
}

impl RolloutError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RolloutError::NotFound { .. } => ErrorCode::NotFound,
            RolloutError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            RolloutError::Conflict(_) => ErrorCode::FailedPrecondition,
            RolloutError::Serve(error) => error.code(),
            RolloutError::Tracking(error) => error.code(),
            RolloutError::Monitoring(error) => error.code(),
            RolloutError::Ingest(error) => error.code(),
            RolloutError::Meta(error) => error.code(),
        }
    }

    /// Returns the request field an `InvalidArgument` names.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            RolloutError::InvalidArgument { field, .. } => Some(field),
            RolloutError::Serve(error) => error.field(),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        RolloutError::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}
