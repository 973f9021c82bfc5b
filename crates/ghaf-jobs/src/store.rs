//! The job queue on the metadata database (SQLite or PostgreSQL): jobs, attempts, log chunks
//! and tenant quotas. Every query takes the tenant, and every read of one job the project too.
//!
//! Times are passed in by the caller (Unix milliseconds), so tests can drive backoff and
//! lease expiry step by step without waiting.

use ghaf_core::{ProjectId, TenantId, UnixMillis};
use ghaf_meta::{Db, Dialect};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::{JobError, JobSpec};

/// How many queued jobs one page of a claim's scan reads.
const CLAIM_CANDIDATES: i64 = 50;
/// How many pages one claim scans before giving up for this poll.
const CLAIM_PAGES: i64 = 10;
/// How many times a log append is retried when a concurrent append took the same number.
const LOG_APPEND_ATTEMPTS: u32 = 5;
/// Largest log chunk stored, in bytes; longer content is split.
pub const MAX_LOG_CHUNK_BYTES: usize = 64 * 1024;

/// The lifecycle state of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker; not claimed before `not_before`.
    Queued,
    /// Claimed by a worker that holds the lease.
    Running,
    Succeeded,
    /// Failed on its last allowed attempt, or with an error that a retry cannot fix.
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// Returns true for the states a job never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Location of a job's latest checkpoint: a blob of the tenant's blob store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// SHA-256 of the checkpoint blob.
    pub digest: String,
    pub size: u64,
    /// Progress the checkpoint holds, such as the number of trees.
    pub progress: u64,
    pub attempt: u32,
    pub created_at: UnixMillis,
}

/// A stored job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub tenant: TenantId,
    pub project: ProjectId,
    pub name: String,
    pub spec: JobSpec,
    pub state: JobState,
    /// Attempts started so far; while running, the number of the running attempt.
    pub attempt: u32,
    /// Attempts that ended by interruption (SIGTERM); they do not count toward
    /// `spec.max_attempts`.
    pub interruptions: u32,
    pub not_before: UnixMillis,
    pub cancel_requested: bool,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<UnixMillis>,
    pub checkpoint: Option<CheckpointRef>,
    /// Result document of the job: run id, model version, metrics, gate decision.
    pub result: Option<serde_json::Value>,
    /// Error of the latest failed attempt.
    pub error: Option<String>,
    pub created_at: UnixMillis,
    pub created_by: String,
    pub started_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub updated_at: UnixMillis,
}

impl Job {
    /// Returns the number of attempts that count toward `max_attempts`.
    pub fn counted_attempts(&self) -> u32 {
        self.attempt.saturating_sub(self.interruptions)
    }
}

/// A worker's claim on one attempt of a job. Every write of the attempt checks it, so a
/// worker whose lease expired cannot change the job any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub tenant: TenantId,
    pub project: ProjectId,
    pub owner: String,
    pub attempt: u32,
}

/// Limits on one tenant's running jobs; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    pub max_running_jobs: Option<u32>,
    /// CPU cores, fractions allowed.
    pub max_cpus: Option<f64>,
    pub max_gpus: Option<u32>,
}

/// The stream a log chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines the worker writes: attempt starts, retries, results.
    System,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
        }
    }

    fn parse(value: &str) -> Self {
        match value {
            "stdout" => LogStream::Stdout,
            "stderr" => LogStream::Stderr,
            _ => LogStream::System,
        }
    }
}

/// A stored piece of a job's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogChunk {
    /// 1, 2, 3 … per job, in the order the chunks were stored.
    pub seq: i64,
    pub attempt: u32,
    pub stream: LogStream,
    pub created_at: UnixMillis,
    pub content: String,
}

/// Filter of a job listing.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    /// Maximum number of jobs; 0 means 100.
    pub limit: u32,
}

/// Request to a running attempt, returned by a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopRequest {
    /// Keep running.
    None,
    /// A user cancelled the job; stop and report it cancelled.
    Cancel,
}

