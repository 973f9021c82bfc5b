//! Request middleware: request ids, timeouts, metrics and error logging for every request,
//! and the per-route guard that authenticates, authorises and audits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ghaf_auth::{Action, ActionScope, AuthError, Caller};
use ghaf_core::audit::{AuditOutcome, NewAuditEntry, SYSTEM_CHAIN};
use ghaf_core::{ErrorCode, RequestId};
use ghaf_meta::Project;

use crate::error::{ApiError, ErrorInfo};
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Ids of the caller, attached to the response so the outer middleware can log them.
#[derive(Clone, Debug)]
struct CallerIds {
    tenant: String,
    principal: String,
}

impl CallerIds {
    fn of(caller: &Caller) -> Self {
        Self {
            tenant: caller.tenant.to_string(),
            principal: caller.principal.to_string(),
        }
    }
}

/// Assigns the request id, applies the time limit, records metrics and logs server errors
/// once with the request's ids.
pub async fn request_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(RequestId::parse_client)
        .unwrap_or_else(RequestId::generate);
    let request_id_header = HeaderValue::from_str(request_id.as_str()).ok();
    let method = method_label(request.method());
    // `MatchedPath` shares its string, so keeping it costs no copy.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let started = Instant::now();

    let span = tracing::info_span!("request", request_id = %request_id, %method, %route);
    request.extensions_mut().insert(request_id);
    // Uploads carry whole files, so they get their own, longer limit.
    let is_upload =
        request.method() == axum::http::Method::POST && route == crate::api::datasets::UPLOAD_ROUTE;
    let limit = Duration::from_secs(if is_upload {
        state.config().ingest.upload_timeout_seconds
    } else {
        state.config().http.request_timeout_seconds
    });
    let result = tracing::Instrument::instrument(
        tokio::time::timeout(limit, next.run(request)),
        span.clone(),
    )
    .await;
    let mut response = result.unwrap_or_else(|_| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "the request timed out after {} s; it may still complete, so check its result before retrying",
                limit.as_secs()
            ),
        )
        .into_response()
    });

    let status = response.status();
    state.metrics().observe_request(
        method,
        route,
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if status.is_server_error() {
        let info = response.extensions().get::<ErrorInfo>();
        let ids = response.extensions().get::<CallerIds>();
        let _entered = span.enter();
        tracing::error!(
            status = status.as_u16(),
            code = info.map_or("unknown", |i| i.code.as_str()),
            error = info.map_or("", |i| i.message.as_str()),
            tenant = ids.map_or("", |i| i.tenant.as_str()),
            principal = ids.map_or("", |i| i.principal.as_str()),
            "request failed"
        );
    }
    if let Some(value) = request_id_header {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Header that selects the project on MLflow-compatible routes, whose paths name none.
pub const PROJECT_HEADER: &str = "x-ghaf-project";

/// Returns the method as a metric label: one of the standard methods, or `other`, so a
/// client cannot create label values at will.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// State of one route's guard: the action the route performs.
#[derive(Clone)]
pub struct Guard {
    pub state: AppState,
    pub action: Action,
    /// The route is MLflow-compatible: see [`crate::api::RouteInfo::mlflow`].
    pub mlflow: bool,
    /// See [`crate::api::RouteInfo::project_from_header`].
    pub project_from_header: bool,
    /// See [`crate::api::RouteInfo::audit_in_transaction`].
    pub audit_in_transaction: bool,
}

/// Authenticates the bearer token, authorises the route's action (for project routes, on the
/// project named in the path), runs the handler, and writes the audit entry.
///
/// Handlers behind the guard find the [`Caller`] and, on project routes, the [`Project`] in
/// the request extensions.
pub async fn guard(
    State(guard): State<Guard>,
    path: Result<Path<HashMap<String, String>>, axum::extract::rejection::PathRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let params = match path {
        Ok(Path(params)) => params,
        Err(rejection) => return crate::extract::path_error(&rejection).into_response(),
    };

    let authorised = authorise(&guard, request.headers(), &params).await;
    let (caller, project) = match authorised {
        Ok(found) => found,
        Err((error, caller)) => {
            let (entry, response) = rejection(&guard, error, caller, &request);
            record_audit(&guard.state, entry).await;
            return response;
        }
    };

    // Fail closed: a change or data read whose audit entry could not be written afterwards
    // is refused up front. The audit routes stay open so auditors can investigate.
    // A handler that appends its entry in the transaction of its change needs no check:
    // a chain that cannot be extended rolls the change back.
    let audit_read = matches!(guard.action, Action::AuditList | Action::AuditVerify);
    if guard.action.audited() && !audit_read && !guard.audit_in_transaction {
        let check = guard
            .state
            .store()
            .check_audit_chain(caller.tenant.as_str())
            .await;
        if let Err(error) = check {
            tracing::error!(
                %error,
                tenant = %caller.tenant,
                principal = %caller.principal,
                action = guard.action.name(),
                "refusing an audited call because the audit chain cannot be extended"
            );
            let mut response = ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the audit log of tenant {} cannot record this call, so it was refused: {error}",
                    caller.tenant
                ),
            )
            .into_response();
            attach_ids(&mut response, &caller);
            return response;
        }
    }

    // MLflow paths name no project, so the entry names it.
    let mlflow_project = project
        .as_ref()
        .filter(|_| guard.mlflow || guard.project_from_header)
        .map(|project| project.name.clone());
    let audit_template = guard.action.audited().then(|| {
        let mut entry = audit_entry(
            &guard,
            Some(&caller),
            &request,
            AuditOutcome::Success,
            0,
            None,
        );
        if let Some(name) = mlflow_project {
            entry.details["project"] = name.into();
        }
        entry
    });
    if guard.audit_in_transaction
        && let Some(entry) = &audit_template
    {
        request
            .extensions_mut()
            .insert(AuditInTransaction(entry.clone()));
    }
    let ids = CallerIds::of(&caller);
    request.extensions_mut().insert(caller);
    if let Some(project) = project {
        request.extensions_mut().insert(project);
    }

    let call = run_handler(guard.state.clone(), next, request, audit_template);
    let mut response = if runs_detached(guard.action) {
        // A client that disconnects, or the request time limit, drops this future. The
        // handler and its audit entry run in their own task, so neither is cut off halfway.
        match tokio::spawn(call).await {
            Ok(response) => response,
            Err(error) => {
                ApiError::new(ErrorCode::Internal, format!("request task failed: {error}"))
                    .into_response()
            }
        }
    } else {
        call.await
    };
    response.extensions_mut().insert(ids);
    response
}

