use ghaf_blob::BlobError;
use ghaf_core::ErrorCode;
use ghaf_meta::MetaError;

/// Errors of dataset management and ingestion.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The schema document is not valid YAML or JSON, or breaks a schema rule.
    #[error("invalid schema: {0}")]
    InvalidSchema(String),

    /// A new schema version cannot read the data of the previous one.
    #[error("the new schema is incompatible with version {version}: {}", problems.join("; "))]
    IncompatibleSchema { version: i64, problems: Vec<String> },

    /// The input file cannot be read as the requested format at all, so no row was judged.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// An ingest option has an invalid value.
    #[error("invalid option `{option}`: {message}")]
    InvalidOption {
        option: &'static str,
        message: String,
    },

    /// More rows failed validation than the dataset's acceptance policy allows.
    #[error(
        "rejected by the acceptance policy: {failed} of {total} rows failed validation \
         ({share:.4} of rows, the maximum is {max_share}); the quarantine file {quarantine} \
         lists each failing row with its reasons"
    )]
    PolicyRejected {
        failed: u64,
        total: u64,
        share: f64,
        max_share: f64,
        quarantine: String,
        report: Box<crate::IngestReport>,
    },

    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    #[error("{what} {name:?} already exists; choose another name")]
    AlreadyExists { what: &'static str, name: String },

    #[error("stored {what} is invalid: {message}")]
    Corrupt { what: &'static str, message: String },

    #[error("cannot write the ingest staging file {path}: {source}")]
    Staging {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error(transparent)]
    Meta(#[from] MetaError),

    #[error(transparent)]
    Blob(#[from] BlobError),

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// The ingest stopped because the server is shutting down; no version was stored.
    #[error(
        "the ingest was cancelled because the server is shutting down; no version was \
         stored, so upload the file again after the restart"
    )]
    Cancelled,

    /// A stream broker (NATS) is unreachable or failed a request.
    #[error("stream broker error: {0}")]
    Broker(String),
}

impl IngestError {
    /// Maps the error to Ghaf's error-code table.
    pub fn code(&self) -> ErrorCode {
        match self {
            IngestError::InvalidSchema(_)
            | IngestError::IncompatibleSchema { .. }
            | IngestError::InvalidInput(_)
            | IngestError::InvalidOption { .. } => ErrorCode::InvalidArgument,
            IngestError::PolicyRejected { .. } => ErrorCode::FailedPrecondition,
            IngestError::NotFound { .. } => ErrorCode::NotFound,
            IngestError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            IngestError::Corrupt { .. } => ErrorCode::DataCorrupted,
            IngestError::Staging { .. }
            | IngestError::Parquet(_)
            | IngestError::Arrow(_)
            | IngestError::Database(_) => ErrorCode::Internal,
            IngestError::Broker(_) | IngestError::Cancelled => ErrorCode::Unavailable,
            IngestError::Meta(error) => error.code(),
            IngestError::Blob(error) => error.code(),
        }
    }

    /// Structured context for API error bodies: the check report of a rejected ingest, the
    /// problems of an incompatible schema.
    pub fn details(&self) -> serde_json::Value {
        match self {
            IngestError::PolicyRejected {
                report, quarantine, ..
            } => serde_json::json!({ "report": report, "quarantine": quarantine }),
            IngestError::IncompatibleSchema { version, problems } => {
                serde_json::json!({ "previous_version": version, "problems": problems })
            }
            IngestError::InvalidOption { option, .. } => serde_json::json!({ "field": option }),
            _ => serde_json::Value::Null,
        }
    }
}
