//! [`TrackingStore`] on SQLite or PostgreSQL through one SQL implementation.

mod direct;
mod query;
mod search;

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use ghaf_core::UnixMillis;
use ghaf_core::audit::{AuditEntry, NewAuditEntry};
use ghaf_meta::{Db, Dialect, MetaError, TransactionalAudit};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::filter::{ExperimentClause, OrderBy, RegistryClause};
use crate::*;
use query::*;

/// Number of ids per `IN (…)` list when loading the details of many runs.
const IN_CHUNK: usize = 500;

/// How many times an audited batch is tried when another process appended to the same audit
/// chain at the same moment.
const AUDIT_ATTEMPTS: u32 = 8;

/// Tag whose value is also stored as the run's name.
const RUN_NAME_TAG: &str = "mlflow.runName";

// Statements of the batch write path, shared by its sqlx and direct SQLite versions.

/// Reads a run's lifecycle stage, experiment id and start time. Binds the tenant, project and
/// run id.
const RUN_STAGE_QUERY: &str = "SELECT lifecycle_stage, experiment_id, start_time FROM \
    tracking_runs WHERE tenant_id = ? AND project_id = ? AND run_id = ?";

/// Reads a param's value. Binds the tenant, project, run id and key.
const PARAM_VALUE_QUERY: &str = "SELECT value FROM tracking_params WHERE tenant_id = ? AND \
    project_id = ? AND run_id = ? AND key = ?";

/// Binds the tenant, project, run id, key, value, and the run's experiment id and start time.
const PARAM_INSERT: &str = "INSERT INTO tracking_params (tenant_id, project_id, run_id, key, \
    value, experiment_id, start_time) VALUES (?, ?, ?, ?, ?, ?, ?)";

/// Inserts or replaces a run tag. Binds the tenant, project, run id, key, value, and the
/// run's experiment id and start time, which never change. A replace writes them again, so
/// a row that a writer without them left at the default gets them back.
const RUN_TAG_UPSERT: &str = "INSERT INTO tracking_run_tags (tenant_id, project_id, run_id, \
    key, value, experiment_id, start_time) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT \
    (tenant_id, project_id, run_id, key) DO UPDATE SET value = excluded.value, \
    experiment_id = excluded.experiment_id, start_time = excluded.start_time";

/// Binds the name, then the tenant, project and run id.
const RUN_NAME_UPDATE: &str = "UPDATE tracking_runs SET run_name = ? WHERE tenant_id = ? AND \
    project_id = ? AND run_id = ?";

/// The start of the latest-value upsert, followed by one or more rows of eight values
/// (tenant, project, run id, key, step, timestamp, value, is_nan) and
/// [`LATEST_METRIC_CONFLICT`].
const LATEST_METRIC_INSERT: &str = "INSERT INTO tracking_latest_metrics (tenant_id, project_id, \
    run_id, key, step, timestamp, value, is_nan) VALUES ";

/// Replaces a stored latest value only with a newer one in MLflow's order: step, timestamp,
/// NaN below numbers, value.
const LATEST_METRIC_CONFLICT: &str = " ON CONFLICT (tenant_id, project_id, run_id, key) DO \
    UPDATE SET step = excluded.step, timestamp = excluded.timestamp, value = excluded.value, \
    is_nan = excluded.is_nan WHERE (excluded.step, excluded.timestamp, 1 - excluded.is_nan, \
    excluded.value) > (tracking_latest_metrics.step, tracking_latest_metrics.timestamp, \
    1 - tracking_latest_metrics.is_nan, tracking_latest_metrics.value)";

/// The SQL implementation of [`TrackingStore`].
pub struct SqlTrackingStore {
    db: Db,
    /// Scopes known to have their default experiment, so the check runs once per process.
    defaults: std::sync::Mutex<HashSet<Scope>>,
}