/// Returns whether the guard runs the handler of `action` in a task of its own, which
/// finishes even when the request future is dropped.
///
/// Audited actions need that, so their change and its audit entry are never cut off halfway.
/// Inference is not audited but keeps its own task too, so a prediction the model computed
/// reaches the prediction log even when the client has gone. Every other action only reads,
/// so its handler runs inline in the request future: that skips a task spawn and the
/// wake-ups between the two tasks, which add to the latency of every small read.
fn runs_detached(action: Action) -> bool {
    action.audited() || action == Action::EndpointsInfer
}

/// Runs the handler, turning a panic into a `500 internal` response, and appends the audit
/// entry of an audited call unless the handler already appended it.
async fn run_handler(
    state: AppState,
    next: Next,
    request: Request,
    audit_template: Option<NewAuditEntry>,
) -> Response {
    let handler = std::panic::AssertUnwindSafe(next.run(request));
    let response = match futures::FutureExt::catch_unwind(handler).await {
        Ok(response) => response,
        Err(panic) => panic_response(panic),
    };
    let recorded = response.extensions().get::<AuditRecorded>().is_some();
    if let Some(entry) = audit_template.filter(|_| !recorded) {
        record_audit(&state, complete_entry(entry, &response)).await;
    }
    response
}

/// Builds the audit entry and the response for a call that authentication or authorisation
/// rejected. A rejected token that was found is recorded in its owner's tenant chain,
/// anything else in the system chain.
fn rejection(
    guard: &Guard,
    error: AuthError,
    caller: Option<Caller>,
    request: &Request,
) -> (NewAuditEntry, Response) {
    let outcome = if error.is_denial() || error.code() == ErrorCode::NotFound {
        AuditOutcome::Denied
    } else {
        AuditOutcome::Failed
    };
    let subject = error.subject().cloned();
    let api_error = ApiError::from(error);
    let mut entry = audit_entry(
        guard,
        caller.as_ref(),
        request,
        outcome,
        api_error.code.http_status(),
        Some(api_error.code),
    );
    if let (None, Some(subject)) = (&caller, subject) {
        entry.tenant = subject.tenant.to_string();
        entry.actor = subject.principal.to_string();
        entry.details["token_id"] = subject.token.to_string().into();
    }
    let mut response = api_error.into_response();
    if let Some(caller) = caller {
        attach_ids(&mut response, &caller);
    }
    (entry, response)
}

