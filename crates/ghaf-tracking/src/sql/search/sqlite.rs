//! The statements of a run search on a direct SQLite connection.
//!
//! Details are read as plain rows, with one statement per kind of detail and [`IN_CHUNK`]
//! runs, instead of the JSON aggregates of the pool path. So SQLite builds no JSON text,
//! Rust parses none, and metric values arrive as exact `f64`s.

use std::collections::HashMap;

use ghaf_meta::rusqlite::types::{ToSqlOutput, Value, ValueRef};
use ghaf_meta::rusqlite::{self, Connection, Row, ToSql};

use super::super::IN_CHUNK;
use super::super::query::{Bind, SqlBuilder, corrupt};
use crate::*;

impl ToSql for Bind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Bind::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Bind::Int(int) => ToSqlOutput::Owned(Value::Integer(*int)),
            Bind::Real(real) => ToSqlOutput::Owned(Value::Real(*real)),
        })
    }
}

/// Returns the first column of the single row of a `COUNT(*)` statement.
pub(super) fn count(conn: &Connection, sql: &SqlBuilder) -> Result<i64, TrackingError> {
    let mut statement = conn.prepare_cached(&sql.text)?;
    let count = statement.query_row(rusqlite::params_from_iter(&sql.binds), |row| row.get(0))?;
    Ok(count)
}

/// Runs a statement whose first column is a run id and returns the ids in row order.
pub(super) fn run_ids(conn: &Connection, sql: &SqlBuilder) -> Result<Vec<String>, TrackingError> {
    let mut statement = conn.prepare_cached(&sql.text)?;
    let mut rows = statement.query(rusqlite::params_from_iter(&sql.binds))?;
    let mut ids = Vec::new();
    while let Some(row) = rows.next()? {
        ids.push(row.get(0)?);
    }
    Ok(ids)
}

/// Runs a statement that selects [`super::RUN_COLUMNS`] and returns the runs in row order.
pub(super) fn run_infos(
    conn: &Connection,
    sql: &SqlBuilder,
) -> Result<Vec<RunInfo>, TrackingError> {
    let mut statement = conn.prepare_cached(&sql.text)?;
    let mut rows = statement.query(rusqlite::params_from_iter(&sql.binds))?;
    let mut infos = Vec::new();
    while let Some(row) = rows.next()? {
        infos.push(run_info(row)?);
    }
    Ok(infos)
}

fn run_info(row: &Row<'_>) -> Result<RunInfo, TrackingError> {
    let status = text(row, 4)?;
    let stage = text(row, 7)?;
    Ok(RunInfo {
        run_id: row.get(0)?,
        experiment_id: row.get(1)?,
        run_name: row.get(2)?,
        user_id: row.get(3)?,
        status: RunStatus::parse(status).ok_or_else(|| corrupt("run status", status))?,
        start_time: row.get(5)?,
        end_time: row.get(6)?,
        lifecycle_stage: LifecycleStage::parse(stage)
            .ok_or_else(|| corrupt("lifecycle stage", stage))?,
        artifact_uri: row.get(8)?,
    })
}

/// Borrows a text column of `row`.
fn text<'r>(row: &'r Row<'_>, index: usize) -> Result<&'r str, TrackingError> {
    Ok(row
        .get_ref(index)?
        .as_str()
        .map_err(rusqlite::Error::from)?)
}

/// Selects the run id, key and value of params. Binds the tenant and project, then the ids.
const PARAMS: &str = "SELECT run_id, key, value FROM tracking_params WHERE tenant_id = ? AND \
    project_id = ? AND run_id IN ";

/// Selects the run id, key and value of tags. Binds the tenant and project, then the ids.
const TAGS: &str = "SELECT run_id, key, value FROM tracking_run_tags WHERE tenant_id = ? AND \
    project_id = ? AND run_id IN ";

/// Selects the run id, key, value, NaN flag, timestamp and step of latest metrics. Binds the
/// tenant and project, then the ids.
const METRICS: &str = "SELECT run_id, key, value, is_nan, timestamp, step FROM \
    tracking_latest_metrics WHERE tenant_id = ? AND project_id = ? AND run_id IN ";

/// Selects the run id, model id and step of model outputs. Binds the tenant and project,
/// then the ids.
const OUTPUTS: &str = "SELECT run_id, model_id, step FROM tracking_run_outputs WHERE \
    tenant_id = ? AND project_id = ? AND run_id IN ";

/// Loads params, tags, latest metrics and outputs of `infos`, keeping their order, with each
/// list sorted by key (outputs by model id) as on the pool path.
pub(super) fn complete_runs(
    conn: &Connection,
    scope: &Scope,
    infos: Vec<RunInfo>,
) -> Result<Vec<Run>, TrackingError> {
    let mut runs: Vec<Run> = infos
        .into_iter()
        .map(|info| Run {
            info,
            metrics: Vec::new(),
            params: Vec::new(),
            tags: Vec::new(),
            outputs: Vec::new(),
        })
        .collect();
    let positions: HashMap<String, usize> = runs
        .iter()
        .enumerate()
        .map(|(position, run)| (run.info.run_id.clone(), position))
        .collect();
    let ids: Vec<&str> = runs.iter().map(|run| run.info.run_id.as_str()).collect();
    let mut statements = Vec::with_capacity(ids.len().div_ceil(IN_CHUNK) * 4);
    for chunk in ids.chunks(IN_CHUNK) {
        for kind in [PARAMS, TAGS, METRICS, OUTPUTS] {
            let mut sql = SqlBuilder::default();
            sql.push(kind)
                .text(scope.tenant.as_str())
                .text(scope.project.as_str())
                .list(chunk.iter().map(|id| Bind::Text((*id).to_owned())));
            statements.push((kind, sql));
        }
    }

    for (kind, sql) in &statements {
        let mut statement = conn.prepare_cached(&sql.text)?;
        let mut rows = statement.query(rusqlite::params_from_iter(&sql.binds))?;
        while let Some(row) = rows.next()? {
            let run_id = text(row, 0)?;
            // The statement selects only the listed ids, so every row has a run.
            let Some(&position) = positions.get(run_id) else {
                continue;
            };
            let run = &mut runs[position];
            match *kind {
                PARAMS => run.params.push(Param {
                    key: row.get(1)?,
                    value: row.get(2)?,
                }),
                TAGS => run.tags.push(Tag {
                    key: row.get(1)?,
                    value: row.get(2)?,
                }),
                METRICS => run.metrics.push(metric(row)?),
                _ => run.outputs.push(ModelOutput {
                    model_id: row.get(1)?,
                    step: row.get(2)?,
                }),
            }
        }
    }

    for run in &mut runs {
        run.params.sort_by(|a, b| a.key.cmp(&b.key));
        run.tags.sort_by(|a, b| a.key.cmp(&b.key));
        run.metrics.sort_by(|a, b| a.key.cmp(&b.key));
        run.outputs.sort_by(|a, b| a.model_id.cmp(&b.model_id));
    }
    Ok(runs)
}

/// Decodes a row of [`METRICS`]. NaN is stored as 0 with `is_nan` set, because SQLite
/// stores a NaN REAL as NULL.
fn metric(row: &Row<'_>) -> Result<Metric, TrackingError> {
    let is_nan: i64 = row.get(3)?;
    let value = if is_nan != 0 { f64::NAN } else { row.get(2)? };
    Ok(Metric {
        key: row.get(1)?,
        value,
        timestamp: row.get(4)?,
        step: row.get(5)?,
        model_id: String::new(),
    })
}
