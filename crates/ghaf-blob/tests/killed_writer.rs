//! Atomicity when the writing process dies: a child process streams a large blob into a local
//! store and is killed with SIGKILL mid-upload. Nothing may appear under the content address,
//! and the same content must upload cleanly afterwards.
//!
//! The child is this test binary run again with `--exact killed_writer_child --ignored`, with
//! `GHAF_BLOB_TEST_WRITER_ROOT` set to the store root.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use ghaf_blob::{BlobConfig, BlobError, BlobStore, Sha256Digest, conformance};
use ghaf_core::TenantId;
use sha2::{Digest as _, Sha256};

/// Tells the child test where the store is; without it the child test does nothing.
const WRITER_ROOT_ENV: &str = "GHAF_BLOB_TEST_WRITER_ROOT";
const TENANT: &str = "killed-writer";

/// The content: 256 chunks of 256 KiB, 64 MiB in all.
const CHUNK_SIZE: usize = 256 * 1024;
const CHUNK_COUNT: usize = 256;
/// The child sends this many chunks at once, enough to start the multipart upload and write
/// its first part, then waits `SLOW_CHUNK_DELAY` before each further chunk. The rest of the
/// upload takes about 250 * 50 ms = 12.5 s, far longer than the parent needs to notice the
/// staging data, and it still ends on its own if the parent never kills the child.
const FAST_CHUNKS: usize = 6;
const SLOW_CHUNK_DELAY: Duration = Duration::from_millis(50);
const PART_SIZE: usize = 1024 * 1024;

/// Time the parent waits for staging data to appear, including the child's start.
const STAGING_TIMEOUT: Duration = Duration::from_secs(60);

fn content_chunk(index: usize) -> Bytes {
    Bytes::from(conformance::pseudo_random_bytes(CHUNK_SIZE, index as u64))
}

fn open_store(root: &Path) -> BlobStore {
    let config = BlobConfig::Local {
        root: root.to_path_buf(),
    };
    BlobStore::from_config(&config)
        .expect("opening the local store failed")
        .with_part_size(PART_SIZE)
}

fn tenant() -> TenantId {
    TenantId::from_stored(TENANT)
}

/// Streams the content slowly into the store. Runs only as the child process of
/// `killed_writer_leaves_no_blob`, which kills it mid-upload.
#[tokio::test]
#[ignore = "runs only as the child process of killed_writer_leaves_no_blob"]
async fn killed_writer_child() {
    let Ok(root) = std::env::var(WRITER_ROOT_ENV) else {
        return;
    };
    let store = open_store(Path::new(&root));

    let chunks = futures::stream::iter(0..CHUNK_COUNT).then(|index| async move {
        if index >= FAST_CHUNKS {
            tokio::time::sleep(SLOW_CHUNK_DELAY).await;
        }
        Ok(content_chunk(index))
    });
    let result = store.put_stream(&tenant(), chunks).await;
    println!("writer finished without being killed: {result:?}");
}

/// Kills the child when the test ends early, so a failed assertion leaves no process behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

fn has_staging_data(staging: &Path) -> bool {
    files_under(staging)
        .iter()
        .any(|path| path.metadata().is_ok_and(|metadata| metadata.len() > 0))
}

fn child_output(dir: &Path) -> String {
    let stdout = std::fs::read_to_string(dir.join("child.stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("child.stderr")).unwrap_or_default();
    format!("child stdout:\n{stdout}\nchild stderr:\n{stderr}")
}

#[tokio::test]
async fn killed_writer_leaves_no_blob() {
    let dir = tempfile::tempdir().expect("creating a temporary directory failed");
    let root = dir.path().join("blobs");
    let staging = root.join("staging");

    let mut hasher = Sha256::new();
    let mut content = Vec::with_capacity(CHUNK_SIZE * CHUNK_COUNT);
    for index in 0..CHUNK_COUNT {
        let chunk = content_chunk(index);
        hasher.update(&chunk);
        content.extend_from_slice(&chunk);
    }
    let digest = Sha256Digest::from_bytes(hasher.finalize().into());
    let content = Bytes::from(content);

    let child = Command::new(std::env::current_exe().expect("locating the test binary failed"))
        .args(["--exact", "killed_writer_child", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(WRITER_ROOT_ENV, &root)
        .stdin(Stdio::null())
        .stdout(File::create(dir.path().join("child.stdout")).unwrap())
        .stderr(File::create(dir.path().join("child.stderr")).unwrap())
        .spawn()
        .expect("starting the writer process failed");
    let mut child = ChildGuard(child);

    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!(
                "the writer exited with {status} before it was killed\n{}",
                child_output(dir.path())
            );
        }
        if has_staging_data(&staging) {
            break;
        }
        assert!(
            started.elapsed() < STAGING_TIMEOUT,
            "no staging data appeared within {STAGING_TIMEOUT:?}\n{}",
            child_output(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    child.0.kill().expect("killing the writer failed");
    let status = child
        .0
        .wait()
        .expect("waiting for the killed writer failed");
    assert!(!status.success(), "the killed writer exited with success");

    let leftovers = files_under(&staging);
    assert!(
        !leftovers.is_empty(),
        "the killed writer left no staging data, so it was not killed mid-upload"
    );
    assert_eq!(
        files_under(&root.join("tenants")),
        Vec::<PathBuf>::new(),
        "the killed writer left files under the tenant prefix"
    );

    let store = open_store(&root);
    let tenant = tenant();
    assert_eq!(store.head(&tenant, &digest).await.unwrap(), None);
    let error = store.get(&tenant, &digest).await.unwrap_err();
    assert!(
        matches!(error, BlobError::NotFound { .. }),
        "get after the killed upload gave {error:?}"
    );
    assert!(store.list(&tenant).await.unwrap().is_empty());

    let blob = store
        .put_stream(
            &tenant,
            conformance::chunked_stream(content.clone(), CHUNK_SIZE),
        )
        .await
        .expect("uploading the content again failed");
    assert_eq!(blob.digest, digest, "digest of the second upload");
    assert_eq!(blob.size, content.len() as u64, "size of the second upload");
    let read = store.get(&tenant, &digest).await.unwrap();
    assert!(
        read == content,
        "get returned other content after the second upload"
    );

    let removed = store.clean_staging(Duration::ZERO).await.unwrap();
    assert_eq!(
        removed,
        leftovers.len(),
        "clean_staging removed other than the leftovers {leftovers:?}"
    );
    assert_eq!(files_under(&staging), Vec::<PathBuf>::new());
    assert_eq!(store.list(&tenant).await.unwrap(), vec![blob]);
}
