//! Tenants, projects, principals, role grants and `whoami`.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use ghaf_auth::{Action, Caller};
use ghaf_core::{Name, Role};
use ghaf_meta::{Principal, Project};

use super::views::*;
use super::{Access, ApiRouter, RouteInfo};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::middleware::AuditDetails;
use crate::state::AppState;

pub fn register(api: &mut ApiRouter) {
    use Access::Action as A;
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/whoami",
            A(Action::Whoami),
            "The caller's identity and roles",
        )
        .response("WhoamiView"),
        whoami,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/tenants",
            A(Action::TenantsList),
            "List tenants",
        )
        .response("TenantList"),
        list_tenants,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/tenants",
            A(Action::TenantsCreate),
            "Create a tenant with an admin user, and return the admin's token once",
        )
        .request("CreateTenantRequest")
        .response("CreatedTenant")
        .status(201),
        create_tenant,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects",
            A(Action::ProjectsList),
            "List the projects the caller can see",
        )
        .response("ProjectList"),
        list_projects,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects",
            A(Action::ProjectsCreate),
            "Create a project",
        )
        .request("CreateProjectRequest")
        .response("ProjectView")
        .status(201),
        create_project,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}",
            A(Action::ProjectsGet),
            "Get a project",
        )
        .response("ProjectView"),
        get_project,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/projects/{project}/members",
            A(Action::ProjectMembersList),
            "List the project's role bindings",
        )
        .response("RoleBindingList"),
        list_members,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/projects/{project}/members",
            A(Action::ProjectMembersGrant),
            "Grant a project role to a principal",
        )
        .request("GrantMemberRequest")
        .response("RoleBindingView")
        .status(201),
        grant_member,
    );
    api.add(
        RouteInfo::new(
            Method::DELETE,
            "/api/v1/projects/{project}/members/{principal}/{role}",
            A(Action::ProjectMembersRevoke),
            "Revoke a project role from a principal",
        )
        .status(204),
        revoke_member,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/principals",
            A(Action::PrincipalsList),
            "List users and service accounts",
        )
        .response("PrincipalList"),
        list_principals,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/principals",
            A(Action::PrincipalsCreate),
            "Create a user or service account",
        )
        .request("CreatePrincipalRequest")
        .response("PrincipalView")
        .status(201),
        create_principal,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/principals/{principal}",
            A(Action::PrincipalsGet),
            "Get a principal by name",
        )
        .response("PrincipalView"),
        get_principal,
    );
    api.add(
        RouteInfo::new(
            Method::GET,
            "/api/v1/role-bindings",
            A(Action::RoleBindingsList),
            "List every role binding of the tenant",
        )
        .response("RoleBindingList"),
        list_role_bindings,
    );
    api.add(
        RouteInfo::new(
            Method::POST,
            "/api/v1/role-bindings",
            A(Action::RoleBindingsGrant),
            "Grant a tenant role, or a project role on a named project",
        )
        .request("GrantRoleRequest")
        .response("RoleBindingView")
        .status(201),
        grant_role,
    );
    api.add(
        RouteInfo::new(
            Method::DELETE,
            "/api/v1/role-bindings/{principal}/{role}",
            A(Action::RoleBindingsRevoke),
            "Revoke a tenant role, or a project role with `?project=NAME`",
        )
        .status(204)
        .query(&[("project", "Project name, for project roles")]),
        revoke_role,
    );
}

async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoamiView> {
    Json(WhoamiView::from(&caller))
}

async fn list_tenants(State(state): State<AppState>) -> Result<Json<TenantList>, ApiError> {
    let tenants = state.store().list_tenants().await?;
    Ok(Json(TenantList {
        tenants: tenants.into_iter().map(Into::into).collect(),
    }))
}

async fn create_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateTenantRequest>,
) -> Result<(StatusCode, Extension<AuditDetails>, Json<CreatedTenant>), ApiError> {
    let admin = match body.admin {
        Some(admin) => admin,
        None => {
            Name::parse("admin").map_err(|e| ApiError::invalid_field("admin", e.to_string()))?
        }
    };
    let display_name = body.display_name.unwrap_or_else(|| body.name.to_string());
    check_text("display_name", &display_name, 200)?;
    let (tenant, principal, token) = state
        .tenancy()
        .create_tenant(&caller, &body.name, &display_name, &admin)
        .await?;
    let details = AuditDetails(serde_json::json!({
        "tenant": tenant.id.to_string(),
        "admin": principal.name,
    }));
    Ok((
        StatusCode::CREATED,
        Extension(details),
        Json(CreatedTenant {
            tenant: tenant.into(),
            admin: principal.into(),
            token: token.into(),
        }),
    ))
}

