//! Dataset routes: datasets, schema versions, uploads with progress, versions and
//! quarantine files. Bodies are returned as JSON values; the server's OpenAPI document
//! describes their shape.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::{ApiResponse, Client, display_url};
use crate::error::{ClientError, REQUEST_ID_HEADER, api_error};

/// Time limit of one upload, from the first byte sent to the response. Uploads are large, so
/// they do not use [`super::REQUEST_TIMEOUT`].
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Size of the chunks an upload reads from the file.
const UPLOAD_CHUNK_BYTES: usize = 1024 * 1024;

impl Client {
    pub async fn list_datasets(&self, project: &str) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&["api", "v1", "projects", project, "datasets"])
            .await
    }

    /// Creates a dataset; `body` has `name`, `description` and `schema`.
    pub async fn create_dataset(
        &self,
        project: &str,
        body: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(&["api", "v1", "projects", project, "datasets"], body)
            .await
    }

    pub async fn get_dataset(
        &self,
        project: &str,
        dataset: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&["api", "v1", "projects", project, "datasets", dataset])
            .await
    }

    /// Adds a schema version; `schema` is the declared schema as JSON.
    pub async fn update_dataset_schema(
        &self,
        project: &str,
        dataset: &str,
        schema: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.update_dataset_schema_lowering(project, dataset, schema, &[])
            .await
    }

    /// Adds a schema version that may lower the classification of the columns named in
    /// `lower_classification`; the server records each lowering in the audit log.
    pub async fn update_dataset_schema_lowering(
        &self,
        project: &str,
        dataset: &str,
        schema: &Value,
        lower_classification: &[String],
    ) -> Result<ApiResponse<Value>, ClientError> {
        let body = serde_json::json!({
            "schema": schema,
            "lower_classification": lower_classification,
        });
        self.post(
            &[
                "api", "v1", "projects", project, "datasets", dataset, "schemas",
            ],
            &body,
        )
        .await
    }

    pub async fn list_dataset_versions(
        &self,
        project: &str,
        dataset: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&[
            "api", "v1", "projects", project, "datasets", dataset, "versions",
        ])
        .await
    }

    pub async fn get_dataset_version(
        &self,
        project: &str,
        dataset: &str,
        version: i64,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let version = version.to_string();
        self.get(&[
            "api", "v1", "projects", project, "datasets", dataset, "versions", &version,
        ])
        .await
    }

    /// Downloads a version's quarantine file as NDJSON text.
    pub async fn get_dataset_quarantine(
        &self,
        project: &str,
        dataset: &str,
        version: i64,
    ) -> Result<String, ClientError> {
        let version = version.to_string();
        let url = self.url(&[
            "api",
            "v1",
            "projects",
            project,
            "datasets",
            dataset,
            "versions",
            &version,
            "quarantine",
        ])?;
        self.send_for_text(self.http.get(url.clone()), &url, super::REQUEST_TIMEOUT)
            .await
    }

    /// Downloads a version's rows as a Parquet file. The download has the time limit of an
    /// upload, [`UPLOAD_TIMEOUT`], because a version can be as large as the file it came from.
    pub async fn download_dataset_version(
        &self,
        project: &str,
        dataset: &str,
        version: i64,
    ) -> Result<Bytes, ClientError> {
        let version = version.to_string();
        let url = self.url(&[
            "api", "v1", "projects", project, "datasets", dataset, "versions", &version, "data",
        ])?;
        let request_url = display_url(&url);
        let server_url = display_url(&self.base);
        let server_url = server_url.trim_end_matches('/');
        let timeout = UPLOAD_TIMEOUT;
        let transport =
            |error| ClientError::from_transport(server_url, &request_url, error, timeout.as_secs());
        let response = self
            .http
            .get(url.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let request_id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(api_error(
                status,
                request_id,
                &String::from_utf8_lossy(&body),
            ));
        }
        Ok(body)
    }

    /// Uploads `file` into a new version of `dataset`, streaming it in chunks. A read error
    /// of the file fails the request.
    /// Asks the server to ingest the object at `uri` (such as `s3://landing/day1.csv`) into
    /// a new version; the server reads the object itself. `query` contains the read options
    /// as for [`Client::upload_dataset_file`].
    pub async fn ingest_dataset_object(
        &self,
        project: &str,
        dataset: &str,
        uri: &str,
        query: &[(&str, String)],
    ) -> Result<ApiResponse<Value>, ClientError> {
        let mut url = self.url(&[
            "api", "v1", "projects", project, "datasets", dataset, "versions",
        ])?;
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(key, value)| (*key, value.as_str())))
            .append_pair("uri", uri);
        let request = self.http.post(url.clone());
        let body = self.send_for_text(request, &url, UPLOAD_TIMEOUT).await?;
        let value = serde_json::from_str(&body).map_err(|source| ClientError::Decode {
            url: display_url(&url),
            source,
        })?;
        Ok(ApiResponse {
            value,
            body,
            request_id: None,
        })
    }

    /// `query` contains the read options (`format`, `delimiter`, `header`, `null`,
    /// `file_name`); `progress` is called with the total bytes sent so far.
    pub async fn upload_dataset_file(
        &self,
        project: &str,
        dataset: &str,
        file: tokio::fs::File,
        query: &[(&str, String)],
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let mut url = self.url(&[
            "api", "v1", "projects", project, "datasets", dataset, "versions",
        ])?;
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(key, value)| (*key, value.as_str())));
        let chunks = futures::stream::try_unfold((file, 0u64), move |(mut file, sent)| {
            let progress = progress.clone();
            async move {
                let mut buffer = Vec::with_capacity(UPLOAD_CHUNK_BYTES);
                let read = (&mut file)
                    .take(UPLOAD_CHUNK_BYTES as u64)
                    .read_to_end(&mut buffer)
                    .await?;
                if read == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                let sent = sent + read as u64;
                progress(sent);
                Ok(Some((Bytes::from(buffer), (file, sent))))
            }
        });
        let request = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(chunks.boxed()));
        let body = self.send_for_text(request, &url, UPLOAD_TIMEOUT).await?;
        let value = serde_json::from_str(&body).map_err(|source| ClientError::Decode {
            url: display_url(&url),
            source,
        })?;
        Ok(ApiResponse {
            value,
            body,
            request_id: None,
        })
    }

    /// Sends `request` with its own time limit and returns the body text of a success.
    async fn send_for_text(
        &self,
        request: reqwest::RequestBuilder,
        url: &reqwest::Url,
        timeout: Duration,
    ) -> Result<String, ClientError> {
        let request_url = display_url(url);
        let server_url = display_url(&self.base);
        let server_url = server_url.trim_end_matches('/');
        let response = request.timeout(timeout).send().await.map_err(|error| {
            ClientError::from_transport(server_url, &request_url, error, timeout.as_secs())
        })?;
        let status = response.status();
        let request_id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.map_err(|error| {
            ClientError::from_transport(server_url, &request_url, error, timeout.as_secs())
        })?;
        if !status.is_success() {
            return Err(api_error(status, request_id, &body));
        }
        Ok(body)
    }
}
