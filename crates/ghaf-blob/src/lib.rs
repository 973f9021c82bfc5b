//! Content-addressed blob store of Ghaf: model weights, datasets and other artifacts, stored
//! by SHA-256 digest on the local filesystem or in S3 through [`object_store`].
//!
//! Blobs are partitioned by tenant. A blob is stored at
//! `<prefix>/tenants/<tenant>/sha256/<first 2 hex>/<64 hex>`, so a tenant can only read, list
//! and delete its own blobs, and identical content within a tenant is stored once.
//!
//! # Atomicity
//!
//! An object under a content address is always complete. Content of at most one part is
//! written with a single `put`, which every `object_store` backend makes atomic (the local
//! backend writes a temporary file and renames it). Larger content is sent as a multipart
//! upload to `<prefix>/staging/<uuid>`, outside every tenant's prefix, and renamed to its
//! content address only after the upload completed and the digest is known. An upload that
//! fails deletes its staging object on a best-effort basis. One whose process dies leaves it
//! behind, and [`BlobStore::clean_staging`] removes it later.
//!
//! # Verification
//!
//! Every read hashes the content. [`BlobStore::get`] returns [`BlobError::DigestMismatch`]
//! in place of corrupted content. [`BlobStore::open`] streams the content and yields that
//! error as its last item, so a streaming consumer must treat the data as untrusted until
//! the stream ends without an error. Both log a mismatch with `tracing::error!`.
//! [`BlobStore::head`] and [`BlobStore::list`] do not read content and verify nothing.

mod config;
pub mod conformance;
mod digest;
mod durable;
mod error;
mod staging;
mod store;
mod stream;
mod write;

pub use config::BlobConfig;
pub use digest::{BlobRef, Sha256Digest};
pub use error::BlobError;
pub use object_store;
pub use store::{BlobStore, DEFAULT_PART_SIZE};
pub use stream::BlobStream;