async fn list_projects(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ProjectList>, ApiError> {
    let projects = state.tenancy().list_projects(&caller).await?;
    Ok(Json(ProjectList {
        projects: projects.into_iter().map(Into::into).collect(),
    }))
}

async fn create_project(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateProjectRequest>,
) -> Result<(StatusCode, Extension<AuditDetails>, Json<ProjectView>), ApiError> {
    check_text("description", &body.description, 2_000)?;
    let project = state
        .tenancy()
        .create_project(&caller, &body.name, &body.description)
        .await?;
    let details = AuditDetails(serde_json::json!({ "project": project.name }));
    Ok((
        StatusCode::CREATED,
        Extension(details),
        Json(project.into()),
    ))
}

async fn get_project(Extension(project): Extension<Project>) -> Json<ProjectView> {
    Json(project.into())
}

async fn list_members(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
) -> Result<Json<RoleBindingList>, ApiError> {
    let bindings = state
        .store()
        .list_role_bindings(&caller.tenant, None)
        .await?;
    let principals = state.store().list_principals(&caller.tenant).await?;
    let name_of = |id: &ghaf_core::PrincipalId| {
        principals
            .iter()
            .find(|p| &p.id == id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    };
    let bindings = bindings
        .into_iter()
        .filter(|binding| binding.project.as_ref() == Some(&project.id))
        .map(|binding| {
            let principal = name_of(&binding.principal);
            RoleBindingView::new(binding, principal, Some(project.name.clone()))
        })
        .collect();
    Ok(Json(RoleBindingList { bindings }))
}

async fn grant_member(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiJson(body): ApiJson<GrantMemberRequest>,
) -> Result<(StatusCode, Extension<AuditDetails>, Json<RoleBindingView>), ApiError> {
    let principal = principal_field(&state, &caller, &body.principal).await?;
    let binding = state
        .tenancy()
        .grant_role(&caller, &principal, Some(&project), Role::from(body.role))
        .await?;
    let details = binding_details(&principal.name, binding.role, Some(&project.name));
    Ok((
        StatusCode::CREATED,
        Extension(details),
        Json(RoleBindingView::new(
            binding,
            principal.name,
            Some(project.name),
        )),
    ))
}

/// Audit details of a role grant or revocation.
fn binding_details(principal: &str, role: Role, project: Option<&str>) -> AuditDetails {
    AuditDetails(serde_json::json!({
        "principal": principal,
        "role": role.as_str(),
        "project": project,
    }))
}

async fn revoke_member(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(project): Extension<Project>,
    ApiPath((_project, principal, role)): ApiPath<(String, String, String)>,
) -> Result<(StatusCode, Extension<AuditDetails>), ApiError> {
    let role = parse_role_segment(&role)?;
    let principal = state
        .tenancy()
        .principal_by_name(&caller, &principal)
        .await?;
    state
        .tenancy()
        .revoke_role(&caller, &principal, Some(&project), role)
        .await?;
    let details = binding_details(&principal.name, role, Some(&project.name));
    Ok((StatusCode::NO_CONTENT, Extension(details)))
}

async fn list_principals(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<PrincipalList>, ApiError> {
    let principals = state.store().list_principals(&caller.tenant).await?;
    Ok(Json(PrincipalList {
        principals: principals.into_iter().map(Into::into).collect(),
    }))
}

async fn create_principal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreatePrincipalRequest>,
) -> Result<(StatusCode, Extension<AuditDetails>, Json<PrincipalView>), ApiError> {
    if let Some(email) = &body.email {
        check_text("email", email, 254)?;
        if !email.contains('@') {
            return Err(ApiError::invalid_field(
                "email",
                format!("invalid email {email:?}: it has no '@'"),
            ));
        }
    }
    let principal = state
        .tenancy()
        .create_principal(&caller, body.kind, &body.name, body.email)
        .await?;
    let details = AuditDetails(serde_json::json!({
        "principal": principal.name,
        "kind": principal.kind.as_str(),
    }));
    Ok((
        StatusCode::CREATED,
        Extension(details),
        Json(principal.into()),
    ))
}

async fn get_principal(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PrincipalView>, ApiError> {
    let principal = state.tenancy().principal_by_name(&caller, &name).await?;
    Ok(Json(principal.into()))
}

async fn list_role_bindings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<RoleBindingList>, ApiError> {
    let bindings = state
        .store()
        .list_role_bindings(&caller.tenant, None)
        .await?;
    let principals = state.store().list_principals(&caller.tenant).await?;
    let projects = state.store().list_projects(&caller.tenant).await?;
    let bindings = bindings
        .into_iter()
        .map(|binding| {
            let principal = principals
                .iter()
                .find(|p| p.id == binding.principal)
                .map_or_else(|| binding.principal.to_string(), |p| p.name.clone());
            let project = binding.project.as_ref().map(|id| {
                projects
                    .iter()
                    .find(|p| &p.id == id)
                    .map_or_else(|| id.to_string(), |p| p.name.clone())
            });
            RoleBindingView::new(binding, principal, project)
        })
        .collect();
    Ok(Json(RoleBindingList { bindings }))
}

async fn grant_role(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<GrantRoleRequest>,
) -> Result<(StatusCode, Extension<AuditDetails>, Json<RoleBindingView>), ApiError> {
    let principal = principal_field(&state, &caller, &body.principal).await?;
    let project = match &body.project {
        Some(name) => Some(project_field(&state, &caller, name).await?),
        None => None,
    };
    let binding = state
        .tenancy()
        .grant_role(&caller, &principal, project.as_ref(), body.role)
        .await?;
    let details = binding_details(
        &principal.name,
        body.role,
        project.as_ref().map(|p| p.name.as_str()),
    );
    Ok((
        StatusCode::CREATED,
        Extension(details),
        Json(RoleBindingView::new(
            binding,
            principal.name,
            project.map(|p| p.name),
        )),
    ))
}

#[derive(Debug, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeQuery {
    project: Option<String>,
}

async fn revoke_role(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((principal, role)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<RevokeQuery>,
) -> Result<(StatusCode, Extension<AuditDetails>), ApiError> {
    let role = parse_role_segment(&role)?;
    let principal = state
        .tenancy()
        .principal_by_name(&caller, &principal)
        .await?;
    let project = match &query.project {
        Some(name) => Some(project_field(&state, &caller, name).await?),
        None => None,
    };
    state
        .tenancy()
        .revoke_role(&caller, &principal, project.as_ref(), role)
        .await?;
    let details = binding_details(
        &principal.name,
        role,
        project.as_ref().map(|p| p.name.as_str()),
    );
    Ok((StatusCode::NO_CONTENT, Extension(details)))
}

/// Resolves a principal named in a request body; `not_found` names the field.
async fn principal_field(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<Principal, ApiError> {
    state
        .tenancy()
        .principal_by_name(caller, name)
        .await
        .map_err(|error| {
            ApiError::from(error).with_details(serde_json::json!({ "field": "principal" }))
        })
}

/// Resolves a project named in a request body or query.
async fn project_field(state: &AppState, caller: &Caller, name: &str) -> Result<Project, ApiError> {
    state
        .tenancy()
        .visible_project(caller, name)
        .await
        .map_err(|error| {
            ApiError::from(error).with_details(serde_json::json!({ "field": "project" }))
        })
}

fn parse_role_segment(value: &str) -> Result<Role, ApiError> {
    value
        .parse::<Role>()
        .map_err(|message| ApiError::invalid_field("role", message))
}

/// Rejects free text that is too long or contains control characters.
pub(crate) fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), ApiError> {
    if value.chars().count() > max_chars {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` has more than {max_chars} characters; shorten it"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err(ApiError::invalid_field(
            field,
            format!(
                "`{field}` contains control, zero-width or text-direction characters; remove them"
            ),
        ));
    }
    Ok(())
}

/// Returns true for zero-width and bidirectional-override characters, which make text
/// display differently from what it contains.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}
