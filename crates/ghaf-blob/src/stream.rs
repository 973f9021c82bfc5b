use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use ghaf_core::TenantId;
use sha2::{Digest as _, Sha256};

use crate::{BlobError, Sha256Digest};

/// A streaming read of one blob that verifies its SHA-256 digest as it goes.
///
/// The chunks are yielded as they arrive, before the digest can be checked. When the content
/// does not match the digest, the last item is `Err(BlobError::DigestMismatch)` in place of a
/// clean end. Consumers must therefore treat the data as untrusted until the stream has ended
/// without an error: buffer it, write it to a temporary location, or abort whatever they
/// forwarded it to when an error arrives. After the first error the stream ends.
pub struct BlobStream {
    inner: BoxStream<'static, object_store::Result<Bytes>>,
    /// Running hash of the chunks yielded so far; `None` once the stream has ended.
    hasher: Option<Sha256>,
    expected: Sha256Digest,
    size: u64,
    tenant: TenantId,
    key: String,
}

impl BlobStream {
    pub(crate) fn new(
        inner: BoxStream<'static, object_store::Result<Bytes>>,
        expected: Sha256Digest,
        size: u64,
        tenant: TenantId,
        key: String,
    ) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            expected,
            size,
            tenant,
            key,
        }
    }

    /// Size of the stored object in bytes, as reported by the backend before reading.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Digest that the content is verified against.
    pub fn digest(&self) -> Sha256Digest {
        self.expected
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, BlobError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(hasher) = this.hasher.as_mut() else {
            return Poll::Ready(None);
        };

        match this.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                hasher.update(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.hasher = None;
                Poll::Ready(Some(Err(BlobError::Backend(error))))
            }
            Poll::Ready(None) => {
                let hasher = this.hasher.take().unwrap_or_default();
                let actual = Sha256Digest::from_hasher(hasher);
                match check_digest(&this.tenant, &this.key, this.expected, actual) {
                    Ok(()) => Poll::Ready(None),
                    Err(error) => Poll::Ready(Some(Err(error))),
                }
            }
        }
    }
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("key", &self.key)
            .field("expected", &self.expected)
            .field("size", &self.size)
            .field("ended", &self.hasher.is_none())
            .finish_non_exhaustive()
    }
}

/// Compares the digest of content read from `key` with the digest it is stored under, and
/// logs a mismatch as an error because it means the stored object is corrupted.
pub(crate) fn check_digest(
    tenant: &TenantId,
    key: &str,
    expected: Sha256Digest,
    actual: Sha256Digest,
) -> Result<(), BlobError> {
    if actual == expected {
        return Ok(());
    }

    tracing::error!(
        tenant = %tenant,
        key,
        expected = %expected,
        actual = %actual,
        "stored blob failed SHA-256 verification"
    );
    Err(BlobError::DigestMismatch {
        key: key.to_owned(),
        expected,
        actual,
    })
}
