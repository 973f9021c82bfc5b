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

use crate::durable::BeforeWrite;
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

    /// Stores the local file at `path` for `tenant` as the blob `blob`, whose digest and
    /// size the caller computed while writing the file. On a local backend with `path` on
    /// the same file system, the file is synced and renamed to its content address, so its
    /// content is neither read nor copied again, and `path` is gone afterwards. There the
    /// digest is not checked against the content, and a size that differs from the file's
    /// fails before anything is stored.
    ///
    /// Otherwise the file is stored by [`BlobStore::put_file`], which hashes it and stays,
    /// and a digest or size that differs from the caller's fails after the upload.
    pub async fn put_moved_file(
        &self,
        tenant: &TenantId,
        path: &FsPath,
        blob: BlobRef,
    ) -> Result<BlobRef, BlobError> {
        let key = self.blob_key(tenant, &blob.digest)?;
        let (Some(root), Some(target)) = (self.local_root.clone(), self.local_path(&key)) else {
            return self.put_copied_file(tenant, path, blob).await;
        };
        let Some(before) = self.before_write(&key).await? else {
            return self.put_copied_file(tenant, path, blob).await;
        };
        let source = path.to_path_buf();
        let synced = self.synced.clone();
        let moved = tokio::task::spawn_blocking(move || {
            let file_error = |source_error| BlobError::ReadFile {
                path: source.clone(),
                source: source_error,
            };
            let file = std::fs::File::open(&source).map_err(file_error)?;
            let size = file.metadata().map_err(file_error)?.len();
            if size != blob.size {
                return Err(file_error(io::Error::other(format!(
                    "the file has {size} bytes, but the caller gave {} for digest {}",
                    blob.size, blob.digest
                ))));
            }
            // The content is durable before its name appears under the content address.
            file.sync_all().map_err(|error| BlobError::Sync {
                path: source.clone(),
                source: error,
            })?;
            drop(file);
            if !move_into_place(&source, &target)? {
                return Ok(false);
            }
            synced.sync(&root, &target, &before)?;
            Ok(true)
        })
        .await
        .map_err(|error| BlobError::Io(io::Error::other(error)))??;
        if !moved {
            return self.put_copied_file(tenant, path, blob).await;
        }
        tracing::debug!(
            tenant = %tenant,
            digest = %blob.digest,
            size = blob.size,
            "stored blob by renaming its file"
        );
        Ok(blob)
    }

    /// Stores the file at `path` by [`BlobStore::put_file`] and checks the result against the
    /// digest and size that the caller computed.
    async fn put_copied_file(
        &self,
        tenant: &TenantId,
        path: &FsPath,
        blob: BlobRef,
    ) -> Result<BlobRef, BlobError> {
        let stored = self.put_file(tenant, path).await?;
        if stored != blob {
            return Err(BlobError::ReadFile {
                path: path.to_path_buf(),
                source: io::Error::other(format!(
                    "the file has {} bytes with SHA-256 {}, but the caller gave {} bytes with \
                     SHA-256 {}; the file changed after it was written",
                    stored.size, stored.digest, blob.size, blob.digest
                )),
            });
        }
        Ok(stored)
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
        let before = self.before_write(&key).await?;
        // An existing object under `key` has the same content, so replacing it is harmless and
        // repairs it if it was corrupted.
        if let Err(error) = self.store.rename(&staging_key, &key).await {
            self.delete_staging(&staging_key).await;
            return Err(error.into());
        }
        self.sync_local(&key, before).await?;

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
        let before = self.before_write(&key).await?;
        self.store.put(&key, payload).await?;
        self.sync_local(&key, before).await?;
        tracing::debug!(tenant = %tenant, digest = %blob.digest, size = blob.size, "stored blob");
        Ok(blob)
    }

    /// Notes, on a local backend, which directories on the path of `key` are known to be
    /// synced before the blob is written there.
    async fn before_write(
        &self,
        key: &object_store::path::Path,
    ) -> Result<Option<BeforeWrite>, BlobError> {
        let (Some(root), Some(file)) = (self.local_root.clone(), self.local_path(key)) else {
            return Ok(None);
        };
        let synced = self.synced.clone();
        let before = tokio::task::spawn_blocking(move || synced.before_write(&root, &file))
            .await
            .map_err(|error| BlobError::Io(io::Error::other(error)))?;
        Ok(Some(before))
    }

    /// Flushes the blob at `key` to disk on a local backend: the file's content, then its
    /// directory and the directories above it that it may have created, so a new directory
    /// entry survives a crash too (see [`crate::durable`]). `object_store`'s local backend
    /// writes and renames without syncing, and a caller commits metadata that names the blob
    /// once this returns. On other backends the server's acknowledgement of the write is
    /// relied on, and nothing is done.
    async fn sync_local(
        &self,
        key: &object_store::path::Path,
        before: Option<BeforeWrite>,
    ) -> Result<(), BlobError> {
        let (Some(root), Some(file), Some(before)) =
            (self.local_root.clone(), self.local_path(key), before)
        else {
            return Ok(());
        };
        let synced = self.synced.clone();
        tokio::task::spawn_blocking(move || synced.sync(&root, &file, &before))
            .await
            .map_err(|error| BlobError::Io(io::Error::other(error)))??;
        Ok(())
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

/// Renames `source` to `target`, creating `target`'s directory. Returns `false` when the two
/// are on different file systems, so the caller copies instead.
fn move_into_place(source: &FsPath, target: &FsPath) -> Result<bool, BlobError> {
    let move_error = |error| BlobError::Move {
        from: source.to_path_buf(),
        to: target.to_path_buf(),
        source: error,
    };
    let parent = target.parent().unwrap_or(target);
    // A concurrent delete can remove the new, still empty directory before the rename, as
    // the local backend removes empty directories, so a few attempts are made.
    let mut attempts = 0;
    loop {
        attempts += 1;
        std::fs::create_dir_all(parent).map_err(move_error)?;
        match std::fs::rename(source, target) {
            Ok(()) => return Ok(true),
            Err(error) if error.kind() == io::ErrorKind::CrossesDevices => return Ok(false),
            Err(error)
                if error.kind() == io::ErrorKind::NotFound && attempts < 3 && source.exists() => {}
            Err(error) => return Err(move_error(error)),
        }
    }
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

    /// A delete clears the synced directories, because the local backend removes the
    /// directories it leaves empty. The next put syncs its whole path again.
    #[tokio::test]
    async fn delete_resyncs_whole_path() {
        let root = tempfile::tempdir().unwrap();
        let config = crate::BlobConfig::Local {
            root: root.path().to_path_buf(),
        };
        let store = BlobStore::from_config(&config).unwrap();
        let tenant = TenantId::from_stored("acme");

        let blob = store
            .put_bytes(&tenant, Bytes::from_static(b"first"))
            .await
            .unwrap();
        // The shard directory, sha256, the tenant, tenants and the root.
        assert_eq!(store.synced.len(), 5);
        store.delete(&tenant, &blob.digest).await.unwrap();
        assert_eq!(store.synced.len(), 0);

        let again = store
            .put_bytes(&tenant, Bytes::from_static(b"first"))
            .await
            .unwrap();
        assert_eq!(store.synced.len(), 5);
        assert_eq!(store.get(&tenant, &again.digest).await.unwrap(), "first");
    }

    /// On a local backend the file is moved into the store; elsewhere it is copied and
    /// stays. Either way the blob reads back with the given digest.
    #[tokio::test]
    async fn put_moved_file_moves_or_copies() {
        let root = tempfile::tempdir().unwrap();
        let config = crate::BlobConfig::Local {
            root: root.path().join("blobs"),
        };
        let local = BlobStore::from_config(&config).unwrap();
        let memory = BlobStore::from_object_store(
            std::sync::Arc::new(object_store::memory::InMemory::new()),
            "",
        );
        let tenant = TenantId::from_stored("acme");
        let content = b"staged parquet bytes".to_vec();
        let blob = BlobRef {
            digest: Sha256Digest::of(&content),
            size: content.len() as u64,
        };

        let staged = root.path().join("staged");
        std::fs::write(&staged, &content).unwrap();
        let stored = local.put_moved_file(&tenant, &staged, blob).await.unwrap();
        assert_eq!(stored, blob);
        assert!(!staged.exists(), "the local store moves the file");
        assert_eq!(local.get(&tenant, &blob.digest).await.unwrap(), content);
        assert_eq!(local.synced.len(), 5);

        std::fs::write(&staged, &content).unwrap();
        let stored = memory.put_moved_file(&tenant, &staged, blob).await.unwrap();
        assert_eq!(stored, blob);
        assert!(staged.exists(), "other backends copy the file");
        assert_eq!(memory.get(&tenant, &blob.digest).await.unwrap(), content);
    }

    /// A size that differs from the file's fails and leaves the file where it was.
    #[tokio::test]
    async fn put_moved_file_checks_size() {
        let root = tempfile::tempdir().unwrap();
        let config = crate::BlobConfig::Local {
            root: root.path().join("blobs"),
        };
        let store = BlobStore::from_config(&config).unwrap();
        let tenant = TenantId::from_stored("acme");
        let staged = root.path().join("staged");
        std::fs::write(&staged, b"four").unwrap();
        let blob = BlobRef {
            digest: Sha256Digest::of(b"four"),
            size: 5,
        };

        let error = store
            .put_moved_file(&tenant, &staged, blob)
            .await
            .unwrap_err();

        assert!(
            matches!(&error, BlobError::ReadFile { path, .. } if *path == staged),
            "{error}"
        );
        assert!(error.to_string().contains("4 bytes"), "{error}");
        assert!(staged.exists());
        assert_eq!(store.head(&tenant, &blob.digest).await.unwrap(), None);
    }

    /// A backend that copies the file checks the caller's digest against the content.
    #[tokio::test]
    async fn put_moved_file_copy_checks_digest() {
        let root = tempfile::tempdir().unwrap();
        let memory = BlobStore::from_object_store(
            std::sync::Arc::new(object_store::memory::InMemory::new()),
            "",
        );
        let tenant = TenantId::from_stored("acme");
        let staged = root.path().join("staged");
        std::fs::write(&staged, b"four").unwrap();
        let blob = BlobRef {
            digest: Sha256Digest::of(b"five"),
            size: 4,
        };

        let error = memory
            .put_moved_file(&tenant, &staged, blob)
            .await
            .unwrap_err();

        assert!(
            matches!(&error, BlobError::ReadFile { path, .. } if *path == staged),
            "{error}"
        );
        assert!(error.to_string().contains("changed after"), "{error}");
        assert!(staged.exists());
    }
}
