use std::path::PathBuf;

use ghaf_core::ErrorCode;

use crate::Sha256Digest;

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob with this digest exists for the tenant.
    #[error(
        "blob {digest} not found for this tenant; upload the content first or check the digest"
    )]
    NotFound { digest: Sha256Digest },

    /// The bytes read from storage do not hash to the digest they are stored under.
    #[error(
        "blob at {key} is corrupted: expected SHA-256 {expected}, read content with SHA-256 \
         {actual}; upload the original content again or restore the object from a backup"
    )]
    DigestMismatch {
        key: String,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },

    /// A digest string that is not 64 lowercase hex characters.
    #[error("invalid SHA-256 digest {value:?}: expected 64 lowercase hex characters")]
    InvalidDigest { value: String },

    /// A tenant id that cannot name a storage prefix.
    #[error("invalid tenant id {value:?}: a tenant id must not be empty")]
    InvalidTenant { value: String },

    /// The blob store configuration is invalid or the backend could not be set up.
    #[error("invalid blob store configuration: {message}")]
    Config { message: String },

    /// A request to the object store failed.
    #[error(
        "object store request failed: {0}; check that the storage backend is reachable and \
         that its credentials and permissions are valid"
    )]
    Backend(#[from] object_store::Error),

    /// Reading the content to upload failed.
    #[error("reading blob content failed: {0}")]
    Io(#[from] std::io::Error),

    /// Opening or reading a local file to upload failed.
    #[error("reading file {path} for upload failed: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Flushing a stored blob, or a directory above it, to disk failed on a local backend.
    #[error(
        "syncing {path} to disk failed: {source}; the blob may not survive a crash, so check \
         the disk and its free space, then upload the content again"
    )]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Moving a local file to its content address failed on a local backend.
    #[error(
        "moving {from} to {to} failed: {source}; check the permissions and free space of the \
         blob root directory"
    )]
    Move {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
}

impl BlobError {
    /// Returns the stable error code sent to clients.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::DigestMismatch { .. } => ErrorCode::DataCorrupted,
            Self::InvalidDigest { .. } | Self::InvalidTenant { .. } | Self::Config { .. } => {
                ErrorCode::InvalidArgument
            }
            Self::Backend(object_store::Error::NotFound { .. }) => ErrorCode::NotFound,
            Self::Backend(_) => ErrorCode::Unavailable,
            Self::Io(_) | Self::ReadFile { .. } | Self::Sync { .. } | Self::Move { .. } => {
                ErrorCode::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend_not_found() -> object_store::Error {
        object_store::Error::NotFound {
            path: "tenants/acme/sha256/00/00".to_owned(),
            source: "missing".into(),
        }
    }

    #[test]
    fn codes_by_variant() {
        let digest = Sha256Digest::of(b"x");
        let cases = [
            (BlobError::NotFound { digest }, ErrorCode::NotFound),
            (
                BlobError::DigestMismatch {
                    key: "k".to_owned(),
                    expected: digest,
                    actual: Sha256Digest::of(b"y"),
                },
                ErrorCode::DataCorrupted,
            ),
            (
                BlobError::InvalidDigest {
                    value: "abc".to_owned(),
                },
                ErrorCode::InvalidArgument,
            ),
            (
                BlobError::InvalidTenant {
                    value: String::new(),
                },
                ErrorCode::InvalidArgument,
            ),
            (
                BlobError::Config {
                    message: "bucket is empty".to_owned(),
                },
                ErrorCode::InvalidArgument,
            ),
            (BlobError::Backend(backend_not_found()), ErrorCode::NotFound),
            (
                BlobError::Backend(object_store::Error::Generic {
                    store: "S3",
                    source: "connection refused".into(),
                }),
                ErrorCode::Unavailable,
            ),
            (
                BlobError::Io(std::io::Error::other("broken pipe")),
                ErrorCode::Internal,
            ),
            (
                BlobError::ReadFile {
                    path: PathBuf::from("/tmp/model.bin"),
                    source: std::io::Error::other("permission denied"),
                },
                ErrorCode::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error}");
        }
    }

    #[test]
    fn messages_name_the_value() {
        let digest = Sha256Digest::of(b"x");
        let not_found = BlobError::NotFound { digest }.to_string();
        assert!(not_found.contains(&digest.to_hex()), "{not_found}");

        let mismatch = BlobError::DigestMismatch {
            key: "tenants/acme/sha256/2d/2d71".to_owned(),
            expected: digest,
            actual: Sha256Digest::of(b"y"),
        }
        .to_string();
        assert!(
            mismatch.contains("tenants/acme/sha256/2d/2d71"),
            "{mismatch}"
        );
        assert!(mismatch.contains(&digest.to_hex()), "{mismatch}");
        assert!(
            mismatch.contains(&Sha256Digest::of(b"y").to_hex()),
            "{mismatch}"
        );
    }
}
