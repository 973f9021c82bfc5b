//! Row decoding and the SQL fragments of filtered searches.

use ghaf_meta::Dialect;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::filter::{
    Comparator, ExperimentClause, ExperimentField, Literal, OrderBy, RegistryClause, RegistryField,
    RunClause, RunField, like_to_glob,
};
use crate::*;

/// A value bound to a `?` placeholder.
#[derive(Clone, Debug)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
    Real(f64),
}

/// A SQL text assembled from fixed fragments, with its bound values in placeholder order.
#[derive(Default)]
pub(crate) struct SqlBuilder {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl SqlBuilder {
    pub fn push(&mut self, fragment: &str) -> &mut Self {
        self.text.push_str(fragment);
        self
    }

    pub fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        self
    }

    pub fn text(&mut self, value: &str) -> &mut Self {
        self.bind(Bind::Text(value.to_owned()))
    }

    /// Appends ` LIMIT ? OFFSET ?` for one page of `max_results` rows, asking for one row
    /// more so [`super::page`] can tell whether a next page exists.
    pub fn page(&mut self, max_results: u32, offset: u64) -> &mut Self {
        self.push(" LIMIT ? OFFSET ?")
            .bind(Bind::Int(i64::from(max_results) + 1))
            .bind(Bind::Int(i64::try_from(offset).unwrap_or(i64::MAX)))
    }

    /// Appends `(?, ?, …)` with one placeholder per value.
    pub fn list(&mut self, values: impl IntoIterator<Item = Bind>) -> &mut Self {
        self.text.push('(');
        for (index, value) in values.into_iter().enumerate() {
            if index > 0 {
                self.text.push_str(", ");
            }
            self.text.push('?');
            self.binds.push(value);
        }
        self.text.push(')');
        self
    }
}

/// Binds every value of `builder` to a query.
pub(crate) fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for value in binds {
        query = match value {
            Bind::Text(text) => query.bind(text.as_str()),
            Bind::Int(int) => query.bind(*int),
            Bind::Real(real) => query.bind(*real),
        };
    }
    query
}

/// Appends a string comparison of `column` with `value` in the dialect's spelling: MLflow's
/// `LIKE` is case-sensitive, which SQLite's is not, so SQLite gets `GLOB`.
fn string_match(
    sql: &mut SqlBuilder,
    dialect: Dialect,
    column: &str,
    comparator: Comparator,
    value: &str,
) {
    match comparator {
        Comparator::Like => match dialect {
            Dialect::Sqlite => {
                sql.push(&format!("{column} GLOB ?"))
                    .text(&like_to_glob(value));
            }
            Dialect::Postgres => {
                sql.push(&format!("{column} LIKE ?")).text(value);
            }
        },
        Comparator::ILike => {
            sql.push(&format!("LOWER({column}) LIKE LOWER(?)"))
                .text(value);
        }
        other => {
            let op = other.sql_comparison().unwrap_or("=");
            sql.push(&format!("{column} {op} ?")).text(value);
        }
    }
}

/// Appends the start of a correlated subquery on `table` for the row with `key` of the run
/// that the alias `owner` names. It is one index lookup per candidate run. The search module
/// chooses when a selective clause starts from its value index instead.
fn scoped_subquery(sql: &mut SqlBuilder, table: &str, key: &str, owner: &str) {
    sql.push(&format!(
        "SELECT 1 FROM {table} s WHERE s.tenant_id = {owner}.tenant_id AND \
         s.project_id = {owner}.project_id AND s.run_id = {owner}.run_id AND s.key = ?"
    ))
    .text(key);
}