/// The audit entry of a call whose handler appends it in the transaction of its change, as
/// the guard built it before the call. The handler completes it with
/// [`AuditInTransaction::success`] and marks its response with [`AuditRecorded`] once the
/// change and the entry committed; any other response gets its entry from the guard.
#[derive(Clone, Debug)]
pub struct AuditInTransaction(pub NewAuditEntry);

impl AuditInTransaction {
    /// Returns the entry of a successful call: status 200, with `details` merged in as the
    /// guard merges [`AuditDetails`].
    pub fn success(&self, details: serde_json::Value) -> NewAuditEntry {
        let mut entry = self.0.clone();
        entry.status = 200;
        entry.outcome = AuditOutcome::Success;
        if let serde_json::Value::Object(extra) = details {
            for (key, value) in extra {
                entry.details[key.as_str()] = value;
            }
        }
        entry
    }
}

/// Marks a response whose audit entry the handler already appended.
#[derive(Clone, Copy, Debug)]
pub struct AuditRecorded;

/// Context a handler adds to its audit entry, such as the name of what it created. It is
/// merged into the entry's `details`; it must never carry secrets or row data.
#[derive(Clone, Debug)]
pub struct AuditDetails(pub serde_json::Value);

/// Fills in the outcome of an audited call from its response.
fn complete_entry(mut entry: NewAuditEntry, response: &Response) -> NewAuditEntry {
    let status = response.status();
    entry.status = status.as_u16();
    if !(status.is_success() || status.is_redirection()) {
        let info = response.extensions().get::<ErrorInfo>();
        let denied = info.is_some_and(|info| info.code.kind() == ghaf_core::ErrorKind::Auth);
        entry.outcome = if denied {
            AuditOutcome::Denied
        } else {
            AuditOutcome::Failed
        };
        if let Some(info) = info {
            entry.details["error_code"] = info.code.as_str().into();
        }
    }
    if let Some(AuditDetails(serde_json::Value::Object(extra))) =
        response.extensions().get::<AuditDetails>()
    {
        for (key, value) in extra {
            entry.details[key.as_str()] = value.clone();
        }
    }
    entry
}

type AuthorisationFailure = (AuthError, Option<Caller>);

