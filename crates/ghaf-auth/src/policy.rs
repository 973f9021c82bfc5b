//! Deny-by-default authorisation.
//!
//! Every API operation is an [`Action`] with one fixed [`Requirement`]. There is no path that
//! authorises without naming an action, and an action not listed here cannot be named, so a
//! new operation is denied until someone decides who may call it.

use std::collections::HashMap;

use ghaf_core::{PrincipalId, ProjectId, ProjectRole, TenantId, TenantRole, TokenId};
use ghaf_meta::{PrincipalKind, Project};

use crate::AuthError;

/// The condition a caller must meet to perform an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Any authenticated principal of the tenant.
    Authenticated,
    /// The platform administrator created at bootstrap.
    PlatformAdmin,
    /// A tenant-wide role.
    TenantRole(TenantRole),
    /// At least this role on the project named in the request.
    ProjectRole(ProjectRole),
}

/// The scope an action applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionScope {
    Platform,
    Tenant,
    Project,
}

macro_rules! actions {
    ($( $(#[$doc:meta])* $variant:ident => ($name:literal, $requirement:expr, $audited:literal), )*) => {
        /// An operation of the API. The name is what the audit log records.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Action {
            $( $(#[$doc])* $variant, )*
        }

        impl Action {
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Action::$variant => $name,)* }
            }

            pub fn requirement(self) -> Requirement {
                match self { $(Action::$variant => $requirement,)* }
            }

            /// True for actions that change state or read data, which the audit log records
            /// even when they succeed. Denials of every action are recorded regardless.
            pub fn audited(self) -> bool {
                match self { $(Action::$variant => $audited,)* }
            }
        }
    };
}

use Requirement::{Authenticated, PlatformAdmin};

const TENANT_ADMIN: Requirement = Requirement::TenantRole(TenantRole::TenantAdmin);
const AUDITOR: Requirement = Requirement::TenantRole(TenantRole::Auditor);
const PROJECT_VIEWER: Requirement = Requirement::ProjectRole(ProjectRole::Viewer);
const PROJECT_ADMIN: Requirement = Requirement::ProjectRole(ProjectRole::Admin);
const PROJECT_DEPLOYER: Requirement = Requirement::ProjectRole(ProjectRole::Deployer);
const PROJECT_DEVELOPER: Requirement = Requirement::ProjectRole(ProjectRole::Developer);