/// Outcome of an attempt, as reported by the worker.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptOutcome {
    Succeeded(serde_json::Value),
    /// A retryable failure goes back to the queue after the backoff while attempts remain.
    Failed {
        error: String,
        retryable: bool,
    },
    Cancelled,
    /// Stopped by SIGTERM (spot reclaim, worker shutdown): back to the queue at once, not
    /// counted toward `max_attempts`.
    Interrupted {
        reason: String,
    },
}

/// Capabilities of a claiming worker: its id, job kinds, GPUs and lease duration.
#[derive(Clone, Debug)]
pub struct ClaimRequest<'a> {
    /// Worker id written as the lease owner.
    pub owner: &'a str,
    /// Job kinds the worker has executors for (`builtin`, `command`, `kubernetes`).
    pub kinds: &'a [&'a str],
    /// Most GPUs one job may ask of this worker. Kubernetes jobs are not limited by it,
    /// because their GPUs are on the cluster's nodes.
    pub max_gpus: u32,
    /// Lease duration in milliseconds; heartbeats extend it.
    pub lease_millis: i64,
}

/// SQL access to the job tables.
#[derive(Clone, Debug)]
pub struct JobStore {
    db: Db,
}

const JOB_COLUMNS: &str = "id, tenant_id, project_id, name, spec_json, state, attempt, \
     interruptions, not_before, cancel_requested, lease_owner, lease_expires_at, \
     checkpoint_json, result_json, error, created_at, created_by, started_at, finished_at, \
     updated_at";

fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> JobError {
    move |error| JobError::Corrupt {
        what,
        message: error.to_string(),
    }
}

