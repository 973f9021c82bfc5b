//! The HTTP client: one method per `/api/v1` route.

use std::fmt;
use std::time::Duration;

use ghaf_core::{ProjectRole, Role};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;

use crate::error::{ClientError, REQUEST_ID_HEADER, api_error};
use crate::views::*;

mod datasets;
mod endpoints;
mod features;
mod jobs;
mod mlflow;
mod monitoring;
mod rollouts;
mod tracking;

pub use mlflow::{PROJECT_HEADER, Tracking};
pub use tracking::RunSearch;

pub use datasets::UPLOAD_TIMEOUT;

/// Time limit for opening a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time limit for a whole request, from sending it to reading the last byte of the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// `User-Agent` header sent with every request.
pub const USER_AGENT: &str = concat!("ghaf/", env!("CARGO_PKG_VERSION"));

/// A decoded success response together with the body as the server sent it.
#[derive(Clone, Debug)]
pub struct ApiResponse<T> {
    /// The decoded body; `()` for routes that return no body.
    pub value: T,
    /// The response body text; empty for routes that return no body.
    pub body: String,
    /// Value of the `x-request-id` response header.
    pub request_id: Option<String>,
}

impl<T> ApiResponse<T> {
    pub fn into_value(self) -> T {
        self.value
    }
}

/// Typed client of one Ghaf server.
///
/// Cloning is cheap and clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    has_token: bool,
}

impl fmt::Debug for Client {
    // Leaves out the token, which the inner client stores as a default header.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("has_token", &self.has_token)
            .finish()
    }
}

