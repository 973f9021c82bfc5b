//! Removal of what interrupted uploads leave behind.

use std::io;
use std::path::Path as FsPath;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::{BlobError, BlobStore};

impl BlobStore {
    /// Deletes staging objects last modified more than `older_than` ago and returns how many
    /// were deleted. These are left by uploads whose process died or whose cleanup failed.
    ///
    /// `Duration::ZERO` also deletes the staging objects of uploads that are still running, so
    /// those uploads fail. A scheduled cleanup uses a duration longer than any upload takes
    /// between two writes.
    ///
    /// On the local backend this also deletes the temporary files that `LocalFileSystem`
    /// writes next to a key (named `<key>#<number>`) and hides from listings. It walks the
    /// whole root directory to find them.
    ///
    /// NOTE: on S3, the parts of a multipart upload whose process died are not objects and
    /// are not listed, so this does not delete them. Configure the bucket with a lifecycle rule
    /// that aborts incomplete multipart uploads.
    pub async fn clean_staging(&self, older_than: Duration) -> Result<usize, BlobError> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);

        let staging_prefix = self.staging_prefix();
        let mut stale = Vec::new();
        let mut listing = self.store.list(Some(&staging_prefix));
        while let Some(meta) = listing.try_next().await? {
            if SystemTime::from(meta.last_modified) <= cutoff {
                stale.push(meta.location);
            }
        }

        let mut removed = 0;
        for key in stale {
            match self.store.delete(&key).await {
                Ok(()) => {
                    tracing::debug!(%key, "deleted abandoned staging object");
                    removed += 1;
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }

        if let Some(root) = self.local_root.clone() {
            let removed_files =
                tokio::task::spawn_blocking(move || remove_local_temp_files(&root, cutoff))
                    .await
                    .map_err(|error| {
                        BlobError::Backend(object_store::Error::Generic {
                            store: "LocalFileSystem",
                            source: Box::new(error),
                        })
                    })??;
            removed += removed_files;
        }

        if removed > 0 {
            tracing::info!(removed, "removed abandoned staging objects");
        }
        Ok(removed)
    }
}

/// Deletes the files under `dir` that are temporary files of `LocalFileSystem` and were last
/// modified at or before `cutoff`, and returns how many were deleted.
fn remove_local_temp_files(dir: &FsPath, cutoff: SystemTime) -> Result<usize, BlobError> {
    let local_error = |path: &FsPath, error: io::Error| {
        BlobError::Backend(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!(
                "cleaning temporary files at {} failed: {error}",
                path.display()
            )
            .into(),
        })
    };

    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(local_error(dir, error)),
    };

    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|error| local_error(dir, error))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|error| local_error(&path, error))?;

        if file_type.is_dir() {
            removed += remove_local_temp_files(&path, cutoff)?;
            continue;
        }
        if !file_type.is_file() || !is_local_temp_file_name(&entry.file_name()) {
            continue;
        }

        // A finishing upload renames its temporary file away, so a file that is gone by now
        // is not an error.
        let modified = match entry.metadata().and_then(|metadata| metadata.modified()) {
            Ok(modified) => modified,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(local_error(&path, error)),
        };
        if modified > cutoff {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::debug!(path = %path.display(), "deleted abandoned temporary file");
                removed += 1;
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(local_error(&path, error)),
        }
    }
    Ok(removed)
}

/// Tells whether a file name has the form `<name>#<digits>` that `LocalFileSystem` (object_store
/// 0.13) gives its temporary files. Key segments never contain a raw `#`, because
/// `object_store` percent-encodes it.
fn is_local_temp_file_name(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    match name.rsplit_once('#') {
        Some((_, suffix)) => !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn local_temp_file_names() {
        assert!(is_local_temp_file_name(OsStr::new(
            "0190a7c2d1e47c3b8a2f000000000000#1"
        )));
        assert!(is_local_temp_file_name(OsStr::new("abc#12")));
        assert!(!is_local_temp_file_name(OsStr::new("abc")));
        assert!(!is_local_temp_file_name(OsStr::new("abc#")));
        assert!(!is_local_temp_file_name(OsStr::new("abc#1x")));
    }

    #[test]
    fn local_cleanup_keeps_recent_files() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("staging");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(nested.join("upload#1"), b"partial").unwrap();
        std::fs::write(nested.join("complete"), b"whole").unwrap();

        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(remove_local_temp_files(dir.path(), an_hour_ago).unwrap(), 0);
        assert!(nested.join("upload#1").exists());

        assert_eq!(
            remove_local_temp_files(dir.path(), SystemTime::now()).unwrap(),
            1
        );
        assert!(!nested.join("upload#1").exists());
        assert!(nested.join("complete").exists());
    }

    #[test]
    fn local_cleanup_of_missing_root() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(
            remove_local_temp_files(&missing, SystemTime::now()).unwrap(),
            0
        );
    }
}
