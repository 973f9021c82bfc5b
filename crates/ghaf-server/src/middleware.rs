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

/// Who made a request, attached to the response so the outer middleware can log it.
#[derive(Clone, Debug)]
struct CallerIds {
    tenant: String,
    principal: String,
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
    request.extensions_mut().insert(request_id.clone());
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();

    let span = tracing::info_span!("request", request_id = %request_id, %method, %route);
    let limit = Duration::from_secs(state.config().http.request_timeout_seconds);
    let result = tracing::Instrument::instrument(
        tokio::time::timeout(limit, next.run(request)),
        span.clone(),
    )
    .await;
    let mut response = result.unwrap_or_else(|_| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "the request timed out after {} s; retry later",
                limit.as_secs()
            ),
        )
        .into_response()
    });

    let status = response.status();
    state.metrics().observe_request(
        &method,
        &route,
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
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// State of one route's guard: the action the route performs.
#[derive(Clone)]
pub struct Guard {
    pub state: AppState,
    pub action: Action,
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
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate);
    let resource = resource_of(request.uri().path());
    let params = match path {
        Ok(Path(params)) => params,
        Err(rejection) => return crate::extract::path_error(&rejection).into_response(),
    };

    let authorised = authorise(&guard, request.headers(), &params).await;
    let (caller, project) = match authorised {
        Ok(found) => found,
        Err((error, caller)) => {
            let outcome = if error.is_denial() || error.code() == ErrorCode::NotFound {
                AuditOutcome::Denied
            } else {
                AuditOutcome::Failed
            };
            let api_error = ApiError::from(error);
            let entry = audit_entry(
                &guard,
                caller.as_ref(),
                &request,
                &resource,
                &request_id,
                outcome,
                api_error.code.http_status(),
                Some(api_error.code),
            );
            record_audit(&guard.state, entry).await;
            let mut response = api_error.into_response();
            if let Some(caller) = caller {
                attach_ids(&mut response, &caller);
            }
            return response;
        }
    };

    request.extensions_mut().insert(caller.clone());
    if let Some(project) = project {
        request.extensions_mut().insert(project);
    }
    let audit_template = guard.action.audited().then(|| {
        audit_entry(
            &guard,
            Some(&caller),
            &request,
            &resource,
            &request_id,
            AuditOutcome::Success,
            0,
            None,
        )
    });

    let mut response = next.run(request).await;

    if let Some(mut entry) = audit_template {
        let status = response.status();
        entry.status = status.as_u16();
        if !(status.is_success() || status.is_redirection()) {
            entry.outcome = AuditOutcome::Failed;
            if let Some(info) = response.extensions().get::<ErrorInfo>() {
                entry.details["error_code"] = info.code.as_str().into();
            }
        }
        record_audit(&guard.state, entry).await;
    }
    attach_ids(&mut response, &caller);
    response
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

    let Some(name) = params.get("project") else {
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

/// The audited resource: the request path below `/api/v1/`.
fn resource_of(path: &str) -> String {
    path.strip_prefix("/api/v1/")
        .unwrap_or(path)
        .trim_end_matches('/')
        .to_owned()
}

#[allow(clippy::too_many_arguments)]
fn audit_entry(
    guard: &Guard,
    caller: Option<&Caller>,
    request: &Request,
    resource: &str,
    request_id: &RequestId,
    outcome: AuditOutcome,
    status: u16,
    code: Option<ErrorCode>,
) -> NewAuditEntry {
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
        resource: resource.to_owned(),
        outcome,
        status,
        request_id: request_id.to_string(),
        time: ghaf_core::now_millis(),
        details,
    }
}

/// Appends an audit entry. A failure cannot undo the call any more, so it is logged at
/// ERROR with the whole entry: the log then holds the record the database could not take.
async fn record_audit(state: &AppState, entry: NewAuditEntry) {
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
    response.extensions_mut().insert(CallerIds {
        tenant: caller.tenant.to_string(),
        principal: caller.principal.to_string(),
    });
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

/// Answers requests that match no route.
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

/// Answers a known path with a method it does not support.
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
}
