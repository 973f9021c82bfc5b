//! The audited batch write on a direct SQLite connection.
//!
//! On SQLite file databases an audited batch runs in one `BEGIN IMMEDIATE` transaction of a
//! [`SqliteDirect`] connection on the calling thread: the audit entry after the chain head
//! this process has in memory, then the batch with the statements of the sqlx path. That
//! saves the two thread hand-offs per statement of sqlx's SQLite driver. The write never
//! waits for the database lock. When the lock is held elsewhere, no connection is free, or
//! the head in memory is missing or stale, it rolls back and the caller takes the sqlx path.
//!
//! NOTE: the write blocks the async runtime's thread for as long as SQLite runs, which
//! includes the automatic WAL checkpoint (with its fsync) that SQLite runs in the commit
//! that takes the WAL past 1,000 pages.

use std::sync::LazyLock;

use ghaf_core::audit::NewAuditEntry;
use ghaf_meta::rusqlite::{self, OptionalExtension, params};
use ghaf_meta::{AppendedHead, AuditLock, MetaError, SqliteDirect, TransactionalAudit};

use super::{
    LATEST_METRIC_CONFLICT, LATEST_METRIC_INSERT, PARAM_INSERT, PARAM_VALUE_QUERY, RUN_NAME_TAG,
    RUN_NAME_UPDATE, RUN_STAGE_QUERY, RUN_TAG_UPSERT, newest_per_key, require_active,
    require_same_param, stored_value,
};
use crate::{Batch, Scope, TrackingError};

/// Inserts one row of metric history; an exact repeat is kept once. Binds the tenant,
/// project, run id, key, step, timestamp, value, is_nan and model id.
const METRIC_HISTORY_INSERT: &str = "INSERT INTO tracking_metrics (tenant_id, project_id, \
    run_id, key, step, timestamp, value, is_nan, model_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
    ON CONFLICT DO NOTHING";

/// The latest-value upsert of the sqlx path for one row.
static LATEST_METRIC_UPSERT: LazyLock<String> = LazyLock::new(|| {
    format!("{LATEST_METRIC_INSERT}(?, ?, ?, ?, ?, ?, ?, ?){LATEST_METRIC_CONFLICT}")
});

/// The outcome of an audited batch on a direct connection.
pub(super) enum Written {
    /// The batch and its audit entry committed.
    Committed(AppendedHead),
    /// The batch was rejected or SQLite failed; nothing was written.
    Failed(TrackingError),
    /// Nothing was written, and the caller must write through sqlx.
    NotTaken,
}

/// The reason a direct write rolled back.
enum Abort {
    /// The audit chain's head is unknown or has changed.
    Fallback,
    Failed(TrackingError),
}

impl From<MetaError> for Abort {
    fn from(error: MetaError) -> Self {
        Abort::Failed(TrackingError::Meta(error))
    }
}

impl From<rusqlite::Error> for TrackingError {
    fn from(error: rusqlite::Error) -> Self {
        TrackingError::Meta(MetaError::Sqlite(error))
    }
}

/// Writes `batch` and appends `entry` in one transaction of `direct`, while the caller holds
/// the audit lock `lock`. A failure of the append is [`TrackingError::AuditRefused`], as on
/// the sqlx path.
pub(super) fn log_batch_audited(
    direct: &SqliteDirect,
    scope: &Scope,
    batch: &Batch<'_>,
    audit: &dyn TransactionalAudit,
    lock: &AuditLock<'_>,
    entry: &NewAuditEntry,
) -> Written {
    let written = direct.try_write(|tx| {
        // The entry goes first: when the head is unknown or stale, nothing else was written.
        let head = match audit.append_direct(lock, tx, entry) {
            Ok(Some(head)) => head,
            Ok(None) => return Err(Abort::Fallback),
            Err(source) => {
                return Err(Abort::Failed(TrackingError::AuditRefused {
                    tenant: entry.tenant.clone(),
                    source,
                }));
            }
        };
        write_batch(tx, scope, batch).map_err(Abort::Failed)?;
        Ok(head)
    });
    match written {
        Some(Ok(head)) => Written::Committed(head),
        Some(Err(Abort::Failed(error))) => Written::Failed(error),
        Some(Err(Abort::Fallback)) | None => Written::NotTaken,
    }
}

/// Writes a batch inside the transaction of `conn`, as the sqlx path's `write_batch` does:
/// params (immutable once logged), tags, the metric history and the latest value per key.
/// Fails when the run is missing or deleted.
fn write_batch(
    conn: &rusqlite::Connection,
    scope: &Scope,
    batch: &Batch<'_>,
) -> Result<(), TrackingError> {
    let tenant = scope.tenant.as_str();
    let project = scope.project.as_str();
    let run_id = batch.run_id;

    // The transaction holds the write lock, so the run cannot change before the writes.
    let run: Option<(String, i64, i64)> = conn
        .prepare_cached(RUN_STAGE_QUERY)?
        .query_row(params![tenant, project, run_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let (stage, experiment_id, start_time) = match run {
        Some((stage, experiment_id, start_time)) => (Some(stage), experiment_id, start_time),
        None => (None, 0, 0),
    };
    require_active(run_id, stage)?;

    for param in batch.params {
        let existing: Option<String> = conn
            .prepare_cached(PARAM_VALUE_QUERY)?
            .query_row(params![tenant, project, run_id, param.key], |row| {
                row.get(0)
            })
            .optional()?;
        match existing {
            Some(old) => require_same_param(run_id, param, &old)?,
            None => {
                conn.prepare_cached(PARAM_INSERT)?.execute(params![
                    tenant,
                    project,
                    run_id,
                    param.key,
                    param.value,
                    experiment_id,
                    start_time
                ])?;
            }
        }
    }

    for tag in batch.tags {
        conn.prepare_cached(RUN_TAG_UPSERT)?.execute(params![
            tenant,
            project,
            run_id,
            tag.key,
            tag.value,
            experiment_id,
            start_time
        ])?;
        if tag.key == RUN_NAME_TAG {
            conn.prepare_cached(RUN_NAME_UPDATE)?
                .execute(params![tag.value, tenant, project, run_id])?;
        }
    }

    if batch.metrics.is_empty() {
        return Ok(());
    }
    let mut history = conn.prepare_cached(METRIC_HISTORY_INSERT)?;
    for metric in batch.metrics {
        let (value, is_nan) = stored_value(metric.value);
        history.execute(params![
            tenant,
            project,
            run_id,
            metric.key,
            metric.step,
            metric.timestamp,
            value,
            is_nan,
            metric.model_id,
        ])?;
    }
    let mut latest = conn.prepare_cached(&LATEST_METRIC_UPSERT)?;
    for metric in newest_per_key(batch.metrics) {
        let (value, is_nan) = stored_value(metric.value);
        latest.execute(params![
            tenant,
            project,
            run_id,
            metric.key,
            metric.step,
            metric.timestamp,
            value,
            is_nan,
        ])?;
    }
    Ok(())
}
