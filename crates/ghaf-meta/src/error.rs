use ghaf_core::ErrorCode;

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{what} {name:?} not found")]
    NotFound { what: &'static str, name: String },

    #[error("{what} {name:?} already exists; choose another name")]
    AlreadyExists { what: &'static str, name: String },

    #[error("concurrent update of {what} {name:?}; retry the request")]
    Conflict { what: &'static str, name: String },

    #[error("unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl { url: String },

    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error(
        "the database has schema version {found}, newer than this binary knows ({known}); run a newer ghaf"
    )]
    SchemaTooNew { found: i64, known: i64 },

    #[error("stored {what} is invalid: {message}")]
    Corrupt { what: &'static str, message: String },

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// An error of a direct SQLite connection (see [`crate::SqliteDirect`]).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl MetaError {
    pub fn code(&self) -> ErrorCode {
        match self {
            MetaError::NotFound { .. } => ErrorCode::NotFound,
            MetaError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            MetaError::Conflict { .. } => ErrorCode::FailedPrecondition,
            MetaError::UnsupportedUrl { .. } => ErrorCode::InvalidArgument,
            MetaError::Corrupt { .. } => ErrorCode::DataCorrupted,
            MetaError::Migration { .. } | MetaError::SchemaTooNew { .. } => ErrorCode::Internal,
            MetaError::Database(error) => match error {
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                    ErrorCode::Unavailable
                }
                _ => ErrorCode::Internal,
            },
            MetaError::Sqlite(error) => match error.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                    ErrorCode::Unavailable
                }
                _ => ErrorCode::Internal,
            },
        }
    }

    /// Returns true when the error is a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            MetaError::Database(error) => is_unique_violation(error),
            MetaError::Sqlite(error) => {
                matches!(
                    error.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::ConstraintViolation)
                ) && matches!(
                    error,
                    rusqlite::Error::SqliteFailure(failure, _)
                        if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                )
            }
            _ => false,
        }
    }
}

pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db_error) => {
            db_error.is_unique_violation()
                // SQLite reports primary-key conflicts with extended code 1555.
                || db_error.code().is_some_and(|code| code == "1555" || code == "2067" || code == "23505")
        }
        _ => false,
    }
}