/// Appends ` AND <condition>` for one run-search clause. Param, tag and metric clauses
/// correlate on the tenant, project and run id of the alias `owner`, which is `r` or a
/// driving table joined to `r` on those columns. Naming the driving table lets SQLite check
/// the clause before it reads the run. Attribute clauses always read `r`.
pub(crate) fn run_clause(sql: &mut SqlBuilder, dialect: Dialect, clause: &RunClause, owner: &str) {
    sql.push(" AND ");
    match (&clause.field, &clause.value) {
        (RunField::Metric(key), Literal::Number(number)) => {
            sql.push("EXISTS (");
            scoped_subquery(sql, "tracking_latest_metrics", key, owner);
            let op = clause.comparator.sql_comparison().unwrap_or("=");
            sql.push(&format!(" AND s.is_nan = 0 AND s.value {op} ?)"))
                .bind(Bind::Real(*number));
        }
        (RunField::Param(key) | RunField::Tag(key), value) => {
            let table = if matches!(clause.field, RunField::Param(_)) {
                "tracking_params"
            } else {
                "tracking_run_tags"
            };
            let negated = clause.comparator == Comparator::IsNull;
            sql.push(if negated { "NOT EXISTS (" } else { "EXISTS (" });
            scoped_subquery(sql, table, key, owner);
            if let Literal::String(text) = value {
                sql.push(" AND ");
                string_match(sql, dialect, "s.value", clause.comparator, text);
            }
            sql.push(")");
        }
        (RunField::Attribute(attribute), Literal::Number(number)) => {
            let op = clause.comparator.sql_comparison().unwrap_or("=");
            sql.push(&format!("r.{} {op} ?", attribute.column()))
                .bind(Bind::Real(*number));
        }
        (RunField::Attribute(attribute), Literal::String(text)) => {
            let column = format!("r.{}", attribute.column());
            string_match(sql, dialect, &column, clause.comparator, text);
        }
        (RunField::Attribute(attribute), Literal::List(items)) => {
            let op = if clause.comparator == Comparator::NotIn {
                "NOT IN"
            } else {
                "IN"
            };
            sql.push(&format!("r.{} {op} ", attribute.column()));
            sql.list(items.iter().map(|item| Bind::Text(item.clone())));
        }
        // The parser rejects every other combination; match nothing rather than everything.
        _ => {
            sql.push("1 = 0");
        }
    }
}

/// Appends the `ORDER BY` list of a run search, ending with MLflow's tie-breakers: newest
/// start time first, then run id.
pub(crate) fn run_order(sql: &mut SqlBuilder, order_by: &[OrderBy<RunField>]) {
    sql.push(" ORDER BY ");
    for order in order_by {
        let direction = if order.ascending { "ASC" } else { "DESC" };
        let value_of = |table: &str, key_value: &str| {
            format!(
                "(SELECT {key_value} FROM {table} o WHERE o.tenant_id = r.tenant_id AND \
                 o.project_id = r.project_id AND o.run_id = r.run_id AND o.key = ?)"
            )
        };
        let (expression, key) = match &order.field {
            RunField::Attribute(attribute) => (format!("r.{}", attribute.column()), None),
            RunField::Metric(key) => (
                value_of(
                    "tracking_latest_metrics",
                    "CASE WHEN o.is_nan = 1 THEN NULL ELSE o.value END",
                ),
                Some(key),
            ),
            RunField::Param(key) => (value_of("tracking_params", "o.value"), Some(key)),
            RunField::Tag(key) => (value_of("tracking_run_tags", "o.value"), Some(key)),
        };
        // Runs without the value sort last in both directions.
        sql.push(&format!(
            "CASE WHEN {expression} IS NULL THEN 1 ELSE 0 END, "
        ));
        if let Some(key) = key {
            sql.text(key);
        }
        sql.push(&format!("{expression} {direction}, "));
        if let Some(key) = key {
            sql.text(key);
        }
    }
    sql.push("r.start_time DESC, r.run_id ASC");
}

/// Appends ` AND <condition>` for one experiment-search clause.
pub(crate) fn experiment_clause(
    sql: &mut SqlBuilder,
    dialect: Dialect,
    scope: &Scope,
    clause: &ExperimentClause,
) {
    sql.push(" AND ");
    match (&clause.field, &clause.value) {
        (ExperimentField::Name, Literal::String(text)) => {
            string_match(sql, dialect, "e.name", clause.comparator, text);
        }
        (ExperimentField::CreationTime | ExperimentField::LastUpdateTime, Literal::Number(n)) => {
            let column = if clause.field == ExperimentField::CreationTime {
                "e.creation_time"
            } else {
                "e.last_update_time"
            };
            let op = clause.comparator.sql_comparison().unwrap_or("=");
            sql.push(&format!("{column} {op} ?")).bind(Bind::Real(*n));
        }
        (ExperimentField::Tag(key), Literal::String(text)) => {
            sql.push(
                "e.experiment_id IN (SELECT t.experiment_id FROM tracking_experiment_tags t \
                 WHERE t.tenant_id = ? AND t.project_id = ? AND t.key = ? AND ",
            )
            .text(scope.tenant.as_str())
            .text(scope.project.as_str())
            .text(key);
            string_match(sql, dialect, "t.value", clause.comparator, text);
            sql.push(")");
        }
        _ => {
            sql.push("1 = 0");
        }
    }
}

