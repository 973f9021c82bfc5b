//! Writes: every path hashes the content while reading it and stores it under its digest.

use std::io;
use std::path::Path as FsPath;
use std::pin::pin;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use ghaf_core::TenantId;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use crate::{BlobError, BlobRef, BlobStore, Sha256Digest};

/// Maximum number of parts that one streamed upload sends at the same time. Together with the
/// part size it bounds the memory of an upload: about `(MAX_PARTS_IN_FLIGHT + 1) * part_size`.
const MAX_PARTS_IN_FLIGHT: usize = 4;

/// Size of the reads that `put_file` makes from the file.
const FILE_READ_SIZE: usize = 1024 * 1024;

impl BlobStore {
    /// Stores `bytes` for `tenant` and returns its content address. Storing content that is
    /// already stored succeeds and returns the same reference.
    pub async fn put_bytes(&self, tenant: &TenantId, bytes: Bytes) -> Result<BlobRef, BlobError> {
        let part_size = self.part_size;
        let chunks = (0..bytes.len())
            .step_by(part_size)
            .map(|start| Ok(bytes.slice(start..bytes.len().min(start + part_size))))
            .collect::<Vec<io::Result<Bytes>>>();
        self.put_stream(tenant, futures::stream::iter(chunks)).await
    }

    /// Stores the content of `stream` for `tenant` and returns its content address.
    ///
    /// Content of at most one part (see [`BlobStore::with_part_size`]) is buffered and stored
    /// with one request. Larger content is never held in memory as a whole: it is sent as a
    /// multipart upload to a staging key while it is hashed, then renamed to its content
    /// address. When the stream yields an error or the backend fails, the upload is aborted,
    /// no object appears under the content address, and the error is returned.
    ///
    /// NOTE: on S3 the rename is a `CopyObject` request followed by a delete. AWS limits
    /// `CopyObject` to objects of up to 5 GB (S3 API reference, CopyObject), so larger
    /// streamed blobs fail there after the upload. `object_store` 0.13 has no multipart copy
    /// (`UploadPartCopy`) that would lift this limit.
    pub async fn put_stream<S>(&self, tenant: &TenantId, stream: S) -> Result<BlobRef, BlobError>
    where
        S: Stream<Item = io::Result<Bytes>> + Send,
    {
        self.put_chunks(tenant, stream, BlobError::Io).await
    }

    /// Stores the content of the local file at `path` for `tenant`, streaming it like
    /// [`BlobStore::put_stream`].
    pub async fn put_file(&self, tenant: &TenantId, path: &FsPath) -> Result<BlobRef, BlobError> {
        let file_error = |source| BlobError::ReadFile {
            path: path.to_path_buf(),
            source,
        };
        let file = tokio::fs::File::open(path).await.map_err(file_error)?;

        let chunks = futures::stream::try_unfold(file, |mut file| async move {
            let mut buffer = BytesMut::with_capacity(FILE_READ_SIZE);
            let read = file.read_buf(&mut buffer).await?;
            Ok((read > 0).then(|| (buffer.freeze(), file)))
        });
        self.put_chunks(tenant, chunks, file_error).await
    }

    async fn put_chunks<S>(
        &self,
        tenant: &TenantId,
        stream: S,
        read_error: impl Fn(io::Error) -> BlobError,
    ) -> Result<BlobRef, BlobError>
    where
        S: Stream<Item = io::Result<Bytes>> + Send,
    {
        // Rejects an invalid tenant before any content is read.
        self.tenant_prefix(tenant)?;

        let mut stream = pin!(stream);
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut first_part = Vec::new();
        let mut buffered = 0;

        while buffered <= self.part_size {
            match stream.next().await {
                None => {
                    let blob = BlobRef {
                        digest: Sha256Digest::from_hasher(hasher),
                        size,
                    };
                    let payload = PutPayload::from_iter(first_part);
                    return self.put_single(tenant, blob, payload).await;
                }
                Some(Err(error)) => return Err(read_error(error)),
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    buffered += chunk.len();
                    first_part.push(chunk);
                }
            }
        }

        // The content is larger than one part, so it goes to a staging key that no listing of a
        // tenant covers, and only a complete object is renamed to the content address.
        let staging_key = self
            .staging_prefix()
            .join(uuid::Uuid::now_v7().simple().to_string().as_str());
        let upload = self.store.put_multipart(&staging_key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);

