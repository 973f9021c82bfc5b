//! The conformance checks against the local filesystem backend, each on its own root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ghaf_blob::{BlobConfig, BlobStore, conformance};

/// Small parts make the multipart checks fast. The local backend accepts any part size.
const PART_SIZE: usize = 1024 * 1024;

fn local_store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().expect("creating a temporary directory failed");
    let config = BlobConfig::Local {
        root: dir.path().join("blobs"),
    };
    let store = BlobStore::from_config(&config)
        .expect("opening the local store failed")
        .with_part_size(PART_SIZE);
    (dir, store)
}

/// Returns every file under `dir`, including those that `LocalFileSystem` hides from listings.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn temp_files_under(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| path.to_string_lossy().contains('#'))
        .collect()
}

#[tokio::test]
async fn local_round_trip() {
    let (_dir, store) = local_store();
    conformance::round_trip(&store).await;
}

#[tokio::test]
async fn local_identical_content_stored_once() {
    let (_dir, store) = local_store();
    conformance::identical_content_stored_once(&store).await;
}

#[tokio::test]
async fn local_concurrent_identical_uploads() {
    let (dir, store) = local_store();
    conformance::concurrent_identical_uploads(&store).await;
    assert_eq!(temp_files_under(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn local_empty_blob() {
    let (_dir, store) = local_store();
    conformance::empty_blob(&store).await;
}

#[tokio::test]
async fn local_large_streamed_blob() {
    let (dir, store) = local_store();
    conformance::large_streamed_blob(&store).await;
    assert_eq!(temp_files_under(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn local_put_file_round_trip() {
    let (_dir, store) = local_store();
    conformance::put_file_round_trip(&store).await;
}

#[tokio::test]
async fn local_missing_blob_not_found() {
    let (_dir, store) = local_store();
    conformance::missing_blob_not_found(&store).await;
}

#[tokio::test]
async fn local_head_reports_size() {
    let (_dir, store) = local_store();
    conformance::head_reports_size(&store).await;
}

#[tokio::test]
async fn local_list_per_tenant() {
    let (_dir, store) = local_store();
    conformance::list_per_tenant(&store).await;
}

#[tokio::test]
async fn local_tenant_isolation() {
    let (_dir, store) = local_store();
    conformance::tenant_isolation(&store).await;
}

#[tokio::test]
async fn local_delete_is_idempotent() {
    let (_dir, store) = local_store();
    conformance::delete_is_idempotent(&store).await;
}

#[tokio::test]
async fn local_corruption_detected() {
    let (_dir, store) = local_store();
    conformance::corruption_detected(&store).await;
}

/// Corrupts the blob file directly on disk, without going through `object_store`.
#[tokio::test]
async fn local_corruption_on_disk_detected() {
    let (dir, store) = local_store();
    let tenant = conformance::fresh_tenant("disk");
    let content = bytes::Bytes::from_static(b"bytes that rot on disk");
    let blob = store.put_bytes(&tenant, content).await.unwrap();

    let key = store.blob_key(&tenant, &blob.digest).unwrap();
    let file = dir.path().join("blobs").join(key.as_ref());
    let mut stored = std::fs::read(&file).expect("the blob file is not at its key path");
    stored[0] ^= 0xFF;
    std::fs::write(&file, &stored).unwrap();

    let error = store.get(&tenant, &blob.digest).await.unwrap_err();
    assert!(
        matches!(error, ghaf_blob::BlobError::DigestMismatch { .. }),
        "get of a blob corrupted on disk gave {error:?}"
    );
    let (_, error) = conformance::read_to_end(&store, &tenant, &blob.digest).await;
    assert!(
        matches!(error, Some(ghaf_blob::BlobError::DigestMismatch { .. })),
        "open of a blob corrupted on disk ended with {error:?}"
    );
}

#[tokio::test]
async fn local_failed_stream_stores_nothing() {
    let (dir, store) = local_store();
    conformance::failed_stream_stores_nothing(&store).await;
    assert_eq!(temp_files_under(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn local_run_all_on_one_store() {
    let (_dir, store) = local_store();
    conformance::run_all(&store).await;
}

#[tokio::test]
async fn local_clean_staging_keeps_blobs() {
    let (dir, store) = local_store();
    let tenant = conformance::fresh_tenant("clean");
    let blob = store
        .put_bytes(&tenant, bytes::Bytes::from_static(b"kept"))
        .await
        .unwrap();

    let staging = dir.path().join("blobs").join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("0000-completed"), b"completed upload").unwrap();
    std::fs::write(staging.join("0000-partial#1"), b"partial upload").unwrap();

    let removed = store
        .clean_staging(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, 0, "clean_staging removed recent staging files");

    let removed = store.clean_staging(Duration::ZERO).await.unwrap();
    assert_eq!(
        removed, 2,
        "clean_staging removed other than both staging files"
    );
    assert_eq!(files_under(&staging), Vec::<PathBuf>::new());
    assert_eq!(
        store.get(&tenant, &blob.digest).await.unwrap(),
        bytes::Bytes::from_static(b"kept")
    );
}
