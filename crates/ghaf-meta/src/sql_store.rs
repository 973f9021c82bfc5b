//! [`MetaStore`] on SQLite or PostgreSQL through one SQL implementation.

use async_trait::async_trait;
use ghaf_core::audit::{self, AuditEntry, AuditOutcome, NewAuditEntry};
use ghaf_core::{Name, PrincipalId, ProjectId, Role, TenantId, TokenId, UnixMillis};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tokio::sync::Mutex;

use crate::error::is_unique_violation;
use crate::store::*;
use crate::{Db, Dialect, MetaError};

/// How many times an audit append is retried when another replica appended to the same chain
/// at the same moment.
const AUDIT_APPEND_ATTEMPTS: u32 = 8;

/// The SQL implementation of [`MetaStore`].
pub struct SqlMetaStore {
    db: Db,
    /// Key that seals audit chain heads (HMAC-SHA-256).
    audit_key: Vec<u8>,
    /// Serialises audit appends within this process, so they never race each other; appends
    /// from other processes are resolved by the optimistic head update.
    audit_lock: Mutex<()>,
    /// Per chain, the sealed head this process last verified or wrote. An append that
    /// finds the stored head unchanged extends the chain without reading it again.
    known_heads: std::sync::Mutex<std::collections::HashMap<String, KnownHead>>,
}

/// A chain head whose seal verified under this store's key, or that this store wrote.
#[derive(Clone, Debug, PartialEq)]
struct KnownHead {
    seq: i64,
    hash: String,
    mac: String,
}

impl SqlMetaStore {
    pub fn new(db: Db, audit_key: Vec<u8>) -> Self {
        Self {
            db,
            audit_key,
            audit_lock: Mutex::new(()),
            known_heads: std::sync::Mutex::default(),
        }
    }