        let uploaded: Result<(), BlobError> = async {
            for chunk in first_part {
                writer.put(chunk);
                writer.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
            }
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(&read_error)?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                writer.put(chunk);
                writer.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await?;
            }
            // Waits for every part here, while a failed part can still be aborted.
            writer.wait_for_capacity(0).await?;
            Ok(())
        }
        .await;

        if let Err(error) = uploaded {
            if let Err(abort_error) = writer.abort().await {
                tracing::warn!(
                    key = %staging_key,
                    error = %abort_error,
                    "aborting a failed multipart upload failed; clean_staging or a bucket \
                     lifecycle rule removes its parts"
                );
            }
            return Err(error);
        }

        // `finish` aborts the upload itself when completing it fails.
        writer.finish().await?;

        let blob = BlobRef {
            digest: Sha256Digest::from_hasher(hasher),
            size,
        };
        let key = self.blob_key(tenant, &blob.digest)?;
        // An existing object under `key` has the same content, so replacing it is harmless and
        // repairs it if it was corrupted.
        if let Err(error) = self.store.rename(&staging_key, &key).await {
            self.delete_staging(&staging_key).await;
            return Err(error.into());
        }
        self.sync_local(&key).await?;

        tracing::debug!(tenant = %tenant, digest = %blob.digest, size, "stored blob");
        Ok(blob)
    }

    /// Stores content that fits in one request directly under its content address.
    /// `object_store` documents a single `put` as atomic in every backend.
    async fn put_single(
        &self,
        tenant: &TenantId,
        blob: BlobRef,
        payload: PutPayload,
    ) -> Result<BlobRef, BlobError> {
        let key = self.blob_key(tenant, &blob.digest)?;
        self.store.put(&key, payload).await?;
        self.sync_local(&key).await?;
        tracing::debug!(tenant = %tenant, digest = %blob.digest, size = blob.size, "stored blob");
        Ok(blob)
    }

    /// Flushes the blob at `key` to disk on a local backend. It syncs the file's content, then
    /// each directory from the file's own up to the root, so a new directory entry survives a
    /// crash too. `object_store`'s local backend writes and renames without syncing, and a
    /// caller commits metadata that names the blob once this returns. On other backends the
    /// server's acknowledgement of the write is relied on, and nothing is done.
    async fn sync_local(&self, key: &object_store::path::Path) -> Result<(), BlobError> {
        let (Some(root), Some(file)) = (self.local_root.clone(), self.local_path(key)) else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || sync_file_and_parents(&root, &file))
            .await
            .map_err(|error| BlobError::Io(io::Error::other(error)))?
    }

    /// Deletes a staging object after a failed upload. Failures are only logged, because
    /// `clean_staging` removes what is left.
    async fn delete_staging(&self, staging_key: &object_store::path::Path) {
        match self.store.delete(staging_key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => tracing::warn!(
                key = %staging_key,
                %error,
                "deleting the staging object of a failed upload failed"
            ),
        }
    }
}

/// Syncs `file`, then every directory from its parent up to and including `root`.
fn sync_file_and_parents(root: &FsPath, file: &FsPath) -> Result<(), BlobError> {
    let sync = |path: &FsPath| {
        std::fs::File::open(path)
            .and_then(|opened| opened.sync_all())
            .map_err(|source| BlobError::Sync {
                path: path.to_path_buf(),
                source,
            })
    };
    sync(file)?;
    let mut directory = file.parent();
    while let Some(current) = directory.filter(|dir| dir.starts_with(root)) {
        sync(current)?;
        directory = current.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Server handlers run on a multi-threaded runtime, so every store future must be `Send`.
    #[test]
    fn store_futures_are_send() {
        let store = BlobStore::from_object_store(
            std::sync::Arc::new(object_store::memory::InMemory::new()),
            "",
        );
        let tenant = TenantId::from_stored("acme");

        assert_send(&store.put_bytes(&tenant, Bytes::new()));
        assert_send(&store.put_stream(&tenant, futures::stream::empty()));
        assert_send(&store.put_file(&tenant, FsPath::new("/nonexistent")));
        let digest = Sha256Digest::of(b"");
        assert_send(&store.get(&tenant, &digest));
        assert_send(&store.open(&tenant, &digest));
        assert_send(&store.head(&tenant, &digest));
        assert_send(&store.delete(&tenant, &digest));
        assert_send(&store.list(&tenant));
        assert_send(&store.clean_staging(std::time::Duration::ZERO));
    }

    #[test]
    fn sync_covers_file_and_directories() {
        let root = tempfile::tempdir().unwrap();
        let directory = root.path().join("tenants/acme");
        std::fs::create_dir_all(&directory).unwrap();
        let file = directory.join("blob");
        std::fs::write(&file, b"content").unwrap();

        sync_file_and_parents(root.path(), &file).unwrap();
    }

    #[test]
    fn sync_missing_file_names_it() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("tenants/acme/blob");

        let error = sync_file_and_parents(root.path(), &missing).unwrap_err();

        assert!(
            matches!(&error, BlobError::Sync { path, .. } if path == &missing),
            "{error}"
        );
    }

    /// Both write paths of a local store, one request and a multipart upload, end synced and
    /// readable.
    #[tokio::test]
    async fn local_writes_are_synced() {
        let root = tempfile::tempdir().unwrap();
        let config = crate::BlobConfig::Local {
            root: root.path().to_path_buf(),
        };
        let store = BlobStore::from_config(&config).unwrap().with_part_size(16);
        let tenant = TenantId::from_stored("acme");

        for content in [b"small".to_vec(), vec![7u8; 100]] {
            let blob = store
                .put_bytes(&tenant, Bytes::from(content.clone()))
                .await
                .unwrap();
            let key = store.blob_key(&tenant, &blob.digest).unwrap();
            let file = store.local_path(&key).unwrap();

            assert_eq!(std::fs::read(&file).unwrap(), content);
            assert_eq!(store.get(&tenant, &blob.digest).await.unwrap(), content);
        }
    }
}