actions! {
    TenantsList => ("tenants.list", PlatformAdmin, false),
    TenantsCreate => ("tenants.create", PlatformAdmin, true),
    /// Shows the caller's own identity and roles.
    Whoami => ("whoami", Authenticated, false),
    /// Lists the projects the caller has a role on (all of them for tenant roles).
    ProjectsList => ("projects.list", Authenticated, false),
    ProjectsCreate => ("projects.create", TENANT_ADMIN, true),
    ProjectsGet => ("projects.get", PROJECT_VIEWER, false),
    ProjectMembersList => ("projects.members.list", PROJECT_ADMIN, false),
    ProjectMembersGrant => ("projects.members.grant", PROJECT_ADMIN, true),
    ProjectMembersRevoke => ("projects.members.revoke", PROJECT_ADMIN, true),
    PrincipalsList => ("principals.list", TENANT_ADMIN, false),
    PrincipalsCreate => ("principals.create", TENANT_ADMIN, true),
    PrincipalsGet => ("principals.get", TENANT_ADMIN, false),
    RoleBindingsList => ("role_bindings.list", TENANT_ADMIN, false),
    RoleBindingsGrant => ("role_bindings.grant", TENANT_ADMIN, true),
    RoleBindingsRevoke => ("role_bindings.revoke", TENANT_ADMIN, true),
    /// Lists the caller's own tokens; tenant admins see every token of the tenant.
    TokensList => ("tokens.list", Authenticated, false),
    /// Creates a token for the caller; tenant admins may create one for any principal.
    TokensCreate => ("tokens.create", Authenticated, true),
    /// Revokes one of the caller's tokens; tenant admins may revoke any token.
    TokensRevoke => ("tokens.revoke", Authenticated, true),
    AuditList => ("audit.list", AUDITOR, true),
    AuditVerify => ("audit.verify", AUDITOR, true),
    /// Reads experiments, runs, metric histories and logged models.
    TrackingRead => ("tracking.read", PROJECT_VIEWER, false),
    /// Creates and changes experiments, runs, params, metrics, tags and logged models;
    /// soft-deletes and restores runs and experiments.
    TrackingWrite => ("tracking.write", PROJECT_DEVELOPER, true),
    /// Downloads and lists artifact files, model weights included.
    ArtifactsRead => ("artifacts.read", PROJECT_VIEWER, true),
    /// Uploads and deletes artifact files.
    ArtifactsWrite => ("artifacts.write", PROJECT_DEVELOPER, true),
    /// Reads registered models, versions, aliases and model cards.
    ModelsRead => ("models.read", PROJECT_VIEWER, false),
    /// Registers models and versions and changes their descriptions, tags and model cards.
    ModelsWrite => ("models.write", PROJECT_DEVELOPER, true),
    /// Points aliases such as `champion` at versions, moves versions between stages, and
    /// deletes registered models and versions.
    ModelsPromote => ("models.promote", PROJECT_DEPLOYER, true),
    /// Lists a project's datasets with their current schemas.
    DatasetsList => ("datasets.list", PROJECT_VIEWER, false),
    DatasetsCreate => ("datasets.create", PROJECT_DEVELOPER, true),
    /// Reads one dataset with its current schema and schema history.
    DatasetsGet => ("datasets.get", PROJECT_VIEWER, false),
    /// Adds a schema version after a compatibility check.
    DatasetsSchemaUpdate => ("datasets.schema.update", PROJECT_DEVELOPER, true),
    /// Uploads a file and ingests it into a new dataset version.
    DatasetsIngest => ("datasets.ingest", PROJECT_DEVELOPER, true),
    /// Pushes a micro-batch of JSON messages as an appended segment.
    DatasetsPush => ("datasets.push", PROJECT_DEVELOPER, true),
    DatasetVersionsList => ("datasets.versions.list", PROJECT_VIEWER, false),
    /// Reads one version with its profile; column minimums and maximums are data values.
    DatasetVersionsGet => ("datasets.versions.get", PROJECT_VIEWER, true),
    /// Downloads the rows of a version's quarantine file.
    DatasetQuarantineRead => ("datasets.quarantine.read", PROJECT_VIEWER, true),
    /// Downloads a version's Parquet file.
    DatasetVersionsDownload => ("datasets.versions.download", PROJECT_VIEWER, true),
    /// Lists OpenLineage run events of the projects the caller can see.
    LineageList => ("lineage.list", Authenticated, false),
    /// Lists a project's training jobs.
    JobsList => ("jobs.list", PROJECT_VIEWER, false),
    /// Submits a training job, which runs with the submitter's rights on the project.
    JobsSubmit => ("jobs.submit", PROJECT_DEVELOPER, true),
    JobsGet => ("jobs.get", PROJECT_VIEWER, false),
    JobsCancel => ("jobs.cancel", PROJECT_DEVELOPER, true),
    /// Reads a job's log, which can contain data values the job printed.
    JobsLogs => ("jobs.logs", PROJECT_VIEWER, true),
    /// Reads feature store definitions (entities, view versions, services, materialised
    /// intervals) and plans an apply without writing.
    FeaturesRead => ("features.read", PROJECT_VIEWER, false),
    /// Applies feature definitions: creates entities, view versions and feature services.
    FeaturesApply => ("features.apply", PROJECT_DEVELOPER, true),
    /// Builds a point-in-time training set into a dataset version.
    FeaturesTrainingSetCreate => ("features.training_sets.create", PROJECT_DEVELOPER, true),
    /// Materialises a feature view into the online store.
    FeaturesMaterialize => ("features.materialize", PROJECT_DEVELOPER, true),
    /// Reads feature values from the online store.
    FeaturesOnlineRead => ("features.online.read", PROJECT_VIEWER, false),
    /// Pushes rows to the online store, to the source dataset, or both.
    FeaturesPush => ("features.push", PROJECT_DEVELOPER, true),
    /// Lists a project's endpoints with their status.
    EndpointsList => ("endpoints.list", PROJECT_VIEWER, false),
    /// Reads one endpoint: the model version it serves, its status and load errors.
    EndpointsGet => ("endpoints.get", PROJECT_VIEWER, false),
    /// Creates, changes and deletes endpoints, which puts model versions into service.
    EndpointsDeploy => ("endpoints.deploy", PROJECT_DEPLOYER, true),
    /// Sends inference requests and reads model readiness and metadata. Not audited per
    /// call: every prediction is recorded in the endpoint's prediction log.
    EndpointsInfer => ("endpoints.infer", PROJECT_VIEWER, false),
    /// Posts ground-truth labels for logged predictions.
    EndpointsLabel => ("endpoints.label", PROJECT_DEVELOPER, true),
    /// Reads logged predictions, which contain feature values.
    PredictionsRead => ("predictions.read", PROJECT_VIEWER, true),
    /// Reads monitors, drift and performance reports, alert rules and alerts.
    MonitorRead => ("monitor.read", PROJECT_VIEWER, false),
    /// Creates and changes monitors and alert rules, and acknowledges alerts.
    MonitorWrite => ("monitor.write", PROJECT_DEVELOPER, true),
}

