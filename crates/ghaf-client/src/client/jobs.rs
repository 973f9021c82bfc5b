//! Job routes: submit, list, get, cancel, and the job log as NDJSON chunks, optionally
//! followed until the job ends. Bodies are returned as JSON values; the server's OpenAPI
//! document describes their shape.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::{ApiResponse, Client, display_url};
use crate::error::{ClientError, REQUEST_ID_HEADER, api_error};

/// Time limit of a followed log, which stays open while the job runs.
pub const FOLLOW_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

impl Client {
    /// Submits a job; `spec` is the job spec as JSON.
    pub async fn submit_job(
        &self,
        project: &str,
        spec: &Value,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(&["api", "v1", "projects", project, "jobs"], spec)
            .await
    }

    /// Lists jobs, newest first, optionally only those in `state`.
    pub async fn list_jobs(
        &self,
        project: &str,
        state: Option<&str>,
        limit: Option<u32>,
    ) -> Result<ApiResponse<Value>, ClientError> {
        let url = self.url(&["api", "v1", "projects", project, "jobs"])?;
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(state) = state {
            query.push(("state", state.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.execute(self.http.get(url.clone()).query(&query), &url)
            .await
    }

    pub async fn get_job(
        &self,
        project: &str,
        job: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.get(&["api", "v1", "projects", project, "jobs", job])
            .await
    }

    pub async fn cancel_job(
        &self,
        project: &str,
        job: &str,
    ) -> Result<ApiResponse<Value>, ClientError> {
        self.post(
            &["api", "v1", "projects", project, "jobs", job, "cancel"],
            &serde_json::json!({}),
        )
        .await
    }

    /// Reads the job's log chunks after `after` and passes each (a JSON object with `seq`,
    /// `attempt`, `stream`, `time` and `content`) to `on_chunk` as it arrives. With `follow`,
    /// returns when the job has ended and every chunk was passed.
    pub async fn job_logs(
        &self,
        project: &str,
        job: &str,
        after: i64,
        follow: bool,
        mut on_chunk: impl FnMut(Value),
    ) -> Result<(), ClientError> {
        let url = self.url(&["api", "v1", "projects", project, "jobs", job, "logs"])?;
        let request_url = display_url(&url);
        let server_url = display_url(&self.base);
        let server_url = server_url.trim_end_matches('/');
        let timeout = if follow {
            FOLLOW_TIMEOUT
        } else {
            super::REQUEST_TIMEOUT
        };
        let transport =
            |error| ClientError::from_transport(server_url, &request_url, error, timeout.as_secs());
        let response = self
            .http
            .get(url.clone())
            .query(&[("after", after.to_string()), ("follow", follow.to_string())])
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
        if !status.is_success() {
            let body = response.text().await.map_err(transport)?;
            return Err(api_error(status, request_id, &body));
        }
        let mut stream = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(piece) = stream.next().await {
            pending.extend_from_slice(&piece.map_err(transport)?);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let value =
                    serde_json::from_slice(&line).map_err(|source| ClientError::Decode {
                        url: request_url.clone(),
                        source,
                    })?;
                on_chunk(value);
            }
        }
        Ok(())
    }
}
