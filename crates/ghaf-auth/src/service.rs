//! Tenancy operations: bootstrap, authentication, projects, principals, tokens and role
//! grants. Transports call these after [`Caller::authorize`]; the checks here are the ones
//! that depend on the request's content (whose token, which project).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ghaf_core::{Name, ProjectRole, Role, TenantId, TenantRole, TokenId, UnixMillis};
use ghaf_meta::{
    MetaError, MetaStore, NewPrincipal, Principal, PrincipalKind, Project, RoleBinding,
    StoredToken, Tenant,
};

use ghaf_core::audit::{AuditOutcome, NewAuditEntry};

use crate::policy::Caller;
use crate::{AuthError, Subject, token};

/// The tenant, project, admin and token created by bootstrap on an empty store.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub tenant: Tenant,
    pub project: Project,
    pub admin: Principal,
    /// The admin token, shown once and never stored.
    pub token: IssuedToken,
}

/// A freshly created token. `secret` is the full token string; it is returned once.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub stored: StoredToken,
    pub secret: String,
}

/// Parameters of a new API token.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// Name of the principal that will own the token; the caller when `None`.
    pub principal: Option<String>,
    /// A label for the token, such as `laptop` or `ci`.
    pub name: String,
    /// Restricts the token to one project, by name.
    pub project: Option<String>,
    /// Caps the project role the token can use.
    pub max_role: Option<ProjectRole>,
    /// Lifetime in seconds; the token never expires when `None`.
    pub expires_in_seconds: Option<u64>,
}

/// Maximum token lifetime: ten years, in seconds.
pub const MAX_TOKEN_LIFETIME_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// How long [`TenancyService::authenticate`] and [`TenancyService::visible_project`] reuse
/// what they read from the store.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(2);

/// Most callers, and most projects, the cache holds; each map is emptied when full.
const AUTH_CACHE_CAPACITY: usize = 10_000;

/// A caller authenticated recently, with the hash of its token's secret.
struct CachedCaller {
    secret_hash: String,
    caller: Caller,
    read_at: Instant,
}

/// Callers by token id and projects by tenant and name, read recently. Every token
/// revocation and role change made through the service empties it, and `generation` counts
/// those changes, so a read that started before a change is never stored after it.
#[derive(Default)]
struct AuthCache {
    callers: HashMap<TokenId, CachedCaller>,
    projects: HashMap<(TenantId, String), (Project, Instant)>,
    generation: u64,
}

/// Tenancy and identity operations over a [`MetaStore`].
#[derive(Clone)]
pub struct TenancyService {
    store: Arc<dyn MetaStore>,
    cache: Arc<std::sync::Mutex<AuthCache>>,
}

