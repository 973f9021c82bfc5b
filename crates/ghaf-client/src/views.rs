//! Request and response bodies of `/api/v1`, as the client sees them.
//!
//! Response types accept missing and unknown fields, so a newer server can add fields without
//! breaking older clients. Times are RFC 3339 UTC strings as the server formats them, except
//! [`AuditEntry::time`], which is milliseconds since the Unix epoch.

use std::collections::BTreeMap;

use ghaf_core::{ProjectRole, Role};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantView {
    pub name: String,
    pub display_name: String,
    pub created_at: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

/// Body of `POST /api/v1/tenants`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CreateTenantRequest {
    /// Tenant name: lowercase letters, digits, `-`, `_`, `.`; at most 63 characters.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Name of the tenant's first admin user; the server uses `admin` when it is omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
}

/// A new tenant with its admin and the admin's token, which the server returns only once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreatedTenant {
    pub tenant: TenantView,
    pub admin: PrincipalView,
    pub token: IssuedTokenView,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub description: String,
    pub created_at: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectList {
    pub projects: Vec<ProjectView>,
}

/// Body of `POST /api/v1/projects`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CreateProjectRequest {
    pub name: String,
    pub description: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrincipalList {
    pub principals: Vec<PrincipalView>,
}

/// Kind of principal to create.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A person.
    #[default]
    User,
    /// A non-human identity for automation, such as CI jobs.
    ServiceAccount,
}

/// Body of `POST /api/v1/principals`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CreatePrincipalRequest {
    pub name: String,
    pub kind: PrincipalKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// Id of the principal that owns the token.
    pub principal: String,
    /// Id of the project the token is restricted to, if any.
    pub project: Option<String>,
    /// Highest project role the token can use, if capped.
    pub max_role: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

/// A token together with its secret, which the server returns only in the response that
/// creates it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IssuedTokenView {
    #[serde(flatten)]
    pub token: TokenView,
    /// The value to send as `Authorization: Bearer …`.
    pub secret: String,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CreateTokenRequest {
    /// A label for the token, such as `laptop` or `ci`: 1 to 100 characters.
    pub name: String,
    /// Name of the principal that owns the token; the caller when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Name of the project the token is restricted to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_role: Option<ProjectRole>,
    /// Lifetime in seconds; the token does not expire when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoleBindingView {
    /// Principal name.
    pub principal: String,
    /// Project name; `None` for a tenant-wide role.
    pub project: Option<String>,
    pub role: String,
    pub created_at: String,
    pub created_by: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoleBindingList {
    pub bindings: Vec<RoleBindingView>,
}

/// Body of `POST /api/v1/role-bindings`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GrantRoleRequest {
    /// Principal name.
    pub principal: String,
    /// A project role with `project`, or `tenant_admin` or `auditor` without it.
    pub role: Role,
    /// Project name, for project roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// Body of `POST /api/v1/projects/{project}/members`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GrantMemberRequest {
    /// Principal name.
    pub principal: String,
    pub role: ProjectRole,
}

/// Identity and roles of the caller's token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WhoamiView {
    pub tenant: String,
    pub principal: PrincipalRef,
    pub token_id: String,
    pub platform_admin: bool,
    pub tenant_roles: Vec<String>,
    /// Project id to role name.
    pub project_roles: BTreeMap<String, String>,
    /// Id of the project the token is restricted to, if any.
    pub token_project: Option<String>,
    pub token_max_role: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrincipalRef {
    pub id: String,
    pub name: String,
    pub kind: String,
}

/// One page of the audit log, oldest entry first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Sequence number to pass as [`AuditFilter::after`] for the next page; `None` on the
    /// last page.
    pub next_after: Option<i64>,
}

/// One audited call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditEntry {
    /// Position in the tenant's chain, starting at 1.
    pub seq: i64,
    pub tenant: String,
    /// Principal id, or `anonymous`.
    pub actor: String,
    /// Action name, such as `projects.create`.
    pub action: String,
    /// Resource path, such as `projects/fraud`.
    pub resource: String,
    /// `success`, `denied` or `failed`.
    pub outcome: String,
    /// HTTP status sent to the caller.
    pub status: u16,
    pub request_id: String,
    /// RFC 3339 UTC time with milliseconds.
    pub time: String,
    pub details: serde_json::Value,
    /// Hex SHA-256 chain hash.
    pub hash: String,
}

/// Query parameters of `GET /api/v1/audit`; `None` leaves a filter out.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AuditFilter {
    /// Principal name or id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Action name, such as `projects.create`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Resource path; matches it and every path below it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `success`, `denied` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// RFC 3339 time, inclusive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// RFC 3339 time, exclusive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Sequence number to continue after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// Page size, 1 to 1000; the server uses 100 when it is omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Result of `POST /api/v1/audit/verify`: one report per checked chain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditVerifyView {
    pub valid: bool,
    pub chains: Vec<ChainReport>,
}

/// Verification result of one tenant's audit chain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChainReport {
    pub tenant: String,
    pub entries_checked: i64,
    pub valid: bool,
    /// First sequence number where the chain is broken.
    pub first_bad_seq: Option<i64>,
    /// Description of the problem at `first_bad_seq`.
    pub problem: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthView {
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_fields_are_accepted() {
        let json = r#"{"id": "p1", "name": "fraud", "added_later": {"x": 1}}"#;
        let project: ProjectView = serde_json::from_str(json).unwrap();
        assert_eq!(project.name, "fraud");
        assert_eq!(project.description, "");
    }

    #[test]
    fn issued_token_reads_flattened_fields() {
        let json = r#"{"id": "t1", "name": "ci", "principal": "p1", "project": null,
            "max_role": "viewer", "created_at": "2026-01-01T00:00:00.000Z",
            "expires_at": null, "revoked_at": null, "secret": "ghaf_x_y"}"#;
        let issued: IssuedTokenView = serde_json::from_str(json).unwrap();
        assert_eq!(issued.token.id, "t1");
        assert_eq!(issued.token.max_role.as_deref(), Some("viewer"));
        assert_eq!(issued.secret, "ghaf_x_y");
    }

    #[test]
    fn token_request_omits_unset_fields() {
        let request = CreateTokenRequest {
            name: "ci".into(),
            max_role: Some(ProjectRole::Viewer),
            ..CreateTokenRequest::default()
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "ci", "max_role": "viewer"})
        );
    }

    #[test]
    fn grant_role_request_uses_wire_names() {
        let request = GrantRoleRequest {
            principal: "ana".into(),
            role: Role::TenantAdmin,
            project: None,
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"principal": "ana", "role": "tenant_admin"})
        );
    }

    #[test]
    fn principal_kind_uses_snake_case() {
        let request = CreatePrincipalRequest {
            name: "bot".into(),
            kind: PrincipalKind::ServiceAccount,
            email: None,
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "bot", "kind": "service_account"})
        );
    }
}
