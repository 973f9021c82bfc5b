//! Inputs read from an object store: `s3://bucket/key` URIs, fetched with the S3 settings
//! of the blob store's configuration and streamed to a staging file, never held whole in
//! memory. Only URIs under configured prefixes may be read, because the server reads them
//! with its own credentials on behalf of any caller who may ingest.

use futures::StreamExt;
use ghaf_blob::{BlobConfig, BlobStore};
use object_store::ObjectStoreExt;
use tokio::io::AsyncWriteExt;

use crate::{IngestError, IngestService};

/// Settings of object-store inputs: the allowed URIs and the S3 connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObjectInputConfig {
    /// URIs that may be ingested start with one of these, such as `s3://landing/sales/`.
    /// Empty disables object-store inputs.
    pub allowed_prefixes: Vec<String>,
    /// S3 settings as in the blob store's configuration (`BlobConfig::S3`); its `bucket`
    /// and `prefix` are ignored, because each URI names its own bucket and key.
    pub s3: Option<BlobConfig>,
}

/// A parsed `s3://bucket/key` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObjectUri {
    pub bucket: String,
    pub key: String,
}

impl ObjectUri {
    pub(crate) fn parse(uri: &str) -> Result<Self, IngestError> {
        let invalid = |why: &str| {
            IngestError::InvalidInput(format!(
                "{uri:?} is not a valid object URI: {why}; write it as s3://BUCKET/KEY"
            ))
        };
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("only the s3:// scheme is supported"))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| invalid("the key is missing"))?;
        if bucket.is_empty() {
            return Err(invalid("the bucket is missing"));
        }
        if key.is_empty() || key.ends_with('/') {
            return Err(invalid("the key is missing or names a folder"));
        }
        if key
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(invalid("the key has an empty, `.` or `..` segment"));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Returns the file name part of the key, for format detection.
    pub(crate) fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

/// Returns the object store of `bucket` with the S3 settings of `template`, or with the
/// `AWS_*` environment variables when there is no template.
fn bucket_store(template: Option<&BlobConfig>, bucket: &str) -> Result<BlobStore, IngestError> {
    let config = match template {
        Some(BlobConfig::S3 {
            region,
            endpoint,
            allow_http,
            access_key_id,
            secret_access_key,
            ..
        }) => BlobConfig::S3 {
            bucket: bucket.to_owned(),
            region: region.clone(),
            endpoint: endpoint.clone(),
            prefix: None,
            allow_http: *allow_http,
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
        },
        _ => BlobConfig::S3 {
            bucket: bucket.to_owned(),
            region: None,
            endpoint: None,
            prefix: None,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
        },
    };
    Ok(BlobStore::from_config(&config)?)
}

/// Returns the file name at the end of an object URI's key, such as `2024.csv.gz` for
/// `s3://landing/sales/2024.csv.gz`, for format detection; `None` for an invalid URI.
pub fn object_file_name(uri: &str) -> Option<String> {
    ObjectUri::parse(uri)
        .ok()
        .map(|parsed| parsed.file_name().to_owned())
}

impl IngestService {
    /// Ingests the object at `uri` into a new version of `dataset`, like an uploaded file:
    /// it is streamed to a staging file (see [`IngestService::fetch_object`]), then read
    /// with `options`. The version's source is the URI.
    pub async fn ingest_object(
        &self,
        dataset: &crate::Dataset,
        project_name: &str,
        uri: &str,
        options: &crate::ReadOptions,
        actor: &str,
        max_bytes: u64,
    ) -> Result<crate::IngestOutcome, IngestError> {
        let staging = self.fetch_object(uri, max_bytes).await?;
        self.ingest(
            dataset,
            project_name,
            crate::IngestInput {
                path: &staging,
                options,
                source: uri,
                progress: None,
            },
            actor,
        )
        .await
    }

    /// Allows inputs from object-store URIs under the configured prefixes.
    pub fn with_object_inputs(mut self, config: ObjectInputConfig) -> Self {
        self.object_inputs = config;
        self
    }

    /// Streams the object at `uri` to a staging file and returns its path. Fails when the
    /// URI is not under an allowed prefix, when the object does not exist, or when it has
    /// more than `max_bytes` bytes.
    pub async fn fetch_object(
        &self,
        uri: &str,
        max_bytes: u64,
    ) -> Result<tempfile::TempPath, IngestError> {
        let parsed = ObjectUri::parse(uri)?;
        let allowed = &self.object_inputs.allowed_prefixes;
        if allowed.is_empty() {
            return Err(IngestError::InvalidInput(
                "ingesting from object-store URIs is not enabled on this server; an \
                 administrator lists the allowed URI prefixes in ingest.object_uri_prefixes"
                    .into(),
            ));
        }
        if !allowed
            .iter()
            .any(|prefix| uri.starts_with(prefix.as_str()))
        {
            return Err(IngestError::InvalidInput(format!(
                "{uri:?} is not under an allowed prefix ({}); ask an administrator to add \
                 its prefix to ingest.object_uri_prefixes",
                allowed.join(", ")
            )));
        }

        let store = bucket_store(self.object_inputs.s3.as_ref(), &parsed.bucket)?;
        let location = object_store::path::Path::from(parsed.key.as_str());
        let result = match store.object_store().get(&location).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(IngestError::NotFound {
                    what: "object",
                    name: uri.to_owned(),
                });
            }
            Err(error) => return Err(IngestError::Blob(error.into())),
        };
        if result.meta.size > max_bytes {
            return Err(IngestError::InvalidInput(format!(
                "{uri:?} has {} bytes, more than the limit of {max_bytes} bytes \
                 (ingest.max_upload_bytes)",
                result.meta.size
            )));
        }

        let staging = self.staging_file("object-", "")?;
        let mut file = tokio::fs::File::create(&staging)
            .await
            .map_err(self.staging_error())?;
        let mut stream = result.into_stream();
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| IngestError::Blob(error.into()))?;
            received += chunk.len() as u64;
            if received > max_bytes {
                return Err(IngestError::InvalidInput(format!(
                    "{uri:?} grew past the limit of {max_bytes} bytes while it was read \
                     (ingest.max_upload_bytes)"
                )));
            }
            file.write_all(&chunk).await.map_err(self.staging_error())?;
        }
        file.flush().await.map_err(self.staging_error())?;
        tracing::info!(%uri, bytes = received, "fetched object-store input");
        Ok(staging)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_uris_parse() {
        let uri = ObjectUri::parse("s3://landing/sales/2024.csv.gz").unwrap();
        assert_eq!(uri.bucket, "landing");
        assert_eq!(uri.key, "sales/2024.csv.gz");
        assert_eq!(uri.file_name(), "2024.csv.gz");
        for bad in [
            "gs://b/k",
            "s3://bucket",
            "s3:///key",
            "s3://b/",
            "s3://b/a/../k",
            "s3://b/a//k",
        ] {
            assert!(ObjectUri::parse(bad).is_err(), "{bad}");
        }
    }
}
