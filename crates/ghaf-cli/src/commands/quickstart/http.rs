//! JSON requests to routes that `ghaf-client` has no call for: Open Inference Protocol
//! inference, the endpoint's traffic policy and its rollout history.

use anyhow::Context as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Header that selects the project of an Open Inference Protocol request.
const PROJECT_HEADER: &str = "x-ghaf-project";

/// An HTTP client with the admin token and the quickstart's project in every request.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
}

/// Status and JSON body of a response; the body is `null` when empty and a JSON string when
/// it is not JSON.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// Returns the body of a 2xx response, or an error with the status and body.
    pub fn success(self, what: &str) -> anyhow::Result<Value> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            anyhow::bail!("{what} failed with HTTP {}: {}", self.status, self.body)
        }
    }
}

impl Http {
    pub fn new(base: &str, token: &str, project: &str) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        let mut bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
        bearer.set_sensitive(true);
        headers.insert(AUTHORIZATION, bearer);
        headers.insert(PROJECT_HEADER, HeaderValue::from_str(project)?);
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(ghaf_client::REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends `body` (if any) to `path` below the server's base URL.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path} failed"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("cannot read the response of {method} {path}"))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Reply { status, body })
    }
}