    fn known_heads(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, KnownHead>> {
        self.known_heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers a verified or written head, unless a newer one is already known.
    fn remember_head(&self, tenant: &str, head: KnownHead) {
        let mut heads = self.known_heads();
        match heads.get(tenant) {
            Some(known) if known.seq > head.seq => {}
            _ => {
                heads.insert(tenant.to_owned(), head);
            }
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>, MetaError> {
        // SQLite: take the write lock at the start, so the read of the chain head cannot go
        // stale before the write (a deferred transaction would fail with SQLITE_BUSY instead).
        let tx = match self.db.dialect() {
            Dialect::Sqlite => self.db.pool().begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.db.pool().begin().await?,
        };
        Ok(tx)
    }

    /// Reads the chain head inside `tx` and checks it before anything is appended: the seal
    /// must verify under this store's key, and the newest stored entry must be the one the
    /// head names. A chain that fails either check is never extended, so the evidence of
    /// tampering stays in place for `verify`. Returns `(0, GENESIS_HASH)` for an empty chain.
    ///
    /// On PostgreSQL the head row is locked (`FOR UPDATE`), which needs a query of its own;
    /// on SQLite the write transaction already holds the database lock, so one statement
    /// reads both.
    async fn checked_head(
        &self,
        tx: &mut Transaction<'static, Any>,
        tenant: &str,
    ) -> Result<(i64, [u8; 32]), MetaError> {
        let state = match self.db.dialect() {
            Dialect::Sqlite => {
                let row = sqlx::query(self.db.sql(CHAIN_STATE_QUERY))
                    .bind(tenant)
                    .bind(tenant)
                    .bind(tenant)
                    .bind(tenant)
                    .bind(tenant)
                    .fetch_one(&mut **tx)
                    .await?;
                chain_state_from_row(&row)?
            }
            Dialect::Postgres => {
                let head =
                    sqlx::query(self.db.sql(
                        "SELECT seq, hash, mac FROM audit_heads WHERE tenant_id = ? FOR UPDATE",
                    ))
                    .bind(tenant)
                    .fetch_optional(&mut **tx)
                    .await?;
                let newest = sqlx::query(self.db.sql(
                    "SELECT seq, hash FROM audit_log WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1",
                ))
                .bind(tenant)
                .fetch_optional(&mut **tx)
                .await?;
                ChainState {
                    head: head
                        .map(|row| {
                            Ok::<_, MetaError>((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
                        })
                        .transpose()?,
                    newest: newest.map(|row| {
                        (
                            row.try_get(0).unwrap_or(i64::MIN),
                            row.try_get(1).unwrap_or_default(),
                        )
                    }),
                }
            }
        };
        self.check_state(tenant, state)
    }

    /// Checks a chain's head and newest entry as [`Self::checked_head`] describes.
    fn check_state(&self, tenant: &str, state: ChainState) -> Result<(i64, [u8; 32]), MetaError> {
        let broken = |message: String| MetaError::Corrupt {
            what: "audit chain",
            message: format!(
                "tenant {tenant}: {message}; appends are refused until the chain is repaired (run `ghaf audit verify`)"
            ),
        };

        let Some((seq, hash, mac)) = state.head else {
            return match state.newest {
                None => Ok((0, audit::GENESIS_HASH)),
                Some(_) => Err(broken("the chain has entries but no sealed head".into())),
            };
        };
        if audit::head_mac(&self.audit_key, tenant, seq, &hash) != mac {
            return Err(broken(format!(
                "the seal of the chain head at entry {seq} does not verify under this server's audit key"
            )));
        }
        let newest_matches = state
            .newest
            .as_ref()
            .is_some_and(|(newest_seq, newest_hash)| *newest_seq == seq && *newest_hash == hash);
        if !newest_matches {
            return Err(broken(format!(
                "the newest stored entry is not the sealed head (entry {seq})"
            )));
        }
        let bytes = audit::decode_hash(&hash)
            .ok_or_else(|| broken(format!("the head hash {hash:?} is not 64 hex digits")))?;
        Ok((seq, bytes))
    }

    /// Checks the chain without appending. One statement reads the head and the newest entry
    /// from one snapshot, so no transaction is needed.
    async fn check_chain(&self, tenant: &str) -> Result<(), MetaError> {
        let row = sqlx::query(self.db.sql(CHAIN_STATE_QUERY))
            .bind(tenant)
            .bind(tenant)
            .bind(tenant)
            .bind(tenant)
            .bind(tenant)
            .fetch_one(self.db.pool())
            .await?;
        let state = chain_state_from_row(&row)?;
        let head = state.head.clone();
        match self.check_state(tenant, state) {
            Ok(_) => {
                if let Some((seq, hash, mac)) = head {
                    self.remember_head(tenant, KnownHead { seq, hash, mac });
                }
                Ok(())
            }
            Err(error) => {
                self.known_heads().remove(tenant);
                Err(error)
            }
        }
    }

    /// Appends `entry` after `known` without reading the head: each statement checks in its
    /// `WHERE` what the full check reads. The insert requires that the entry `known` names is
    /// stored and that no later entry exists; the head update requires the stored head to be
    /// exactly `known`, whose seal verified or which this store wrote. Returns `None`, having
    /// written nothing, when any of that does not hold, so the caller takes the full path,
    /// which reports a broken chain or finds another replica's newer head.
    async fn try_append_after(
        &self,
        entry: &NewAuditEntry,
        known: &KnownHead,
    ) -> Result<Option<AuditEntry>, MetaError> {
        let mut tx = self.begin_write().await?;
        let AfterKnown::Appended(appended) = self.append_after_in(&mut tx, entry, known).await?
        else {
            return Ok(None);
        };
        tx.commit().await?;
        self.remember_appended(&appended);
        Ok(Some(appended.entry))
    }

    /// Appends `entry` after `known` inside `tx`, as [`Self::try_append_after`] describes.
    async fn append_after_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        entry: &NewAuditEntry,
        known: &KnownHead,
    ) -> Result<AfterKnown, MetaError> {
        let Some(next) = self.next_after(entry, known) else {
            return Ok(AfterKnown::NothingWritten);
        };

        let inserted = sqlx::query(self.db.sql(APPEND_AFTER_KNOWN))
            .bind(&entry.tenant)
            .bind(next.seq)
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(&entry.resource)
            .bind(entry.outcome.as_str())
            .bind(i64::from(entry.status))
            .bind(&entry.request_id)
            .bind(entry.time)
            .bind(&next.details)
            .bind(&next.hash)
            .bind(&entry.tenant)
            .bind(known.seq)
            .bind(&known.hash)
            .bind(&entry.tenant)
            .bind(known.seq)
            .execute(&mut **tx)
            .await;
        match inserted {
            Ok(result) if result.rows_affected() == 1 => {}
            Ok(_) => return Ok(AfterKnown::NothingWritten),
            Err(error) if is_unique_violation(&error) => return Ok(AfterKnown::RollBack),
            Err(error) => return Err(error.into()),
        }
        let moved = sqlx::query(self.db.sql(MOVE_KNOWN_HEAD))
            .bind(next.seq)
            .bind(&next.hash)
            .bind(&next.mac)
            .bind(&entry.tenant)
            .bind(known.seq)
            .bind(&known.hash)
            .bind(&known.mac)
            .execute(&mut **tx)
            .await?;
        if moved.rows_affected() != 1 {
            return Ok(AfterKnown::RollBack);
        }
        Ok(next.appended(entry))
    }

    /// Appends `entry` after `known` on a direct SQLite connection inside its write
    /// transaction, with the statements of [`Self::append_after_in`].
    fn append_after_direct(
        &self,
        conn: &rusqlite::Connection,
        entry: &NewAuditEntry,
        known: &KnownHead,
    ) -> Result<AfterKnown, MetaError> {
        let Some(next) = self.next_after(entry, known) else {
            return Ok(AfterKnown::NothingWritten);
        };

        let inserted = conn
            .prepare_cached(APPEND_AFTER_KNOWN)
            .and_then(|mut statement| {
                statement.execute(rusqlite::params![
                    entry.tenant,
                    next.seq,
                    entry.actor,
                    entry.action,
                    entry.resource,
                    entry.outcome.as_str(),
                    i64::from(entry.status),
                    entry.request_id,
                    entry.time,
                    next.details,
                    next.hash,
                    entry.tenant,
                    known.seq,
                    known.hash,
                    entry.tenant,
                    known.seq,
                ])
            })
            .map_err(MetaError::from);
        match inserted {
            Ok(1) => {}
            Ok(_) => return Ok(AfterKnown::NothingWritten),
            Err(error) if error.is_unique_violation() => return Ok(AfterKnown::RollBack),
            Err(error) => return Err(error),
        }
        let moved = conn
            .prepare_cached(MOVE_KNOWN_HEAD)?
            .execute(rusqlite::params![
                next.seq,
                next.hash,
                next.mac,
                entry.tenant,
                known.seq,
                known.hash,
                known.mac,
            ])?;
        if moved != 1 {
            return Ok(AfterKnown::RollBack);
        }
        Ok(next.appended(entry))
    }

    /// Computes the entry that follows `known`: its sequence number, chain hash and head
    /// seal. Returns `None` when the known hash is not 64 hex digits.
    fn next_after(&self, entry: &NewAuditEntry, known: &KnownHead) -> Option<NextEntry> {
        let prev_hash = audit::decode_hash(&known.hash)?;
        let seq = known.seq + 1;
        let hash = hex::encode(audit::chain_hash(&prev_hash, seq, entry));
        let mac = audit::head_mac(&self.audit_key, &entry.tenant, seq, &hash);
        Some(NextEntry {
            seq,
            hash,
            mac,
            details: entry.details.to_string(),
        })
    }

    fn remember_appended(&self, appended: &AppendedHead) {
        self.remember_head(
            &appended.entry.tenant,
            KnownHead {
                seq: appended.entry.seq,
                hash: appended.entry.hash.clone(),
                mac: appended.mac.clone(),
            },
        );
    }

    async fn try_append_audit(&self, entry: &NewAuditEntry) -> Result<AuditEntry, MetaError> {
        let mut tx = self.begin_write().await?;
        let appended = self.append_checked_in(&mut tx, entry).await?;
        tx.commit().await?;
        self.remember_appended(&appended);
        Ok(appended.entry)
    }

    /// Appends `entry` inside `tx` after reading and checking the head with
    /// [`Self::checked_head`].
    async fn append_checked_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        entry: &NewAuditEntry,
    ) -> Result<AppendedHead, MetaError> {
        let (prev_seq, prev_hash) = self.checked_head(tx, &entry.tenant).await?;
        let head_exists = prev_seq > 0;

        let seq = prev_seq + 1;
        let hash = hex::encode(audit::chain_hash(&prev_hash, seq, entry));
        let details = entry.details.to_string();
        sqlx::query(self.db.sql(
            "INSERT INTO audit_log (tenant_id, seq, actor, action, resource, outcome, status, \
             request_id, time, details, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&entry.tenant)
        .bind(seq)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.resource)
        .bind(entry.outcome.as_str())
        .bind(i64::from(entry.status))
        .bind(&entry.request_id)
        .bind(entry.time)
        .bind(&details)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;

        let mac = audit::head_mac(&self.audit_key, &entry.tenant, seq, &hash);
        if head_exists {
            let moved = sqlx::query(self.db.sql(
                "UPDATE audit_heads SET seq = ?, hash = ?, mac = ? WHERE tenant_id = ? AND seq = ?",
            ))
            .bind(seq)
            .bind(&hash)
            .bind(&mac)
            .bind(&entry.tenant)
            .bind(prev_seq)
            .execute(&mut **tx)
            .await?;
            if moved.rows_affected() != 1 {
                return Err(MetaError::Conflict {
                    what: "audit chain",
                    name: entry.tenant.clone(),
                });
            }
        } else {
            sqlx::query(
                self.db
                    .sql("INSERT INTO audit_heads (tenant_id, seq, hash, mac) VALUES (?, ?, ?, ?)"),
            )
            .bind(&entry.tenant)
            .bind(seq)
            .bind(&hash)
            .bind(&mac)
            .execute(&mut **tx)
            .await?;
        }
        Ok(AppendedHead {
            entry: stored_entry(entry, seq, hash),
            mac,
        })
    }
}

/// Inserts an audit entry only when the entry the known head names is stored and no later
/// one exists. Binds the entry's eleven columns, then the tenant, the known sequence number
/// and hash, then the tenant and the known sequence number again.
const APPEND_AFTER_KNOWN: &str = "INSERT INTO audit_log (tenant_id, seq, actor, action, \
    resource, outcome, status, request_id, time, details, hash) \
    SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
    WHERE EXISTS (SELECT 1 FROM audit_log WHERE tenant_id = ? AND seq = ? AND hash = ?) \
    AND NOT EXISTS (SELECT 1 FROM audit_log WHERE tenant_id = ? AND seq > ?)";

/// Moves a chain head only when it is still exactly the known one. Binds the new sequence
/// number, hash and seal, then the tenant and the known sequence number, hash and seal.
const MOVE_KNOWN_HEAD: &str = "UPDATE audit_heads SET seq = ?, hash = ?, mac = ? \
    WHERE tenant_id = ? AND seq = ? AND hash = ? AND mac = ?";

/// The entry that follows a known head, before it is written.
struct NextEntry {
    seq: i64,
    hash: String,
    mac: String,
    /// The entry's details as stored, in JSON.
    details: String,
}

impl NextEntry {
    fn appended(self, entry: &NewAuditEntry) -> AfterKnown {
        AfterKnown::Appended(Box::new(AppendedHead {
            entry: stored_entry(entry, self.seq, self.hash),
            mac: self.mac,
        }))
    }
}

/// The outcome of an append after a known head.
enum AfterKnown {
    Appended(Box<AppendedHead>),
    /// Nothing was written, because the known head is not the stored one.
    NothingWritten,
    /// The insert ran but the head did not move, or it collided with another append; the
    /// transaction must be rolled back.
    RollBack,
}

fn stored_entry(entry: &NewAuditEntry, seq: i64, hash: String) -> AuditEntry {
    AuditEntry {
        seq,
        tenant: entry.tenant.clone(),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        resource: entry.resource.clone(),
        outcome: entry.outcome,
        status: entry.status,
        request_id: entry.request_id.clone(),
        time: entry.time,
        details: entry.details.clone(),
        hash,
    }
}

#[async_trait]
impl TransactionalAudit for SqlMetaStore {
    async fn lock(&self) -> AuditLock<'_> {
        AuditLock {
            _guard: self.audit_lock.lock().await,
        }
    }

    async fn append_in(
        &self,
        _lock: &AuditLock<'_>,
        tx: &mut Transaction<'static, Any>,
        entry: &NewAuditEntry,
    ) -> Result<AppendedHead, MetaError> {
        let known = self.known_heads().get(&entry.tenant).cloned();
        if let Some(known) = known {
            match self.append_after_in(tx, entry, &known).await? {
                AfterKnown::Appended(appended) => return Ok(*appended),
                AfterKnown::NothingWritten => {
                    self.known_heads().remove(&entry.tenant);
                }
                AfterKnown::RollBack => {
                    // The next attempt reads and checks the head, which reports a broken
                    // chain or extends another replica's newer head.
                    self.known_heads().remove(&entry.tenant);
                    return Err(MetaError::Conflict {
                        what: "audit chain",
                        name: entry.tenant.clone(),
                    });
                }
            }
        }
        self.append_checked_in(tx, entry).await
    }

    fn append_direct(
        &self,
        _lock: &AuditLock<'_>,
        tx: &rusqlite::Transaction<'_>,
        entry: &NewAuditEntry,
    ) -> Result<Option<AppendedHead>, MetaError> {
        let Some(known) = self.known_heads().get(&entry.tenant).cloned() else {
            return Ok(None);
        };
        match self.append_after_direct(tx, entry, &known)? {
            AfterKnown::Appended(appended) => Ok(Some(*appended)),
            AfterKnown::NothingWritten | AfterKnown::RollBack => {
                // The caller's fallback reads and checks the head, which reports a broken
                // chain or extends another replica's newer head.
                self.known_heads().remove(&entry.tenant);
                Ok(None)
            }
        }
    }

    fn committed(&self, head: AppendedHead) {
        self.remember_appended(&head);
    }
}

/// Reads a chain's sealed head and its newest entry in one statement. Binds the tenant five
/// times.
const CHAIN_STATE_QUERY: &str = "SELECT \
    (SELECT seq FROM audit_heads WHERE tenant_id = ?) AS head_seq, \
    (SELECT hash FROM audit_heads WHERE tenant_id = ?) AS head_hash, \
    (SELECT mac FROM audit_heads WHERE tenant_id = ?) AS head_mac, \
    (SELECT seq FROM audit_log WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1) AS newest_seq, \
    (SELECT hash FROM audit_log WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1) AS newest_hash";

/// A chain's sealed head `(seq, hash, mac)` and newest stored entry `(seq, hash)`.
#[derive(Clone)]
struct ChainState {
    head: Option<(i64, String, String)>,
    newest: Option<(i64, String)>,
}

fn chain_state_from_row(row: &AnyRow) -> Result<ChainState, MetaError> {
    let head_seq: Option<i64> = row.try_get("head_seq")?;
    let head_hash: Option<String> = row.try_get("head_hash")?;
    let head_mac: Option<String> = row.try_get("head_mac")?;
    let newest_seq: Option<i64> = row.try_get("newest_seq")?;
    let newest_hash: Option<String> = row.try_get("newest_hash")?;
    Ok(ChainState {
        head: match (head_seq, head_hash, head_mac) {
            (Some(seq), Some(hash), Some(mac)) => Some((seq, hash, mac)),
            _ => None,
        },
        newest: newest_seq.map(|seq| (seq, newest_hash.unwrap_or_default())),
    })
}

fn unique_to_exists(what: &'static str, name: &str) -> impl FnOnce(sqlx::Error) -> MetaError {
    let name = name.to_owned();
    move |error| {
        if is_unique_violation(&error) {
            MetaError::AlreadyExists { what, name }
        } else {
            MetaError::Database(error)
        }
    }
}

fn tenant_from_row(row: &AnyRow) -> Result<Tenant, MetaError> {
    Ok(Tenant {
        id: TenantId::from_stored(row.try_get::<String, _>("id")?),
        display_name: row.try_get("display_name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn project_from_row(row: &AnyRow) -> Result<Project, MetaError> {
    Ok(Project {
        id: ProjectId::from_stored(row.try_get::<String, _>("id")?),
        tenant: TenantId::from_stored(row.try_get::<String, _>("tenant_id")?),
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

fn principal_from_row(row: &AnyRow) -> Result<Principal, MetaError> {
    let kind: String = row.try_get("kind")?;
    Ok(Principal {
        id: PrincipalId::from_stored(row.try_get::<String, _>("id")?),
        tenant: TenantId::from_stored(row.try_get::<String, _>("tenant_id")?),
        kind: PrincipalKind::parse(&kind).ok_or_else(|| MetaError::Corrupt {
            what: "principal kind",
            message: format!("unknown kind {kind:?}"),
        })?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        platform_admin: row.try_get::<i64, _>("platform_admin")? != 0,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn parse_role(value: &str) -> Result<Role, MetaError> {
    value.parse().map_err(|message| MetaError::Corrupt {
        what: "role",
        message,
    })
}

fn binding_from_row(row: &AnyRow) -> Result<RoleBinding, MetaError> {
    let project: String = row.try_get("project_id")?;
    let role: String = row.try_get("role")?;
    Ok(RoleBinding {
        tenant: TenantId::from_stored(row.try_get::<String, _>("tenant_id")?),
        principal: PrincipalId::from_stored(row.try_get::<String, _>("principal_id")?),
        project: (!project.is_empty()).then(|| ProjectId::from_stored(project)),
        role: parse_role(&role)?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

fn token_from_row(row: &AnyRow) -> Result<StoredToken, MetaError> {
    let max_role: Option<String> = row.try_get("max_role")?;
    Ok(StoredToken {
        id: TokenId::from_stored(row.try_get::<String, _>("id")?),
        tenant: TenantId::from_stored(row.try_get::<String, _>("tenant_id")?),
        principal: PrincipalId::from_stored(row.try_get::<String, _>("principal_id")?),
        name: row.try_get("name")?,
        secret_hash: row.try_get("secret_hash")?,
        project: row
            .try_get::<Option<String>, _>("project_id")?
            .map(ProjectId::from_stored),
        max_role: max_role.as_deref().map(parse_role).transpose()?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn audit_from_row(row: &AnyRow) -> Result<AuditEntry, MetaError> {
    audit_from_row_inner(row).map_err(|error| match error {
        MetaError::Database(source) => MetaError::Corrupt {
            what: "audit entry",
            message: format!("a stored entry cannot be read: {source}"),
        },
        other => other,
    })
}

fn audit_from_row_inner(row: &AnyRow) -> Result<AuditEntry, MetaError> {
    let outcome: String = row.try_get("outcome")?;
    let details: String = row.try_get("details")?;
    let status: i64 = row.try_get("status")?;
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        tenant: row.try_get("tenant_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        // A tampered value must still load, so that verification can report it; an
        // unknown outcome or unparsable details become values the hash check rejects.
        outcome: AuditOutcome::parse(&outcome).unwrap_or(AuditOutcome::Failed),
        status: u16::try_from(status).unwrap_or(u16::MAX),
        request_id: row.try_get("request_id")?,
        time: row.try_get("time")?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
        hash: row.try_get("hash")?,
    })
}

const TOKEN_COLUMNS: &str = "id, tenant_id, principal_id, name, secret_hash, project_id, \
    max_role, created_at, created_by, expires_at, revoked_at";
const AUDIT_COLUMNS: &str = "tenant_id, seq, actor, action, resource, outcome, status, \
    request_id, time, details, hash";

#[async_trait]
impl MetaStore for SqlMetaStore {
    async fn ping(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(self.db.pool()).await?;
        Ok(())
    }

    async fn create_tenant(&self, id: &TenantId, display_name: &str) -> Result<Tenant, MetaError> {
        let tenant = Tenant {
            id: id.clone(),
            display_name: display_name.to_owned(),
            created_at: ghaf_core::now_millis(),
        };
        sqlx::query(
            self.db
                .sql("INSERT INTO tenants (id, display_name, created_at) VALUES (?, ?, ?)"),
        )
        .bind(tenant.id.as_str())
        .bind(&tenant.display_name)
        .bind(tenant.created_at)
        .execute(self.db.pool())
        .await
        .map_err(unique_to_exists("tenant", id.as_str()))?;
        Ok(tenant)
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, MetaError> {
        let row = sqlx::query(
            self.db
                .sql("SELECT id, display_name, created_at FROM tenants WHERE id = ?"),
        )
        .bind(id.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, MetaError> {
        let rows = sqlx::query("SELECT id, display_name, created_at FROM tenants ORDER BY id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn create_project(
        &self,
        tenant: &TenantId,
        name: &Name,
        description: &str,
        created_by: &PrincipalId,
    ) -> Result<Project, MetaError> {
        let project = Project {
            id: ProjectId::generate(),
            tenant: tenant.clone(),
            name: name.as_str().to_owned(),
            description: description.to_owned(),
            created_at: ghaf_core::now_millis(),
            created_by: created_by.as_str().to_owned(),
        };
        sqlx::query(self.db.sql(
            "INSERT INTO projects (id, tenant_id, name, description, created_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?)",
        ))
        .bind(project.id.as_str())
        .bind(tenant.as_str())
        .bind(&project.name)
        .bind(&project.description)
        .bind(project.created_at)
        .bind(&project.created_by)
        .execute(self.db.pool())
        .await
        .map_err(unique_to_exists("project", name.as_str()))?;
        Ok(project)
    }

    async fn get_project_by_name(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<Project>, MetaError> {
        let row = sqlx::query(self.db.sql(
            "SELECT id, tenant_id, name, description, created_at, created_by FROM projects \
             WHERE tenant_id = ? AND name = ?",
        ))
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn get_project(
        &self,
        tenant: &TenantId,
        id: &ProjectId,
    ) -> Result<Option<Project>, MetaError> {
        let row = sqlx::query(self.db.sql(
            "SELECT id, tenant_id, name, description, created_at, created_by FROM projects \
             WHERE tenant_id = ? AND id = ?",
        ))
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    async fn list_projects(&self, tenant: &TenantId) -> Result<Vec<Project>, MetaError> {
        let rows = sqlx::query(self.db.sql(
            "SELECT id, tenant_id, name, description, created_at, created_by FROM projects \
             WHERE tenant_id = ? ORDER BY name",
        ))
        .bind(tenant.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn create_principal(
        &self,
        tenant: &TenantId,
        new: &NewPrincipal,
    ) -> Result<Principal, MetaError> {
        let principal = Principal {
            id: PrincipalId::generate(),
            tenant: tenant.clone(),
            kind: new.kind,
            name: new.name.as_str().to_owned(),
            email: new.email.clone(),
            platform_admin: new.platform_admin,
            disabled: false,
            created_at: ghaf_core::now_millis(),
        };
        sqlx::query(self.db.sql(
            "INSERT INTO principals (id, tenant_id, kind, name, email, platform_admin, disabled, \
             created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
        ))
        .bind(principal.id.as_str())
        .bind(tenant.as_str())
        .bind(principal.kind.as_str())
        .bind(&principal.name)
        .bind(principal.email.clone())
        .bind(i64::from(principal.platform_admin))
        .bind(principal.created_at)
        .execute(self.db.pool())
        .await
        .map_err(unique_to_exists("principal", new.name.as_str()))?;
        Ok(principal)
    }

    async fn get_principal(
        &self,
        tenant: &TenantId,
        id: &PrincipalId,
    ) -> Result<Option<Principal>, MetaError> {
        let row = sqlx::query(self.db.sql(
            "SELECT id, tenant_id, kind, name, email, platform_admin, disabled, created_at \
             FROM principals WHERE tenant_id = ? AND id = ?",
        ))
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(principal_from_row).transpose()
    }

    async fn get_principal_by_name(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<Principal>, MetaError> {
        let row = sqlx::query(self.db.sql(
            "SELECT id, tenant_id, kind, name, email, platform_admin, disabled, created_at \
             FROM principals WHERE tenant_id = ? AND name = ?",
        ))
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(self.db.pool())
        .await?;
        row.as_ref().map(principal_from_row).transpose()
    }

    async fn list_principals(&self, tenant: &TenantId) -> Result<Vec<Principal>, MetaError> {
        let rows = sqlx::query(self.db.sql(
            "SELECT id, tenant_id, kind, name, email, platform_admin, disabled, created_at \
             FROM principals WHERE tenant_id = ? ORDER BY name",
        ))
        .bind(tenant.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(principal_from_row).collect()
    }

    async fn grant_role(&self, binding: &RoleBinding) -> Result<(), MetaError> {
        let project = binding.project.as_ref().map_or("", ProjectId::as_str);
        let result = sqlx::query(self.db.sql(
            "INSERT INTO role_bindings (tenant_id, principal_id, project_id, role, created_at, \
             created_by) VALUES (?, ?, ?, ?, ?, ?)",
        ))
        .bind(binding.tenant.as_str())
        .bind(binding.principal.as_str())
        .bind(project)
        .bind(binding.role.as_str())
        .bind(binding.created_at)
        .bind(&binding.created_by)
        .execute(self.db.pool())
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_unique_violation(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn revoke_role(
        &self,
        tenant: &TenantId,
        principal: &PrincipalId,
        project: Option<&ProjectId>,
        role: Role,
    ) -> Result<bool, MetaError> {
        let result = sqlx::query(self.db.sql(
            "DELETE FROM role_bindings WHERE tenant_id = ? AND principal_id = ? \
             AND project_id = ? AND role = ?",
        ))
        .bind(tenant.as_str())
        .bind(principal.as_str())
        .bind(project.map_or("", ProjectId::as_str))
        .bind(role.as_str())
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn list_role_bindings(
        &self,
        tenant: &TenantId,
        principal: Option<&PrincipalId>,
    ) -> Result<Vec<RoleBinding>, MetaError> {
        let base = "SELECT tenant_id, principal_id, project_id, role, created_at, created_by \
                    FROM role_bindings WHERE tenant_id = ?";
        let rows = match principal {
            Some(principal) => {
                let statement = format!("{base} AND principal_id = ? ORDER BY project_id, role");
                sqlx::query(self.db.sql(&statement))
                    .bind(tenant.as_str())
                    .bind(principal.as_str())
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => {
                let statement = format!("{base} ORDER BY principal_id, project_id, role");
                sqlx::query(self.db.sql(&statement))
                    .bind(tenant.as_str())
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        rows.iter().map(binding_from_row).collect()
    }

    async fn create_token(&self, token: &StoredToken) -> Result<(), MetaError> {
        let statement = format!(
            "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        );
        sqlx::query(self.db.sql(&statement))
            .bind(token.id.as_str())
            .bind(token.tenant.as_str())
            .bind(token.principal.as_str())
            .bind(&token.name)
            .bind(&token.secret_hash)
            .bind(token.project.as_ref().map(|p| p.as_str().to_owned()))
            .bind(token.max_role.map(|r| r.as_str().to_owned()))
            .bind(token.created_at)
            .bind(&token.created_by)
            .bind(token.expires_at)
            .bind(token.revoked_at)
            .execute(self.db.pool())
            .await
            .map_err(unique_to_exists("token", token.id.as_str()))?;
        Ok(())
    }

    async fn find_token_for_authentication(
        &self,
        id: &TokenId,
    ) -> Result<Option<StoredToken>, MetaError> {
        let statement = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?");
        let row = sqlx::query(self.db.sql(&statement))
            .bind(id.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn get_token(
        &self,
        tenant: &TenantId,
        id: &TokenId,
    ) -> Result<Option<StoredToken>, MetaError> {
        let statement =
            format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE tenant_id = ? AND id = ?");
        let row = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(id.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(
        &self,
        tenant: &TenantId,
        principal: Option<&PrincipalId>,
    ) -> Result<Vec<StoredToken>, MetaError> {
        let rows = match principal {
            Some(principal) => {
                let statement = format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE tenant_id = ? \
                     AND principal_id = ? ORDER BY created_at DESC, id DESC"
                );
                sqlx::query(self.db.sql(&statement))
                    .bind(tenant.as_str())
                    .bind(principal.as_str())
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => {
                let statement = format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE tenant_id = ? \
                     ORDER BY created_at DESC, id DESC"
                );
                sqlx::query(self.db.sql(&statement))
                    .bind(tenant.as_str())
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(
        &self,
        tenant: &TenantId,
        id: &TokenId,
        at: UnixMillis,
    ) -> Result<bool, MetaError> {
        let result = sqlx::query(self.db.sql(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) \
             WHERE tenant_id = ? AND id = ?",
        ))
        .bind(at)
        .bind(tenant.as_str())
        .bind(id.as_str())
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn append_audit(&self, entry: &NewAuditEntry) -> Result<AuditEntry, MetaError> {
        let _guard = self.audit_lock.lock().await;
        let known = self.known_heads().get(&entry.tenant).cloned();
        if let Some(known) = known {
            if let Some(stored) = self.try_append_after(entry, &known).await? {
                return Ok(stored);
            }
            self.known_heads().remove(&entry.tenant);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_append_audit(entry).await {
                Ok(stored) => return Ok(stored),
                Err(error)
                    if attempt < AUDIT_APPEND_ATTEMPTS
                        && (matches!(error, MetaError::Conflict { .. })
                            || error.is_unique_violation()) =>
                {
                    tracing::debug!(tenant = %entry.tenant, attempt, "audit append raced, retrying");
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn list_audit(
        &self,
        tenant: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEntry>, MetaError> {
        // Built from fixed fragments only; every value is a bound parameter.
        let mut statement = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE tenant_id = ?");
        let mut params = vec![Param::Text(tenant.to_owned())];
        if let Some(actor) = &filter.actor {
            statement.push_str(" AND actor = ?");
            params.push(Param::Text(actor.clone()));
        }
        if let Some(action) = &filter.action {
            statement.push_str(" AND action = ?");
            params.push(Param::Text(action.clone()));
        }
        if let Some(resource) = &filter.resource {
            // Prefix match without LIKE, so `%` and `_` in names match literally.
            let prefix = format!("{resource}/");
            statement
                .push_str(" AND (resource = ? OR substr(resource, 1, CAST(? AS INTEGER)) = ?)");
            params.push(Param::Text(resource.clone()));
            params.push(Param::Int(i64::try_from(prefix.len()).unwrap_or(i64::MAX)));
            params.push(Param::Text(prefix));
        }
        if let Some(outcome) = filter.outcome {
            statement.push_str(" AND outcome = ?");
            params.push(Param::Text(outcome.as_str().to_owned()));
        }
        if let Some(since) = filter.since {
            statement.push_str(" AND time >= ?");
            params.push(Param::Int(since));
        }
        if let Some(until) = filter.until {
            statement.push_str(" AND time < ?");
            params.push(Param::Int(until));
        }
        if let Some(after_seq) = filter.after_seq {
            statement.push_str(" AND seq > ?");
            params.push(Param::Int(after_seq));
        }
        statement.push_str(" ORDER BY seq LIMIT ?");
        params.push(Param::Int(i64::from(filter.limit.max(1))));

        let mut query = sqlx::query(self.db.sql(&statement));
        for param in params {
            query = match param {
                Param::Text(value) => query.bind(value),
                Param::Int(value) => query.bind(value),
            };
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_chain_page(
        &self,
        tenant: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, MetaError> {
        let statement = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE tenant_id = ? AND seq > ? \
             ORDER BY seq LIMIT ?"
        );
        let rows = sqlx::query(self.db.sql(&statement))
            .bind(tenant)
            .bind(after_seq)
            .bind(i64::from(limit.max(1)))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn check_audit_chain(&self, tenant: &str) -> Result<(), MetaError> {
        self.check_chain(tenant).await
    }

    async fn audit_head(&self, tenant: &str) -> Result<Option<AuditHead>, MetaError> {
        let row = sqlx::query(
            self.db
                .sql("SELECT tenant_id, seq, hash, mac FROM audit_heads WHERE tenant_id = ?"),
        )
        .bind(tenant)
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(AuditHead {
            tenant: row.try_get("tenant_id")?,
            seq: row.try_get("seq")?,
            hash: row.try_get("hash")?,
            mac: row.try_get("mac")?,
        }))
    }

    async fn audit_chains(&self) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query(
            "SELECT tenant_id FROM audit_heads UNION SELECT DISTINCT tenant_id FROM audit_log \
             ORDER BY 1",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).map_err(MetaError::from))
            .collect()
    }

    fn transactional_audit(&self) -> Option<&dyn TransactionalAudit> {
        Some(self)
    }
}

/// A bound value of a statement assembled at run time.
enum Param {
    Text(String),
    Int(i64),
}
