//! Signed artifact manifests of model versions.
//!
//! At registration the service lists every file below the version's artifact prefix, with
//! its SHA-256 digest and size, into an [`ArtifactManifest`], and signs the manifest's JSON
//! bytes with the tenant's Ed25519 key. Loading a version checks the signature against the
//! tenant's current key, then checks that the files below the prefix are exactly the files
//! of the manifest with the same digests, and that every blob's content hashes to its
//! digest. The public key stored beside a signature only identifies the key; it is never
//! trusted for verification.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use ghaf_core::TenantId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ArtifactEntry, TrackingError};

/// Format tag of the manifest JSON, so a future format cannot be mistaken for this one.
pub const MANIFEST_FORMAT: &str = "ghaf.artifact-manifest.v1";

/// One file of a manifest, with its path relative to the version's artifact prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    pub size: u64,
}

/// The files of one model version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactManifest {
    pub format: String,
    pub tenant: String,
    pub project: String,
    pub model: String,
    pub version: i64,
    /// Files sorted by path.
    pub files: Vec<ManifestEntry>,
}

impl ArtifactManifest {
    /// Builds the manifest of `entries`, which are stored below `prefix`.
    pub fn from_entries(
        tenant: &str,
        project: &str,
        model: &str,
        version: i64,
        prefix: &str,
        entries: &[ArtifactEntry],
    ) -> Self {
        let mut files: Vec<ManifestEntry> = entries
            .iter()
            .map(|entry| ManifestEntry {
                path: relative_path(prefix, &entry.path).to_owned(),
                sha256: entry.digest.clone(),
                size: entry.size,
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            format: MANIFEST_FORMAT.to_owned(),
            tenant: tenant.to_owned(),
            project: project.to_owned(),
            model: model.to_owned(),
            version,
            files,
        }
    }
}

/// Strips `prefix/` from `path`.
pub fn relative_path<'a>(prefix: &str, path: &'a str) -> &'a str {
    path.strip_prefix(prefix)
        .map(|rest| rest.trim_start_matches('/'))
        .unwrap_or(path)
}

/// A manifest with its signature, as stored with a model version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The exact JSON bytes that were signed.
    pub manifest: String,
    /// Base64 Ed25519 signature of `manifest`.
    pub signature: String,
    /// Id of the signing key: the first 16 hex digits of the SHA-256 of its public key.
    pub key_id: String,
}

impl SignedManifest {
    /// Signs `manifest` with `key`.
    pub fn sign(manifest: &ArtifactManifest, key: &SigningKey) -> Result<Self, TrackingError> {
        let text = serde_json::to_string(manifest)
            .map_err(|error| TrackingError::Key(format!("cannot encode manifest: {error}")))?;
        let signature = key.sign(text.as_bytes());
        Ok(Self {
            manifest: text,
            signature: BASE64.encode(signature.to_bytes()),
            key_id: key_id(&key.verifying_key()),
        })
    }

    /// Checks the signature with `key` and returns the parsed manifest.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<ArtifactManifest, String> {
        let bytes = BASE64
            .decode(&self.signature)
            .map_err(|_| "the stored signature is not base64".to_owned())?;
        let signature = Signature::from_slice(&bytes)
            .map_err(|_| "the stored signature is not 64 bytes".to_owned())?;
        key.verify(self.manifest.as_bytes(), &signature)
            .map_err(|_| {
                format!(
                    "the manifest signature does not verify with the tenant's signing key {} \
                 (signed by key {})",
                    key_id(key),
                    self.key_id
                )
            })?;
        serde_json::from_str(&self.manifest)
            .map_err(|error| format!("the signed manifest is not valid JSON: {error}"))
    }
}

