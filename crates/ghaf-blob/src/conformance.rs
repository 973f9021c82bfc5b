//! Conformance checks that every [`BlobStore`] backend must pass.
//!
//! Each check is an async function that takes a store, uses tenants with fresh random names,
//! and panics with a message on the first failed expectation. Integration tests run them
//! against the local backend and, when configured, against S3. The staging checks assume
//! that nothing else uploads through the same store while they run.

use std::io;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use ghaf_core::TenantId;
use object_store::{ObjectStoreExt, PutPayload};

use crate::{BlobError, BlobRef, BlobStore, Sha256Digest};

/// SHA-256 of empty input.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Runs every check in this module, one after another.
pub async fn run_all(store: &BlobStore) {
    round_trip(store).await;
    identical_content_stored_once(store).await;
    concurrent_identical_uploads(store).await;
    empty_blob(store).await;
    large_streamed_blob(store).await;
    put_file_round_trip(store).await;
    missing_blob_not_found(store).await;
    head_reports_size(store).await;
    list_per_tenant(store).await;
    tenant_isolation(store).await;
    delete_is_idempotent(store).await;
    corruption_detected(store).await;
    failed_stream_stores_nothing(store).await;
}

/// Returns a tenant id that no other run uses, so checks can share a bucket.
pub fn fresh_tenant(label: &str) -> TenantId {
    TenantId::from_stored(format!(
        "conformance-{label}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Returns `len` deterministic pseudo-random bytes (xorshift64*), so large test content does
/// not compress or repeat and two seeds give different content.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Splits `content` into chunks of `chunk_size` bytes, as a stream for `put_stream`.
pub fn chunked_stream(
    content: Bytes,
    chunk_size: usize,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let chunks: Vec<io::Result<Bytes>> = (0..content.len())
        .step_by(chunk_size)
        .map(|start| Ok(content.slice(start..content.len().min(start + chunk_size))))
        .collect();
    futures::stream::iter(chunks)
}

/// Reads a stream from `open` to its end and returns the content yielded before the first
/// error, together with that error.
pub async fn read_to_end(
    store: &BlobStore,
    tenant: &TenantId,
    digest: &Sha256Digest,
) -> (Vec<u8>, Option<BlobError>) {
    let mut stream = store
        .open(tenant, digest)
        .await
        .unwrap_or_else(|error| panic!("open of blob {digest} failed: {error}"));
    let mut content = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => content.extend_from_slice(&chunk),
            Err(error) => {
                let trailing = stream.next().await;
                assert!(
                    trailing.is_none(),
                    "blob stream yielded {trailing:?} after the error {error}"
                );
                return (content, Some(error));
            }
        }
    }
    (content, None)
}

/// Returns the number of objects under the staging prefix of `store`.
pub async fn staging_object_count(store: &BlobStore) -> usize {
    let prefix = store.staging_prefix();
    let objects: Vec<_> = store
        .object_store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .expect("listing the staging prefix failed");
    objects.len()
}

/// Stores content with `put_bytes`, reads it back with `get` and `open`, and checks the
/// returned reference.
pub async fn round_trip(store: &BlobStore) {
    let tenant = fresh_tenant("round-trip");
    let content = Bytes::from_static(b"weights of a very small model");

    let blob = store.put_bytes(&tenant, content.clone()).await.unwrap();
    assert_eq!(
        blob.digest,
        Sha256Digest::of(&content),
        "digest of put_bytes"
    );
    assert_eq!(blob.size, content.len() as u64, "size of put_bytes");

    let read = store.get(&tenant, &blob.digest).await.unwrap();
    assert_eq!(read, content, "get returned other content");

    let (streamed, error) = read_to_end(store, &tenant, &blob.digest).await;
    assert!(error.is_none(), "open of a valid blob yielded {error:?}");
    assert_eq!(streamed, content, "open returned other content");

    let stream = store.open(&tenant, &blob.digest).await.unwrap();
    assert_eq!(stream.size(), blob.size, "size reported by open");
    assert_eq!(stream.digest(), blob.digest, "digest reported by open");
}

/// Stores the same content twice, by bytes and by stream, and checks that one object exists.
pub async fn identical_content_stored_once(store: &BlobStore) {
    let tenant = fresh_tenant("dedup");
    let content = Bytes::from_static(b"the same content twice");

    let first = store.put_bytes(&tenant, content.clone()).await.unwrap();
    let second = store.put_bytes(&tenant, content.clone()).await.unwrap();
    let third = store
        .put_stream(&tenant, chunked_stream(content.clone(), 5))
        .await
        .unwrap();
    assert_eq!(first, second, "second put_bytes of identical content");
    assert_eq!(first, third, "put_stream of identical content");

    let listed = store.list(&tenant).await.unwrap();
    assert_eq!(listed, vec![first], "list after storing identical content");
    assert_eq!(store.get(&tenant, &first.digest).await.unwrap(), content);
}

/// Uploads identical multipart content twice at the same time and checks that both succeed.
pub async fn concurrent_identical_uploads(store: &BlobStore) {
    let tenant = fresh_tenant("concurrent");
    let content = Bytes::from(pseudo_random_bytes(2 * store.part_size + 1000, 7));

    let (first, second) = futures::join!(
        store.put_stream(&tenant, chunked_stream(content.clone(), 64 * 1024)),
        store.put_stream(&tenant, chunked_stream(content.clone(), 100_000)),
    );
    let first = first.expect("first of two concurrent uploads failed");
    let second = second.expect("second of two concurrent uploads failed");
    assert_eq!(first, second, "concurrent uploads of identical content");

    assert_eq!(store.list(&tenant).await.unwrap(), vec![first]);
    assert_eq!(store.get(&tenant, &first.digest).await.unwrap(), content);
    assert_eq!(staging_object_count(store).await, 0, "staging objects left");
}

/// Stores empty content through every write path.
pub async fn empty_blob(store: &BlobStore) {
    let tenant = fresh_tenant("empty");

    let blob = store.put_bytes(&tenant, Bytes::new()).await.unwrap();
    assert_eq!(
        blob.digest.to_hex(),
        EMPTY_SHA256,
        "digest of empty content"
    );
    assert_eq!(blob.size, 0, "size of empty content");

    let streamed = store
        .put_stream(&tenant, futures::stream::empty())
        .await
        .unwrap();
    assert_eq!(streamed, blob, "put_stream of an empty stream");

    assert_eq!(store.head(&tenant, &blob.digest).await.unwrap(), Some(0));
    assert!(store.get(&tenant, &blob.digest).await.unwrap().is_empty());
    let (content, error) = read_to_end(store, &tenant, &blob.digest).await;
    assert!(error.is_none(), "open of empty blob yielded {error:?}");
    assert!(content.is_empty(), "open of empty blob returned content");
}

/// Streams content of several parts in uneven chunks, then reads it back by stream and whole.
pub async fn large_streamed_blob(store: &BlobStore) {
    let tenant = fresh_tenant("large");
    let content = Bytes::from(pseudo_random_bytes(3 * store.part_size + 12_345, 42));

    let blob = store
        .put_stream(&tenant, chunked_stream(content.clone(), 300_007))
        .await
        .unwrap();
    assert_eq!(
        blob.digest,
        Sha256Digest::of(&content),
        "digest of streamed blob"
    );
    assert_eq!(blob.size, content.len() as u64, "size of streamed blob");
    assert_eq!(
        staging_object_count(store).await,
        0,
        "staging objects left after a completed upload"
    );

    assert_eq!(
        store.head(&tenant, &blob.digest).await.unwrap(),
        Some(blob.size)
    );
    let (streamed, error) = read_to_end(store, &tenant, &blob.digest).await;
    assert!(
        error.is_none(),
        "open of a valid large blob yielded {error:?}"
    );
    assert!(
        streamed == content,
        "open returned other content for the large blob"
    );
    let read = store.get(&tenant, &blob.digest).await.unwrap();
    assert!(
        read == content,
        "get returned other content for the large blob"
    );

    let from_bytes = store.put_bytes(&tenant, content.clone()).await.unwrap();
    assert_eq!(from_bytes, blob, "put_bytes of the same large content");
    assert_eq!(store.list(&tenant).await.unwrap(), vec![blob]);
}

/// Stores a local file larger than one part and reads it back.
pub async fn put_file_round_trip(store: &BlobStore) {
    let tenant = fresh_tenant("file");
    let content = pseudo_random_bytes(store.part_size + 4096, 11);
    let path = std::env::temp_dir().join(format!(
        "ghaf-blob-conformance-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&path, &content).expect("writing the temporary input file failed");

    let result = store.put_file(&tenant, &path).await;
    std::fs::remove_file(&path).expect("removing the temporary input file failed");
    let blob = result.unwrap();
    assert_eq!(
        blob.digest,
        Sha256Digest::of(&content),
        "digest of put_file"
    );
    assert_eq!(blob.size, content.len() as u64, "size of put_file");
    let read = store.get(&tenant, &blob.digest).await.unwrap();
    assert!(read == content, "get returned other content for the file");

    let error = store.put_file(&tenant, &path).await.unwrap_err();
    assert!(
        matches!(&error, BlobError::ReadFile { path: p, .. } if *p == path),
        "put_file of a missing file gave {error:?}"
    );
}

/// Reads a digest that was never stored.
pub async fn missing_blob_not_found(store: &BlobStore) {
    let tenant = fresh_tenant("missing");
    let digest = Sha256Digest::of(b"never stored");

    let error = store.get(&tenant, &digest).await.unwrap_err();
    assert!(
        matches!(error, BlobError::NotFound { digest: d } if d == digest),
        "get of a missing blob gave {error:?}"
    );
    assert_eq!(error.code(), ghaf_core::ErrorCode::NotFound);

    let error = store.open(&tenant, &digest).await.unwrap_err();
    assert!(
        matches!(error, BlobError::NotFound { digest: d } if d == digest),
        "open of a missing blob gave {error:?}"
    );
    assert_eq!(store.head(&tenant, &digest).await.unwrap(), None);
}

/// Checks that `head` returns the size of stored blobs only.
pub async fn head_reports_size(store: &BlobStore) {
    let tenant = fresh_tenant("head");
    let blob = store
        .put_bytes(&tenant, Bytes::from_static(b"12345678"))
        .await
        .unwrap();
    assert_eq!(store.head(&tenant, &blob.digest).await.unwrap(), Some(8));

    let other = Sha256Digest::of(b"other content");
    assert_eq!(store.head(&tenant, &other).await.unwrap(), None);
}

/// Checks that `list` returns exactly the blobs of one tenant, sorted by digest.
pub async fn list_per_tenant(store: &BlobStore) {
    let tenant_a = fresh_tenant("list-a");
    let tenant_b = fresh_tenant("list-b");
    assert!(store.list(&tenant_a).await.unwrap().is_empty());

    let mut expected_a: Vec<BlobRef> = Vec::new();
    for content in [&b"first"[..], b"second", b"third blob"] {
        let blob = store
            .put_bytes(&tenant_a, Bytes::copy_from_slice(content))
            .await
            .unwrap();
        expected_a.push(blob);
    }
    expected_a.sort();
    let blob_b = store
        .put_bytes(&tenant_b, Bytes::from_static(b"only in b"))
        .await
        .unwrap();

    assert_eq!(
        store.list(&tenant_a).await.unwrap(),
        expected_a,
        "list of tenant A"
    );
    assert_eq!(
        store.list(&tenant_b).await.unwrap(),
        vec![blob_b],
        "list of tenant B"
    );
}

/// Checks that one tenant cannot see, read or delete another tenant's blob by digest.
pub async fn tenant_isolation(store: &BlobStore) {
    let owner = fresh_tenant("owner");
    let other = fresh_tenant("other");
    let content = Bytes::from_static(b"private to the owner");
    let blob = store.put_bytes(&owner, content.clone()).await.unwrap();

    assert_eq!(store.head(&other, &blob.digest).await.unwrap(), None);
    let error = store.get(&other, &blob.digest).await.unwrap_err();
    assert!(
        matches!(error, BlobError::NotFound { .. }),
        "get by another tenant gave {error:?}"
    );
    let error = store.open(&other, &blob.digest).await.unwrap_err();
    assert!(
        matches!(error, BlobError::NotFound { .. }),
        "open by another tenant gave {error:?}"
    );
    assert!(store.list(&other).await.unwrap().is_empty());

    store.delete(&other, &blob.digest).await.unwrap();
    assert_eq!(
        store.get(&owner, &blob.digest).await.unwrap(),
        content,
        "delete by another tenant removed the owner's blob"
    );

    // The same content stored by the other tenant is a separate object.
    let copy = store.put_bytes(&other, content.clone()).await.unwrap();
    assert_eq!(copy, blob);
    store.delete(&other, &copy.digest).await.unwrap();
    assert_eq!(store.get(&owner, &blob.digest).await.unwrap(), content);
}

/// Deletes a blob twice and deletes a digest that was never stored.
pub async fn delete_is_idempotent(store: &BlobStore) {
    let tenant = fresh_tenant("delete");
    let blob = store
        .put_bytes(&tenant, Bytes::from_static(b"short-lived"))
        .await
        .unwrap();

    store.delete(&tenant, &blob.digest).await.unwrap();
    assert_eq!(store.head(&tenant, &blob.digest).await.unwrap(), None);
    let error = store.get(&tenant, &blob.digest).await.unwrap_err();
    assert!(
        matches!(error, BlobError::NotFound { .. }),
        "get after delete gave {error:?}"
    );
    assert!(store.list(&tenant).await.unwrap().is_empty());

    store.delete(&tenant, &blob.digest).await.unwrap();
    store
        .delete(&tenant, &Sha256Digest::of(b"never stored"))
        .await
        .unwrap();
}

/// Overwrites stored objects through the underlying object store and checks that `get` and
/// `open` both report the digest mismatch, then that storing the content again repairs it.
pub async fn corruption_detected(store: &BlobStore) {
    let tenant = fresh_tenant("corrupt");
    let content = Bytes::from(pseudo_random_bytes(64 * 1024, 3));
    let blob = store.put_bytes(&tenant, content.clone()).await.unwrap();
    let key = store.blob_key(&tenant, &blob.digest).unwrap();

    let mut flipped = content.to_vec();
    flipped[1000] ^= 0x01;
    let truncated = content.slice(..content.len() - 1).to_vec();

    for corrupt in [flipped, truncated, Vec::new()] {
        let actual = Sha256Digest::of(&corrupt);
        store
            .object_store()
            .put(&key, PutPayload::from(corrupt.clone()))
            .await
            .expect("overwriting the stored object failed");

        let error = store.get(&tenant, &blob.digest).await.unwrap_err();
        match &error {
            BlobError::DigestMismatch {
                key: error_key,
                expected,
                actual: error_actual,
            } => {
                assert_eq!(error_key, key.as_ref(), "key in the mismatch error");
                assert_eq!(*expected, blob.digest, "expected digest in the error");
                assert_eq!(*error_actual, actual, "actual digest in the error");
            }
            other => panic!("get of a corrupted blob gave {other:?}"),
        }
        assert_eq!(error.code(), ghaf_core::ErrorCode::DataCorrupted);

        let (streamed, error) = read_to_end(store, &tenant, &blob.digest).await;
        assert!(
            matches!(error, Some(BlobError::DigestMismatch { .. })),
            "open of a corrupted blob ended with {error:?}"
        );
        assert!(streamed == corrupt, "open yielded other bytes than stored");
    }

    store.put_bytes(&tenant, content.clone()).await.unwrap();
    assert_eq!(
        store.get(&tenant, &blob.digest).await.unwrap(),
        content,
        "storing the content again did not repair the blob"
    );
}

/// Fails streams midway, in the first part and after several parts, and checks that nothing
/// is stored and no staging object is left.
pub async fn failed_stream_stores_nothing(store: &BlobStore) {
    let tenant = fresh_tenant("failed");

    for valid_len in [100, 2 * store.part_size + 5] {
        let valid = Bytes::from(pseudo_random_bytes(valid_len, 5));
        let failing = chunked_stream(valid, 128 * 1024).chain(futures::stream::once(async {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "client went away",
            ))
        }));

        let error = store.put_stream(&tenant, failing).await.unwrap_err();
        assert!(
            matches!(&error, BlobError::Io(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "put_stream of a failing stream of {valid_len} bytes gave {error:?}"
        );
        assert!(
            store.list(&tenant).await.unwrap().is_empty(),
            "a failed upload of {valid_len} bytes stored a blob"
        );
        assert_eq!(
            staging_object_count(store).await,
            0,
            "a failed upload of {valid_len} bytes left a staging object"
        );
    }
}
