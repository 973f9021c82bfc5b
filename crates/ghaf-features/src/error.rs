use ghaf_core::ErrorCode;
use ghaf_ingest::IngestError;
use ghaf_meta::MetaError;

/// Errors of the feature store.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// A definition file or request breaks a definition rule.
    #[error("invalid definition: {0}")]
    InvalidDefinition(String),

    /// A feature expression cannot be parsed or does not type-check against its dataset.
    #[error("invalid expression {expression:?} of feature {feature:?}: {message}")]
    InvalidExpression {
        feature: String,
        expression: String,
        message: String,
    },

    /// A feature reference is not `view:feature`, `view@vN:feature` or a known name.
    #[error("invalid feature reference {reference:?}: {message}")]
    InvalidReference { reference: String, message: String },

    /// A request argument has an invalid value.
    #[error("invalid argument `{argument}`: {message}")]
    InvalidArgument {
        argument: &'static str,
        message: String,
    },

    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    /// A concurrent apply changed the definition first.
    #[error("{what} {name:?} was changed concurrently; plan and apply again")]
    Conflict { what: &'static str, name: String },

    /// An in-place update planned for one version of a view found a newer version stored.
    #[error(
        "feature view {view:?}: the plan updates version {planned} in place, but version \
         {latest} is now the latest; plan and apply again"
    )]
    VersionConflict {
        view: String,
        planned: i64,
        latest: i64,
    },

    #[error("stored {what} is invalid: {message}")]
    Corrupt { what: &'static str, message: String },

    /// The online store backend failed a request.
    #[error("online store error: {0}")]
    Online(String),

    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error(transparent)]
    Ingest(#[from] IngestError),

    #[error(transparent)]
    Meta(#[from] MetaError),

    #[error(transparent)]
    Blob(#[from] ghaf_blob::BlobError),

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FeatureError {
    /// Maps the error to Ghaf's error-code table.
    pub fn code(&self) -> ErrorCode {
        match self {
            FeatureError::InvalidDefinition(_)
            | FeatureError::InvalidExpression { .. }
            | FeatureError::InvalidReference { .. }
            | FeatureError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            FeatureError::NotFound { .. } => ErrorCode::NotFound,
            FeatureError::Conflict { .. } | FeatureError::VersionConflict { .. } => {
                ErrorCode::FailedPrecondition
            }
            FeatureError::Corrupt { .. } => ErrorCode::DataCorrupted,
            FeatureError::Online(_) => ErrorCode::Unavailable,
            FeatureError::Arrow(_)
            | FeatureError::Parquet(_)
            | FeatureError::Database(_)
            | FeatureError::Io(_) => ErrorCode::Internal,
            FeatureError::Ingest(error) => error.code(),
            FeatureError::Meta(error) => error.code(),
            FeatureError::Blob(error) => error.code(),
        }
    }

    pub(crate) fn definition(message: impl Into<String>) -> Self {
        FeatureError::InvalidDefinition(message.into())
    }
}