impl Client {
    /// Creates a client for the server at `base_url`, such as `http://127.0.0.1:8080`.
    ///
    /// The base URL may have a path prefix (`https://example.com/ghaf`) under which the
    /// server's routes live. `token`, when given, is sent as `Authorization: Bearer TOKEN`.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = parse_base_url(base_url)?;
        let mut headers = HeaderMap::new();
        if let Some(token) = &token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| ClientError::InvalidToken)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(ClientError::Build)?;
        Ok(Self {
            http,
            base,
            has_token: token.is_some(),
        })
    }

    /// Returns the base URL the client sends requests to.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// Returns whether requests carry a bearer token.
    pub fn has_token(&self) -> bool {
        self.has_token
    }

    // --- System -------------------------------------------------------------------------

    /// Checks liveness with `GET /healthz`.
    pub async fn healthz(&self) -> Result<ApiResponse<HealthView>, ClientError> {
        self.get(&["healthz"]).await
    }

    /// Checks readiness with `GET /readyz`; the server responds `unavailable` while its
    /// metadata database does not respond.
    pub async fn readyz(&self) -> Result<ApiResponse<HealthView>, ClientError> {
        self.get(&["readyz"]).await
    }

    // --- Identity and tenants -----------------------------------------------------------

    /// Returns the identity and roles of the caller's token.
    pub async fn whoami(&self) -> Result<ApiResponse<WhoamiView>, ClientError> {
        self.get(&["api", "v1", "whoami"]).await
    }

    pub async fn list_tenants(&self) -> Result<ApiResponse<TenantList>, ClientError> {
        self.get(&["api", "v1", "tenants"]).await
    }

    /// Creates a tenant with its admin user. The response contains the admin's token
    /// secret, which the server returns only this once.
    pub async fn create_tenant(
        &self,
        request: &CreateTenantRequest,
    ) -> Result<ApiResponse<CreatedTenant>, ClientError> {
        self.post(&["api", "v1", "tenants"], request).await
    }

    // --- Projects and members -----------------------------------------------------------

    /// Lists the projects the caller can see.
    pub async fn list_projects(&self) -> Result<ApiResponse<ProjectList>, ClientError> {
        self.get(&["api", "v1", "projects"]).await
    }

    pub async fn create_project(
        &self,
        request: &CreateProjectRequest,
    ) -> Result<ApiResponse<ProjectView>, ClientError> {
        self.post(&["api", "v1", "projects"], request).await
    }

    pub async fn get_project(
        &self,
        project: &str,
    ) -> Result<ApiResponse<ProjectView>, ClientError> {
        self.get(&["api", "v1", "projects", project]).await
    }

    /// Lists the role bindings on one project.
    pub async fn list_members(
        &self,
        project: &str,
    ) -> Result<ApiResponse<RoleBindingList>, ClientError> {
        self.get(&["api", "v1", "projects", project, "members"])
            .await
    }

    pub async fn grant_member(
        &self,
        project: &str,
        request: &GrantMemberRequest,
    ) -> Result<ApiResponse<RoleBindingView>, ClientError> {
        self.post(&["api", "v1", "projects", project, "members"], request)
            .await
    }

    pub async fn revoke_member(
        &self,
        project: &str,
        principal: &str,
        role: ProjectRole,
    ) -> Result<ApiResponse<()>, ClientError> {
        let role = Role::from(role);
        let url = self.url(&[
            "api",
            "v1",
            "projects",
            project,
            "members",
            principal,
            role.as_str(),
        ])?;
        self.execute(self.http.request(Method::DELETE, url.clone()), &url)
            .await
    }

    // --- Principals and role bindings ---------------------------------------------------

    /// Lists the users and service accounts of the caller's tenant.
    pub async fn list_principals(&self) -> Result<ApiResponse<PrincipalList>, ClientError> {
        self.get(&["api", "v1", "principals"]).await
    }

    pub async fn create_principal(
        &self,
        request: &CreatePrincipalRequest,
    ) -> Result<ApiResponse<PrincipalView>, ClientError> {
        self.post(&["api", "v1", "principals"], request).await
    }

    /// Returns the principal with the name `principal`.
    pub async fn get_principal(
        &self,
        principal: &str,
    ) -> Result<ApiResponse<PrincipalView>, ClientError> {
        self.get(&["api", "v1", "principals", principal]).await
    }

    /// Lists every role binding of the caller's tenant.
    pub async fn list_role_bindings(&self) -> Result<ApiResponse<RoleBindingList>, ClientError> {
        self.get(&["api", "v1", "role-bindings"]).await
    }

    pub async fn grant_role(
        &self,
        request: &GrantRoleRequest,
    ) -> Result<ApiResponse<RoleBindingView>, ClientError> {
        self.post(&["api", "v1", "role-bindings"], request).await
    }

    /// Revokes a tenant role, or the project role on `project` when it is given.
    pub async fn revoke_role(
        &self,
        principal: &str,
        role: Role,
        project: Option<&str>,
    ) -> Result<ApiResponse<()>, ClientError> {
        let mut url = self.url(&["api", "v1", "role-bindings", principal, role.as_str()])?;
        if let Some(project) = project {
            url.query_pairs_mut().append_pair("project", project);
        }
        self.execute(self.http.request(Method::DELETE, url.clone()), &url)
            .await
    }

    // --- Tokens -------------------------------------------------------------------------

    /// Lists the caller's tokens, or every token of the tenant for tenant admins.
    pub async fn list_tokens(&self) -> Result<ApiResponse<TokenList>, ClientError> {
        self.get(&["api", "v1", "tokens"]).await
    }

    /// Creates a token. The response contains the secret, which the server returns only
    /// this once.
    pub async fn create_token(
        &self,
        request: &CreateTokenRequest,
    ) -> Result<ApiResponse<IssuedTokenView>, ClientError> {
        self.post(&["api", "v1", "tokens"], request).await
    }

    /// Revokes the token with the id `token_id` and returns it with `revoked_at` set.
    pub async fn revoke_token(
        &self,
        token_id: &str,
    ) -> Result<ApiResponse<TokenView>, ClientError> {
        let url = self.url(&["api", "v1", "tokens", token_id])?;
        self.execute(self.http.request(Method::DELETE, url.clone()), &url)
            .await
    }

    // --- Audit --------------------------------------------------------------------------

    /// Returns one page of the caller's tenant's audit log, oldest entry first.
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
    ) -> Result<ApiResponse<AuditPage>, ClientError> {
        let url = self.url(&["api", "v1", "audit"])?;
        self.execute(self.http.get(url.clone()).query(filter), &url)
            .await
    }

    /// Verifies the hash chain of the caller's tenant; for the platform administrator also
    /// the chain of unauthenticated calls.
    pub async fn verify_audit(&self) -> Result<ApiResponse<AuditVerifyView>, ClientError> {
        let url = self.url(&["api", "v1", "audit", "verify"])?;
        self.execute(self.http.post(url.clone()), &url).await
    }

    // --- Transport ----------------------------------------------------------------------

    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        join_url(&self.base, segments)
    }

    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<ApiResponse<T>, ClientError> {
        let url = self.url(segments)?;
        self.execute(self.http.get(url.clone()), &url).await
    }

    async fn post<B, T>(&self, segments: &[&str], body: &B) -> Result<ApiResponse<T>, ClientError>
    where
        B: serde::Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let url = self.url(segments)?;
        self.execute(self.http.post(url.clone()).json(body), &url)
            .await
    }

    /// Sends `request` and decodes a success body as `T`; an error status becomes
    /// [`ClientError::Api`].
    async fn execute<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        url: &Url,
    ) -> Result<ApiResponse<T>, ClientError> {
        let request_url = display_url(url);
        let server_url = display_url(&self.base);
        let server_url = server_url.trim_end_matches('/');
        let timeout_seconds = REQUEST_TIMEOUT.as_secs();

        let response = request.send().await.map_err(|error| {
            ClientError::from_transport(server_url, &request_url, error, timeout_seconds)
        })?;

        let status = response.status();
        let request_id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.map_err(|error| {
            ClientError::from_transport(server_url, &request_url, error, timeout_seconds)
        })?;
        if !status.is_success() {
            return Err(api_error(status, request_id, &body));
        }

        // Routes that return no content decode as JSON `null`, which `()` accepts.
        let text = if body.trim().is_empty() {
            "null"
        } else {
            body.as_str()
        };
        let value = serde_json::from_str(text).map_err(|source| ClientError::Decode {
            url: request_url,
            source,
        })?;
        Ok(ApiResponse {
            value,
            body,
            request_id,
        })
    }
}