/// Appends ` AND <condition>` for one registry-search clause over `m` (models) or `v`
/// (versions), named by `alias`.
pub(crate) fn registry_clause(
    sql: &mut SqlBuilder,
    dialect: Dialect,
    scope: &Scope,
    alias: &str,
    clause: &RegistryClause,
) {
    sql.push(" AND ");
    match (&clause.field, &clause.value) {
        (RegistryField::Name, Literal::String(text)) => {
            string_match(
                sql,
                dialect,
                &format!("{alias}.name"),
                clause.comparator,
                text,
            );
        }
        (RegistryField::Source, Literal::String(text)) => {
            string_match(
                sql,
                dialect,
                &format!("{alias}.source"),
                clause.comparator,
                text,
            );
        }
        (RegistryField::RunId, Literal::String(text)) => {
            string_match(
                sql,
                dialect,
                &format!("{alias}.run_id"),
                clause.comparator,
                text,
            );
        }
        (RegistryField::RunId, Literal::List(items)) => {
            let op = if clause.comparator == Comparator::NotIn {
                "NOT IN"
            } else {
                "IN"
            };
            sql.push(&format!("{alias}.run_id {op} "));
            sql.list(items.iter().map(|item| Bind::Text(item.clone())));
        }
        (RegistryField::Version, Literal::Number(n)) => {
            let op = clause.comparator.sql_comparison().unwrap_or("=");
            sql.push(&format!("{alias}.version {op} ?"))
                .bind(Bind::Real(*n));
        }
        (RegistryField::Tag(key), Literal::String(text)) => {
            if alias == "v" {
                sql.push(
                    "EXISTS (SELECT 1 FROM registry_version_tags t WHERE t.tenant_id = v.tenant_id \
                     AND t.project_id = v.project_id AND t.name = v.name AND t.version = v.version \
                     AND t.key = ? AND ",
                );
            } else {
                sql.push(
                    "m.name IN (SELECT t.name FROM registry_model_tags t WHERE t.tenant_id = ? \
                     AND t.project_id = ? AND t.key = ? AND ",
                )
                .text(scope.tenant.as_str())
                .text(scope.project.as_str());
            }
            sql.text(key);
            string_match(sql, dialect, "t.value", clause.comparator, text);
            sql.push(")");
        }
        _ => {
            sql.push("1 = 0");
        }
    }
}

/// Appends an `ORDER BY` list of plain columns of `alias`, then `fallback`.
pub(crate) fn column_order(
    sql: &mut SqlBuilder,
    alias: &str,
    order_by: &[OrderBy<&'static str>],
    fallback: &str,
) {
    sql.push(" ORDER BY ");
    for order in order_by {
        let direction = if order.ascending { "ASC" } else { "DESC" };
        sql.push(&format!("{alias}.{} {direction}, ", order.field));
    }
    sql.push(fallback);
}

pub(crate) fn stage_of(row: &AnyRow, column: &str) -> Result<LifecycleStage, TrackingError> {
    let value: String = row.try_get(column)?;
    LifecycleStage::parse(&value).ok_or_else(|| corrupt("lifecycle stage", &value))
}

pub(crate) fn corrupt(what: &'static str, value: &str) -> TrackingError {
    TrackingError::Meta(ghaf_meta::MetaError::Corrupt {
        what,
        message: format!("unknown value {value:?}"),
    })
}

pub(crate) fn experiment_from_row(row: &AnyRow) -> Result<Experiment, TrackingError> {
    Ok(Experiment {
        experiment_id: row.try_get("experiment_id")?,
        name: row.try_get("name")?,
        artifact_location: row.try_get("artifact_location")?,
        lifecycle_stage: stage_of(row, "lifecycle_stage")?,
        creation_time: row.try_get("creation_time")?,
        last_update_time: row.try_get("last_update_time")?,
        tags: Vec::new(),
    })
}

pub(crate) const RUN_COLUMNS: &str = "r.run_id, r.experiment_id, r.run_name, r.user_id, \
    r.status, r.start_time, r.end_time, r.lifecycle_stage, r.artifact_uri";

pub(crate) fn run_info_from_row(row: &AnyRow) -> Result<RunInfo, TrackingError> {
    let status: String = row.try_get("status")?;
    Ok(RunInfo {
        run_id: row.try_get("run_id")?,
        experiment_id: row.try_get("experiment_id")?,
        run_name: row.try_get("run_name")?,
        user_id: row.try_get("user_id")?,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt("run status", &status))?,
        start_time: row.try_get("start_time")?,
        end_time: row.try_get("end_time")?,
        lifecycle_stage: stage_of(row, "lifecycle_stage")?,
        artifact_uri: row.try_get("artifact_uri")?,
    })
}

