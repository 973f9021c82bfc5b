use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Storage backend of the blob store, selected by the `kind` field: `local` or `s3`.
#[derive(Deserialize, Serialize, Clone, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BlobConfig {
    /// Blobs stored as files under a directory on the local filesystem.
    Local {
        /// Directory that contains all blobs. It is created at startup when missing.
        /// Ghaf's default is `<data_dir>/blobs`.
        root: PathBuf,
    },
    /// Blobs stored in an S3 bucket or an S3-compatible service such as MinIO.
    S3 {
        /// Name of an existing bucket.
        bucket: String,
        /// AWS region of the bucket, such as `eu-central-1`. When unset, the `AWS_REGION` or
        /// `AWS_DEFAULT_REGION` environment variable is used, then `us-east-1`.
        region: Option<String>,
        /// URL of an S3-compatible service, such as `http://127.0.0.1:9000`, addressed in path
        /// style (`<endpoint>/<bucket>/<key>`). Unset for AWS S3.
        endpoint: Option<String>,
        /// Key prefix under which all Ghaf objects are stored, such as `ghaf/prod`, so one
        /// bucket can serve several deployments. Unset stores keys at the bucket root.
        prefix: Option<String>,
        /// Allows plain `http://` endpoints. Defaults to `false`. Enable only for a local
        /// S3-compatible service, because credentials and data are then sent unencrypted.
        #[serde(default)]
        allow_http: bool,
        /// Access key id. When unset, the `AWS_ACCESS_KEY_ID` environment variable and the
        /// other standard AWS credential sources are used.
        access_key_id: Option<String>,
        /// Secret access key, set together with `access_key_id`. When unset, the
        /// `AWS_SECRET_ACCESS_KEY` environment variable and the other standard AWS
        /// credential sources are used.
        secret_access_key: Option<String>,
    },
}

impl BlobConfig {
    /// Returns Ghaf's default configuration: local files under `<data_dir>/blobs`.
    pub fn local_default(data_dir: &Path) -> Self {
        Self::Local {
            root: data_dir.join("blobs"),
        }
    }
}

/// Prints the configuration with `secret_access_key` replaced by `"<redacted>"`, so the
/// configuration can be logged.
impl fmt::Debug for BlobConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { root } => f.debug_struct("Local").field("root", root).finish(),
            Self::S3 {
                bucket,
                region,
                endpoint,
                prefix,
                allow_http,
                access_key_id,
                secret_access_key,
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("region", region)
                .field("endpoint", endpoint)
                .field("prefix", prefix)
                .field("allow_http", allow_http)
                .field("access_key_id", access_key_id)
                .field(
                    "secret_access_key",
                    &secret_access_key.as_ref().map(|_| "<redacted>"),
                )
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_config_from_json() {
        let config: BlobConfig =
            serde_json::from_str(r#"{"kind": "local", "root": "/var/lib/ghaf/blobs"}"#).unwrap();
        assert_eq!(
            config,
            BlobConfig::Local {
                root: PathBuf::from("/var/lib/ghaf/blobs")
            }
        );
    }

    #[test]
    fn local_default_under_data_dir() {
        assert_eq!(
            BlobConfig::local_default(Path::new("/data")),
            BlobConfig::Local {
                root: PathBuf::from("/data/blobs")
            }
        );
    }

    #[test]
    fn s3_config_optional_fields_default() {
        let config: BlobConfig =
            serde_json::from_str(r#"{"kind": "s3", "bucket": "models"}"#).unwrap();
        assert_eq!(
            config,
            BlobConfig::S3 {
                bucket: "models".to_owned(),
                region: None,
                endpoint: None,
                prefix: None,
                allow_http: false,
                access_key_id: None,
                secret_access_key: None,
            }
        );
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let error =
            serde_json::from_str::<BlobConfig>(r#"{"kind": "local", "root": "/x", "bucket": "b"}"#)
                .unwrap_err();
        assert!(error.to_string().contains("bucket"), "{error}");

        let error = serde_json::from_str::<BlobConfig>(
            r#"{"kind": "s3", "bucket": "b", "secret_key": "x"}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("secret_key"), "{error}");
    }

    #[test]
    fn config_rejects_unknown_kind() {
        let error =
            serde_json::from_str::<BlobConfig>(r#"{"kind": "gcs", "bucket": "b"}"#).unwrap_err();
        assert!(error.to_string().contains("gcs"), "{error}");
    }

    #[test]
    fn debug_redacts_secret() {
        let config = BlobConfig::S3 {
            bucket: "models".to_owned(),
            region: None,
            endpoint: None,
            prefix: None,
            allow_http: false,
            access_key_id: Some("AKIAEXAMPLE".to_owned()),
            secret_access_key: Some("very-secret-value".to_owned()),
        };
        let text = format!("{config:?}");
        assert!(!text.contains("very-secret-value"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(text.contains("AKIAEXAMPLE"), "{text}");
    }
}
