use ghaf_core::ErrorCode;

/// Errors of the monitoring service.
#[derive(Debug, thiserror::Error)]
pub enum MonitoringError {
    /// A field of a monitor or rule has an invalid value.
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },

    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    #[error("{what} {name:?} already exists; choose another name")]
    AlreadyExists { what: &'static str, name: String },

    /// The data needed cannot be used, such as a reference without the watched features.
    #[error("{0}")]
    FailedPrecondition(String),

    /// Stored data that cannot be read back.
    #[error("stored {what} is corrupt: {message}")]
    Corrupt { what: &'static str, message: String },

    #[error(transparent)]
    Ingest(#[from] ghaf_ingest::IngestError),

    #[error(transparent)]
    Jobs(#[from] ghaf_jobs::JobError),

    #[error(transparent)]
    Tracking(#[from] ghaf_tracking::TrackingError),

    #[error(transparent)]
    Blob(#[from] ghaf_blob::BlobError),

    #[error("reading a dataset version failed: {0}")]
    Parquet(String),

    #[error("drift computation failed: {0}")]
    Statistics(#[from] ghaf_monitor::MonitorError),

    #[error("metadata database error: {0}")]
    Database(#[from] sqlx::Error),

    #[error("a worker task stopped: {0}")]
    Worker(String),
}

impl MonitoringError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// Returns the API error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            Self::FailedPrecondition(_) | Self::Statistics(_) => ErrorCode::FailedPrecondition,
            Self::Corrupt { .. } => ErrorCode::DataCorrupted,
            Self::Ingest(error) => error.code(),
            Self::Jobs(error) => error.code(),
            Self::Tracking(error) => error.code(),
            Self::Blob(error) => error.code(),
            Self::Database(_) => ErrorCode::Unavailable,
            Self::Parquet(_) => ErrorCode::DataCorrupted,
            Self::Worker(_) => ErrorCode::Internal,
        }
    }

    /// Returns the field an `InvalidArgument` error names.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<parquet::errors::ParquetError> for MonitoringError {
    fn from(error: parquet::errors::ParquetError) -> Self {
        Self::Parquet(error.to_string())
    }
}

impl From<arrow::error::ArrowError> for MonitoringError {
    fn from(error: arrow::error::ArrowError) -> Self {
        Self::Parquet(error.to_string())
    }
}