pub(crate) fn metric_value(row: &AnyRow) -> Result<f64, TrackingError> {
    let is_nan: i64 = row.try_get("is_nan")?;
    Ok(if is_nan != 0 {
        f64::NAN
    } else {
        row.try_get("value")?
    })
}

pub(crate) const LOGGED_MODEL_COLUMNS: &str = "model_id, experiment_id, name, model_type, \
    source_run_id, status, artifact_uri, creation_time, last_updated_time";

pub(crate) fn logged_model_from_row(row: &AnyRow) -> Result<LoggedModel, TrackingError> {
    let status: String = row.try_get("status")?;
    Ok(LoggedModel {
        model_id: row.try_get("model_id")?,
        experiment_id: row.try_get("experiment_id")?,
        name: row.try_get("name")?,
        model_type: row.try_get("model_type")?,
        source_run_id: row.try_get("source_run_id")?,
        status: LoggedModelStatus::parse(&status)
            .ok_or_else(|| corrupt("logged model status", &status))?,
        artifact_uri: row.try_get("artifact_uri")?,
        creation_time: row.try_get("creation_time")?,
        last_updated_time: row.try_get("last_updated_time")?,
        tags: Vec::new(),
        params: Vec::new(),
    })
}

pub(crate) const VERSION_COLUMNS: &str = "v.name, v.version, v.source, v.run_id, v.model_id, \
    v.status, v.current_stage, v.description, v.user_id, v.creation_time, v.last_updated_time, \
    v.artifact_prefix, v.manifest, v.manifest_signature, v.signing_key_id, v.details";

pub(crate) fn version_from_row(row: &AnyRow) -> Result<ModelVersion, TrackingError> {
    let stage: String = row.try_get("current_stage")?;
    let details: String = row.try_get("details")?;
    Ok(ModelVersion {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        source: row.try_get("source")?,
        run_id: row.try_get("run_id")?,
        model_id: row.try_get("model_id")?,
        status: row.try_get("status")?,
        current_stage: Stage::parse(&stage).ok_or_else(|| corrupt("stage", &stage))?,
        description: row.try_get("description")?,
        user_id: row.try_get("user_id")?,
        creation_time: row.try_get("creation_time")?,
        last_updated_time: row.try_get("last_updated_time")?,
        artifact_prefix: row.try_get("artifact_prefix")?,
        tags: Vec::new(),
        aliases: Vec::new(),
        details: serde_json::from_str(&details)
            .map_err(|_| corrupt("version details", &details))?,
        manifest: SignedManifest {
            manifest: row.try_get("manifest")?,
            signature: row.try_get("manifest_signature")?,
            key_id: row.try_get("signing_key_id")?,
        },
    })
}

pub(crate) fn registered_model_from_row(row: &AnyRow) -> Result<RegisteredModel, TrackingError> {
    Ok(RegisteredModel {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        user_id: row.try_get("user_id")?,
        creation_time: row.try_get("creation_time")?,
        last_updated_time: row.try_get("last_updated_time")?,
        tags: Vec::new(),
        aliases: Vec::new(),
        latest_versions: Vec::new(),
    })
}
