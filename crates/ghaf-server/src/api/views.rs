//! Request and response bodies of `/api/v1`. Requests reject unknown fields, so a misspelt
//! field is an error instead of a silently ignored value.

use ghaf_auth::{Caller, IssuedToken};
use ghaf_core::{Name, ProjectRole, Role};
use ghaf_meta::{Principal, PrincipalKind, Project, RoleBinding, StoredToken, Tenant};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn time(millis: i64) -> String {
    ghaf_core::format_millis(millis)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub name: String,
    pub display_name: String,
    /// RFC 3339 UTC time.
    pub created_at: String,
}

impl From<Tenant> for TenantView {
    fn from(tenant: Tenant) -> Self {
        Self {
            name: tenant.id.to_string(),
            display_name: tenant.display_name,
            created_at: time(tenant.created_at),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// Tenant name: lowercase letters, digits, `-`, `_`, `.`; at most 63 characters.
    #[schema(value_type = String)]
    pub name: Name,
    pub display_name: Option<String>,
    /// Name of the tenant's first admin user; `admin` when omitted.
    #[schema(value_type = Option<String>)]
    pub admin: Option<Name>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedTenant {
    pub tenant: TenantView,
    pub admin: PrincipalView,
    /// The admin's token. It is shown only in this response.
    pub token: IssuedTokenView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub description: String,
    pub created_at: String,
}

impl From<Project> for ProjectView {
    fn from(project: Project) -> Self {
        Self {
            id: project.id.to_string(),
            name: project.name,
            tenant: project.tenant.to_string(),
            description: project.description,
            created_at: time(project.created_at),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectList {
    pub projects: Vec<ProjectView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectRequest {
    /// Project name, unique in the tenant: lowercase letters, digits, `-`, `_`, `.`.
    #[schema(value_type = String)]
    pub name: Name,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PrincipalView {
    pub id: String,
    pub name: String,
    /// `user` or `service_account`.
    pub kind: String,
    pub email: Option<String>,
    pub platform_admin: bool,
    pub disabled: bool,
    pub created_at: String,
}

impl From<Principal> for PrincipalView {
    fn from(principal: Principal) -> Self {
        Self {
            id: principal.id.to_string(),
            name: principal.name,
            kind: principal.kind.as_str().to_owned(),
            email: principal.email,
            platform_admin: principal.platform_admin,
            disabled: principal.disabled,
            created_at: time(principal.created_at),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PrincipalList {
    pub principals: Vec<PrincipalView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrincipalRequest {
    #[schema(value_type = String)]
    pub name: Name,
    /// `user` (default) or `service_account`.
    #[serde(default = "default_kind")]
    #[schema(value_type = String)]
    pub kind: PrincipalKind,
    pub email: Option<String>,
}

fn default_kind() -> PrincipalKind {
    PrincipalKind::User
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// Id of the principal that owns the token.
    pub principal: String,
    /// Project the token is restricted to, if any (project id).
    pub project: Option<String>,
    /// Highest project role the token can use, if capped.
    pub max_role: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<StoredToken> for TokenView {
    fn from(token: StoredToken) -> Self {
        Self {
            id: token.id.to_string(),
            name: token.name,
            principal: token.principal.to_string(),
            project: token.project.map(|p| p.to_string()),
            max_role: token.max_role.map(|r| r.to_string()),
            created_at: time(token.created_at),
            expires_at: token.expires_at.map(time),
            revoked_at: token.revoked_at.map(time),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuedTokenView {
    #[serde(flatten)]
    pub token: TokenView,
    /// The secret token to send as `Authorization: Bearer …`. Shown once; Ghaf keeps only a
    /// hash of it.
    pub secret: String,
}

impl From<IssuedToken> for IssuedTokenView {
    fn from(issued: IssuedToken) -> Self {
        Self {
            token: issued.stored.into(),
            secret: issued.secret,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// A label for the token, such as `laptop` or `ci`: 1 to 100 characters.
    pub name: String,
    /// Principal that owns the token, by name; the caller when omitted. Only tenant admins
    /// may name another principal.
    pub principal: Option<String>,
    /// Restricts the token to one project, by name.
    pub project: Option<String>,
    /// Caps the project role the token can use.
    #[schema(value_type = Option<String>)]
    pub max_role: Option<ProjectRole>,
    /// Lifetime in seconds; omit for a token that does not expire.
    pub expires_in_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleBindingView {
    pub principal: String,
    /// Project name, or absent for a tenant-wide role.
    pub project: Option<String>,
    pub role: String,
    pub created_at: String,
    pub created_by: String,
}

impl RoleBindingView {
    pub fn new(binding: RoleBinding, principal_name: String, project_name: Option<String>) -> Self {
        Self {
            principal: principal_name,
            project: project_name,
            role: binding.role.to_string(),
            created_at: time(binding.created_at),
            created_by: binding.created_by,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleBindingList {
    pub bindings: Vec<RoleBindingView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRoleRequest {
    /// Principal name.
    pub principal: String,
    /// `viewer`, `developer`, `deployer` or `admin` with a project; `tenant_admin` or
    /// `auditor` without one.
    #[schema(value_type = String)]
    pub role: Role,
    /// Project name, for project roles.
    pub project: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantMemberRequest {
    /// Principal name.
    pub principal: String,
    /// `viewer`, `developer`, `deployer` or `admin`.
    #[schema(value_type = String)]
    pub role: ProjectRole,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoamiView {
    pub tenant: String,
    pub principal: PrincipalRef,
    pub token_id: String,
    pub platform_admin: bool,
    pub tenant_roles: Vec<String>,
    /// Project id to role.
    pub project_roles: std::collections::BTreeMap<String, String>,
    pub token_project: Option<String>,
    pub token_max_role: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PrincipalRef {
    pub id: String,
    pub name: String,
    pub kind: String,
}

impl From<&Caller> for WhoamiView {
    fn from(caller: &Caller) -> Self {
        Self {
            tenant: caller.tenant.to_string(),
            principal: PrincipalRef {
                id: caller.principal.to_string(),
                name: caller.principal_name.clone(),
                kind: caller.kind.as_str().to_owned(),
            },
            token_id: caller.token.to_string(),
            platform_admin: caller.platform_admin,
            tenant_roles: ghaf_auth::service::tenant_role_names(&caller.tenant_roles),
            project_roles: caller
                .project_roles
                .iter()
                .map(|(project, role)| (project.to_string(), Role::from(*role).to_string()))
                .collect(),
            token_project: caller.token_project.as_ref().map(ToString::to_string),
            token_max_role: caller.token_max_role.map(|r| Role::from(r).to_string()),
        }
    }
}

/// An audit entry as the API shows it. `time` is RFC 3339 UTC with milliseconds, the same
/// instant the chain hash covers (stored as Unix milliseconds).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    /// Position in the tenant's chain, starting at 1.
    pub seq: i64,
    pub tenant: String,
    /// Principal id, `anonymous`, `bootstrap` or `local-operator`.
    pub actor: String,
    pub action: String,
    pub resource: String,
    /// `success`, `denied` or `failed`.
    pub outcome: String,
    pub status: u16,
    pub request_id: String,
    pub time: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Hex SHA-256 chain hash.
    pub hash: String,
}

impl From<ghaf_core::audit::AuditEntry> for AuditEntryView {
    fn from(entry: ghaf_core::audit::AuditEntry) -> Self {
        Self {
            seq: entry.seq,
            tenant: entry.tenant,
            actor: entry.actor,
            action: entry.action,
            resource: entry.resource,
            outcome: entry.outcome.as_str().to_owned(),
            status: entry.status,
            request_id: entry.request_id,
            time: time(entry.time),
            details: entry.details,
            hash: entry.hash,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Principal name or id.
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Resource path; matches it and everything below it.
    pub resource: Option<String>,
    /// `success`, `denied` or `failed`.
    pub outcome: Option<String>,
    /// RFC 3339 time, inclusive.
    pub since: Option<String>,
    /// RFC 3339 time, exclusive.
    pub until: Option<String>,
    /// Sequence number to continue after.
    pub after: Option<i64>,
    /// Page size, 1 to 1000; 100 when omitted.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    pub status: String,
}