/// Validates a server base URL: `http` or `https`, with a host and no query or fragment.
fn parse_base_url(base_url: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidUrl {
        url: base_url.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(base_url.trim())
        .map_err(|error| invalid(&format!("{error}; use a URL such as http://127.0.0.1:8080")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            "the scheme must be http or https, such as http://127.0.0.1:8080",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            "the URL has no host; use a URL such as http://127.0.0.1:8080",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "remove the query and fragment; the client adds its own paths",
        ));
    }
    // Credentials in the URL would be sent as Basic auth in place of the bearer token.
    if !url.username().is_empty() || url.password().is_some() {
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        return Err(ClientError::InvalidUrl {
            url: shown.to_string(),
            reason: "remove the user name and password from the URL; pass the token with --token or GHAF_TOKEN"
                .to_owned(),
        });
    }
    Ok(url)
}

/// Appends path segments to the base URL, percent-encoding each one, so a name that
/// contains `/` or `?` stays one segment.
///
/// Empty, `.` and `..` segments are rejected: URL parsing would drop them or resolve them
/// against the parent path, so the request would reach another route.
pub(crate) fn join_url(base: &Url, segments: &[&str]) -> Result<Url, ClientError> {
    if let Some(segment) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
        return Err(ClientError::InvalidPathSegment {
            segment: (*segment).to_owned(),
        });
    }
    let mut url = base.clone();
    match url.path_segments_mut() {
        Ok(mut path) => {
            path.pop_if_empty();
            path.extend(segments);
        }
        // `parse_base_url` accepts only http and https URLs, which always have a path.
        Err(()) => unreachable!("http(s) base URL {base} has no path"),
    }
    Ok(url)
}

