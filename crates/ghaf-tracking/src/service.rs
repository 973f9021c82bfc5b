//! [`TrackingService`]: the store plus artifact content in the blob store and signed
//! registration of model versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use ghaf_blob::{BlobError, BlobStore, BlobStream, Sha256Digest};

use crate::manifest::{self, ArtifactManifest, FileKeyStore, ManifestEntry, SignedManifest};
use crate::*;

/// URI scheme of artifacts served by the tracking server's artifact proxy.
pub const ARTIFACT_SCHEME: &str = "mlflow-artifacts:";

/// How many times registration retries when another request took the version number.
const REGISTER_ATTEMPTS: u32 = 5;

/// An artifact file opened for reading: its entry and a stream that verifies the digest.
pub struct ArtifactContent {
    pub entry: ArtifactEntry,
    pub stream: BlobStream,
}

/// One child of an artifact directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Base name of the file or directory.
    pub name: String,
    pub is_dir: bool,
    /// Size in bytes of a file; `None` for a directory.
    pub size: Option<u64>,
}

/// A request to register a version of a registered model.
#[derive(Clone, Debug, Default)]
pub struct RegisterVersion {
    pub name: String,
    /// `models:/<model_id>`, `runs:/<run_id>/<path>` or `mlflow-artifacts:/<path>`.
    pub source: String,
    pub run_id: String,
    pub model_id: String,
    pub description: String,
    pub user_id: String,
    pub tags: Vec<Tag>,
    pub lineage: Lineage,
}

/// Tracking and registry operations over a [`TrackingStore`], a [`BlobStore`] and the
/// tenants' signing keys.
#[derive(Clone)]
pub struct TrackingService {
    store: Arc<dyn TrackingStore>,
    blobs: BlobStore,
    keys: FileKeyStore,
}

impl TrackingService {
    pub fn new(store: Arc<dyn TrackingStore>, blobs: BlobStore, keys: FileKeyStore) -> Self {
        Self { store, blobs, keys }
    }

    pub fn store(&self) -> &dyn TrackingStore {
        self.store.as_ref()
    }

    pub fn keys(&self) -> &FileKeyStore {
        &self.keys
    }

    /// Stores the content of `stream` as the artifact at `path`, replacing an earlier file.
    ///
    /// NOTE: files below a registered version's prefix are not locked, so a developer can
    /// still overwrite them. Verification before loading then rejects the version.
    pub async fn put_artifact<S>(
        &self,
        scope: &Scope,
        path: &str,
        stream: S,
    ) -> Result<ArtifactEntry, TrackingError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send,
    {
        let path = validate_artifact_path(path)?;
        let blob = self.blobs.put_stream(&scope.tenant, stream).await?;
        let entry = ArtifactEntry {
            path,
            digest: blob.digest.to_hex(),
            size: blob.size,
        };
        self.store.put_artifact(scope, &entry).await?;
        Ok(entry)
    }

    /// Opens the artifact file at `path`.
    pub async fn open_artifact(
        &self,
        scope: &Scope,
        path: &str,
    ) -> Result<ArtifactContent, TrackingError> {
        let path = validate_artifact_path(path)?;
        let entry = self
            .store
            .get_artifact(scope, &path)
            .await?
            .ok_or_else(|| TrackingError::not_found("artifact", path.clone()))?;
        let digest = parse_digest(&entry.digest)?;
        let stream = self.blobs.open(&scope.tenant, &digest).await?;
        Ok(ArtifactContent { entry, stream })
    }

    /// Lists the files and directories directly below the artifact directory `dir`.
    pub async fn list_artifact_dir(
        &self,
        scope: &Scope,
        dir: &str,
    ) -> Result<Vec<DirEntry>, TrackingError> {
        let dir = if dir.trim_matches('/').is_empty() {
            String::new()
        } else {
            validate_artifact_path(dir)?
        };
        let entries = self.store.list_artifacts(scope, &dir).await?;
        let mut children: BTreeMap<String, DirEntry> = BTreeMap::new();
        for entry in entries {
            let rest = manifest::relative_path(&dir, &entry.path);
            match rest.split_once('/') {
                Some((child, _)) => {
                    children.entry(child.to_owned()).or_insert(DirEntry {
                        name: child.to_owned(),
                        is_dir: true,
                        size: None,
                    });
                }
                None => {
                    children.insert(
                        rest.to_owned(),
                        DirEntry {
                            name: rest.to_owned(),
                            is_dir: false,
                            size: Some(entry.size),
                        },
                    );
                }
            }
        }
        Ok(children.into_values().collect())
    }

    /// Deletes the artifact at `path` and everything below it.
    pub async fn delete_artifacts(&self, scope: &Scope, path: &str) -> Result<u64, TrackingError> {
        let path = validate_artifact_path(path)?;
        self.store.delete_artifacts(scope, &path).await
    }