impl Action {
    pub fn scope(self) -> ActionScope {
        match self.requirement() {
            PlatformAdmin => ActionScope::Platform,
            Requirement::ProjectRole(_) => ActionScope::Project,
            Authenticated | Requirement::TenantRole(_) => ActionScope::Tenant,
        }
    }
}

/// An authenticated caller: who it is, through which token, and what it may do.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant: TenantId,
    pub principal: PrincipalId,
    pub principal_name: String,
    pub kind: PrincipalKind,
    pub token: TokenId,
    pub platform_admin: bool,
    pub tenant_roles: Vec<TenantRole>,
    pub project_roles: HashMap<ProjectId, ProjectRole>,
    /// When set, the token works only on this project.
    pub token_project: Option<ProjectId>,
    /// When set, the token never grants more than this project role.
    pub token_max_role: Option<ProjectRole>,
    /// When set, the token stops working at this time (Unix milliseconds).
    pub token_expires_at: Option<ghaf_core::UnixMillis>,
}

impl Caller {
    /// True when the token carries no project or role restriction.
    pub fn token_unrestricted(&self) -> bool {
        self.token_project.is_none() && self.token_max_role.is_none()
    }

    /// Returns true when the caller has the tenant role through an unrestricted token.
    pub fn has_tenant_role(&self, role: TenantRole) -> bool {
        self.token_unrestricted() && self.tenant_roles.contains(&role)
    }

    pub fn is_tenant_admin(&self) -> bool {
        self.has_tenant_role(TenantRole::TenantAdmin)
    }

    /// Returns the caller's effective role on a project: the highest of its bindings (admin
    /// for tenant admins), capped by the token's restrictions.
    pub fn project_role(&self, project: &ProjectId) -> Option<ProjectRole> {
        if self
            .token_project
            .as_ref()
            .is_some_and(|only| only != project)
        {
            return None;
        }
        let role = if self.tenant_roles.contains(&TenantRole::TenantAdmin) {
            Some(ProjectRole::Admin)
        } else {
            self.project_roles.get(project).copied()
        };
        match (role, self.token_max_role) {
            (Some(role), Some(cap)) => Some(role.min(cap)),
            (role, _) => role,
        }
    }

    /// Returns true when the project should appear to the caller at all; other projects
    /// are reported as not found.
    pub fn can_see_project(&self, project: &ProjectId) -> bool {
        self.project_role(project).is_some()
            || (self.token_unrestricted() && self.tenant_roles.contains(&TenantRole::Auditor))
    }

