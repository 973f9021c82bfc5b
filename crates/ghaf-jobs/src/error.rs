use ghaf_core::ErrorCode;
use ghaf_meta::MetaError;

/// Errors of the job system.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job specification or a request field is invalid.
    #[error("invalid {field}: {message}")]
    InvalidSpec { field: String, message: String },

    /// The specification asks for something this version cannot run yet.
    #[error("{0}")]
    NotSupported(String),

    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    /// The job is in a state that does not allow the request, such as cancelling a finished
    /// job.
    #[error("{0}")]
    InvalidState(String),

    /// The job asks for more than the tenant's quota allows even with nothing else running.
    #[error("{0}")]
    QuotaExceeded(String),

    /// The worker no longer holds the job's lease: it expired and the job went back to the
    /// queue, or the job was finished by someone else.
    #[error("the lease on job {job} (attempt {attempt}) is no longer held by this worker")]
    LeaseLost { job: String, attempt: u32 },

    #[error("stored {what} is invalid: {message}")]
    Corrupt { what: &'static str, message: String },

    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl JobError {
    pub fn code(&self) -> ErrorCode {
        match self {
            JobError::InvalidSpec { .. } | JobError::NotSupported(_) => ErrorCode::InvalidArgument,
            JobError::NotFound { .. } => ErrorCode::NotFound,
            JobError::InvalidState(_) | JobError::QuotaExceeded(_) | JobError::LeaseLost { .. } => {
                ErrorCode::FailedPrecondition
            }
            JobError::Corrupt { .. } => ErrorCode::DataCorrupted,
            JobError::Meta(error) => error.code(),
        }
    }

    /// Returns the field a validation error names, for the error body's details.
    pub fn field(&self) -> Option<&str> {
        match self {
            JobError::InvalidSpec { field, .. } => Some(field),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        JobError::InvalidSpec {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for JobError {
    fn from(error: sqlx::Error) -> Self {
        JobError::Meta(MetaError::Database(error))
    }
}
