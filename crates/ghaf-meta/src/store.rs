//! The metadata-store contract and the records it stores.

use async_trait::async_trait;
use ghaf_core::audit::{AuditEntry, AuditOutcome, NewAuditEntry};
use ghaf_core::{Name, PrincipalId, ProjectId, Role, TenantId, TokenId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::MetaError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub display_name: String,
    pub created_at: UnixMillis,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: ProjectId,
    pub tenant: TenantId,
    pub name: String,
    pub description: String,
    pub created_at: UnixMillis,
    /// Principal id of the creator.
    pub created_by: String,
}

/// Whether a principal is a person or a machine identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    ServiceAccount,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::ServiceAccount => "service_account",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "user" => Some(PrincipalKind::User),
            "service_account" => Some(PrincipalKind::ServiceAccount),
            _ => None,
        }
    }
}

/// A user or service account of one tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Principal {
    pub id: PrincipalId,
    pub tenant: TenantId,
    pub kind: PrincipalKind,
    pub name: String,
    pub email: Option<String>,
    /// May create and list tenants. Only the principal created at bootstrap has it.
    pub platform_admin: bool,
    pub disabled: bool,
    pub created_at: UnixMillis,
}

/// Fields of a principal to create.
#[derive(Clone, Debug)]
pub struct NewPrincipal {
    pub kind: PrincipalKind,
    pub name: Name,
    pub email: Option<String>,
    pub platform_admin: bool,
}

/// A role granted to a principal, on one project or on the whole tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoleBinding {
    pub tenant: TenantId,
    pub principal: PrincipalId,
    /// `None` for a tenant-wide binding.
    pub project: Option<ProjectId>,
    pub role: Role,
    pub created_at: UnixMillis,
    pub created_by: String,
}

/// An API token as stored: only a hash of its secret is kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredToken {
    pub id: TokenId,
    pub tenant: TenantId,
    pub principal: PrincipalId,
    pub name: String,
    /// Hex SHA-256 of the token secret.
    pub secret_hash: String,
    /// When set, the token works only on this project.
    pub project: Option<ProjectId>,
    /// When set, the token never grants more than this project role.
    pub max_role: Option<Role>,
    pub created_at: UnixMillis,
    pub created_by: String,
    pub expires_at: Option<UnixMillis>,
    pub revoked_at: Option<UnixMillis>,
}

/// Filter for listing audit entries; all set fields must match.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Matches the resource itself and everything below it (`projects/x` matches
    /// `projects/x/runs/1`).
    pub resource: Option<String>,
    pub outcome: Option<AuditOutcome>,
    /// Inclusive lower bound on the entry time.
    pub since: Option<UnixMillis>,
    /// Exclusive upper bound on the entry time.
    pub until: Option<UnixMillis>,
    /// Only entries with a larger sequence number, for paging.
    pub after_seq: Option<i64>,
    /// Maximum number of entries returned, newest last.
    pub limit: u32,
}

/// The stored head of a tenant's audit chain, sealed with a MAC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditHead {
    pub tenant: String,
    pub seq: i64,
    pub hash: String,
    pub mac: String,
}