    /// Authorises an action that is not about one project.
    pub fn authorize(&self, action: Action) -> Result<(), AuthError> {
        let denied = |needs: String| AuthError::PermissionDenied {
            action: action.name(),
            needs,
        };
        match action.requirement() {
            Authenticated => Ok(()),
            PlatformAdmin if self.platform_admin && self.token_unrestricted() => Ok(()),
            PlatformAdmin => Err(denied("the platform administrator".into())),
            Requirement::TenantRole(role) if self.has_tenant_role(role) => Ok(()),
            Requirement::TenantRole(role) => Err(denied(format!(
                "the tenant role {} through a token without project or role restriction",
                ghaf_core::Role::from_tenant_role(role)
            ))),
            Requirement::ProjectRole(_) => Err(denied("a project in the request".into())),
        }
    }

    /// Authorises an action on a project of the caller's tenant. A caller without any
    /// role on the project gets `NotFound`, so a project's existence never leaks.
    pub fn authorize_project(&self, action: Action, project: &Project) -> Result<(), AuthError> {
        if project.tenant != self.tenant || !self.can_see_project(&project.id) {
            return Err(AuthError::NotFound {
                what: "project",
                name: project.name.clone(),
            });
        }
        match action.requirement() {
            Requirement::ProjectRole(needed) => match self.project_role(&project.id) {
                Some(role) if role >= needed => Ok(()),
                _ => Err(AuthError::PermissionDenied {
                    action: action.name(),
                    needs: format!(
                        "the role {} or higher on project {}",
                        ghaf_core::Role::from(needed),
                        project.name
                    ),
                }),
            },
            _ => self.authorize(action),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            tenant: TenantId::from_stored("acme"),
            principal: PrincipalId::from_stored("p"),
            principal_name: "alice".into(),
            kind: PrincipalKind::User,
            token: TokenId::from_stored("t"),
            platform_admin: false,
            tenant_roles: vec![],
            project_roles: HashMap::new(),
            token_project: None,
            token_max_role: None,
            token_expires_at: None,
        }
    }

    fn project(id: &str, tenant: &str) -> Project {
        Project {
            id: ProjectId::from_stored(id),
            tenant: TenantId::from_stored(tenant),
            name: id.into(),
            description: String::new(),
            created_at: 0,
            created_by: String::new(),
        }
    }

    #[test]
    fn action_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for action in Action::ALL {
            assert!(names.insert(action.name()), "duplicate {}", action.name());
        }
    }

    #[test]
    fn no_role_means_not_found() {
        let error = caller()
            .authorize_project(Action::ProjectsGet, &project("p1", "acme"))
            .unwrap_err();
        assert!(matches!(error, AuthError::NotFound { .. }));
    }

    #[test]
    fn other_tenant_project_is_not_found() {
        let mut admin = caller();
        admin.tenant_roles.push(TenantRole::TenantAdmin);
        let error = admin
            .authorize_project(Action::ProjectsGet, &project("p1", "beta"))
            .unwrap_err();
        assert!(matches!(error, AuthError::NotFound { .. }));
    }

    #[test]
    fn insufficient_role_is_denied() {
        let mut viewer = caller();
        viewer
            .project_roles
            .insert(ProjectId::from_stored("p1"), ProjectRole::Viewer);
        let p1 = project("p1", "acme");
        assert!(viewer.authorize_project(Action::ProjectsGet, &p1).is_ok());
        let error = viewer
            .authorize_project(Action::ProjectMembersGrant, &p1)
            .unwrap_err();
        assert!(matches!(error, AuthError::PermissionDenied { .. }));
    }

    #[test]
    fn token_restrictions_cap_roles() {
        let mut admin = caller();
        admin.tenant_roles.push(TenantRole::TenantAdmin);
        admin.token_max_role = Some(ProjectRole::Viewer);
        let p1 = project("p1", "acme");
        assert_eq!(admin.project_role(&p1.id), Some(ProjectRole::Viewer));
        assert!(admin.authorize(Action::ProjectsCreate).is_err());

        admin.token_max_role = None;
        admin.token_project = Some(ProjectId::from_stored("p2"));
        assert_eq!(admin.project_role(&p1.id), None);
        assert!(admin.authorize_project(Action::ProjectsGet, &p1).is_err());
    }
}
