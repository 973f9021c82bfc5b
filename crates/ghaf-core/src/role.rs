//! Roles granted to principals. Project roles are ordered: each includes the rights of the
//! roles before it. Tenant roles apply to every project of the tenant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A role on one project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectRole {
    /// Reads metadata, metrics and predictions of the project.
    Viewer,
    /// Viewer, plus creates and changes datasets, features, runs and models.
    Developer,
    /// Developer, plus deploys models and changes endpoints and traffic.
    Deployer,
    /// Deployer, plus grants project roles and deletes the project's resources.
    Admin,
}

/// A role on a whole tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantRole {
    /// Manages projects, principals, tokens and role grants; admin of every project.
    TenantAdmin,
    /// Reads the audit log and verifies its hash chain; reads no project data.
    Auditor,
}

/// Either kind of role, as stored in a role binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Developer,
    Deployer,
    Admin,
    TenantAdmin,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Viewer,
        Role::Developer,
        Role::Deployer,
        Role::Admin,
        Role::TenantAdmin,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
            Role::TenantAdmin => "tenant_admin",
            Role::Auditor => "auditor",
        }
    }

    /// Returns the project role, or `None` for a tenant-wide role.
    pub fn project_role(self) -> Option<ProjectRole> {
        match self {
            Role::Viewer => Some(ProjectRole::Viewer),
            Role::Developer => Some(ProjectRole::Developer),
            Role::Deployer => Some(ProjectRole::Deployer),
            Role::Admin => Some(ProjectRole::Admin),
            Role::TenantAdmin | Role::Auditor => None,
        }
    }

    /// Returns the tenant role, or `None` for a project role.
    pub fn tenant_role(self) -> Option<TenantRole> {
        match self {
            Role::TenantAdmin => Some(TenantRole::TenantAdmin),
            Role::Auditor => Some(TenantRole::Auditor),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == value)
            .ok_or_else(|| {
                format!(
                    "unknown role {value:?}; expected one of viewer, developer, deployer, admin, tenant_admin, auditor"
                )
            })
    }
}

impl Role {
    pub fn from_tenant_role(role: TenantRole) -> Self {
        match role {
            TenantRole::TenantAdmin => Role::TenantAdmin,
            TenantRole::Auditor => Role::Auditor,
        }
    }
}

impl From<ProjectRole> for Role {
    fn from(role: ProjectRole) -> Self {
        match role {
            ProjectRole::Viewer => Role::Viewer,
            ProjectRole::Developer => Role::Developer,
            ProjectRole::Deployer => Role::Deployer,
            ProjectRole::Admin => Role::Admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("owner".parse::<Role>().is_err());
    }

    #[test]
    fn project_roles_are_ordered() {
        assert!(ProjectRole::Viewer < ProjectRole::Developer);
        assert!(ProjectRole::Developer < ProjectRole::Deployer);
        assert!(ProjectRole::Deployer < ProjectRole::Admin);
    }
}