    /// Returns the artifact path prefix that a registry source points at.
    pub async fn source_prefix(
        &self,
        scope: &Scope,
        source: &str,
    ) -> Result<String, TrackingError> {
        if let Some(model_id) = source.strip_prefix("models:/") {
            let model_id = model_id.trim_end_matches('/');
            let model = self.store.get_logged_model(scope, model_id).await?;
            return artifact_uri_path(&model.artifact_uri);
        }
        if let Some(rest) = source.strip_prefix("runs:/") {
            let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
            let run = self.store.get_run(scope, run_id).await?;
            let root = artifact_uri_path(&run.info.artifact_uri)?;
            let path = path.trim_matches('/');
            return Ok(if path.is_empty() {
                root
            } else {
                format!("{root}/{path}")
            });
        }
        if source.starts_with(ARTIFACT_SCHEME) {
            return artifact_uri_path(source);
        }
        Err(TrackingError::invalid(
            "source",
            format!(
                "source {source:?} is not stored by Ghaf: use models:/<model_id>, \
                 runs:/<run_id>/<path> or mlflow-artifacts:/<path>, so the files can be signed"
            ),
        ))
    }

    /// Registers a new version: lists the files below the source, signs their manifest with
    /// the tenant's key, and stores the version with the source run's latest metrics and the
    /// signature from the `MLmodel` file when there is one.
    pub async fn register_version(
        &self,
        scope: &Scope,
        request: &RegisterVersion,
    ) -> Result<ModelVersion, TrackingError> {
        let prefix = self.source_prefix(scope, &request.source).await?;
        let entries = self.store.list_artifacts(scope, &prefix).await?;
        if entries.is_empty() {
            return Err(TrackingError::invalid(
                "source",
                format!(
                    "no artifact files below {:?}; upload the model files before registering",
                    request.source
                ),
            ));
        }
        let mut details = VersionDetails {
            lineage: request.lineage.clone(),
            ..VersionDetails::default()
        };
        if let Some(mlmodel) = entries
            .iter()
            .find(|e| manifest::relative_path(&prefix, &e.path) == "MLmodel")
        {
            let bytes = self
                .blobs
                .get(&scope.tenant, &parse_digest(&mlmodel.digest)?)
                .await?;
            details.signature = mlmodel_signature(&String::from_utf8_lossy(&bytes));
        }
        if !request.run_id.is_empty() {
            details.metrics = self.store.get_run(scope, &request.run_id).await?.metrics;
        }

        let key = self.keys.signing_key(&scope.tenant)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let version = self.store.next_version(scope, &request.name).await?;
            let manifest = ArtifactManifest::from_entries(
                scope.tenant.as_str(),
                scope.project.as_str(),
                &request.name,
                version,
                &prefix,
                &entries,
            );
            let new = NewModelVersion {
                name: request.name.clone(),
                source: request.source.clone(),
                run_id: request.run_id.clone(),
                model_id: request.model_id.clone(),
                description: request.description.clone(),
                user_id: request.user_id.clone(),
                tags: request.tags.clone(),
                artifact_prefix: prefix.clone(),
                details: details.clone(),
                manifest: SignedManifest::sign(&manifest, &key)?,
            };
            match self.store.create_model_version(scope, version, &new).await {
                Err(TrackingError::AlreadyExists { .. }) if attempt < REGISTER_ATTEMPTS => continue,
                result => return result,
            }
        }
    }

    /// Verifies a version before it is loaded: the manifest signature against the tenant's
    /// key, the manifest's identity, the set of files below the version's prefix, and the
    /// content of every file against its digest. Returns the verified manifest.
    pub async fn verify_version(
        &self,
        scope: &Scope,
        version: &ModelVersion,
    ) -> Result<ArtifactManifest, TrackingError> {
        let failed = |reason: String| TrackingError::VerificationFailed {
            name: version.name.clone(),
            version: version.version,
            reason,
        };
        let key = self.keys.verifying_key(&scope.tenant)?;
        let manifest = version.manifest.verify_signature(&key).map_err(failed)?;
        if manifest.tenant != scope.tenant.as_str()
            || manifest.project != scope.project.as_str()
            || manifest.model != version.name
            || manifest.version != version.version
        {
            return Err(failed(format!(
                "the manifest was signed for {}/{} model {} version {}",
                manifest.tenant, manifest.project, manifest.model, manifest.version
            )));
        }

        let entries = self
            .store
            .list_artifacts(scope, &version.artifact_prefix)
            .await?;
        let found: Vec<ManifestEntry> = entries
            .iter()
            .map(|entry| ManifestEntry {
                path: manifest::relative_path(&version.artifact_prefix, &entry.path).to_owned(),
                sha256: entry.digest.clone(),
                size: entry.size,
            })
            .collect();
        manifest::compare_files(&manifest, &found).map_err(failed)?;

        for file in &manifest.files {
            let digest = parse_digest(&file.sha256)?;
            match self.blobs.get(&scope.tenant, &digest).await {
                Ok(_) => {}
                Err(BlobError::NotFound { .. }) => {
                    return Err(failed(format!(
                        "the content of file {:?} is missing from the blob store",
                        file.path
                    )));
                }
                Err(BlobError::DigestMismatch { .. }) => {
                    return Err(failed(format!(
                        "the stored content of file {:?} does not match its digest {}",
                        file.path, file.sha256
                    )));
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(manifest)
    }
}

fn parse_digest(hex: &str) -> Result<Sha256Digest, TrackingError> {
    hex.parse().map_err(|_| {
        TrackingError::Meta(ghaf_meta::MetaError::Corrupt {
            what: "artifact digest",
            message: format!("{hex:?} is not 64 hex digits"),
        })
    })
}

/// Returns the path below the project's artifact root of an `mlflow-artifacts:` URI.
pub fn artifact_uri_path(uri: &str) -> Result<String, TrackingError> {
    let rest = uri.strip_prefix(ARTIFACT_SCHEME).ok_or_else(|| {
        TrackingError::invalid(
            "artifact_uri",
            format!("{uri:?} is not an {ARTIFACT_SCHEME} URI"),
        )
    })?;
    // `mlflow-artifacts://host/path` names a server; the path after the host is what counts.
    let rest = match rest.strip_prefix("//") {
        Some(with_host) => with_host.split_once('/').map_or("", |(_, path)| path),
        None => rest,
    };
    validate_artifact_path(rest)
}

/// Normalises an artifact path: relative, `/`-separated, without empty, `.` or `..`
/// segments, and at most 1,024 bytes.
pub fn validate_artifact_path(path: &str) -> Result<String, TrackingError> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Err(TrackingError::invalid("path", "the artifact path is empty"));
    }
    if trimmed.len() > 1024 {
        return Err(TrackingError::invalid(
            "path",
            "the artifact path is longer than 1024 bytes",
        ));
    }
    if trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
        || trimmed.contains('\\')
        || trimmed.chars().any(char::is_control)
    {
        return Err(TrackingError::invalid(
            "path",
            format!(
                "invalid artifact path {path:?}: use relative segments without '.', '..' or '//'"
            ),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Extracts `signature.inputs` and `signature.outputs` from an `MLmodel` YAML file.
///
/// MLflow writes each as a single-quoted JSON string on one line (`  inputs: '[...]'`), and
/// only that form is read; other layouts give `None`.
fn mlmodel_signature(text: &str) -> Option<serde_json::Value> {
    let mut in_signature = false;
    let mut signature = serde_json::Map::new();
    for line in text.lines() {
        if line == "signature:" {
            in_signature = true;
            continue;
        }
        if in_signature {
            if !line.starts_with(' ') {
                break;
            }
            let Some((key, value)) = line.trim().split_once(": ") else {
                continue;
            };
            let value = value.trim();
            let json = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .map(|v| v.replace("''", "'"));
            if let Some(parsed) = json.and_then(|j| serde_json::from_str(&j).ok()) {
                signature.insert(key.to_owned(), parsed);
            }
        }
    }
    (!signature.is_empty()).then_some(serde_json::Value::Object(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_reject_traversal() {
        assert_eq!(
            validate_artifact_path("/1/abc/artifacts/").unwrap(),
            "1/abc/artifacts"
        );
        for bad in ["", "/", "a/../b", "a//b", "./a", "a\\b", "a/\n"] {
            assert!(validate_artifact_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn artifact_uri_path_strips_scheme_and_host() {
        assert_eq!(
            artifact_uri_path("mlflow-artifacts:/1/r/artifacts").unwrap(),
            "1/r/artifacts"
        );
        assert_eq!(
            artifact_uri_path("mlflow-artifacts://host:5000/1/r/artifacts").unwrap(),
            "1/r/artifacts"
        );
        assert!(artifact_uri_path("s3://bucket/x").is_err());
    }

    #[test]
    fn mlmodel_signature_is_read() {
        let text = "artifact_path: model\nsignature:\n  inputs: '[{\"type\": \"double\", \"name\": \"x\"}]'\n  outputs: '[{\"type\": \"long\"}]'\n  params: null\nutc_time_created: '2026'\n";
        let signature = mlmodel_signature(text).unwrap();
        assert_eq!(signature["inputs"][0]["name"], "x");
        assert_eq!(signature["outputs"][0]["type"], "long");
        assert!(mlmodel_signature("flavors: {}\n").is_none());
    }
}
