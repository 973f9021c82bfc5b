//! Loading registered model versions after verifying their signed manifests.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use ghaf_blob::BlobError;
use ghaf_tracking::{Scope, TrackingError, TrackingService};

use crate::{LoadedModel, RuntimeError, RuntimeOptions, load_model};

/// Loads version `version` of registered model `name`.
///
/// Before anything is parsed, [`TrackingService::verify_version`] checks the manifest's
/// signature against the tenant's key, the set of files below the version's prefix and every
/// file's digest; any failure is [`RuntimeError::Verification`]. The files are then read
/// through streams that check each digest again, so a blob changed after verification is
/// also rejected. Parsing and warm-up run on a blocking thread.
///
/// Errors of the metadata or blob store while reading are [`RuntimeError::Internal`], which
/// [`RuntimeError::is_transient`] reports as worth retrying; a missing or changed file is
/// [`RuntimeError::Verification`] and an unknown version or unreadable model is
/// [`RuntimeError::Load`], which are not.
pub async fn load_verified(
    tracking: &TrackingService,
    scope: &Scope,
    name: &str,
    version: i64,
    options: &RuntimeOptions,
) -> Result<LoadedModel, RuntimeError> {
    let model_version = tracking
        .store()
        .get_model_version(scope, name, version)
        .await
        .map_err(|error| match error {
            TrackingError::NotFound { .. } => RuntimeError::Load(format!(
                "model {name:?} version {version} is not registered in {}/{}",
                scope.tenant, scope.project
            )),
            other => RuntimeError::Internal(format!(
                "reading model {name:?} version {version} failed: {other}"
            )),
        })?;
    let manifest = tracking
        .verify_version(scope, &model_version)
        .await
        .map_err(|error| match error {
            TrackingError::VerificationFailed { reason, .. } => RuntimeError::Verification(reason),
            other => RuntimeError::Internal(format!(
                "verifying model {name:?} version {version} failed: {other}"
            )),
        })?;

    let mut files = BTreeMap::new();
    for file in &manifest.files {
        let path = format!("{}/{}", model_version.artifact_prefix, file.path);
        let content = tracking
            .open_artifact(scope, &path)
            .await
            .map_err(|error| match error {
                TrackingError::NotFound { .. }
                | TrackingError::Blob(
                    BlobError::NotFound { .. } | BlobError::DigestMismatch { .. },
                ) => RuntimeError::Verification(format!(
                    "file {:?} cannot be opened after verification: {error}",
                    file.path
                )),
                // The metadata or blob store failed; a later load can succeed.
                other => RuntimeError::Internal(format!(
                    "opening file {:?} of model {name:?} version {version} failed: {other}",
                    file.path
                )),
            })?;
        if content.entry.digest != file.sha256 {
            return Err(RuntimeError::Verification(format!(
                "file {:?} changed after verification: digest {} differs from the signed {}",
                file.path, content.entry.digest, file.sha256
            )));
        }
        let chunks: Vec<_> = content
            .stream
            .try_collect()
            .await
            .map_err(|error| match error {
                BlobError::DigestMismatch { .. } => RuntimeError::Verification(format!(
                    "file {:?} does not match its digest: {error}",
                    file.path
                )),
                // Reading from the blob store failed; a later load can succeed.
                other => RuntimeError::Internal(format!(
                    "reading file {:?} of model {name:?} version {version} failed: {other}",
                    file.path
                )),
            })?;
        let bytes: Vec<u8> = chunks.concat();
        files.insert(file.path.clone(), bytes);
    }

    let options = options.clone();
    let model = tokio::task::spawn_blocking(move || load_model(&files, &options))
        .await
        .map_err(|error| RuntimeError::Internal(format!("the load task failed: {error}")))??;
    tracing::info!(
        tenant = %scope.tenant,
        project = %scope.project,
        model = name,
        version,
        format = ?model.format,
        load_ms = model.load_duration.as_secs_f64() * 1e3,
        warmup_ms = model.warmup_duration.as_secs_f64() * 1e3,
        "loaded verified model version"
    );
    Ok(model)
}