fn job_from_row(row: &AnyRow) -> Result<Job, JobError> {
    let spec_json: String = row.try_get("spec_json")?;
    let state: String = row.try_get("state")?;
    let checkpoint: Option<String> = row.try_get("checkpoint_json")?;
    let result: Option<String> = row.try_get("result_json")?;
    Ok(Job {
        id: row.try_get("id")?,
        tenant: TenantId::from_stored(row.try_get::<String, _>("tenant_id")?),
        project: ProjectId::from_stored(row.try_get::<String, _>("project_id")?),
        name: row.try_get("name")?,
        spec: serde_json::from_str(&spec_json).map_err(corrupt("job spec"))?,
        state: JobState::parse(&state).ok_or_else(|| JobError::Corrupt {
            what: "job state",
            message: format!("unknown state {state:?}"),
        })?,
        attempt: to_u32(row.try_get("attempt")?),
        interruptions: to_u32(row.try_get("interruptions")?),
        not_before: row.try_get("not_before")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        checkpoint: checkpoint
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(corrupt("job checkpoint"))?,
        result: result
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(corrupt("job result"))?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl JobStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>, JobError> {
        // SQLite takes the write lock up front, so reads inside the transaction cannot go
        // stale before its writes.
        let tx = match self.db.dialect() {
            Dialect::Sqlite => self.db.pool().begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.db.pool().begin().await?,
        };
        Ok(tx)
    }

    /// Stores a new queued job after validating its spec. A job that requests more than the
    /// tenant's quota could ever allow is rejected with `QuotaExceeded`.
    pub async fn submit(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        spec: &JobSpec,
        created_by: &str,
        now: UnixMillis,
    ) -> Result<Job, JobError> {
        spec.validate()?;
        let quota = self.get_quota(tenant).await?;
        check_fits_quota(spec, &quota)?;

        let id = uuid::Uuid::now_v7().simple().to_string();
        let spec_json = serde_json::to_string(spec).map_err(corrupt("job spec"))?;
        sqlx::query(self.db.sql(
            "INSERT INTO jobs (id, tenant_id, project_id, name, kind, spec_json, state, priority, \
             millicpus, memory_mb, gpus, attempt, max_attempts, interruptions, not_before, \
             cancel_requested, created_at, created_by, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, 0, ?, 0, ?, 0, ?, ?, ?)",
        ))
        .bind(&id)
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(&spec.name)
        .bind(spec.kind.name())
        .bind(&spec_json)
        .bind(i64::from(spec.priority))
        .bind(spec.resources.millicpus())
        .bind(i64::try_from(spec.resources.memory_mb).unwrap_or(i64::MAX))
        .bind(i64::from(spec.resources.gpus))
        .bind(i64::from(spec.max_attempts))
        .bind(now)
        .bind(now)
        .bind(created_by)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        self.get(tenant, project, &id).await
    }

    /// Returns one job of the project; `NotFound` for a job of another project or tenant.
    pub async fn get(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        id: &str,
    ) -> Result<Job, JobError> {
        let statement = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ? AND project_id = ? AND id = ?"
        );
        let row = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(project.as_str())
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        match row {
            Some(row) => job_from_row(&row),
            None => Err(JobError::NotFound {
                what: "job",
                name: id.to_owned(),
            }),
        }
    }

    /// Lists the project's jobs, newest first.
    pub async fn list(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        filter: &JobFilter,
    ) -> Result<Vec<Job>, JobError> {
        let limit = if filter.limit == 0 {
            100
        } else {
            filter.limit.min(1000)
        };
        let state_clause = if filter.state.is_some() {
            " AND state = ?"
        } else {
            ""
        };
        let statement = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = ? AND project_id = ?{state_clause} \
             ORDER BY created_at DESC, id DESC LIMIT ?"
        );
        let mut query = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .bind(project.as_str());
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Cancels a job. A queued job is cancelled at once; a running one is flagged,
    /// and its worker reads the flag at the next heartbeat and stops the attempt.
    /// Cancelling a finished job fails with `InvalidState`; cancelling twice is accepted.
    pub async fn cancel(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        id: &str,
        now: UnixMillis,
    ) -> Result<Job, JobError> {
        // One statement, so a job that moves between queued and running meanwhile (a retry
        // requeues it) is still either cancelled or flagged.
        sqlx::query(self.db.sql(
            "UPDATE jobs SET \
             state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END, \
             finished_at = CASE WHEN state = 'queued' THEN ? ELSE finished_at END, \
             cancel_requested = 1, updated_at = ? \
             WHERE tenant_id = ? AND project_id = ? AND id = ? \
             AND state IN ('queued', 'running')",
        ))
        .bind(now)
        .bind(now)
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(id)
        .execute(self.db.pool())
        .await?;
        let job = self.get(tenant, project, id).await?;
        if job.state.is_terminal() && job.state != JobState::Cancelled {
            return Err(JobError::InvalidState(format!(
                "job {id} already finished as {}; only queued and running jobs can be cancelled",
                job.state.as_str()
            )));
        }
        Ok(job)
    }

    /// Sets the tenant's quota, which the next claims enforce.
    pub async fn set_quota(
        &self,
        tenant: &TenantId,
        quota: &Quota,
        now: UnixMillis,
    ) -> Result<(), JobError> {
        let millicpus = quota.max_cpus.map(|cpus| (cpus * 1000.0).round() as i64);
        sqlx::query(self.db.sql(
            "INSERT INTO job_quotas (tenant_id, max_running_jobs, max_millicpus, max_gpus, updated_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET \
             max_running_jobs = excluded.max_running_jobs, max_millicpus = excluded.max_millicpus, \
             max_gpus = excluded.max_gpus, updated_at = excluded.updated_at",
        ))
        .bind(tenant.as_str())
        .bind(quota.max_running_jobs.map(i64::from))
        .bind(millicpus)
        .bind(quota.max_gpus.map(i64::from))
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Returns the tenant's quota; unlimited when none was set.
    pub async fn get_quota(&self, tenant: &TenantId) -> Result<Quota, JobError> {
        let row = sqlx::query(self.db.sql(
            "SELECT max_running_jobs, max_millicpus, max_gpus FROM job_quotas WHERE tenant_id = ?",
        ))
        .bind(tenant.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(match row {
            Some(row) => quota_from_row(&row)?,
            None => Quota::default(),
        })
    }

    /// Claims the highest-priority queued job that is due, of a kind the worker runs, and
    /// fits its tenant's quota. Expired leases are returned to the queue first.
    ///
    /// Safe across processes and machines: each candidate is taken by a conditional `UPDATE`
    /// on `state = 'queued'`, so of two workers racing for a job exactly one succeeds. The
    /// quota check and the update run in one transaction that holds the tenant's quota row
    /// locked (`SELECT … FOR UPDATE` on PostgreSQL, the database write lock on SQLite), so
    /// two claims cannot both use the last free slot.
    pub async fn claim(
        &self,
        request: &ClaimRequest<'_>,
        now: UnixMillis,
    ) -> Result<Option<(Job, Lease)>, JobError> {
        self.requeue_expired(now).await?;
        if request.kinds.is_empty() {
            return Ok(None);
        }

        let kind_placeholders = vec!["?"; request.kinds.len()].join(", ");
        let statement = format!(
            "SELECT id, tenant_id, project_id, millicpus, gpus FROM jobs \
             WHERE state = 'queued' AND not_before <= ? AND (gpus <= ? OR kind = 'kubernetes') \
             AND kind IN ({kind_placeholders}) \
             ORDER BY priority DESC, created_at, id LIMIT ? OFFSET ?"
        );
        // The scan pages on past candidates that cannot be taken (quota full, or another
        // worker was faster), so a tenant with many jobs over its quota does not hide the
        // jobs of other tenants behind the first page.
        for page in 0..CLAIM_PAGES {
            let mut query = sqlx::query(self.db.sql(&statement))
                .bind(now)
                .bind(i64::from(request.max_gpus));
            for kind in request.kinds {
                query = query.bind(*kind);
            }
            let candidates = query
                .bind(CLAIM_CANDIDATES)
                .bind(page * CLAIM_CANDIDATES)
                .fetch_all(self.db.pool())
                .await?;
            let last_page = (candidates.len() as i64) < CLAIM_CANDIDATES;
            for candidate in candidates {
                let id: String = candidate.try_get("id")?;
                let tenant = TenantId::from_stored(candidate.try_get::<String, _>("tenant_id")?);
                let project = ProjectId::from_stored(candidate.try_get::<String, _>("project_id")?);
                let millicpus: i64 = candidate.try_get("millicpus")?;
                let gpus: i64 = candidate.try_get("gpus")?;
                if let Some(attempt) = self
                    .try_claim(request, &id, &tenant, millicpus, gpus, now)
                    .await?
                {
                    let job = self.get(&tenant, &project, &id).await?;
                    let lease = Lease {
                        job_id: id,
                        tenant,
                        project,
                        owner: request.owner.to_owned(),
                        attempt,
                    };
                    return Ok(Some((job, lease)));
                }
            }
            if last_page {
                break;
            }
        }
        Ok(None)
    }

    /// Takes one job in a transaction after checking the tenant's quota; `None` when the
    /// quota is full or another worker took the job first.
    async fn try_claim(
        &self,
        request: &ClaimRequest<'_>,
        id: &str,
        tenant: &TenantId,
        millicpus: i64,
        gpus: i64,
        now: UnixMillis,
    ) -> Result<Option<u32>, JobError> {
        let mut tx = self.begin_write().await?;

        sqlx::query(self.db.sql(
            "INSERT INTO job_quotas (tenant_id, updated_at) VALUES (?, ?) \
             ON CONFLICT (tenant_id) DO NOTHING",
        ))
        .bind(tenant.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let lock = match self.db.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        };
        let statement = format!(
            "SELECT max_running_jobs, max_millicpus, max_gpus FROM job_quotas WHERE tenant_id = ?{lock}"
        );
        let quota_row = sqlx::query(self.db.sql(&statement))
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let quota = quota_from_row(&quota_row)?;

        let usage = sqlx::query(self.db.sql(
            "SELECT COUNT(*) AS jobs, CAST(COALESCE(SUM(millicpus), 0) AS BIGINT) AS millicpus, \
             CAST(COALESCE(SUM(gpus), 0) AS BIGINT) AS gpus \
             FROM jobs WHERE tenant_id = ? AND state = 'running'",
        ))
        .bind(tenant.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let running: i64 = usage.try_get("jobs")?;
        let used_millicpus: i64 = usage.try_get("millicpus")?;
        let used_gpus: i64 = usage.try_get("gpus")?;
        let fits = quota
            .max_running_jobs
            .is_none_or(|max| running < i64::from(max))
            && quota
                .max_cpus
                .is_none_or(|max| used_millicpus + millicpus <= (max * 1000.0).round() as i64)
            && quota
                .max_gpus
                .is_none_or(|max| used_gpus + gpus <= i64::from(max));
        if !fits {
            tx.rollback().await?;
            tracing::debug!(job = id, tenant = %tenant, "job waits for its tenant's quota");
            return Ok(None);
        }

        let row = sqlx::query(self.db.sql(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = ?, \
             lease_expires_at = ?, started_at = COALESCE(started_at, ?), updated_at = ? \
             WHERE id = ? AND tenant_id = ? AND state = 'queued' AND not_before <= ? \
             RETURNING attempt",
        ))
        .bind(request.owner)
        .bind(now + request.lease_millis)
        .bind(now)
        .bind(now)
        .bind(id)
        .bind(tenant.as_str())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let attempt: i64 = row.try_get("attempt")?;
        sqlx::query(self.db.sql(
            "INSERT INTO job_attempts (job_id, attempt, tenant_id, worker, started_at) \
             VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(id)
        .bind(attempt)
        .bind(tenant.as_str())
        .bind(request.owner)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(to_u32(attempt)))
    }

    /// Returns running jobs whose lease expired to the queue as a new attempt, after the
    /// retry backoff, or fails them when no attempts remain. Returns their ids.
    pub async fn requeue_expired(&self, now: UnixMillis) -> Result<Vec<String>, JobError> {
        let statement = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND lease_expires_at < ?"
        );
        let rows = sqlx::query(self.db.sql(&statement))
            .bind(now)
            .fetch_all(self.db.pool())
            .await?;
        let mut requeued = Vec::new();
        for row in rows {
            let job = job_from_row(&row)?;
            let lease = Lease {
                job_id: job.id.clone(),
                tenant: job.tenant.clone(),
                project: job.project.clone(),
                owner: job.lease_owner.clone().unwrap_or_default(),
                attempt: job.attempt,
            };
            let error = format!(
                "the lease of worker {} on attempt {} expired without a heartbeat; the worker \
                 stopped or lost its database connection",
                lease.owner, lease.attempt
            );
            let outcome = AttemptOutcome::Failed {
                error,
                retryable: true,
            };
            match self
                .end_attempt(&lease, &outcome, "lease_expired", Some(now), now)
                .await
            {
                Ok(job) => {
                    tracing::warn!(
                        job = %job.id,
                        tenant = %job.tenant,
                        attempt = lease.attempt,
                        state = job.state.as_str(),
                        "job lease expired"
                    );
                    requeued.push(job.id);
                }
                // Another worker handled it first, or the owner renewed the lease in time.
                Err(JobError::LeaseLost { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(requeued)
    }

    /// Extends the lease and returns whether the job was cancelled. Fails with `LeaseLost`
    /// when the worker no longer holds the lease; it must then stop the attempt without
    /// reporting a result.
    pub async fn heartbeat(
        &self,
        lease: &Lease,
        lease_millis: i64,
        now: UnixMillis,
    ) -> Result<StopRequest, JobError> {
        let row = sqlx::query(self.db.sql(
            "UPDATE jobs SET lease_expires_at = ?, updated_at = ? \
             WHERE id = ? AND tenant_id = ? AND state = 'running' AND lease_owner = ? \
             AND attempt = ? AND lease_expires_at >= ? RETURNING cancel_requested",
        ))
        .bind(now + lease_millis)
        .bind(now)
        .bind(&lease.job_id)
        .bind(lease.tenant.as_str())
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .bind(now)
        .fetch_optional(self.db.pool())
        .await?;
        match row {
            None => Err(lease_lost(lease)),
            Some(row) if row.try_get::<i64, _>("cancel_requested")? != 0 => Ok(StopRequest::Cancel),
            Some(_) => Ok(StopRequest::None),
        }
    }

    /// Records where the attempt's latest checkpoint is; `LeaseLost` without the lease.
    pub async fn save_checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &CheckpointRef,
        now: UnixMillis,
    ) -> Result<(), JobError> {
        let json = serde_json::to_string(checkpoint).map_err(corrupt("job checkpoint"))?;
        let result = sqlx::query(self.db.sql(
            "UPDATE jobs SET checkpoint_json = ?, updated_at = ? \
             WHERE id = ? AND tenant_id = ? AND state = 'running' AND lease_owner = ? AND attempt = ?",
        ))
        .bind(json)
        .bind(now)
        .bind(&lease.job_id)
        .bind(lease.tenant.as_str())
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .execute(self.db.pool())
        .await?;
        if result.rows_affected() == 0 {
            return Err(lease_lost(lease));
        }
        Ok(())
    }

    /// Ends the leased attempt with `outcome` and returns the job in its new state.
    ///
    /// A retryable failure goes back to the queue with `not_before` set by the spec's
    /// backoff while counted attempts remain, and fails the job otherwise. An interruption
    /// goes back to the queue at once. A job whose cancellation was requested ends as
    /// cancelled unless it succeeded.
    pub async fn finish(
        &self,
        lease: &Lease,
        outcome: &AttemptOutcome,
        now: UnixMillis,
    ) -> Result<Job, JobError> {
        let label = match outcome {
            AttemptOutcome::Succeeded(_) => "succeeded",
            AttemptOutcome::Failed { .. } => "failed",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Interrupted { .. } => "interrupted",
        };
        self.end_attempt(lease, outcome, label, None, now).await
    }

    /// Moves the job out of `running` for `lease`. With `expired_before`, only a lease that
    /// expired before that time is ended (the lease-expiry path).
    async fn end_attempt(
        &self,
        lease: &Lease,
        outcome: &AttemptOutcome,
        attempt_label: &str,
        expired_before: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Result<Job, JobError> {
        // A cancellation that arrives between the read and the update changes the outcome,
        // so the update checks the flag it read and the attempt is decided again on a change.
        for _ in 0..3 {
            if let Some(job) = self
                .try_end_attempt(lease, outcome, attempt_label, expired_before, now)
                .await?
            {
                return Ok(job);
            }
        }
        Err(JobError::InvalidState(format!(
            "job {} changed while attempt {} was ending; retry",
            lease.job_id, lease.attempt
        )))
    }

    async fn try_end_attempt(
        &self,
        lease: &Lease,
        outcome: &AttemptOutcome,
        attempt_label: &str,
        expired_before: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Result<Option<Job>, JobError> {
        let job = self
            .get(&lease.tenant, &lease.project, &lease.job_id)
            .await?;
        if job.state != JobState::Running
            || job.attempt != lease.attempt
            || job.lease_owner.as_deref() != Some(lease.owner.as_str())
        {
            return Err(lease_lost(lease));
        }

        let counted = job.counted_attempts();
        let mut interruptions = job.interruptions;
        let mut not_before = job.not_before;
        let mut result: Option<String> = None;
        let mut error: Option<String> = job.error.clone();
        let state = match outcome {
            AttemptOutcome::Succeeded(value) => {
                result = Some(value.to_string());
                error = None;
                JobState::Succeeded
            }
            _ if job.cancel_requested => JobState::Cancelled,
            AttemptOutcome::Cancelled => JobState::Cancelled,
            AttemptOutcome::Failed {
                error: message,
                retryable,
            } => {
                error = Some(message.clone());
                if *retryable && counted < job.spec.max_attempts {
                    not_before = now + job.spec.backoff.delay_millis(counted);
                    JobState::Queued
                } else {
                    JobState::Failed
                }
            }
            AttemptOutcome::Interrupted { reason } => {
                interruptions += 1;
                error = Some(reason.clone());
                not_before = now;
                JobState::Queued
            }
        };
        let finished_at = state.is_terminal().then_some(now);
        let attempt_error = match outcome {
            AttemptOutcome::Failed { error, .. } => Some(error.clone()),
            AttemptOutcome::Interrupted { reason } => Some(reason.clone()),
            _ => None,
        };

        let mut tx = self.begin_write().await?;
        let expiry_clause = if expired_before.is_some() {
            " AND lease_expires_at < ?"
        } else {
            ""
        };
        let statement = format!(
            "UPDATE jobs SET state = ?, interruptions = ?, not_before = ?, result_json = ?, \
             error = ?, lease_owner = NULL, lease_expires_at = NULL, finished_at = ?, updated_at = ? \
             WHERE id = ? AND tenant_id = ? AND state = 'running' AND lease_owner = ? AND attempt = ? \
             AND cancel_requested = ?{expiry_clause}"
        );
        let mut query = sqlx::query(self.db.sql(&statement))
            .bind(state.as_str())
            .bind(i64::from(interruptions))
            .bind(not_before)
            .bind(result)
            .bind(error)
            .bind(finished_at)
            .bind(now)
            .bind(&lease.job_id)
            .bind(lease.tenant.as_str())
            .bind(&lease.owner)
            .bind(i64::from(lease.attempt))
            .bind(i64::from(job.cancel_requested));
        if let Some(before) = expired_before {
            query = query.bind(before);
        }
        let updated = query.execute(&mut *tx).await?;
        if updated.rows_affected() == 0 {
            tx.rollback().await?;
            let current = self
                .get(&lease.tenant, &lease.project, &lease.job_id)
                .await?;
            let still_held = current.state == JobState::Running
                && current.attempt == lease.attempt
                && current.lease_owner.as_deref() == Some(lease.owner.as_str())
                && expired_before.is_none_or(|before| {
                    current
                        .lease_expires_at
                        .is_some_and(|expires| expires < before)
                });
            if still_held && current.cancel_requested != job.cancel_requested {
                return Ok(None);
            }
            return Err(lease_lost(lease));
        }
        sqlx::query(self.db.sql(
            "UPDATE job_attempts SET finished_at = ?, outcome = ?, error = ? \
             WHERE job_id = ? AND attempt = ?",
        ))
        .bind(now)
        .bind(attempt_label)
        .bind(attempt_error)
        .bind(&lease.job_id)
        .bind(i64::from(lease.attempt))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(
            self.get(&lease.tenant, &lease.project, &lease.job_id)
                .await?,
        ))
    }

    /// Appends log content of an attempt, split into chunks of at most 64 KiB on character
    /// boundaries. Returns the number of the last chunk stored.
    pub async fn append_log(
        &self,
        lease: &Lease,
        stream: LogStream,
        content: &str,
        now: UnixMillis,
    ) -> Result<i64, JobError> {
        let mut last = 0;
        for piece in split_chunks(content, MAX_LOG_CHUNK_BYTES) {
            last = self.insert_log_chunk(lease, stream, piece, now).await?;
        }
        Ok(last)
    }

    async fn insert_log_chunk(
        &self,
        lease: &Lease,
        stream: LogStream,
        content: &str,
        now: UnixMillis,
    ) -> Result<i64, JobError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = sqlx::query(self.db.sql(
                "INSERT INTO job_logs (job_id, seq, tenant_id, project_id, attempt, stream, created_at, content) \
                 SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ?, ? FROM job_logs WHERE job_id = ? \
                 RETURNING seq",
            ))
            .bind(&lease.job_id)
            .bind(lease.tenant.as_str())
            .bind(lease.project.as_str())
            .bind(i64::from(lease.attempt))
            .bind(stream.as_str())
            .bind(now)
            .bind(content)
            .bind(&lease.job_id)
            .fetch_one(self.db.pool())
            .await;
            match result {
                Ok(row) => return Ok(row.try_get("seq")?),
                Err(error) => {
                    let error = ghaf_meta::MetaError::Database(error);
                    if attempt >= LOG_APPEND_ATTEMPTS || !error.is_unique_violation() {
                        return Err(error.into());
                    }
                }
            }
        }
    }

    /// Returns up to `limit` log chunks of a job with `seq > after`, in order.
    pub async fn read_logs(
        &self,
        tenant: &TenantId,
        project: &ProjectId,
        id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<LogChunk>, JobError> {
        let rows = sqlx::query(self.db.sql(
            "SELECT seq, attempt, stream, created_at, content FROM job_logs \
             WHERE tenant_id = ? AND project_id = ? AND job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        ))
        .bind(tenant.as_str())
        .bind(project.as_str())
        .bind(id)
        .bind(after)
        .bind(i64::from(limit.clamp(1, 10_000)))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let stream: String = row.try_get("stream")?;
                Ok(LogChunk {
                    seq: row.try_get("seq")?,
                    attempt: to_u32(row.try_get("attempt")?),
                    stream: LogStream::parse(&stream),
                    created_at: row.try_get("created_at")?,
                    content: row.try_get("content")?,
                })
            })
            .collect()
    }
}

fn lease_lost(lease: &Lease) -> JobError {
    JobError::LeaseLost {
        job: lease.job_id.clone(),
        attempt: lease.attempt,
    }
}

fn quota_from_row(row: &AnyRow) -> Result<Quota, JobError> {
    let jobs: Option<i64> = row.try_get("max_running_jobs")?;
    let millicpus: Option<i64> = row.try_get("max_millicpus")?;
    let gpus: Option<i64> = row.try_get("max_gpus")?;
    Ok(Quota {
        max_running_jobs: jobs.map(to_u32),
        max_cpus: millicpus.map(|m| m as f64 / 1000.0),
        max_gpus: gpus.map(to_u32),
    })
}

/// Rejects a job that could never run under the quota, even with nothing else running.
fn check_fits_quota(spec: &JobSpec, quota: &Quota) -> Result<(), JobError> {
    if quota.max_running_jobs == Some(0) {
        return Err(JobError::QuotaExceeded(
            "the tenant's quota allows no running jobs; ask a tenant admin to raise \
             max_running_jobs"
                .to_owned(),
        ));
    }
    if let Some(max) = quota.max_cpus
        && spec.resources.millicpus() > (max * 1000.0).round() as i64
    {
        return Err(JobError::QuotaExceeded(format!(
            "the job requests {} CPUs but the tenant's quota is {max}; request fewer",
            spec.resources.cpus
        )));
    }
    if let Some(max) = quota.max_gpus
        && spec.resources.gpus > max
    {
        return Err(JobError::QuotaExceeded(format!(
            "the job requests {} GPUs but the tenant's quota is {max}; request fewer",
            spec.resources.gpus
        )));
    }
    Ok(())
}

/// Splits `text` into pieces of at most `max` bytes, on character boundaries.
fn split_chunks(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut end = max;
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        pieces.push(&rest[..end]);
        rest = &rest[end..];
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_chunks_keeps_characters_whole() {
        let text = "aé".repeat(10);
        let pieces = split_chunks(&text, 4);
        assert!(pieces.iter().all(|p| p.len() <= 4));
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn states_round_trip() {
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ] {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
    }
}