async fn authorise(
    guard: &Guard,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(Caller, Option<Project>), AuthorisationFailure> {
    let token = bearer_token(headers).map_err(|error| (error, None))?;
    let caller = guard
        .state
        .tenancy()
        .authenticate(token)
        .await
        .map_err(|error| (error, None))?;

    if guard.action.scope() != ActionScope::Project {
        caller
            .authorize(guard.action)
            .map_err(|error| (error, Some(caller.clone())))?;
        return Ok((caller, None));
    }

    let project_name = match params.get("project") {
        Some(name) => Some(name.clone()),
        None if guard.mlflow || guard.project_from_header => Some(
            mlflow_project_name(guard, headers, &caller)
                .await
                .map_err(|error| (error, Some(caller.clone())))?,
        ),
        None => None,
    };
    let Some(name) = project_name.as_deref() else {
        // A project action on a route without `{project}` is a wiring mistake: deny.
        tracing::error!(
            action = guard.action.name(),
            "project action on a route without a project parameter"
        );
        return Err((
            AuthError::PermissionDenied {
                action: guard.action.name(),
                needs: "a project in the request path".into(),
            },
            Some(caller),
        ));
    };
    let project = guard
        .state
        .tenancy()
        .visible_project(&caller, name)
        .await
        .map_err(|error| (error, Some(caller.clone())))?;
    caller
        .authorize_project(guard.action, &project)
        .map_err(|error| (error, Some(caller.clone())))?;
    Ok((caller, Some(project)))
}

/// Finds the project of an MLflow-compatible request, whose path names none: the
/// `X-Ghaf-Project` header, else the project the token is restricted to, else the bootstrap
/// project (`default` unless configured otherwise).
async fn mlflow_project_name(
    guard: &Guard,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<String, AuthError> {
    if let Some(value) = headers.get(PROJECT_HEADER) {
        return value
            .to_str()
            .map(|name| name.trim().to_owned())
            .map_err(|_| AuthError::NotFound {
                what: "project",
                name: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            });
    }
    if let Some(id) = &caller.token_project {
        let project = guard
            .state
            .store()
            .get_project(&caller.tenant, id)
            .await?
            .ok_or_else(|| AuthError::NotFound {
                what: "project",
                name: id.to_string(),
            })?;
        return Ok(project.name);
    }
    Ok(guard.state.config().bootstrap.project.clone())
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or(AuthError::MissingCredentials)?;
    let value = header.to_str().map_err(|_| AuthError::InvalidToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingCredentials);
    }
    Ok(token.trim())
}

/// Maximum length of a resource path recorded in an audit entry, in bytes.
const MAX_RESOURCE_LEN: usize = 512;

/// Returns the audited resource: the percent-decoded request path below `/api/v1/`, with any
/// segment that is a whole API token reduced to its public id, cut to 512 bytes.
fn resource_of(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let trimmed = decoded
        .strip_prefix("/api/v1/")
        .unwrap_or(&decoded)
        .trim_end_matches('/');
    let mut resource = trimmed
        .split('/')
        .map(|segment| match ghaf_auth::token::parse(segment) {
            Some(parsed) => format!("ghaf_{}_<redacted>", parsed.id),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/");
    if resource.len() > MAX_RESOURCE_LEN {
        let mut cut = MAX_RESOURCE_LEN;
        while !resource.is_char_boundary(cut) {
            cut -= 1;
        }
        resource.truncate(cut);
        resource.push('…');
    }
    resource
}

/// Builds the audit entry of a call from its request: the resource is the request path (see
/// [`resource_of`]) and the request id is the one [`request_context`] assigned.
fn audit_entry(
    guard: &Guard,
    caller: Option<&Caller>,
    request: &Request,
    outcome: AuditOutcome,
    status: u16,
    code: Option<ErrorCode>,
) -> NewAuditEntry {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate);
    let mut details = serde_json::json!({ "method": request.method().as_str() });
    if let Some(caller) = caller {
        details["principal_name"] = caller.principal_name.clone().into();
        details["token_id"] = caller.token.to_string().into();
    } else if let Some(token_id) = bearer_token(request.headers())
        .ok()
        .and_then(ghaf_auth::token::parse)
        .map(|parsed| parsed.id)
    {
        // The public id of a rejected token helps trace who tried; never the secret.
        details["token_id"] = token_id.to_string().into();
    }
    if let Some(code) = code {
        details["error_code"] = code.as_str().into();
    }
    NewAuditEntry {
        tenant: caller.map_or_else(|| SYSTEM_CHAIN.to_owned(), |c| c.tenant.to_string()),
        actor: caller.map_or_else(|| "anonymous".to_owned(), |c| c.principal.to_string()),
        action: guard.action.name().to_owned(),
        resource: resource_of(request.uri().path()),
        outcome,
        status,
        request_id: request_id.to_string(),
        time: ghaf_core::now_millis(),
        details,
    }
}

/// Appends an audit entry. A failure cannot undo the call any more, so it is logged at
/// ERROR with the whole entry: the log then has the record the database could not take.
async fn record_audit(state: &AppState, entry: NewAuditEntry) {
    if entry.tenant == SYSTEM_CHAIN && !state.system_audit_limiter().try_acquire() {
        state.metrics().audit_suppressed();
        return;
    }
    match state.store().append_audit(&entry).await {
        Ok(_) => state.metrics().audit_appended(entry.outcome.as_str()),
        Err(error) => {
            state.metrics().audit_failed();
            tracing::error!(
                %error,
                tenant = %entry.tenant,
                actor = %entry.actor,
                action = %entry.action,
                resource = %entry.resource,
                outcome = entry.outcome.as_str(),
                status = entry.status,
                request_id = %entry.request_id,
                "cannot append audit entry"
            );
        }
    }
}

fn attach_ids(response: &mut Response, caller: &Caller) {
    response.extensions_mut().insert(CallerIds::of(caller));
}

/// Renders a handler panic as a `500 internal` JSON error; the request middleware logs it.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::new(ErrorCode::Internal, format!("handler panicked: {message}")).into_response()
}

/// Returns `404 route_not_found` for requests that match no route.
pub async fn route_not_found(request: Request) -> Response {
    ApiError::new(
        ErrorCode::RouteNotFound,
        format!(
            "no route for {} {}; the API is described at /api/v1/openapi.json",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}

/// Returns `405 method_not_allowed` for a known path with a method it does not support.
pub async fn method_not_allowed(request: Request) -> Response {
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not supported on {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_strips_api_prefix() {
        assert_eq!(resource_of("/api/v1/projects/fraud/"), "projects/fraud");
        assert_eq!(resource_of("/healthz"), "/healthz");
    }

    #[test]
    fn resource_is_decoded() {
        assert_eq!(
            resource_of("/api/v1/projects/%73ecret%2Dproj/members"),
            "projects/secret-proj/members"
        );
    }

    #[test]
    fn resource_redacts_tokens() {
        let (id, token, _) = ghaf_auth::token::generate();
        let resource = resource_of(&format!("/api/v1/tokens/{token}"));
        assert_eq!(resource, format!("tokens/ghaf_{id}_<redacted>"));
    }

    #[test]
    fn resource_is_bounded() {
        let long = format!("/api/v1/{}", "é".repeat(2_000));
        assert!(resource_of(&long).len() <= MAX_RESOURCE_LEN + '…'.len_utf8());
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let custom = axum::http::Method::from_bytes(b"BREAK1").unwrap();
        assert_eq!(method_label(&custom), "other");
        assert_eq!(method_label(&axum::http::Method::GET), "GET");
        assert_eq!(method_label(&axum::http::Method::OPTIONS), "OPTIONS");
    }

    /// Every unaudited action except inference only reads, so its handler may run inline.
    /// A new unaudited action must be added here after checking that its handler changes
    /// nothing, or be made detached in [`runs_detached`].
    #[test]
    fn inline_actions_are_reads() {
        let reads = [
            "tenants.list",
            "whoami",
            "projects.list",
            "projects.get",
            "projects.members.list",
            "principals.list",
            "principals.get",
            "role_bindings.list",
            "tokens.list",
            "tracking.read",
            "models.read",
            "datasets.list",
            "datasets.get",
            "datasets.versions.list",
            "lineage.list",
            "jobs.list",
            "jobs.get",
            "features.read",
            "features.online.read",
            "endpoints.list",
            "endpoints.get",
            "monitor.read",
        ];
        for action in Action::ALL {
            let inline = !runs_detached(*action);
            assert_eq!(
                inline,
                reads.contains(&action.name()),
                "action {} runs inline: {inline}",
                action.name()
            );
        }
        assert!(runs_detached(Action::EndpointsInfer));
        assert!(runs_detached(Action::FeaturesPush));
    }
}

/// The guard around handlers that panic or outlast the time limit, on inline (unaudited)
/// and detached (audited) routes.
#[cfg(test)]
mod guard_tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Method;
    use ghaf_meta::{AuditFilter, MetaStore, SqlMetaStore};
    use tower::ServiceExt;

    use super::*;
    use crate::api::{Access, ApiRouter, RouteInfo};
    use crate::config::ServerConfig;

    const AUDIT_KEY: &[u8] = b"guard-test-audit-key-0123456789abcdef";
    const PANIC_READ: &str = "/api/v1/projects/{project}/test/panic-read";
    const PANIC_CHANGE: &str = "/api/v1/projects/{project}/test/panic-change";
    const SLOW_READ: &str = "/api/v1/projects/{project}/test/slow-read";

    struct Fixture {
        router: axum::Router,
        state: AppState,
        token: String,
        _dir: tempfile::TempDir,
    }

    async fn panicking() -> Response {
        panic!("test handler panicked")
    }

    async fn slow() -> Response {
        tokio::time::sleep(Duration::from_secs(30)).await;
        StatusCode::OK.into_response()
    }

    /// Builds a router with the test routes behind the guard and the request middleware,
    /// layered as [`crate::app::router`] layers the real routes.
    async fn fixture(mut config: ServerConfig) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        config.data_dir = dir.path().to_owned();
        let url = format!("sqlite://{}", dir.path().join("meta.db").display());
        let db = ghaf_meta::Db::connect(&url, 4).await.expect("open sqlite");
        let store: Arc<dyn MetaStore> = Arc::new(SqlMetaStore::new(db, AUDIT_KEY.to_vec()));
        let blobs = ghaf_blob::BlobStore::from_config(&config.blob_config()).expect("blobs");
        let state = AppState::new(store, blobs, AUDIT_KEY.to_vec(), config);
        let created = crate::app::bootstrap(&state)
            .await
            .expect("bootstrap")
            .expect("empty store bootstraps");

        let mut api = ApiRouter::new();
        let read = Access::Action(Action::FeaturesOnlineRead);
        let change = Access::Action(Action::FeaturesPush);
        api.add(
            RouteInfo::new(Method::POST, PANIC_READ, read, "test"),
            panicking,
        );
        api.add(
            RouteInfo::new(Method::POST, PANIC_CHANGE, change, "test"),
            panicking,
        );
        api.add(RouteInfo::new(Method::POST, SLOW_READ, read, "test"), slow);
        let router = api
            .into_router(state.clone())
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                request_context,
            ))
            .with_state(state.clone());
        Fixture {
            router,
            state,
            token: created.token.secret,
            _dir: dir,
        }
    }

    async fn post(fixture: &Fixture, template: &str) -> (StatusCode, serde_json::Value) {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri(template.replace("{project}", "default"))
            .header("authorization", format!("Bearer {}", fixture.token))
            .header(REQUEST_ID_HEADER, "guard-test-request")
            .body(Body::empty())
            .expect("valid request");
        let response = fixture
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    async fn audit_entries(fixture: &Fixture, action: Action) -> Vec<ghaf_core::audit::AuditEntry> {
        let filter = AuditFilter {
            action: Some(action.name().to_owned()),
            limit: 100,
            ..AuditFilter::default()
        };
        fixture
            .state
            .store()
            .list_audit("default", &filter)
            .await
            .expect("list audit entries")
    }

    #[tokio::test]
    async fn inline_handler_panic_is_500() {
        let fixture = fixture(ServerConfig::default()).await;
        assert!(!runs_detached(Action::FeaturesOnlineRead));

        let (status, body) = post(&fixture, PANIC_READ).await;

        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        // The client sees no panic message; the request middleware logs it.
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains("test handler panicked"), "{message}");
        assert!(
            audit_entries(&fixture, Action::FeaturesOnlineRead)
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn detached_handler_panic_is_audited() {
        let fixture = fixture(ServerConfig::default()).await;
        assert!(runs_detached(Action::FeaturesPush));

        let (status, body) = post(&fixture, PANIC_CHANGE).await;

        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        let entries = audit_entries(&fixture, Action::FeaturesPush).await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].status, 500);
        assert_eq!(entries[0].outcome, AuditOutcome::Failed);
        assert_eq!(entries[0].request_id, "guard-test-request");
        assert_eq!(entries[0].resource, "projects/default/test/panic-change");
    }

    #[tokio::test]
    async fn inline_handler_times_out() {
        let mut config = ServerConfig::default();
        config.http.request_timeout_seconds = 1;
        let fixture = fixture(config).await;

        let started = Instant::now();
        let (status, body) = post(&fixture, SLOW_READ).await;

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