impl TenancyService {
    pub fn new(store: Arc<dyn MetaStore>) -> Self {
        Self {
            store,
            cache: Arc::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, AuthCache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Empties the authentication cache, so the next call of every token reads the token,
    /// its principal and role bindings again. The service calls it after every revocation
    /// and role change; call it after changing tokens, principals or role bindings in the
    /// store directly.
    pub fn clear_auth_cache(&self) {
        let mut cache = self.cache();
        cache.callers.clear();
        cache.projects.clear();
        cache.generation += 1;
    }

    /// Returns the cached caller of `token` when it was read less than [`AUTH_CACHE_TTL`]
    /// ago and `secret` matches. Expiry is checked here, on every call.
    fn cached_caller(&self, token: &token::ParsedToken) -> Option<Result<Caller, AuthError>> {
        let cache = self.cache();
        let cached = cache.callers.get(&token.id)?;
        if cached.read_at.elapsed() >= AUTH_CACHE_TTL
            || !token::secret_matches(&token.secret, &cached.secret_hash)
        {
            return None;
        }
        let caller = &cached.caller;
        if let Some(expires_at) = caller.token_expires_at
            && expires_at <= ghaf_core::now_millis()
        {
            return Some(Err(AuthError::TokenExpired {
                token_id: caller.token.to_string(),
                expired_at: ghaf_core::format_millis(expires_at),
                subject: Subject {
                    tenant: caller.tenant.clone(),
                    principal: caller.principal.clone(),
                    token: caller.token.clone(),
                },
            }));
        }
        Some(Ok(caller.clone()))
    }

    /// Creates the first tenant, its admin and a project when the store has no tenant yet.
    /// The admin is also the platform administrator. Returns `None` when a tenant exists.
    pub async fn bootstrap(
        &self,
        tenant: &Name,
        project: &Name,
        admin: &Name,
    ) -> Result<Option<Bootstrap>, AuthError> {
        if !self.store.list_tenants().await?.is_empty() {
            return Ok(None);
        }
        let tenant_id = TenantId::new(tenant.clone());
        let tenant = match self.store.create_tenant(&tenant_id, tenant.as_str()).await {
            Ok(tenant) => tenant,
            // Another replica bootstrapped at the same moment.
            Err(MetaError::AlreadyExists { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        self.start_audit_chain(&tenant_id, "bootstrap").await?;
        let (admin, token) = self.create_tenant_admin(&tenant_id, admin, true).await?;
        let project = self
            .store
            .create_project(&tenant_id, project, "Created at bootstrap", &admin.id)
            .await?;
        Ok(Some(Bootstrap {
            tenant,
            project,
            admin,
            token,
        }))
    }

    /// Creates a tenant with an admin principal named `admin` and returns the admin's first
    /// token. Only the platform administrator calls this.
    pub async fn create_tenant(
        &self,
        caller: &Caller,
        name: &Name,
        display_name: &str,
        admin: &Name,
    ) -> Result<(Tenant, Principal, IssuedToken), AuthError> {
        let tenant_id = TenantId::new(name.clone());
        let tenant = self.store.create_tenant(&tenant_id, display_name).await?;
        self.start_audit_chain(&tenant_id, caller.principal.as_str())
            .await?;
        let (principal, token) = self.create_tenant_admin(&tenant_id, admin, false).await?;
        tracing::info!(tenant = %tenant_id, by = %caller.principal, "created tenant");
        Ok((tenant, principal, token))
    }

    /// Issues a new token for the platform administrator, for an operator with direct access
    /// to the store who lost the admin token. The issue is recorded in the administrator's
    /// tenant chain with the actor `local-operator`.
    pub async fn issue_recovery_token(&self) -> Result<IssuedToken, AuthError> {
        let mut admin = None;
        for tenant in self.store.list_tenants().await? {
            let principals = self.store.list_principals(&tenant.id).await?;
            if let Some(found) = principals
                .into_iter()
                .find(|p| p.platform_admin && !p.disabled)
            {
                admin = Some(found);
                break;
            }
        }
        let admin = admin.ok_or(AuthError::FailedPrecondition {
            message: "the store has no platform administrator; run `ghaf init` on an empty store"
                .into(),
        })?;
        let issued = self
            .store_new_token(&admin, "recovery", None, None, None, "local-operator")
            .await?;
        let entry = NewAuditEntry {
            tenant: admin.tenant.to_string(),
            actor: "local-operator".into(),
            action: "tokens.recover".into(),
            resource: "tokens".into(),
            outcome: AuditOutcome::Success,
            status: 201,
            request_id: String::new(),
            time: ghaf_core::now_millis(),
            details: serde_json::json!({
                "token": issued.stored.id.to_string(),
                "owner": admin.id.to_string(),
                "principal_name": admin.name,
            }),
        };
        self.store.append_audit(&entry).await?;
        Ok(issued)
    }

    /// Writes the first entry of a new tenant's audit chain. From then on an empty chain for
    /// an existing tenant means its entries were deleted, which verification reports.
    async fn start_audit_chain(&self, tenant: &TenantId, actor: &str) -> Result<(), AuthError> {
        let entry = NewAuditEntry {
            tenant: tenant.to_string(),
            actor: actor.to_owned(),
            action: "tenants.genesis".into(),
            resource: format!("tenants/{tenant}"),
            outcome: AuditOutcome::Success,
            status: 201,
            request_id: String::new(),
            time: ghaf_core::now_millis(),
            details: serde_json::json!({}),
        };
        self.store.append_audit(&entry).await?;
        Ok(())
    }

    async fn create_tenant_admin(
        &self,
        tenant: &TenantId,
        name: &Name,
        platform_admin: bool,
    ) -> Result<(Principal, IssuedToken), AuthError> {
        let admin = self
            .store
            .create_principal(
                tenant,
                &NewPrincipal {
                    kind: PrincipalKind::User,
                    name: name.clone(),
                    email: None,
                    platform_admin,
                },
            )
            .await?;
        for role in [Role::TenantAdmin, Role::Auditor] {
            self.store
                .grant_role(&RoleBinding {
                    tenant: tenant.clone(),
                    principal: admin.id.clone(),
                    project: None,
                    role,
                    created_at: ghaf_core::now_millis(),
                    created_by: "bootstrap".into(),
                })
                .await?;
        }
        let token = self
            .store_new_token(&admin, "bootstrap", None, None, None, "bootstrap")
            .await?;
        Ok((admin, token))
    }

    /// Resolves a bearer token to a [`Caller`], checking shape, secret, revocation, expiry
    /// and that the principal is enabled.
    ///
    /// A successful result is reused for up to [`AUTH_CACHE_TTL`], and only for the same
    /// secret; expiry is checked on every call. A revocation or role change made through
    /// this service applies to the next call; one made through another server on the same
    /// store applies within [`AUTH_CACHE_TTL`].
    pub async fn authenticate(&self, presented: &str) -> Result<Caller, AuthError> {
        let parsed = token::parse(presented).ok_or(AuthError::InvalidToken)?;
        if let Some(cached) = self.cached_caller(&parsed) {
            return cached;
        }
        let generation = self.cache().generation;
        let stored = self
            .store
            .find_token_for_authentication(&parsed.id)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let subject = Subject {
            tenant: stored.tenant.clone(),
            principal: stored.principal.clone(),
            token: stored.id.clone(),
        };
        if !token::secret_matches(&parsed.secret, &stored.secret_hash) {
            return Err(AuthError::WrongSecret { subject });
        }
        if stored.revoked_at.is_some() {
            return Err(AuthError::TokenRevoked {
                token_id: stored.id.to_string(),
                subject,
            });
        }
        if let Some(expires_at) = stored.expires_at
            && expires_at <= ghaf_core::now_millis()
        {
            return Err(AuthError::TokenExpired {
                token_id: stored.id.to_string(),
                expired_at: ghaf_core::format_millis(expires_at),
                subject,
            });
        }
        let principal = self
            .store
            .get_principal(&stored.tenant, &stored.principal)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if principal.disabled {
            return Err(AuthError::PrincipalDisabled {
                principal: principal.name,
                subject,
            });
        }

        let bindings = self
            .store
            .list_role_bindings(&stored.tenant, Some(&principal.id))
            .await?;
        let mut tenant_roles = Vec::new();
        let mut project_roles = HashMap::new();
        for binding in bindings {
            match (
                binding.project,
                binding.role.tenant_role(),
                binding.role.project_role(),
            ) {
                (None, Some(role), _) => tenant_roles.push(role),
                (Some(project), _, Some(role)) => {
                    let entry = project_roles.entry(project).or_insert(role);
                    *entry = (*entry).max(role);
                }
                // A tenant role bound to a project, or a project role bound tenant-wide,
                // is never written by Ghaf; ignore it rather than widen access.
                _ => {}
            }
        }
        let caller = Caller {
            tenant: stored.tenant,
            principal: principal.id,
            principal_name: principal.name,
            kind: principal.kind,
            token: stored.id,
            platform_admin: principal.platform_admin,
            tenant_roles,
            project_roles,
            token_project: stored.project,
            token_max_role: stored.max_role.and_then(Role::project_role),
            token_expires_at: stored.expires_at,
        };
        let mut cache = self.cache();
        if cache.generation == generation {
            if cache.callers.len() >= AUTH_CACHE_CAPACITY {
                cache.callers.clear();
            }
            cache.callers.insert(
                caller.token.clone(),
                CachedCaller {
                    secret_hash: stored.secret_hash,
                    caller: caller.clone(),
                    read_at: Instant::now(),
                },
            );
        }
        Ok(caller)
    }

    /// Finds a project of the caller's tenant by name; `NotFound` when it does not exist or
    /// the caller may not see it.
    pub async fn visible_project(&self, caller: &Caller, name: &str) -> Result<Project, AuthError> {
        let not_found = || AuthError::NotFound {
            what: "project",
            name: name.to_owned(),
        };
        let project = self.project_by_name(&caller.tenant, name).await?;
        let project = project.ok_or_else(not_found)?;
        if !caller.can_see_project(&project.id) {
            return Err(not_found());
        }
        Ok(project)
    }

    /// Finds a project by name, from the cache when it was read less than
    /// [`AUTH_CACHE_TTL`] ago. A missing project is not cached.
    async fn project_by_name(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<Project>, AuthError> {
        let key = (tenant.clone(), name.to_owned());
        let generation = {
            let cache = self.cache();
            if let Some((project, read_at)) = cache.projects.get(&key)
                && read_at.elapsed() < AUTH_CACHE_TTL
            {
                return Ok(Some(project.clone()));
            }
            cache.generation
        };
        let Some(project) = self.store.get_project_by_name(tenant, name).await? else {
            return Ok(None);
        };
        let mut cache = self.cache();
        if cache.generation == generation {
            if cache.projects.len() >= AUTH_CACHE_CAPACITY {
                cache.projects.clear();
            }
            cache
                .projects
                .insert(key, (project.clone(), Instant::now()));
        }
        Ok(Some(project))
    }

    /// Lists the projects the caller can see, by name.
    pub async fn list_projects(&self, caller: &Caller) -> Result<Vec<Project>, AuthError> {
        let projects = self.store.list_projects(&caller.tenant).await?;
        Ok(projects
            .into_iter()
            .filter(|project| caller.can_see_project(&project.id))
            .collect())
    }

    pub async fn create_project(
        &self,
        caller: &Caller,
        name: &Name,
        description: &str,
    ) -> Result<Project, AuthError> {
        Ok(self
            .store
            .create_project(&caller.tenant, name, description, &caller.principal)
            .await?)
    }

    pub async fn create_principal(
        &self,
        caller: &Caller,
        kind: PrincipalKind,
        name: &Name,
        email: Option<String>,
    ) -> Result<Principal, AuthError> {
        let new = NewPrincipal {
            kind,
            name: name.clone(),
            email,
            platform_admin: false,
        };
        Ok(self.store.create_principal(&caller.tenant, &new).await?)
    }

    /// Finds a principal of the caller's tenant by name.
    pub async fn principal_by_name(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Principal, AuthError> {
        self.store
            .get_principal_by_name(&caller.tenant, name)
            .await?
            .ok_or_else(|| AuthError::NotFound {
                what: "principal",
                name: name.to_owned(),
            })
    }

    /// Issues a token. A caller may issue tokens for itself; only tenant admins may issue
    /// them for other principals. A restricted caller token can only issue tokens that are
    /// at least as restricted, so a token can never mint a stronger one.
    pub async fn issue_token(
        &self,
        caller: &Caller,
        request: &TokenRequest,
    ) -> Result<IssuedToken, AuthError> {
        let owner = match &request.principal {
            Some(name) if name != &caller.principal_name => {
                if !caller.is_tenant_admin() {
                    return Err(AuthError::PermissionDenied {
                        action: "tokens.create",
                        needs:
                            "the tenant role tenant_admin to create tokens for another principal"
                                .into(),
                    });
                }
                let owner = self.principal_by_name(caller, name).await?;
                check_may_act_on(caller, &owner, "tokens.create")?;
                owner
            }
            _ => self
                .store
                .get_principal(&caller.tenant, &caller.principal)
                .await?
                .ok_or(AuthError::InvalidToken)?,
        };

        let project = match &request.project {
            Some(name) => Some(self.visible_project(caller, name).await?.id),
            None => None,
        };
        let project = match (&caller.token_project, project) {
            (Some(only), None) => Some(only.clone()),
            (Some(only), Some(requested)) if &requested != only => {
                return Err(AuthError::PermissionDenied {
                    action: "tokens.create",
                    needs: "a token that is not restricted to another project".into(),
                });
            }
            (_, project) => project,
        };
        let max_role = match (caller.token_max_role, request.max_role) {
            (Some(cap), None) => Some(cap),
            (Some(cap), Some(requested)) => Some(requested.min(cap)),
            (None, requested) => requested,
        };

        if let Some(seconds) = request.expires_in_seconds
            && (seconds == 0 || seconds > MAX_TOKEN_LIFETIME_SECONDS)
        {
            return Err(AuthError::InvalidArgument {
                field: "expires_in_seconds",
                message: format!(
                    "{seconds} is out of range; use 1 to {MAX_TOKEN_LIFETIME_SECONDS} seconds, or omit it for a token that does not expire"
                ),
            });
        }
        let requested_expiry = request.expires_in_seconds.map(|seconds| {
            ghaf_core::now_millis().saturating_add(
                i64::try_from(seconds)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
            )
        });
        // A token never outlives the token that created it.
        let expires_at = match (requested_expiry, caller.token_expires_at) {
            (Some(requested), Some(limit)) => Some(requested.min(limit)),
            (requested, limit) => requested.or(limit),
        };
        self.store_new_token(
            &owner,
            &request.name,
            project,
            max_role,
            expires_at,
            caller.principal.as_str(),
        )
        .await
    }

    async fn store_new_token(
        &self,
        owner: &Principal,
        name: &str,
        project: Option<ghaf_core::ProjectId>,
        max_role: Option<ProjectRole>,
        expires_at: Option<UnixMillis>,
        created_by: &str,
    ) -> Result<IssuedToken, AuthError> {
        let (id, secret, secret_hash) = token::generate();
        let stored = StoredToken {
            id,
            tenant: owner.tenant.clone(),
            principal: owner.id.clone(),
            name: name.to_owned(),
            secret_hash,
            project,
            max_role: max_role.map(Role::from),
            created_at: ghaf_core::now_millis(),
            created_by: created_by.to_owned(),
            expires_at,
            revoked_at: None,
        };
        self.store.create_token(&stored).await?;
        Ok(IssuedToken { stored, secret })
    }

    /// Lists tokens: every token of the tenant for tenant admins, otherwise the caller's own.
    /// A restricted token lists only tokens at least as restricted as itself.
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<StoredToken>, AuthError> {
        let principal = (!caller.is_tenant_admin()).then_some(&caller.principal);
        let tokens = self.store.list_tokens(&caller.tenant, principal).await?;
        Ok(tokens
            .into_iter()
            .filter(|token| within_restrictions(caller, token))
            .collect())
    }

    /// Revokes a token of the caller, or any token of the tenant for tenant admins. Another
    /// principal's token, or one less restricted than the caller's own token, is `NotFound`
    /// to a caller that may not revoke it. `id` may also be a whole token string, whose
    /// public id is then used.
    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> Result<StoredToken, AuthError> {
        let token_id = match token::parse(id) {
            Some(parsed) => parsed.id,
            None => TokenId::from_stored(id),
        };
        let not_found = || AuthError::NotFound {
            what: "token",
            name: token_id.to_string(),
        };
        let stored = self
            .store
            .get_token(&caller.tenant, &token_id)
            .await?
            .ok_or_else(not_found)?;
        let own = stored.principal == caller.principal;
        if (!own && !caller.is_tenant_admin()) || !within_restrictions(caller, &stored) {
            return Err(not_found());
        }
        if !own {
            let owner = self
                .store
                .get_principal(&caller.tenant, &stored.principal)
                .await?;
            if let Some(owner) = owner {
                check_may_act_on(caller, &owner, "tokens.revoke")?;
            }
        }
        self.store
            .revoke_token(&caller.tenant, &token_id, ghaf_core::now_millis())
            .await?;
        self.clear_auth_cache();
        self.store
            .get_token(&caller.tenant, &token_id)
            .await?
            .ok_or_else(not_found)
    }

    /// Grants a role to a principal of the caller's tenant. Project roles need a project;
    /// tenant roles must not have one.
    pub async fn grant_role(
        &self,
        caller: &Caller,
        principal: &Principal,
        project: Option<&Project>,
        role: Role,
    ) -> Result<RoleBinding, AuthError> {
        check_role_scope(role, project.is_some())?;
        check_may_act_on(caller, principal, "role_bindings.grant")?;
        let binding = RoleBinding {
            tenant: caller.tenant.clone(),
            principal: principal.id.clone(),
            project: project.map(|p| p.id.clone()),
            role,
            created_at: ghaf_core::now_millis(),
            created_by: caller.principal.to_string(),
        };
        self.store.grant_role(&binding).await?;
        self.clear_auth_cache();
        Ok(binding)
    }

    /// Revokes a role; `NotFound` when the principal did not have it.
    pub async fn revoke_role(
        &self,
        caller: &Caller,
        principal: &Principal,
        project: Option<&Project>,
        role: Role,
    ) -> Result<(), AuthError> {
        check_role_scope(role, project.is_some())?;
        check_may_act_on(caller, principal, "role_bindings.revoke")?;
        if role == Role::TenantAdmin {
            let bindings = self.store.list_role_bindings(&caller.tenant, None).await?;
            let other_admins = bindings
                .iter()
                .filter(|b| b.role == Role::TenantAdmin && b.project.is_none())
                .filter(|b| b.principal != principal.id)
                .count();
            if other_admins == 0 {
                return Err(AuthError::FailedPrecondition {
                    message: format!(
                        "{} is the tenant's last tenant_admin; grant the role to another principal first",
                        principal.name
                    ),
                });
            }
        }
        let removed = self
            .store
            .revoke_role(&caller.tenant, &principal.id, project.map(|p| &p.id), role)
            .await?;
        self.clear_auth_cache();
        if !removed {
            return Err(AuthError::NotFound {
                what: "role binding",
                name: format!("{}:{role}", principal.name),
            });
        }
        Ok(())
    }
}

/// Rejects changes to the platform administrator's tokens and roles by anyone but the
/// platform administrator, so a tenant admin cannot take over the platform.
fn check_may_act_on(
    caller: &Caller,
    target: &Principal,
    action: &'static str,
) -> Result<(), AuthError> {
    if target.platform_admin && target.id != caller.principal && !caller.platform_admin {
        return Err(AuthError::PermissionDenied {
            action,
            needs:
                "the platform administrator to change the platform administrator's tokens or roles"
                    .into(),
        });
    }
    Ok(())
}

/// Returns true when `token` is at least as restricted as the caller's own token: the same
/// project restriction, no higher role cap, and no later expiry.
fn within_restrictions(caller: &Caller, token: &StoredToken) -> bool {
    let project_ok = match &caller.token_project {
        Some(only) => token.project.as_ref() == Some(only),
        None => true,
    };
    let role_ok = match caller.token_max_role {
        Some(cap) => token
            .max_role
            .and_then(Role::project_role)
            .is_some_and(|role| role <= cap),
        None => true,
    };
    let expiry_ok = match caller.token_expires_at {
        Some(limit) => token.expires_at.is_some_and(|at| at <= limit),
        None => true,
    };
    project_ok && role_ok && expiry_ok
}

fn check_role_scope(role: Role, has_project: bool) -> Result<(), AuthError> {
    match (role.project_role().is_some(), has_project) {
        (true, true) | (false, false) => Ok(()),
        (true, false) => Err(AuthError::InvalidArgument {
            field: "project",
            message: format!("the project role {role} needs a project; name one"),
        }),
        (false, true) => Err(AuthError::InvalidArgument {
            field: "project",
            message: format!("{role} is a tenant-wide role; grant it without a project"),
        }),
    }
}

/// Returns the tenant roles as strings, for display.
pub fn tenant_role_names(roles: &[TenantRole]) -> Vec<String> {
    roles
        .iter()
        .map(|role| Role::from_tenant_role(*role).to_string())
        .collect()
}