/// Compares the files found below a version's prefix with its manifest, and returns the
/// first difference: a missing file, an extra file, or a file whose digest or size changed.
pub fn compare_files(manifest: &ArtifactManifest, found: &[ManifestEntry]) -> Result<(), String> {
    let found: BTreeMap<&str, &ManifestEntry> = found
        .iter()
        .map(|entry| (entry.path.as_str(), entry))
        .collect();
    let expected: BTreeMap<&str, &ManifestEntry> = manifest
        .files
        .iter()
        .map(|entry| (entry.path.as_str(), entry))
        .collect();
    for (path, entry) in &expected {
        match found.get(path) {
            None => return Err(format!("file {path:?} of the manifest is missing")),
            Some(actual) if actual.sha256 != entry.sha256 => {
                return Err(format!(
                    "file {path:?} has digest {} but the manifest records {}",
                    actual.sha256, entry.sha256
                ));
            }
            Some(actual) if actual.size != entry.size => {
                return Err(format!(
                    "file {path:?} has {} bytes but the manifest records {}",
                    actual.size, entry.size
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|path| !expected.contains_key(*path)) {
        return Err(format!("file {extra:?} is not in the manifest"));
    }
    Ok(())
}

/// Returns the id of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Per-tenant Ed25519 signing keys, one 32-byte seed file per tenant in a directory
/// (`<data_dir>/keys/signing/<tenant>.ed25519`), created on first use with owner-only
/// permissions.
#[derive(Clone, Debug)]
pub struct FileKeyStore {
    dir: PathBuf,
}

impl FileKeyStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, tenant: &TenantId) -> PathBuf {
        self.dir.join(format!("{}.ed25519", tenant.as_str()))
    }

    /// Returns the tenant's signing key, creating it when the tenant has none.
    pub fn signing_key(&self, tenant: &TenantId) -> Result<SigningKey, TrackingError> {
        let path = self.path(tenant);
        match read_seed(&path)? {
            Some(key) => Ok(key),
            None => create_seed(&path),
        }
    }

    /// Returns the tenant's public key, creating the key pair when the tenant has none.
    pub fn verifying_key(&self, tenant: &TenantId) -> Result<VerifyingKey, TrackingError> {
        Ok(self.signing_key(tenant)?.verifying_key())
    }
}

fn read_seed(path: &Path) -> Result<Option<SigningKey>, TrackingError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(TrackingError::Key(format!(
                "cannot read {}: {error}",
                path.display()
            )));
        }
    };
    let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        TrackingError::Key(format!(
            "invalid key file {}: it has {} bytes, but an Ed25519 seed has 32",
            path.display(),
            bytes.len()
        ))
    })?;
    Ok(Some(SigningKey::from_bytes(&seed)))
}

fn create_seed(path: &Path) -> Result<SigningKey, TrackingError> {
    let fail = |error: std::io::Error| {
        TrackingError::Key(format!("cannot create {}: {error}", path.display()))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(&seed).map_err(fail)?;
            file.sync_all().map_err(fail)?;
            tracing::info!(path = %path.display(), "created tenant signing key");
            Ok(SigningKey::from_bytes(&seed))
        }
        // Another request created the key first: use that one.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => read_seed(path)?
            .ok_or_else(|| TrackingError::Key(format!("{} vanished", path.display()))),
        Err(error) => Err(fail(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> ArtifactManifest {
        ArtifactManifest::from_entries(
            "acme",
            "p",
            "fraud",
            1,
            "1/models/m-1/artifacts",
            &[
                ArtifactEntry {
                    path: "1/models/m-1/artifacts/model.pkl".into(),
                    digest: "aa".repeat(32),
                    size: 3,
                },
                ArtifactEntry {
                    path: "1/models/m-1/artifacts/MLmodel".into(),
                    digest: "bb".repeat(32),
                    size: 5,
                },
            ],
        )
    }

    #[test]
    fn manifest_paths_are_relative_and_sorted() {
        let paths: Vec<_> = manifest().files.into_iter().map(|f| f.path).collect();
        assert_eq!(paths, ["MLmodel", "model.pkl"]);
    }

    #[test]
    fn signature_verifies_with_signer_only() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let signed = SignedManifest::sign(&manifest(), &key).unwrap();
        assert_eq!(
            signed.verify_signature(&key.verifying_key()).unwrap(),
            manifest()
        );

        let other = SigningKey::from_bytes(&[8; 32]);
        let error = signed.verify_signature(&other.verifying_key()).unwrap_err();
        assert!(error.contains("does not verify"), "{error}");
    }

    #[test]
    fn edited_manifest_text_fails_signature() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut signed = SignedManifest::sign(&manifest(), &key).unwrap();
        signed.manifest = signed.manifest.replace("\"size\":3", "\"size\":4");
        assert!(signed.verify_signature(&key.verifying_key()).is_err());
    }

    #[test]
    fn key_store_creates_once_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let keys = FileKeyStore::new(dir.path().join("signing"));
        let tenant = TenantId::from_stored("acme");
        let first = keys.signing_key(&tenant).unwrap();
        let second = keys.signing_key(&tenant).unwrap();
        assert_eq!(first.to_bytes(), second.to_bytes());
        let other = keys.signing_key(&TenantId::from_stored("beta")).unwrap();
        assert_ne!(first.to_bytes(), other.to_bytes());
    }
}