/// Returns the URL without user name or password, for error messages.
fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(base: &str, segments: &[&str]) -> String {
        join_url(&parse_base_url(base).unwrap(), segments)
            .unwrap()
            .to_string()
    }

    #[test]
    fn join_without_trailing_slash() {
        assert_eq!(
            joined("http://127.0.0.1:8080", &["api", "v1", "projects"]),
            "http://127.0.0.1:8080/api/v1/projects"
        );
    }

    #[test]
    fn join_with_trailing_slash() {
        assert_eq!(
            joined("http://localhost:8080/", &["healthz"]),
            "http://localhost:8080/healthz"
        );
    }

    #[test]
    fn join_keeps_path_prefix() {
        assert_eq!(
            joined("https://example.com/ghaf", &["api", "v1", "whoami"]),
            "https://example.com/ghaf/api/v1/whoami"
        );
        assert_eq!(
            joined("https://example.com/ghaf/", &["api", "v1", "whoami"]),
            "https://example.com/ghaf/api/v1/whoami"
        );
    }

    #[test]
    fn join_encodes_segments() {
        assert_eq!(
            joined("http://h", &["api", "v1", "projects", "a/b c?d#e"]),
            "http://h/api/v1/projects/a%2Fb%20c%3Fd%23e"
        );
    }

    #[test]
    fn join_rejects_dot_and_empty_segments() {
        let base = parse_base_url("http://h").unwrap();
        for segment in ["", ".", ".."] {
            let error = join_url(&base, &["api", "v1", "projects", segment]).unwrap_err();
            assert!(
                matches!(error, ClientError::InvalidPathSegment { .. }),
                "{segment:?}: {error:?}"
            );
        }
    }

    #[test]
    fn join_keeps_dots_inside_names() {
        assert_eq!(
            joined("http://h", &["api", "v1", "projects", "v1.2"]),
            "http://h/api/v1/projects/v1.2"
        );
    }

    #[test]
    fn base_url_without_scheme_is_rejected() {
        for url in ["127.0.0.1:8080", "localhost:8080", "ftp://h", "", "http://"] {
            let error = parse_base_url(url).unwrap_err();
            assert!(
                matches!(error, ClientError::InvalidUrl { .. }),
                "{url}: {error:?}"
            );
            assert!(error.to_string().contains("http"), "{url}: {error}");
        }
    }

    #[test]
    fn base_url_with_credentials_is_rejected() {
        for url in ["http://user:pw@h:8080", "http://user@h"] {
            let error = parse_base_url(url).unwrap_err();
            assert!(error.to_string().contains("--token"), "{url}: {error}");
            assert!(!error.to_string().contains("pw@"), "{url}: {error}");
        }
    }

    #[test]
    fn base_url_with_query_is_rejected() {
        assert!(parse_base_url("http://h/?x=1").is_err());
        assert!(parse_base_url("http://h/#top").is_err());
    }

    #[test]
    fn display_url_hides_credentials() {
        let url = Url::parse("http://user:secret@h/api").unwrap();
        assert_eq!(display_url(&url), "http://h/api");
    }

    #[test]
    fn token_with_newline_is_rejected() {
        let error = Client::new("http://h", Some("abc\ndef".into())).unwrap_err();
        assert!(matches!(error, ClientError::InvalidToken), "{error:?}");
    }

    #[test]
    fn debug_output_hides_token() {
        let client = Client::new("http://h", Some("ghaf_secret".into())).unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("ghaf_secret"), "{debug}");
        assert!(debug.contains("has_token: true"), "{debug}");
    }
}