impl SqlTrackingStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            defaults: std::sync::Mutex::new(HashSet::new()),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    fn sql(&self, statement: &str) -> sqlx::AssertSqlSafe<String> {
        self.db.sql(statement)
    }

    /// Starts a write transaction; SQLite takes the write lock at once, so a read inside the
    /// transaction cannot go stale before the write.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, TrackingError> {
        Ok(match self.db.dialect() {
            Dialect::Sqlite => self.db.pool().begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.db.pool().begin().await?,
        })
    }

    async fn fetch_all(&self, sql: &SqlBuilder) -> Result<Vec<AnyRow>, TrackingError> {
        let statement = self.sql(&sql.text);
        Ok(bind_all(sqlx::query(statement), &sql.binds)
            .fetch_all(self.db.pool())
            .await?)
    }

    async fn tags_of(
        &self,
        table: &str,
        id_column: &str,
        scope: &Scope,
        ids: &[Bind],
    ) -> Result<HashMap<String, Vec<Tag>>, TrackingError> {
        let mut by_id: HashMap<String, Vec<Tag>> = HashMap::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let mut sql = SqlBuilder::default();
            sql.push(&format!(
                "SELECT {id_column}, key, value FROM {table} WHERE tenant_id = ? AND \
                 project_id = ? AND {id_column} IN "
            ))
            .text(scope.tenant.as_str())
            .text(scope.project.as_str())
            .list(chunk.iter().cloned())
            // Ordering by the primary key keeps the lookup on it; `ORDER BY key` alone makes
            // SQLite scan the project's whole (key, value) index instead.
            .push(&format!(" ORDER BY {id_column}, key"));
            for row in self.fetch_all(&sql).await? {
                let id = match row.try_get::<String, _>(0) {
                    Ok(text) => text,
                    Err(_) => row.try_get::<i64, _>(0)?.to_string(),
                };
                by_id.entry(id).or_default().push(Tag {
                    key: row.try_get("key")?,
                    value: row.try_get("value")?,
                });
            }
        }
        Ok(by_id)
    }

    async fn run_info(&self, scope: &Scope, run_id: &str) -> Result<RunInfo, TrackingError> {
        let row = sqlx::query(self.sql(&format!(
            "SELECT {RUN_COLUMNS} FROM tracking_runs r WHERE r.tenant_id = ? AND \
             r.project_id = ? AND r.run_id = ?"
        )))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(run_id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| TrackingError::not_found("run", run_id))?;
        run_info_from_row(&row)
    }

    async fn complete_versions(
        &self,
        scope: &Scope,
        mut versions: Vec<ModelVersion>,
    ) -> Result<Vec<ModelVersion>, TrackingError> {
        let names: Vec<Bind> = versions
            .iter()
            .map(|v| v.name.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .map(Bind::Text)
            .collect();
        if names.is_empty() {
            return Ok(versions);
        }
        let mut tags: HashMap<(String, i64), Vec<Tag>> = HashMap::new();
        let mut aliases: HashMap<(String, i64), Vec<String>> = HashMap::new();
        for chunk in names.chunks(IN_CHUNK) {
            let mut sql = SqlBuilder::default();
            sql.push(
                "SELECT name, version, key, value FROM registry_version_tags WHERE tenant_id = ? \
                 AND project_id = ? AND name IN ",
            )
            .text(scope.tenant.as_str())
            .text(scope.project.as_str())
            .list(chunk.iter().cloned())
            .push(" ORDER BY name, version, key");
            for row in self.fetch_all(&sql).await? {
                tags.entry((row.try_get("name")?, row.try_get("version")?))
                    .or_default()
                    .push(Tag {
                        key: row.try_get("key")?,
                        value: row.try_get("value")?,
                    });
            }
            let mut sql = SqlBuilder::default();
            sql.push(
                "SELECT name, version, alias FROM registry_aliases WHERE tenant_id = ? AND \
                 project_id = ? AND name IN ",
            )
            .text(scope.tenant.as_str())
            .text(scope.project.as_str())
            .list(chunk.iter().cloned())
            .push(" ORDER BY name, alias");
            for row in self.fetch_all(&sql).await? {
                aliases
                    .entry((row.try_get("name")?, row.try_get("version")?))
                    .or_default()
                    .push(row.try_get("alias")?);
            }
        }
        for version in &mut versions {
            let key = (version.name.clone(), version.version);
            version.tags = tags.remove(&key).unwrap_or_default();
            version.aliases = aliases.remove(&key).unwrap_or_default();
        }
        Ok(versions)
    }

    async fn complete_models(
        &self,
        scope: &Scope,
        mut models: Vec<RegisteredModel>,
    ) -> Result<Vec<RegisteredModel>, TrackingError> {
        let names: Vec<Bind> = models.iter().map(|m| Bind::Text(m.name.clone())).collect();
        if names.is_empty() {
            return Ok(models);
        }
        let tags = self
            .tags_of("registry_model_tags", "name", scope, &names)
            .await?;
        let mut aliases: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        let mut latest: HashMap<String, BTreeMap<&'static str, ModelVersion>> = HashMap::new();
        for chunk in names.chunks(IN_CHUNK) {
            let mut sql = SqlBuilder::default();
            sql.push(
                "SELECT name, alias, version FROM registry_aliases WHERE tenant_id = ? AND \
                 project_id = ? AND name IN ",
            )
            .text(scope.tenant.as_str())
            .text(scope.project.as_str())
            .list(chunk.iter().cloned())
            .push(" ORDER BY name, alias");
            for row in self.fetch_all(&sql).await? {
                aliases
                    .entry(row.try_get("name")?)
                    .or_default()
                    .push((row.try_get("alias")?, row.try_get("version")?));
            }
            let mut sql = SqlBuilder::default();
            sql.push(&format!(
                "SELECT {VERSION_COLUMNS} FROM registry_versions v WHERE v.tenant_id = ? AND \
                 v.project_id = ? AND v.version = (SELECT MAX(w.version) FROM registry_versions w \
                 WHERE w.tenant_id = v.tenant_id AND w.project_id = v.project_id AND \
                 w.name = v.name AND w.current_stage = v.current_stage) AND v.name IN "
            ))
            .text(scope.tenant.as_str())
            .text(scope.project.as_str())
            .list(chunk.iter().cloned());
            for row in self.fetch_all(&sql).await? {
                let version = version_from_row(&row)?;
                latest
                    .entry(version.name.clone())
                    .or_default()
                    .insert(version.current_stage.as_str(), version);
            }
        }
        for model in &mut models {
            model.tags = tags.get(&model.name).cloned().unwrap_or_default();
            model.aliases = aliases.remove(&model.name).unwrap_or_default();
            let versions: Vec<ModelVersion> = latest
                .remove(&model.name)
                .map(|by_stage| by_stage.into_values().collect())
                .unwrap_or_default();
            model.latest_versions = self.complete_versions(scope, versions).await?;
        }
        Ok(models)
    }

    async fn touch_model(
        &self,
        tx: &mut Transaction<'static, Any>,
        scope: &Scope,
        name: &str,
    ) -> Result<(), TrackingError> {
        let updated = sqlx::query(self.sql(
            "UPDATE registry_models SET last_updated_time = ? WHERE tenant_id = ? AND \
             project_id = ? AND name = ?",
        ))
        .bind(ghaf_core::now_millis())
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .execute(&mut **tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(TrackingError::not_found("registered model", name));
        }
        Ok(())
    }

    async fn require_version(
        &self,
        tx: &mut Transaction<'static, Any>,
        scope: &Scope,
        name: &str,
        version: i64,
    ) -> Result<(), TrackingError> {
        let found = sqlx::query(self.sql(
            "SELECT 1 FROM registry_versions WHERE tenant_id = ? AND project_id = ? AND name = ? \
             AND version = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .bind(version)
        .fetch_optional(&mut **tx)
        .await?;
        if found.is_none() {
            return Err(TrackingError::not_found(
                "model version",
                format!("{name} version {version}"),
            ));
        }
        Ok(())
    }

    /// Fails unless the run exists and is active; returns its experiment and start time.
    async fn require_active_run(
        &self,
        tx: &mut Transaction<'static, Any>,
        scope: &Scope,
        run_id: &str,
    ) -> Result<RunPlace, TrackingError> {
        let row = sqlx::query(self.sql(RUN_STAGE_QUERY))
            .bind(scope.tenant.as_str())
            .bind(scope.project.as_str())
            .bind(run_id)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            return Err(TrackingError::not_found("run", run_id));
        };
        require_active(run_id, Some(row.try_get(0)?))?;
        Ok(RunPlace {
            experiment_id: row.try_get(1)?,
            start_time: row.try_get(2)?,
        })
    }

    /// Inserts or replaces the tag `key` of the run `run_id`, which is at `place`.
    async fn upsert_run_tag(
        &self,
        tx: &mut Transaction<'static, Any>,
        scope: &Scope,
        run_id: &str,
        place: RunPlace,
        key: &str,
        value: &str,
    ) -> Result<(), TrackingError> {
        sqlx::query(self.sql(RUN_TAG_UPSERT))
            .bind(scope.tenant.as_str())
            .bind(scope.project.as_str())
            .bind(run_id)
            .bind(key)
            .bind(value)
            .bind(place.experiment_id)
            .bind(place.start_time)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Writes a batch inside `tx`: params (immutable once logged), tags, the metric history
    /// and the latest value per key. Fails when the run is missing or deleted.
    async fn write_batch(
        &self,
        tx: &mut Transaction<'static, Any>,
        scope: &Scope,
        run_id: &str,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> Result<(), TrackingError> {
        // A batch of metrics alone checks the run in its history insert, which saves a
        // statement on every `log_metric`; anything else checks it first.
        let metrics_only = !metrics.is_empty() && params.is_empty() && tags.is_empty();
        let place = if metrics_only {
            None
        } else {
            Some(self.require_active_run(tx, scope, run_id).await?)
        };

        for param in params {
            let existing: Option<String> = sqlx::query_scalar(self.sql(PARAM_VALUE_QUERY))
                .bind(scope.tenant.as_str())
                .bind(scope.project.as_str())
                .bind(run_id)
                .bind(&param.key)
                .fetch_optional(&mut **tx)
                .await?;
            match existing {
                Some(old) => require_same_param(run_id, param, &old)?,
                None => {
                    let place = place.ok_or_else(|| missing_place(run_id))?;
                    sqlx::query(self.sql(PARAM_INSERT))
                        .bind(scope.tenant.as_str())
                        .bind(scope.project.as_str())
                        .bind(run_id)
                        .bind(&param.key)
                        .bind(&param.value)
                        .bind(place.experiment_id)
                        .bind(place.start_time)
                        .execute(&mut **tx)
                        .await?;
                }
            }
        }

        for tag in tags {
            let place = place.ok_or_else(|| missing_place(run_id))?;
            self.upsert_run_tag(tx, scope, run_id, place, &tag.key, &tag.value)
                .await?;
            if tag.key == RUN_NAME_TAG {
                sqlx::query(self.sql(RUN_NAME_UPDATE))
                    .bind(&tag.value)
                    .bind(scope.tenant.as_str())
                    .bind(scope.project.as_str())
                    .bind(run_id)
                    .execute(&mut **tx)
                    .await?;
            }
        }

        // History: one multi-row insert per chunk, which writes only while the run is active;
        // exact repeats are kept once.
        let mut inserted = 0;
        for chunk in metrics.chunks(200) {
            let mut sql = SqlBuilder::default();
            sql.push(
                "INSERT INTO tracking_metrics (tenant_id, project_id, run_id, key, step, \
                 timestamp, value, is_nan, model_id) SELECT * FROM (VALUES ",
            );
            for (index, metric) in chunk.iter().enumerate() {
                if index > 0 {
                    sql.push(", ");
                }
                let (value, is_nan) = stored_value(metric.value);
                sql.list([
                    Bind::Text(scope.tenant.to_string()),
                    Bind::Text(scope.project.to_string()),
                    Bind::Text(run_id.to_owned()),
                    Bind::Text(metric.key.clone()),
                    Bind::Int(metric.step),
                    Bind::Int(metric.timestamp),
                    Bind::Real(value),
                    Bind::Int(is_nan),
                    Bind::Text(metric.model_id.clone()),
                ]);
            }
            sql.push(
                ") AS v WHERE EXISTS (SELECT 1 FROM tracking_runs WHERE tenant_id = ? AND \
                 project_id = ? AND run_id = ? AND lifecycle_stage = 'active') \
                 ON CONFLICT DO NOTHING",
            )
            .text(scope.tenant.as_str())
            .text(scope.project.as_str())
            .text(run_id);
            inserted += bind_all(sqlx::query(self.sql(&sql.text)), &sql.binds)
                .execute(&mut **tx)
                .await?
                .rows_affected();
        }
        if metrics_only && inserted == 0 {
            // Either the run is missing or deleted, or every value was logged before.
            self.require_active_run(tx, scope, run_id).await?;
        }

        // Latest values: the newest of the batch per key replaces the stored one only when
        // it is newer in MLflow's order (step, timestamp, NaN below numbers, value), which
        // the upsert's condition compares in the database.
        let newest = newest_per_key(metrics);
        for chunk in newest.chunks(200) {
            let mut sql = SqlBuilder::default();
            sql.push(LATEST_METRIC_INSERT);
            for (index, metric) in chunk.iter().enumerate() {
                if index > 0 {
                    sql.push(", ");
                }
                let (value, is_nan) = stored_value(metric.value);
                sql.list([
                    Bind::Text(scope.tenant.to_string()),
                    Bind::Text(scope.project.to_string()),
                    Bind::Text(run_id.to_owned()),
                    Bind::Text(metric.key.clone()),
                    Bind::Int(metric.step),
                    Bind::Int(metric.timestamp),
                    Bind::Real(value),
                    Bind::Int(is_nan),
                ]);
            }
            sql.push(LATEST_METRIC_CONFLICT);
            bind_all(sqlx::query(self.sql(&sql.text)), &sql.binds)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Inserts or replaces a key-value row of `table`, identified by tenant, project, the
    /// `key_columns` and `key`.
    #[allow(clippy::too_many_arguments)]
    async fn upsert_kv(
        &self,
        tx: &mut Transaction<'static, Any>,
        scope: &Scope,
        table: &str,
        key_columns: &[&str],
        key_values: Vec<Bind>,
        key: &str,
        value: &str,
    ) -> Result<(), TrackingError> {
        let columns = key_columns.join(", ");
        let placeholders = vec!["?"; key_columns.len()].join(", ");
        let statement = format!(
            "INSERT INTO {table} (tenant_id, project_id, {columns}, key, value) VALUES \
             (?, ?, {placeholders}, ?, ?) ON CONFLICT (tenant_id, project_id, {columns}, key) \
             DO UPDATE SET value = excluded.value"
        );
        let mut binds = vec![
            Bind::Text(scope.tenant.to_string()),
            Bind::Text(scope.project.to_string()),
        ];
        binds.extend(key_values);
        binds.push(Bind::Text(key.to_owned()));
        binds.push(Bind::Text(value.to_owned()));
        bind_all(sqlx::query(self.sql(&statement)), &binds)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Returns the artifact location of a new experiment: the MLflow proxy URI of its id.
fn default_artifact_location(id: i64) -> String {
    format!("mlflow-artifacts:/{id}")
}

/// Orders metric values as MLflow picks the latest one: by step, then timestamp, then
/// value, with NaN below every number.
fn metric_order(metric: &Metric) -> (i64, i64, bool, f64) {
    let nan = metric.value.is_nan();
    (
        metric.step,
        metric.timestamp,
        !nan,
        if nan { 0.0 } else { metric.value },
    )
}

fn newer(candidate: &Metric, current: &Metric) -> bool {
    metric_order(candidate)
        .partial_cmp(&metric_order(current))
        .is_some_and(|ordering| ordering == std::cmp::Ordering::Greater)
}

fn stored_value(value: f64) -> (f64, i64) {
    if value.is_nan() { (0.0, 1) } else { (value, 0) }
}

/// Returns the newest metric of each key in MLflow's order, ordered by key.
fn newest_per_key(metrics: &[Metric]) -> Vec<&Metric> {
    let mut newest: BTreeMap<&str, &Metric> = BTreeMap::new();
    for metric in metrics {
        match newest.get(metric.key.as_str()) {
            Some(current) if !newer(metric, current) => {}
            _ => {
                newest.insert(metric.key.as_str(), metric);
            }
        }
    }
    newest.into_values().collect()
}

/// The place of a run in its project's search indexes: its experiment and start time, which
/// param and tag rows repeat.
#[derive(Clone, Copy, Debug)]
struct RunPlace {
    experiment_id: i64,
    start_time: i64,
}

impl RunPlace {
    fn of(info: &RunInfo) -> Self {
        Self {
            experiment_id: info.experiment_id,
            start_time: info.start_time,
        }
    }
}

/// Returns the error of a batch write that reached a param or tag without having read its
/// run, which `write_batch` never does.
fn missing_place(run_id: &str) -> TrackingError {
    TrackingError::InvalidState(format!(
        "the batch for run {run_id} writes params or tags without having read the run"
    ))
}

/// Fails unless `stage`, the stored lifecycle stage of run `run_id`, is present and active.
fn require_active(run_id: &str, stage: Option<String>) -> Result<(), TrackingError> {
    let stage = stage.ok_or_else(|| TrackingError::not_found("run", run_id))?;
    let parsed = LifecycleStage::parse(&stage).ok_or_else(|| corrupt("lifecycle stage", &stage))?;
    if parsed != LifecycleStage::Active {
        return Err(TrackingError::InvalidState(format!(
            "run {run_id} is deleted; restore it before logging to it"
        )));
    }
    Ok(())
}

/// Fails when `param` would change the value `old` that run `run_id` already has.
fn require_same_param(run_id: &str, param: &Param, old: &str) -> Result<(), TrackingError> {
    if old == param.value {
        return Ok(());
    }
    Err(TrackingError::invalid(
        "params",
        format!(
            "param {:?} of run {run_id} already has the value {old:?}; \
             params are immutable, so log {:?} under another key",
            param.key, param.value
        ),
    ))
}

fn page<T>(mut items: Vec<T>, max_results: u32, offset: u64) -> Page<T> {
    let max = max_results as usize;
    let next_offset = (items.len() > max).then(|| offset + max as u64);
    items.truncate(max);
    Page { items, next_offset }
}

fn unique_to_exists(what: &'static str, name: &str) -> impl FnOnce(sqlx::Error) -> TrackingError {
    let name = name.to_owned();
    move |error| {
        let meta = ghaf_meta::MetaError::Database(error);
        if meta.is_unique_violation() {
            TrackingError::AlreadyExists { what, name }
        } else {
            TrackingError::Meta(meta)
        }
    }
}

#[async_trait]
impl TrackingStore for SqlTrackingStore {
    async fn ensure_default_experiment(&self, scope: &Scope) -> Result<(), TrackingError> {
        if self
            .defaults
            .lock()
            .map(|known| known.contains(scope))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let now = ghaf_core::now_millis();
        sqlx::query(self.sql(
            "INSERT INTO tracking_experiments (tenant_id, project_id, experiment_id, name, \
             artifact_location, lifecycle_stage, creation_time, last_update_time) \
             VALUES (?, ?, ?, ?, ?, 'active', ?, ?) ON CONFLICT DO NOTHING",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(DEFAULT_EXPERIMENT_ID)
        .bind(DEFAULT_EXPERIMENT_NAME)
        .bind(default_artifact_location(DEFAULT_EXPERIMENT_ID))
        .bind(now)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        if let Ok(mut known) = self.defaults.lock() {
            known.insert(scope.clone());
        }
        Ok(())
    }

    async fn create_experiment(
        &self,
        scope: &Scope,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[Tag],
    ) -> Result<Experiment, TrackingError> {
        self.ensure_default_experiment(scope).await?;
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query(self.sql(
            "SELECT 1 FROM tracking_experiments WHERE tenant_id = ? AND project_id = ? AND name = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(TrackingError::AlreadyExists {
                what: "experiment",
                name: name.to_owned(),
            });
        }
        let next: i64 = sqlx::query(self.sql(
            "SELECT COALESCE(MAX(experiment_id), 0) + 1 FROM tracking_experiments \
             WHERE tenant_id = ? AND project_id = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let location = artifact_location
            .map(str::to_owned)
            .unwrap_or_else(|| default_artifact_location(next));
        let now = ghaf_core::now_millis();
        sqlx::query(self.sql(
            "INSERT INTO tracking_experiments (tenant_id, project_id, experiment_id, name, \
             artifact_location, lifecycle_stage, creation_time, last_update_time) \
             VALUES (?, ?, ?, ?, ?, 'active', ?, ?)",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(next)
        .bind(name)
        .bind(&location)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unique_to_exists("experiment", name))?;
        for tag in tags {
            self.upsert_kv(
                &mut tx,
                scope,
                "tracking_experiment_tags",
                &["experiment_id"],
                vec![Bind::Int(next)],
                &tag.key,
                &tag.value,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Experiment {
            experiment_id: next,
            name: name.to_owned(),
            artifact_location: location,
            lifecycle_stage: LifecycleStage::Active,
            creation_time: now,
            last_update_time: now,
            tags: tags.to_vec(),
        })
    }

    async fn get_experiment(&self, scope: &Scope, id: i64) -> Result<Experiment, TrackingError> {
        if id == DEFAULT_EXPERIMENT_ID {
            self.ensure_default_experiment(scope).await?;
        }
        let row = sqlx::query(self.sql(
            "SELECT * FROM tracking_experiments WHERE tenant_id = ? AND project_id = ? AND \
             experiment_id = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| TrackingError::not_found("experiment", id.to_string()))?;
        let mut experiment = experiment_from_row(&row)?;
        experiment.tags = self
            .tags_of(
                "tracking_experiment_tags",
                "experiment_id",
                scope,
                &[Bind::Int(id)],
            )
            .await?
            .remove(&id.to_string())
            .unwrap_or_default();
        Ok(experiment)
    }

    async fn get_experiment_by_name(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<Experiment, TrackingError> {
        self.ensure_default_experiment(scope).await?;
        let row = sqlx::query(self.sql(
            "SELECT experiment_id FROM tracking_experiments WHERE tenant_id = ? AND \
             project_id = ? AND name = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| TrackingError::not_found("experiment", name))?;
        self.get_experiment(scope, row.try_get(0)?).await
    }

    async fn search_experiments(
        &self,
        scope: &Scope,
        view: ViewType,
        filter: &[ExperimentClause],
        order_by: &[OrderBy<&'static str>],
        max_results: u32,
        offset: u64,
    ) -> Result<Page<Experiment>, TrackingError> {
        self.ensure_default_experiment(scope).await?;
        let mut sql = SqlBuilder::default();
        sql.push("SELECT * FROM tracking_experiments e WHERE e.tenant_id = ? AND e.project_id = ?")
            .text(scope.tenant.as_str())
            .text(scope.project.as_str())
            .push(" AND e.lifecycle_stage IN ")
            .list(view.stages().iter().map(|s| Bind::Text((*s).to_owned())));
        for clause in filter {
            experiment_clause(&mut sql, self.db.dialect(), scope, clause);
        }
        column_order(&mut sql, "e", order_by, "e.experiment_id ASC");
        sql.page(max_results, offset);
        let rows = self.fetch_all(&sql).await?;
        let mut experiments = rows
            .iter()
            .map(experiment_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<Bind> = experiments
            .iter()
            .map(|e| Bind::Int(e.experiment_id))
            .collect();
        let mut tags = self
            .tags_of("tracking_experiment_tags", "experiment_id", scope, &ids)
            .await?;
        for experiment in &mut experiments {
            experiment.tags = tags
                .remove(&experiment.experiment_id.to_string())
                .unwrap_or_default();
        }
        Ok(page(experiments, max_results, offset))
    }

    async fn rename_experiment(
        &self,
        scope: &Scope,
        id: i64,
        name: &str,
    ) -> Result<(), TrackingError> {
        let updated = sqlx::query(self.sql(
            "UPDATE tracking_experiments SET name = ?, last_update_time = ? WHERE tenant_id = ? \
             AND project_id = ? AND experiment_id = ?",
        ))
        .bind(name)
        .bind(ghaf_core::now_millis())
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(id)
        .execute(self.db.pool())
        .await
        .map_err(unique_to_exists("experiment", name))?;
        if updated.rows_affected() == 0 {
            return Err(TrackingError::not_found("experiment", id.to_string()));
        }
        Ok(())
    }

    async fn set_experiment_stage(
        &self,
        scope: &Scope,
        id: i64,
        stage: LifecycleStage,
    ) -> Result<(), TrackingError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(self.sql(
            "UPDATE tracking_experiments SET lifecycle_stage = ?, last_update_time = ? WHERE \
             tenant_id = ? AND project_id = ? AND experiment_id = ?",
        ))
        .bind(stage.as_str())
        .bind(ghaf_core::now_millis())
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(TrackingError::not_found("experiment", id.to_string()));
        }
        sqlx::query(self.sql(
            "UPDATE tracking_runs SET lifecycle_stage = ? WHERE tenant_id = ? AND project_id = ? \
             AND experiment_id = ?",
        ))
        .bind(stage.as_str())
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_experiment_tag(
        &self,
        scope: &Scope,
        id: i64,
        tag: &Tag,
    ) -> Result<(), TrackingError> {
        self.get_experiment(scope, id).await?;
        let mut tx = self.begin_write().await?;
        self.upsert_kv(
            &mut tx,
            scope,
            "tracking_experiment_tags",
            &["experiment_id"],
            vec![Bind::Int(id)],
            &tag.key,
            &tag.value,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_run(&self, scope: &Scope, run: &NewRun) -> Result<Run, TrackingError> {
        let experiment = self.get_experiment(scope, run.experiment_id).await?;
        if experiment.lifecycle_stage != LifecycleStage::Active {
            return Err(TrackingError::InvalidState(format!(
                "experiment {} is deleted; restore it before creating runs in it",
                run.experiment_id
            )));
        }
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let run_name = run
            .run_name
            .clone()
            .filter(|name| !name.is_empty())
            .or_else(|| {
                run.tags
                    .iter()
                    .find(|t| t.key == "mlflow.runName")
                    .map(|t| t.value.clone())
            })
            .unwrap_or_else(|| format!("run-{}", &run_id[..8]));
        let info = RunInfo {
            artifact_uri: format!("{}/{run_id}/artifacts", experiment.artifact_location),
            run_id,
            experiment_id: run.experiment_id,
            run_name,
            user_id: run.user_id.clone(),
            status: RunStatus::Running,
            start_time: run.start_time.unwrap_or_else(ghaf_core::now_millis),
            end_time: None,
            lifecycle_stage: LifecycleStage::Active,
        };
        let mut tags = run.tags.clone();
        if !tags.iter().any(|t| t.key == "mlflow.runName") {
            tags.push(Tag {
                key: "mlflow.runName".into(),
                value: info.run_name.clone(),
            });
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(self.sql(
            "INSERT INTO tracking_runs (tenant_id, project_id, run_id, experiment_id, run_name, \
             user_id, status, start_time, end_time, lifecycle_stage, artifact_uri) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 'active', ?)",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(&info.run_id)
        .bind(info.experiment_id)
        .bind(&info.run_name)
        .bind(&info.user_id)
        .bind(info.status.as_str())
        .bind(info.start_time)
        .bind(&info.artifact_uri)
        .execute(&mut *tx)
        .await?;
        let place = RunPlace::of(&info);
        for tag in &tags {
            self.upsert_run_tag(&mut tx, scope, &info.run_id, place, &tag.key, &tag.value)
                .await?;
        }
        tx.commit().await?;
        tags.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Run {
            info,
            metrics: Vec::new(),
            params: Vec::new(),
            tags,
            outputs: Vec::new(),
        })
    }

    async fn get_run(&self, scope: &Scope, run_id: &str) -> Result<Run, TrackingError> {
        let info = self.run_info(scope, run_id).await?;
        let mut runs = self.complete_runs(scope, vec![info]).await?;
        runs.pop()
            .ok_or_else(|| TrackingError::not_found("run", run_id))
    }

    async fn update_run(
        &self,
        scope: &Scope,
        run_id: &str,
        update: &RunUpdate,
    ) -> Result<RunInfo, TrackingError> {
        let mut tx = self.begin_write().await?;
        let mut info = {
            let row = sqlx::query(self.sql(&format!(
                "SELECT {RUN_COLUMNS} FROM tracking_runs r WHERE r.tenant_id = ? AND \
                 r.project_id = ? AND r.run_id = ?"
            )))
            .bind(scope.tenant.as_str())
            .bind(scope.project.as_str())
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| TrackingError::not_found("run", run_id))?;
            run_info_from_row(&row)?
        };
        if let Some(status) = update.status {
            info.status = status;
        }
        if let Some(end_time) = update.end_time {
            info.end_time = Some(end_time);
        }
        if let Some(name) = update.run_name.as_ref().filter(|n| !n.is_empty()) {
            info.run_name = name.clone();
            let place = RunPlace::of(&info);
            self.upsert_run_tag(&mut tx, scope, run_id, place, "mlflow.runName", name)
                .await?;
        }
        sqlx::query(self.sql(
            "UPDATE tracking_runs SET status = ?, end_time = ?, run_name = ? WHERE tenant_id = ? \
             AND project_id = ? AND run_id = ?",
        ))
        .bind(info.status.as_str())
        .bind(info.end_time)
        .bind(&info.run_name)
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(info)
    }

    async fn set_run_stage(
        &self,
        scope: &Scope,
        run_id: &str,
        stage: LifecycleStage,
    ) -> Result<(), TrackingError> {
        let updated = sqlx::query(self.sql(
            "UPDATE tracking_runs SET lifecycle_stage = ? WHERE tenant_id = ? AND project_id = ? \
             AND run_id = ?",
        ))
        .bind(stage.as_str())
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(run_id)
        .execute(self.db.pool())
        .await?;
        if updated.rows_affected() == 0 {
            return Err(TrackingError::not_found("run", run_id));
        }
        Ok(())
    }

    async fn log_batch(
        &self,
        scope: &Scope,
        run_id: &str,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> Result<(), TrackingError> {
        let mut tx = self.begin_write().await?;
        self.write_batch(&mut tx, scope, run_id, metrics, params, tags)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn log_batch_audited(
        &self,
        scope: &Scope,
        batch: &Batch<'_>,
        audit: &dyn TransactionalAudit,
        entry: &NewAuditEntry,
    ) -> Result<AuditEntry, TrackingError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let lock = audit.lock().await;
            if attempt == 1
                && let Some(direct) = self.db.sqlite_direct()
            {
                match direct::log_batch_audited(direct, scope, batch, audit, &lock, entry) {
                    direct::Written::Committed(head) => {
                        let stored = head.entry.clone();
                        audit.committed(head);
                        return Ok(stored);
                    }
                    direct::Written::Failed(error) => return Err(error),
                    // The sqlx path below waits for the write lock, and reads and checks the
                    // chain head when the known one is missing or stale.
                    direct::Written::NotTaken => {}
                }
            }
            let mut tx = self.begin_write().await?;
            self.write_batch(
                &mut tx,
                scope,
                batch.run_id,
                batch.metrics,
                batch.params,
                batch.tags,
            )
            .await?;
            match audit.append_in(&lock, &mut tx, entry).await {
                Ok(head) => {
                    tx.commit().await?;
                    let stored = head.entry.clone();
                    audit.committed(head);
                    return Ok(stored);
                }
                Err(error)
                    if attempt < AUDIT_ATTEMPTS
                        && (matches!(error, MetaError::Conflict { .. })
                            || error.is_unique_violation()) =>
                {
                    // Dropping the transaction rolls the batch back before the next attempt.
                    tracing::debug!(tenant = %entry.tenant, run_id = batch.run_id, attempt, "audited batch raced another audit append, retrying");
                }
                Err(error) => {
                    return Err(TrackingError::AuditRefused {
                        tenant: entry.tenant.clone(),
                        source: error,
                    });
                }
            }
        }
    }

    async fn delete_run_tag(
        &self,
        scope: &Scope,
        run_id: &str,
        key: &str,
    ) -> Result<(), TrackingError> {
        self.run_info(scope, run_id).await?;
        let deleted = sqlx::query(self.sql(
            "DELETE FROM tracking_run_tags WHERE tenant_id = ? AND project_id = ? AND run_id = ? \
             AND key = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(run_id)
        .bind(key)
        .execute(self.db.pool())
        .await?;
        if deleted.rows_affected() == 0 {
            return Err(TrackingError::not_found("tag", key));
        }
        Ok(())
    }

    async fn metric_history(
        &self,
        scope: &Scope,
        run_id: &str,
        key: &str,
        max_results: u32,
        offset: u64,
    ) -> Result<Page<Metric>, TrackingError> {
        self.run_info(scope, run_id).await?;
        let rows = sqlx::query(self.sql(
            "SELECT key, value, is_nan, timestamp, step, model_id FROM tracking_metrics WHERE \
             tenant_id = ? AND project_id = ? AND run_id = ? AND key = ? \
             ORDER BY step, timestamp, is_nan DESC, value LIMIT ? OFFSET ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(run_id)
        .bind(key)
        .bind(i64::from(max_results) + 1)
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?;
        let metrics = rows
            .iter()
            .map(|row| {
                Ok(Metric {
                    key: row.try_get("key")?,
                    value: metric_value(row)?,
                    timestamp: row.try_get("timestamp")?,
                    step: row.try_get("step")?,
                    model_id: row.try_get("model_id")?,
                })
            })
            .collect::<Result<Vec<_>, TrackingError>>()?;
        Ok(page(metrics, max_results, offset))
    }

    async fn search_runs(
        &self,
        scope: &Scope,
        query: &RunQuery,
    ) -> Result<Page<Run>, TrackingError> {
        if query.experiment_ids.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_offset: None,
            });
        }
        self.search(scope, query).await
    }

    async fn log_outputs(
        &self,
        scope: &Scope,
        run_id: &str,
        outputs: &[ModelOutput],
    ) -> Result<(), TrackingError> {
        self.run_info(scope, run_id).await?;
        let mut tx = self.begin_write().await?;
        for output in outputs {
            sqlx::query(self.sql(
                "INSERT INTO tracking_run_outputs (tenant_id, project_id, run_id, model_id, step) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, project_id, run_id, model_id) \
                 DO UPDATE SET step = excluded.step",
            ))
            .bind(scope.tenant.as_str())
            .bind(scope.project.as_str())
            .bind(run_id)
            .bind(&output.model_id)
            .bind(output.step)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_logged_model(
        &self,
        scope: &Scope,
        model: &NewLoggedModel,
    ) -> Result<LoggedModel, TrackingError> {
        let experiment = self.get_experiment(scope, model.experiment_id).await?;
        if !model.source_run_id.is_empty() {
            self.run_info(scope, &model.source_run_id).await?;
        }
        let model_id = format!("m-{}", uuid::Uuid::new_v4().simple());
        let now = ghaf_core::now_millis();
        let name = if model.name.is_empty() {
            format!("model-{}", &model_id[2..10])
        } else {
            model.name.clone()
        };
        let logged = LoggedModel {
            artifact_uri: format!(
                "{}/models/{model_id}/artifacts",
                experiment.artifact_location
            ),
            model_id,
            experiment_id: model.experiment_id,
            name,
            model_type: model.model_type.clone(),
            source_run_id: model.source_run_id.clone(),
            status: LoggedModelStatus::Pending,
            creation_time: now,
            last_updated_time: now,
            tags: model.tags.clone(),
            params: model.params.clone(),
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(self.sql(&format!(
            "INSERT INTO tracking_logged_models (tenant_id, project_id, {LOGGED_MODEL_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(&logged.model_id)
        .bind(logged.experiment_id)
        .bind(&logged.name)
        .bind(&logged.model_type)
        .bind(&logged.source_run_id)
        .bind(logged.status.as_str())
        .bind(&logged.artifact_uri)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for tag in &model.tags {
            self.upsert_kv(
                &mut tx,
                scope,
                "tracking_logged_model_tags",
                &["model_id"],
                vec![Bind::Text(logged.model_id.clone())],
                &tag.key,
                &tag.value,
            )
            .await?;
        }
        for param in &model.params {
            self.upsert_kv(
                &mut tx,
                scope,
                "tracking_logged_model_params",
                &["model_id"],
                vec![Bind::Text(logged.model_id.clone())],
                &param.key,
                &param.value,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(logged)
    }

    async fn get_logged_model(
        &self,
        scope: &Scope,
        model_id: &str,
    ) -> Result<LoggedModel, TrackingError> {
        let row = sqlx::query(self.sql(&format!(
            "SELECT {LOGGED_MODEL_COLUMNS} FROM tracking_logged_models WHERE tenant_id = ? AND \
             project_id = ? AND model_id = ?"
        )))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(model_id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| TrackingError::not_found("logged model", model_id))?;
        let mut model = logged_model_from_row(&row)?;
        let id = [Bind::Text(model_id.to_owned())];
        model.tags = self
            .tags_of("tracking_logged_model_tags", "model_id", scope, &id)
            .await?
            .remove(model_id)
            .unwrap_or_default();
        model.params = self
            .tags_of("tracking_logged_model_params", "model_id", scope, &id)
            .await?
            .remove(model_id)
            .unwrap_or_default()
            .into_iter()
            .map(|t| Param {
                key: t.key,
                value: t.value,
            })
            .collect();
        Ok(model)
    }

    async fn set_logged_model_status(
        &self,
        scope: &Scope,
        model_id: &str,
        status: LoggedModelStatus,
    ) -> Result<LoggedModel, TrackingError> {
        let updated = sqlx::query(self.sql(
            "UPDATE tracking_logged_models SET status = ?, last_updated_time = ? WHERE \
             tenant_id = ? AND project_id = ? AND model_id = ?",
        ))
        .bind(status.as_str())
        .bind(ghaf_core::now_millis())
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(model_id)
        .execute(self.db.pool())
        .await?;
        if updated.rows_affected() == 0 {
            return Err(TrackingError::not_found("logged model", model_id));
        }
        self.get_logged_model(scope, model_id).await
    }

    async fn set_logged_model_tags(
        &self,
        scope: &Scope,
        model_id: &str,
        tags: &[Tag],
    ) -> Result<(), TrackingError> {
        self.get_logged_model(scope, model_id).await?;
        let mut tx = self.begin_write().await?;
        for tag in tags {
            self.upsert_kv(
                &mut tx,
                scope,
                "tracking_logged_model_tags",
                &["model_id"],
                vec![Bind::Text(model_id.to_owned())],
                &tag.key,
                &tag.value,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn search_logged_models(
        &self,
        scope: &Scope,
        experiment_ids: &[i64],
        name: Option<&str>,
        max_results: u32,
        offset: u64,
    ) -> Result<Page<LoggedModel>, TrackingError> {
        if experiment_ids.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_offset: None,
            });
        }
        let mut sql = SqlBuilder::default();
        sql.push(&format!(
            "SELECT {LOGGED_MODEL_COLUMNS} FROM tracking_logged_models WHERE tenant_id = ? AND \
             project_id = ? AND experiment_id IN "
        ))
        .text(scope.tenant.as_str())
        .text(scope.project.as_str())
        .list(experiment_ids.iter().map(|id| Bind::Int(*id)));
        if let Some(name) = name {
            sql.push(" AND name = ?").text(name);
        }
        sql.push(" ORDER BY creation_time DESC, model_id")
            .page(max_results, offset);
        let rows = self.fetch_all(&sql).await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|row| row.try_get::<String, _>("model_id"))
            .collect::<Result<_, _>>()?;
        let mut models = Vec::with_capacity(ids.len());
        for id in ids {
            models.push(self.get_logged_model(scope, &id).await?);
        }
        Ok(page(models, max_results, offset))
    }

    async fn put_artifact(
        &self,
        scope: &Scope,
        entry: &ArtifactEntry,
    ) -> Result<(), TrackingError> {
        sqlx::query(self.sql(
            "INSERT INTO tracking_artifacts (tenant_id, project_id, path, digest, size, \
             created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, project_id, path) \
             DO UPDATE SET digest = excluded.digest, size = excluded.size, \
             created_at = excluded.created_at",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(&entry.path)
        .bind(&entry.digest)
        .bind(i64::try_from(entry.size).unwrap_or(i64::MAX))
        .bind(ghaf_core::now_millis())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    async fn get_artifact(
        &self,
        scope: &Scope,
        path: &str,
    ) -> Result<Option<ArtifactEntry>, TrackingError> {
        let row = sqlx::query(self.sql(
            "SELECT path, digest, size FROM tracking_artifacts WHERE tenant_id = ? AND \
             project_id = ? AND path = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(path)
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| artifact_from_row(&row)).transpose()
    }

    async fn list_artifacts(
        &self,
        scope: &Scope,
        prefix: &str,
    ) -> Result<Vec<ArtifactEntry>, TrackingError> {
        // A range scan over the primary key: every path that starts with "<prefix>/".
        let prefix = prefix.trim_end_matches('/');
        let (low, high) = if prefix.is_empty() {
            (String::new(), "\u{10FFFF}".to_owned())
        } else {
            (format!("{prefix}/"), format!("{prefix}0"))
        };
        let rows = sqlx::query(self.sql(
            "SELECT path, digest, size FROM tracking_artifacts WHERE tenant_id = ? AND \
             project_id = ? AND path >= ? AND path < ? ORDER BY path",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(low)
        .bind(high)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(artifact_from_row).collect()
    }

    async fn delete_artifacts(&self, scope: &Scope, path: &str) -> Result<u64, TrackingError> {
        let path = path.trim_end_matches('/');
        let deleted = sqlx::query(self.sql(
            "DELETE FROM tracking_artifacts WHERE tenant_id = ? AND project_id = ? AND \
             (path = ? OR (path >= ? AND path < ?))",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(path)
        .bind(format!("{path}/"))
        .bind(format!("{path}0"))
        .execute(self.db.pool())
        .await?;
        Ok(deleted.rows_affected())
    }

    async fn create_registered_model(
        &self,
        scope: &Scope,
        name: &str,
        description: &str,
        user_id: &str,
        tags: &[Tag],
    ) -> Result<RegisteredModel, TrackingError> {
        let now = ghaf_core::now_millis();
        let mut tx = self.begin_write().await?;
        sqlx::query(self.sql(
            "INSERT INTO registry_models (tenant_id, project_id, name, description, user_id, \
             creation_time, last_updated_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .bind(description)
        .bind(user_id)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(unique_to_exists("registered model", name))?;
        for tag in tags {
            self.upsert_kv(
                &mut tx,
                scope,
                "registry_model_tags",
                &["name"],
                vec![Bind::Text(name.to_owned())],
                &tag.key,
                &tag.value,
            )
            .await?;
        }
        tx.commit().await?;
        self.get_registered_model(scope, name).await
    }

    async fn get_registered_model(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<RegisteredModel, TrackingError> {
        let row = sqlx::query(self.sql(
            "SELECT * FROM registry_models WHERE tenant_id = ? AND project_id = ? AND name = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| TrackingError::not_found("registered model", name))?;
        let model = registered_model_from_row(&row)?;
        let mut models = self.complete_models(scope, vec![model]).await?;
        models
            .pop()
            .ok_or_else(|| TrackingError::not_found("registered model", name))
    }

    async fn update_registered_model(
        &self,
        scope: &Scope,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModel, TrackingError> {
        let updated = sqlx::query(self.sql(
            "UPDATE registry_models SET description = ?, last_updated_time = ? WHERE \
             tenant_id = ? AND project_id = ? AND name = ?",
        ))
        .bind(description)
        .bind(ghaf_core::now_millis())
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .execute(self.db.pool())
        .await?;
        if updated.rows_affected() == 0 {
            return Err(TrackingError::not_found("registered model", name));
        }
        self.get_registered_model(scope, name).await
    }

    async fn delete_registered_model(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Result<(), TrackingError> {
        let mut tx = self.begin_write().await?;
        let mut removed = 0;
        for table in [
            "registry_aliases",
            "registry_version_tags",
            "registry_versions",
            "registry_model_tags",
            "registry_models",
        ] {
            removed = sqlx::query(self.sql(&format!(
                "DELETE FROM {table} WHERE tenant_id = ? AND project_id = ? AND name = ?"
            )))
            .bind(scope.tenant.as_str())
            .bind(scope.project.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if removed == 0 {
            return Err(TrackingError::not_found("registered model", name));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn search_registered_models(
        &self,
        scope: &Scope,
        filter: &[RegistryClause],
        order_by: &[OrderBy<&'static str>],
        max_results: u32,
        offset: u64,
    ) -> Result<Page<RegisteredModel>, TrackingError> {
        let mut sql = SqlBuilder::default();
        sql.push("SELECT * FROM registry_models m WHERE m.tenant_id = ? AND m.project_id = ?")
            .text(scope.tenant.as_str())
            .text(scope.project.as_str());
        for clause in filter {
            registry_clause(&mut sql, self.db.dialect(), scope, "m", clause);
        }
        column_order(&mut sql, "m", order_by, "m.name ASC");
        sql.page(max_results, offset);
        let rows = self.fetch_all(&sql).await?;
        let models = rows
            .iter()
            .map(registered_model_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Page { items, next_offset } = page(models, max_results, offset);
        Ok(Page {
            items: self.complete_models(scope, items).await?,
            next_offset,
        })
    }

    async fn set_registered_model_tag(
        &self,
        scope: &Scope,
        name: &str,
        tag: &Tag,
    ) -> Result<(), TrackingError> {
        let mut tx = self.begin_write().await?;
        self.touch_model(&mut tx, scope, name).await?;
        self.upsert_kv(
            &mut tx,
            scope,
            "registry_model_tags",
            &["name"],
            vec![Bind::Text(name.to_owned())],
            &tag.key,
            &tag.value,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_registered_model_tag(
        &self,
        scope: &Scope,
        name: &str,
        key: &str,
    ) -> Result<(), TrackingError> {
        let mut tx = self.begin_write().await?;
        self.touch_model(&mut tx, scope, name).await?;
        sqlx::query(self.sql(
            "DELETE FROM registry_model_tags WHERE tenant_id = ? AND project_id = ? AND name = ? \
             AND key = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn next_version(&self, scope: &Scope, name: &str) -> Result<i64, TrackingError> {
        self.get_registered_model(scope, name).await?;
        let row = sqlx::query(self.sql(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM registry_versions WHERE tenant_id = ? AND \
             project_id = ? AND name = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .fetch_one(self.db.pool())
        .await?;
        Ok(row.try_get(0)?)
    }

    async fn create_model_version(
        &self,
        scope: &Scope,
        version: i64,
        new: &NewModelVersion,
    ) -> Result<ModelVersion, TrackingError> {
        let now = ghaf_core::now_millis();
        let details = serde_json::to_string(&new.details)
            .map_err(|error| TrackingError::invalid("details", error.to_string()))?;
        let mut tx = self.begin_write().await?;
        self.touch_model(&mut tx, scope, &new.name).await?;
        sqlx::query(self.sql(
            "INSERT INTO registry_versions (tenant_id, project_id, name, version, source, run_id, \
             model_id, status, current_stage, description, user_id, creation_time, \
             last_updated_time, artifact_prefix, manifest, manifest_signature, signing_key_id, \
             details) VALUES (?, ?, ?, ?, ?, ?, ?, 'READY', 'None', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(&new.name)
        .bind(version)
        .bind(&new.source)
        .bind(&new.run_id)
        .bind(&new.model_id)
        .bind(&new.description)
        .bind(&new.user_id)
        .bind(now)
        .bind(now)
        .bind(&new.artifact_prefix)
        .bind(&new.manifest.manifest)
        .bind(&new.manifest.signature)
        .bind(&new.manifest.key_id)
        .bind(&details)
        .execute(&mut *tx)
        .await
        .map_err(unique_to_exists(
            "model version",
            &format!("{} version {version}", new.name),
        ))?;
        for tag in &new.tags {
            self.upsert_kv(
                &mut tx,
                scope,
                "registry_version_tags",
                &["name", "version"],
                vec![Bind::Text(new.name.clone()), Bind::Int(version)],
                &tag.key,
                &tag.value,
            )
            .await?;
        }
        tx.commit().await?;
        self.get_model_version(scope, &new.name, version).await
    }

    async fn get_model_version(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
    ) -> Result<ModelVersion, TrackingError> {
        let row = sqlx::query(self.sql(&format!(
            "SELECT {VERSION_COLUMNS} FROM registry_versions v WHERE v.tenant_id = ? AND \
             v.project_id = ? AND v.name = ? AND v.version = ?"
        )))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .bind(version)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| {
            TrackingError::not_found("model version", format!("{name} version {version}"))
        })?;
        let mut versions = self
            .complete_versions(scope, vec![version_from_row(&row)?])
            .await?;
        versions.pop().ok_or_else(|| {
            TrackingError::not_found("model version", format!("{name} version {version}"))
        })
    }

    async fn update_model_version(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
        description: Option<&str>,
        details: Option<&VersionDetails>,
    ) -> Result<ModelVersion, TrackingError> {
        let mut tx = self.begin_write().await?;
        self.require_version(&mut tx, scope, name, version).await?;
        let now = ghaf_core::now_millis();
        if let Some(description) = description {
            sqlx::query(self.sql(
                "UPDATE registry_versions SET description = ?, last_updated_time = ? WHERE \
                 tenant_id = ? AND project_id = ? AND name = ? AND version = ?",
            ))
            .bind(description)
            .bind(now)
            .bind(scope.tenant.as_str())
            .bind(scope.project.as_str())
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(details) = details {
            let text = serde_json::to_string(details)
                .map_err(|error| TrackingError::invalid("details", error.to_string()))?;
            sqlx::query(self.sql(
                "UPDATE registry_versions SET details = ?, last_updated_time = ? WHERE \
                 tenant_id = ? AND project_id = ? AND name = ? AND version = ?",
            ))
            .bind(text)
            .bind(now)
            .bind(scope.tenant.as_str())
            .bind(scope.project.as_str())
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.get_model_version(scope, name, version).await
    }

    async fn delete_model_version(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
    ) -> Result<(), TrackingError> {
        let mut tx = self.begin_write().await?;
        self.require_version(&mut tx, scope, name, version).await?;
        for table in [
            "registry_aliases",
            "registry_version_tags",
            "registry_versions",
        ] {
            sqlx::query(self.sql(&format!(
                "DELETE FROM {table} WHERE tenant_id = ? AND project_id = ? AND name = ? AND \
                 version = ?"
            )))
            .bind(scope.tenant.as_str())
            .bind(scope.project.as_str())
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn search_model_versions(
        &self,
        scope: &Scope,
        filter: &[RegistryClause],
        order_by: &[OrderBy<&'static str>],
        max_results: u32,
        offset: u64,
    ) -> Result<Page<ModelVersion>, TrackingError> {
        let mut sql = SqlBuilder::default();
        sql.push(&format!(
            "SELECT {VERSION_COLUMNS} FROM registry_versions v WHERE v.tenant_id = ? AND \
             v.project_id = ?"
        ))
        .text(scope.tenant.as_str())
        .text(scope.project.as_str());
        for clause in filter {
            registry_clause(&mut sql, self.db.dialect(), scope, "v", clause);
        }
        column_order(&mut sql, "v", order_by, "v.name ASC, v.version DESC");
        sql.page(max_results, offset);
        let rows = self.fetch_all(&sql).await?;
        let versions = rows
            .iter()
            .map(version_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Page { items, next_offset } = page(versions, max_results, offset);
        Ok(Page {
            items: self.complete_versions(scope, items).await?,
            next_offset,
        })
    }

    async fn transition_stage(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
        stage: Stage,
        archive_existing: bool,
        now: UnixMillis,
    ) -> Result<ModelVersion, TrackingError> {
        let mut tx = self.begin_write().await?;
        self.require_version(&mut tx, scope, name, version).await?;
        if archive_existing && matches!(stage, Stage::Staging | Stage::Production) {
            sqlx::query(self.sql(
                "UPDATE registry_versions SET current_stage = 'Archived', last_updated_time = ? \
                 WHERE tenant_id = ? AND project_id = ? AND name = ? AND current_stage = ? AND \
                 version <> ?",
            ))
            .bind(now)
            .bind(scope.tenant.as_str())
            .bind(scope.project.as_str())
            .bind(name)
            .bind(stage.as_str())
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(self.sql(
            "UPDATE registry_versions SET current_stage = ?, last_updated_time = ? WHERE \
             tenant_id = ? AND project_id = ? AND name = ? AND version = ?",
        ))
        .bind(stage.as_str())
        .bind(now)
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        self.touch_model(&mut tx, scope, name).await?;
        tx.commit().await?;
        self.get_model_version(scope, name, version).await
    }

    async fn set_model_version_tag(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
        tag: &Tag,
    ) -> Result<(), TrackingError> {
        let mut tx = self.begin_write().await?;
        self.require_version(&mut tx, scope, name, version).await?;
        self.upsert_kv(
            &mut tx,
            scope,
            "registry_version_tags",
            &["name", "version"],
            vec![Bind::Text(name.to_owned()), Bind::Int(version)],
            &tag.key,
            &tag.value,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_model_version_tag(
        &self,
        scope: &Scope,
        name: &str,
        version: i64,
        key: &str,
    ) -> Result<(), TrackingError> {
        let mut tx = self.begin_write().await?;
        self.require_version(&mut tx, scope, name, version).await?;
        sqlx::query(self.sql(
            "DELETE FROM registry_version_tags WHERE tenant_id = ? AND project_id = ? AND \
             name = ? AND version = ? AND key = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .bind(version)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_alias(
        &self,
        scope: &Scope,
        name: &str,
        alias: &str,
        version: i64,
    ) -> Result<(), TrackingError> {
        let mut tx = self.begin_write().await?;
        self.require_version(&mut tx, scope, name, version).await?;
        sqlx::query(self.sql(
            "INSERT INTO registry_aliases (tenant_id, project_id, name, alias, version) VALUES \
             (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, project_id, name, alias) DO UPDATE SET \
             version = excluded.version",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .bind(alias)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        self.touch_model(&mut tx, scope, name).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_alias(
        &self,
        scope: &Scope,
        name: &str,
        alias: &str,
    ) -> Result<(), TrackingError> {
        let mut tx = self.begin_write().await?;
        self.touch_model(&mut tx, scope, name).await?;
        let deleted = sqlx::query(self.sql(
            "DELETE FROM registry_aliases WHERE tenant_id = ? AND project_id = ? AND name = ? AND \
             alias = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .bind(alias)
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Err(TrackingError::not_found("alias", format!("{name}@{alias}")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_version_by_alias(
        &self,
        scope: &Scope,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion, TrackingError> {
        let row = sqlx::query(self.sql(
            "SELECT version FROM registry_aliases WHERE tenant_id = ? AND project_id = ? AND \
             name = ? AND alias = ?",
        ))
        .bind(scope.tenant.as_str())
        .bind(scope.project.as_str())
        .bind(name)
        .bind(alias)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| TrackingError::not_found("alias", format!("{name}@{alias}")))?;
        self.get_model_version(scope, name, row.try_get(0)?).await
    }
}

fn artifact_from_row(row: &AnyRow) -> Result<ArtifactEntry, TrackingError> {
    let size: i64 = row.try_get("size")?;
    Ok(ArtifactEntry {
        path: row.try_get("path")?,
        digest: row.try_get("digest")?,
        size: u64::try_from(size).unwrap_or(0),
    })
}