/// Storage for Ghaf's foundation records. Implementations must be safe to share between
/// tasks, and every write is atomic: it happens completely or not at all.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Checks that the database responds, for readiness probes.
    async fn ping(&self) -> Result<(), MetaError>;

    // Tenants. Tenant creation is the one operation not scoped by a tenant.

    /// Creates a tenant; `AlreadyExists` if the name is taken.
    async fn create_tenant(&self, id: &TenantId, display_name: &str) -> Result<Tenant, MetaError>;
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, MetaError>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>, MetaError>;

    // Projects.

    /// Creates a project; `AlreadyExists` if the tenant has a project of that name.
    async fn create_project(
        &self,
        tenant: &TenantId,
        name: &Name,
        description: &str,
        created_by: &PrincipalId,
    ) -> Result<Project, MetaError>;
    async fn get_project_by_name(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<Project>, MetaError>;
    async fn get_project(
        &self,
        tenant: &TenantId,
        id: &ProjectId,
    ) -> Result<Option<Project>, MetaError>;
    /// Lists the tenant's projects ordered by name.
    async fn list_projects(&self, tenant: &TenantId) -> Result<Vec<Project>, MetaError>;

    // Principals.

    /// Creates a principal; `AlreadyExists` if the tenant has one of that name.
    async fn create_principal(
        &self,
        tenant: &TenantId,
        principal: &NewPrincipal,
    ) -> Result<Principal, MetaError>;
    async fn get_principal(
        &self,
        tenant: &TenantId,
        id: &PrincipalId,
    ) -> Result<Option<Principal>, MetaError>;
    async fn get_principal_by_name(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<Principal>, MetaError>;
    /// Lists the tenant's principals ordered by name.
    async fn list_principals(&self, tenant: &TenantId) -> Result<Vec<Principal>, MetaError>;

    // Role bindings.

    /// Grants a role; granting a role that is already bound succeeds and changes nothing.
    async fn grant_role(&self, binding: &RoleBinding) -> Result<(), MetaError>;
    /// Revokes a role; returns false when the binding did not exist.
    async fn revoke_role(
        &self,
        tenant: &TenantId,
        principal: &PrincipalId,
        project: Option<&ProjectId>,
        role: Role,
    ) -> Result<bool, MetaError>;
    /// Lists bindings of the tenant, optionally of one principal.
    async fn list_role_bindings(
        &self,
        tenant: &TenantId,
        principal: Option<&PrincipalId>,
    ) -> Result<Vec<RoleBinding>, MetaError>;

    // API tokens.

    async fn create_token(&self, token: &StoredToken) -> Result<(), MetaError>;
    /// Looks a token up by its public id, across tenants. Authentication is the only
    /// caller: the tenant is not known until the token is found.
    async fn find_token_for_authentication(
        &self,
        id: &TokenId,
    ) -> Result<Option<StoredToken>, MetaError>;
    async fn get_token(
        &self,
        tenant: &TenantId,
        id: &TokenId,
    ) -> Result<Option<StoredToken>, MetaError>;
    /// Lists the tenant's tokens, optionally of one principal, newest first.
    async fn list_tokens(
        &self,
        tenant: &TenantId,
        principal: Option<&PrincipalId>,
    ) -> Result<Vec<StoredToken>, MetaError>;
    /// Marks a token revoked at `at`; revoking it again keeps the first time. Returns false
    /// when the tenant has no such token.
    async fn revoke_token(
        &self,
        tenant: &TenantId,
        id: &TokenId,
        at: UnixMillis,
    ) -> Result<bool, MetaError>;

    // Audit log.

    /// Appends an entry to the tenant's chain (`entry.tenant`) and moves the sealed head.
    /// Fails with `Corrupt`, appending nothing, when the head's seal does not verify or the
    /// newest entry is not the one the head names.
    async fn append_audit(&self, entry: &NewAuditEntry) -> Result<AuditEntry, MetaError>;
    /// Lists entries of one chain that match the filter, in sequence order.
    async fn list_audit(
        &self,
        tenant: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEntry>, MetaError>;
    /// Returns up to `limit` entries with `seq > after_seq`, in stored order, without
    /// checking them; verification reads the chain through this.
    async fn audit_chain_page(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, MetaError>;
    /// Checks, without appending, that the tenant's chain passes the checks `append_audit`
    /// makes.
    async fn check_audit_chain(&self, tenant: &str) -> Result<(), MetaError>;
    async fn audit_head(&self, tenant: &str) -> Result<Option<AuditHead>, MetaError>;
    /// Names of every chain that has a head, so verification can cover them all.
    async fn audit_chains(&self) -> Result<Vec<String>, MetaError>;

    /// Returns the audit appender that writes into a caller's transaction on this store's
    /// database, or `None` when the store has none.
    fn transactional_audit(&self) -> Option<&dyn TransactionalAudit> {
        None
    }
}

/// Appends audit entries inside a caller's write transaction, so a change and its audit
/// entry commit together or not at all, and a chain that cannot be extended rolls the change
/// back.
///
/// The caller takes [`TransactionalAudit::lock`] before it begins the transaction, appends
/// with [`TransactionalAudit::append_in`] before it commits, and reports the commit with
/// [`TransactionalAudit::committed`]. Taking the lock first keeps one lock order with the
/// store's own appends, which take the lock and then begin their transaction: on SQLite a
/// transaction that holds the write lock while it waits for the audit lock would deadlock
/// with them.
#[async_trait]
pub trait TransactionalAudit: Send + Sync {
    /// Takes the lock that serialises this process's audit appends.
    async fn lock(&self) -> AuditLock<'_>;

    /// Appends `entry` to its tenant's chain inside `tx`, which must be a write transaction
    /// on this store's database. On SQLite it must have begun with `BEGIN IMMEDIATE`.
    ///
    /// Fails with `Corrupt` when the chain cannot be extended, and with `Conflict` or a
    /// unique violation when another process appended at the same moment; the caller then
    /// rolls `tx` back, and may retry the whole transaction after a conflict.
    async fn append_in(
        &self,
        lock: &AuditLock<'_>,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        entry: &NewAuditEntry,
    ) -> Result<AppendedHead, MetaError>;

    /// Appends `entry` inside `tx`, a transaction of a [`crate::SqliteDirect`] connection to
    /// this store's database, when this process has the chain's head in memory and the
    /// stored head is still that one. The statements check this in their `WHERE` clauses, as the append
    /// after a known head in [`TransactionalAudit::append_in`] does.
    ///
    /// Returns `Ok(None)` when the head is unknown or has changed. The caller must then roll
    /// `tx` back, because an entry may have been inserted, and append through
    /// [`TransactionalAudit::append_in`], which reads and checks the head. The default
    /// implementation appends nothing and returns `Ok(None)`.
    fn append_direct(
        &self,
        _lock: &AuditLock<'_>,
        _tx: &rusqlite::Transaction<'_>,
        _entry: &NewAuditEntry,
    ) -> Result<Option<AppendedHead>, MetaError> {
        Ok(None)
    }

    /// Records the chain head that [`TransactionalAudit::append_in`] or
    /// [`TransactionalAudit::append_direct`] wrote, once its transaction committed, so the
    /// next append need not read it.
    fn committed(&self, head: AppendedHead);
}

/// Proof that the caller holds the audit lock of a [`TransactionalAudit`].
pub struct AuditLock<'a> {
    pub(crate) _guard: tokio::sync::MutexGuard<'a, ()>,
}

/// The chain head an append inside a caller's transaction wrote, and the stored entry.
#[derive(Clone, Debug)]
pub struct AppendedHead {
    pub entry: AuditEntry,
    pub(crate) mac: String,
}
