//! Run search: the choice of the plan, and the details of a page of runs.
//!
//! A run search has three plans.
//! - The scan walks the experiment's runs newest first and checks each filter clause with a
//!   correlated `EXISTS` lookup, stopping once the page is full. It is fast when many runs
//!   match, and slow when few do, because it then reads every run of the experiment.
//! - The driven plan starts from the value index of one selective clause
//!   (`tracking_run_tags_by_value`, `tracking_params_by_value` or
//!   `tracking_latest_metrics_by_value`), checks the other clauses on each match, joins it
//!   to its run and sorts the matches. Its cost grows with the number of matches and not
//!   with the size of the experiment.
//! - The ordered driven plan starts from the value index of an `=` clause on a param or
//!   tag. Param and tag rows repeat their run's experiment id and start time (both never
//!   change), and within one experiment, key and value that index is in the default page
//!   order: newest first, then run id. So this plan reads the clause's matches in page order
//!   and stops once the page is full, like the scan, but it visits only the runs that match
//!   the clause and reads no run of the experiment that does not. It serves a search of one
//!   experiment in the default order.
//!
//! SQLite has no statistics to choose between them, so [`SearchReader::run_plan`] chooses
//! from bounded counts through the same indexes:
//! 1. It counts the matches of each clause that an index can serve. For `=` or
//!    `IS NOT NULL` on a param or tag it counts within the searched experiments. For `=`,
//!    `<`, `<=`, `>` or `>=` on a metric it counts within the project, because metric rows
//!    do not carry the experiment. Each count reads
//!    at most [`COUNT_LIMIT`] entries and no more than the smallest count so far. Param and
//!    tag clauses are counted first, so their often smaller counts bound the metric counts.
//! 2. When the clause with the fewest matches is an `=` on a param or tag and the ordered
//!    plan serves the search, that plan starts from it. The exception is an experiment with
//!    no more runs in the searched view (active, deleted or both) than the clause has
//!    matches. There the scan runs, because the value index also contains runs outside the
//!    view, which the runs index of the scan skips.
//! 3. Otherwise the clause with the fewest matches drives the search when, for a metric, the
//!    experiments have more runs than it has matches, and, for the default newest-first
//!    order, it has at most [`SCAN_RATIO`] times the rows the page needs. The page-ordered
//!    plans read about `page × candidates / matches` rows to fill a page and the driven plan
//!    reads every match; the ratio stands in for `candidates / matches`, which the bounded
//!    counts do not measure. With an `order_by` the other plans read every candidate anyway,
//!    so the driven plan is used whenever a clause matches fewer runs than the experiments
//!    have.
//! 4. Failing that, the ordered plan starts from the `=` clause with the fewest matches when
//!    it serves the search, under the condition of step 2, and the scan runs when it does
//!    not.
//!
//! NOTE: the counts treat the clauses as independent. A combination of unselective clauses
//! that matches few runs is still read through one of them. A metric clause whose matches
//! lie mostly in other experiments may drive a search that another plan would have finished
//! sooner. Both cases read at most [`COUNT_LIMIT`] matches in the driven plan.

mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use ghaf_meta::Dialect;
use ghaf_meta::rusqlite::Connection;
use serde::de::DeserializeOwned;
use sqlx::Row;

use super::query::{Bind, RUN_COLUMNS, SqlBuilder, run_clause, run_info_from_row, run_order};
use super::{IN_CHUNK, SqlTrackingStore, page};
use crate::filter::{Comparator, Literal, RunClause, RunField};
use crate::*;

/// Maximum number of index entries one count of matches reads. A clause that matches more
/// runs never drives an unordered search.
const COUNT_LIMIT: i64 = 5_000;

/// The assumed ratio of runs to matches in a newest-first search, explained in the module
/// documentation.
const SCAN_RATIO: i64 = 100;

/// The plan of a run search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunPlan {
    /// Walk the runs in the requested order and check every clause per run.
    Scan,
    /// Start from the index of the clause at this position of the filter, and sort its
    /// matches.
    Drive(usize),
    /// Read the matches of the `=` param or tag clause at this position of the filter in
    /// page order, within the one searched experiment.
    DriveOrdered(usize),
}

impl RunPlan {
    /// Returns the position of the driving clause, if any.
    fn driver(self) -> Option<usize> {
        match self {
            RunPlan::Scan => None,
            RunPlan::Drive(position) | RunPlan::DriveOrdered(position) => Some(position),
        }
    }
}

/// An index that can serve a clause: its table and the condition on the alias `d`, without
/// the tenant and project.
struct IndexedClause<'a> {
    table: &'static str,
    key: &'a str,
    condition: Option<(&'static str, Bind)>,
    /// Whether the index starts with the experiment id (params and tags).
    by_experiment: bool,
    /// Whether the index is in page order within the condition (`=` on a param or tag).
    page_ordered: bool,
}

/// Returns the index lookup that can serve `clause`, if any.
fn indexed(clause: &RunClause) -> Option<IndexedClause<'_>> {
    match (&clause.field, clause.comparator, &clause.value) {
        (RunField::Param(key) | RunField::Tag(key), Comparator::Eq, Literal::String(text)) => {
            Some(IndexedClause {
                table: kv_table(&clause.field),
                key,
                condition: Some(("=", Bind::Text(text.clone()))),
                by_experiment: true,
                page_ordered: true,
            })
        }
        (RunField::Param(key) | RunField::Tag(key), Comparator::IsNotNull, _) => {
            Some(IndexedClause {
                table: kv_table(&clause.field),
                key,
                condition: None,
                by_experiment: true,
                page_ordered: false,
            })
        }
        (RunField::Metric(key), comparator, Literal::Number(number))
            if comparator != Comparator::Ne =>
        {
            let op = comparator.sql_comparison()?;
            Some(IndexedClause {
                table: "tracking_latest_metrics",
                key,
                condition: Some((op, Bind::Real(*number))),
                by_experiment: false,
                page_ordered: false,
            })
        }
        _ => None,
    }
}

fn kv_table(field: &RunField) -> &'static str {
    if matches!(field, RunField::Param(_)) {
        "tracking_params"
    } else {
        "tracking_run_tags"
    }
}

/// Appends the index conditions of `indexed` on the alias `d`, within the experiments of
/// `query` when the index starts with the experiment.
fn push_index_conditions(
    sql: &mut SqlBuilder,
    scope: &Scope,
    query: &RunQuery,
    indexed: &IndexedClause<'_>,
) {
    sql.push("d.tenant_id = ? AND d.project_id = ?")
        .text(scope.tenant.as_str())
        .text(scope.project.as_str());
    if indexed.by_experiment {
        // One experiment is an equality, which keeps the index order of the rows after it.
        if let [experiment] = query.experiment_ids.as_slice() {
            sql.push(" AND d.experiment_id = ?")
                .bind(Bind::Int(*experiment));
        } else {
            sql.push(" AND d.experiment_id IN ")
                .list(query.experiment_ids.iter().map(|id| Bind::Int(*id)));
        }
    }
    sql.push(" AND d.key = ?").text(indexed.key);
    if let Some((op, value)) = &indexed.condition {
        sql.push(&format!(" AND d.value {op} ?"))
            .bind(value.clone());
    }
}

/// Appends the conditions of a driving clause: those of its index, and for a metric that
/// the value is a number, because NaN is stored as 0 with `is_nan` set and the index cannot
/// tell the two apart.
fn push_driving_conditions(
    sql: &mut SqlBuilder,
    scope: &Scope,
    query: &RunQuery,
    indexed: &IndexedClause<'_>,
) {
    push_index_conditions(sql, scope, query, indexed);
    if indexed.table == "tracking_latest_metrics" {
        sql.push(" AND d.is_nan = 0");
    }
}

/// The executor of a run search's statements: the sqlx pool of a [`SqlTrackingStore`] on
/// either database, or a direct SQLite [`Connection`] on the calling thread. The calls on a
/// direct connection never wait on another task, so a search through one runs under
/// [`futures::executor::block_on`].
pub(crate) trait SearchReader: Copy {
    fn dialect(self) -> Dialect;

    /// Returns the first column of the single row of a `COUNT(*)` statement.
    async fn count(self, sql: &SqlBuilder) -> Result<i64, TrackingError>;

    /// Runs a statement whose first column is a run id and returns the ids in row order.
    async fn run_ids(self, sql: &SqlBuilder) -> Result<Vec<String>, TrackingError>;

    /// Runs a statement that selects [`RUN_COLUMNS`] and returns the runs in row order.
    async fn run_infos(self, sql: &SqlBuilder) -> Result<Vec<RunInfo>, TrackingError>;

    /// Loads the params, tags, latest metrics and outputs of `infos`, keeping their order.
    async fn complete(self, scope: &Scope, infos: Vec<RunInfo>) -> Result<Vec<Run>, TrackingError>;

    /// Reads the runs `ids` of `query`'s experiments and view in `scope`, in the order of
    /// `ids`. A run that left the experiments or the view since its id was read is left out.
    ///
    /// NOTE: on the pool the search and this read are separate statements without a shared
    /// snapshot. A run changed in between comes back with its new values, and one that left
    /// the searched experiments or view is left out, so such a page can be one run short.
    async fn run_infos_by_id(
        self,
        scope: &Scope,
        query: &RunQuery,
        ids: &[String],
    ) -> Result<Vec<RunInfo>, TrackingError> {
        let mut found: HashMap<String, RunInfo> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = runs_by_id_statement(scope, query, chunk);
            for info in self.run_infos(&sql).await? {
                found.insert(info.run_id.clone(), info);
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// Returns `COUNT(*)` of the rows of `inner`, reading at most `limit` of them.
    async fn bounded_count(self, mut inner: SqlBuilder, limit: i64) -> Result<i64, TrackingError> {
        let mut sql = SqlBuilder::default();
        sql.push("SELECT COUNT(*) FROM (");
        sql.push(&inner.text);
        sql.binds.append(&mut inner.binds);
        sql.push(" LIMIT ?) c").bind(Bind::Int(limit));
        self.count(&sql).await
    }

    /// Counts the runs of the searched experiments and view, reading at most `limit`.
    async fn count_runs(
        self,
        scope: &Scope,
        query: &RunQuery,
        limit: i64,
    ) -> Result<i64, TrackingError> {
        let mut runs = SqlBuilder::default();
        runs.push("SELECT 1 FROM tracking_runs r WHERE r.tenant_id = ? AND r.project_id = ?")
            .text(scope.tenant.as_str())
            .text(scope.project.as_str());
        push_run_scope(&mut runs, query);
        self.bounded_count(runs, limit).await
    }

    /// Chooses the plan of a run search as the module documentation describes.
    async fn run_plan(self, scope: &Scope, query: &RunQuery) -> Result<RunPlan, TrackingError> {
        let mut candidates: Vec<(usize, IndexedClause<'_>)> = query
            .filter
            .clauses
            .iter()
            .enumerate()
            .filter_map(|(position, clause)| indexed(clause).map(|index| (position, index)))
            .collect();
        if candidates.is_empty() {
            return Ok(RunPlan::Scan);
        }
        // Param and tag clauses are counted first: their counts cover only the searched
        // experiments, so they are often small, and they then bound the count of a metric
        // clause, which reads the whole project's index.
        candidates.sort_by_key(|(position, index)| (!index.by_experiment, *position));

        // Counts below the limit they were counted with are exact. A count that reached its
        // limit equals the smallest count before it, so the first candidate with the
        // smallest count is one with the fewest matches.
        let mut best: Option<(usize, i64)> = None;
        // The page-ordered candidate with the fewest exact matches, else the first one.
        let mut best_ordered: Option<(usize, i64, bool)> = None;
        let mut limit = COUNT_LIMIT;
        for (position, index) in &candidates {
            let mut matches = SqlBuilder::default();
            matches.push(&format!("SELECT 1 FROM {} d WHERE ", index.table));
            push_index_conditions(&mut matches, scope, query, index);
            let count = self.bounded_count(matches, limit).await?;
            let exact = count < limit;
            if index.page_ordered {
                let better = match best_ordered {
                    None => true,
                    Some((_, known, known_exact)) => exact && (!known_exact || count < known),
                };
                if better {
                    best_ordered = Some((*position, count, exact));
                }
            }
            if exact {
                best = Some((*position, count));
                limit = count;
            }
        }

        // The ordered plan needs one experiment (an equality on the index) and the default
        // order of the index.
        let ordered = query.order_by.is_empty() && query.experiment_ids.len() == 1;
        let ordered_choice = best_ordered
            .filter(|_| ordered)
            .map(|(position, count, _)| (position, count));
        let Some((position, matches)) = best else {
            return self.ordered_or_scan(scope, query, ordered_choice).await;
        };
        let best_index = candidates
            .iter()
            .find(|(candidate, _)| *candidate == position)
            .map(|(_, index)| index);
        let Some(best_index) = best_index else {
            return Ok(RunPlan::Scan);
        };
        if ordered && best_index.page_ordered {
            return self
                .ordered_or_scan(scope, query, Some((position, matches)))
                .await;
        }
        // A metric's count covers the project. An experiment with no more runs in the view
        // than the clause has matches is read by a plan in page order instead.
        if !best_index.by_experiment && self.count_runs(scope, query, matches + 1).await? <= matches
        {
            return self.ordered_or_scan(scope, query, ordered_choice).await;
        }
        let page_rows = i64::from(query.max_results)
            .saturating_add(1)
            .saturating_add(i64::try_from(query.offset).unwrap_or(i64::MAX));
        if query.order_by.is_empty() && matches > page_rows.saturating_mul(SCAN_RATIO) {
            return self.ordered_or_scan(scope, query, ordered_choice).await;
        }
        Ok(RunPlan::Drive(position))
    }

    /// Returns the ordered plan from the clause of `choice` (position, count of matches).
    /// Returns the scan when there is no such clause, or when the experiment has no more runs
    /// in the searched view than the clause has matches: the value index also contains
    /// deleted runs, which the scan's runs index skips.
    async fn ordered_or_scan(
        self,
        scope: &Scope,
        query: &RunQuery,
        choice: Option<(usize, i64)>,
    ) -> Result<RunPlan, TrackingError> {
        let Some((position, matches)) = choice else {
            return Ok(RunPlan::Scan);
        };
        if self
            .count_runs(scope, query, matches.saturating_add(1))
            .await?
            <= matches
        {
            return Ok(RunPlan::Scan);
        }
        Ok(RunPlan::DriveOrdered(position))
    }

    /// Runs the search with `plan`, then loads the page's runs with their details.
    async fn search_with(
        self,
        scope: &Scope,
        query: &RunQuery,
        plan: RunPlan,
    ) -> Result<Page<Run>, TrackingError> {
        let selects_runs = selects_runs(plan);
        let sql = search_statement(self.dialect(), scope, query, plan, selects_runs)?;
        let (infos, next_offset) = if selects_runs {
            let infos = self.run_infos(&sql).await?;
            let Page { items, next_offset } = page(infos, query.max_results, query.offset);
            (items, next_offset)
        } else {
            let ids = self.run_ids(&sql).await?;
            let Page { items, next_offset } = page(ids, query.max_results, query.offset);
            (
                self.run_infos_by_id(scope, query, &items).await?,
                next_offset,
            )
        };
        Ok(Page {
            items: self.complete(scope, infos).await?,
            next_offset,
        })
    }

    /// Chooses the plan and runs the search.
    async fn search(self, scope: &Scope, query: &RunQuery) -> Result<Page<Run>, TrackingError> {
        let plan = self.run_plan(scope, query).await?;
        self.search_with(scope, query, plan).await
    }
}

impl SearchReader for &SqlTrackingStore {
    fn dialect(self) -> Dialect {
        self.db().dialect()
    }

    async fn count(self, sql: &SqlBuilder) -> Result<i64, TrackingError> {
        let rows = self.fetch_all(sql).await?;
        match rows.first() {
            Some(row) => Ok(row.try_get::<i64, _>(0)?),
            None => Ok(0),
        }
    }

    async fn run_ids(self, sql: &SqlBuilder) -> Result<Vec<String>, TrackingError> {
        self.fetch_all(sql)
            .await?
            .iter()
            .map(|row| Ok(row.try_get::<String, _>(0)?))
            .collect()
    }

    async fn run_infos(self, sql: &SqlBuilder) -> Result<Vec<RunInfo>, TrackingError> {
        self.fetch_all(sql)
            .await?
            .iter()
            .map(run_info_from_row)
            .collect()
    }

    async fn complete(self, scope: &Scope, infos: Vec<RunInfo>) -> Result<Vec<Run>, TrackingError> {
        SqlTrackingStore::complete_runs(self, scope, infos).await
    }
}

impl SearchReader for &Connection {
    fn dialect(self) -> Dialect {
        Dialect::Sqlite
    }

    async fn count(self, sql: &SqlBuilder) -> Result<i64, TrackingError> {
        sqlite::count(self, sql)
    }

    async fn run_ids(self, sql: &SqlBuilder) -> Result<Vec<String>, TrackingError> {
        sqlite::run_ids(self, sql)
    }

    async fn run_infos(self, sql: &SqlBuilder) -> Result<Vec<RunInfo>, TrackingError> {
        sqlite::run_infos(self, sql)
    }

    async fn complete(self, scope: &Scope, infos: Vec<RunInfo>) -> Result<Vec<Run>, TrackingError> {
        sqlite::complete_runs(self, scope, infos)
    }
}

/// Returns the rank of `clause` among the checks of a search statement, lowest first.
/// SQLite checks a row's conditions in the order they are written and stops at the first
/// that fails. So attribute comparisons, which cost one read of the run's row, come first,
/// then `=` on a param or tag, then metric comparisons, then the rest. In a driven search,
/// SQLite checks the param, tag and metric clauses before it reads the run, so there the
/// attribute comparisons come last.
/// NOTE: `=` before a metric range is a guess, because the store keeps no statistics of
/// values. The order changes the cost of a search, never its result.
fn check_rank(clause: &RunClause) -> u8 {
    match (&clause.field, clause.comparator) {
        (RunField::Attribute(_), _) => 0,
        (RunField::Param(_) | RunField::Tag(_), Comparator::Eq) => 1,
        (RunField::Metric(_), _) => 2,
        _ => 3,
    }
}

/// Returns whether the search statement of `plan` selects the runs' columns
/// ([`RUN_COLUMNS`]) rather than only their ids.
///
/// A driven search reads the row of each run that passes its other clauses, to check its
/// experiment and lifecycle stage, so selecting the columns there saves the load by id
/// afterwards. A scan checks runs on the runs index alone. For a scan, reading a page's rows
/// by id afterwards was measured to be faster than selecting the columns in the scan, about
/// 2 against 3.5 µs per row for a page of 1,000 runs with SQLite.
fn selects_runs(plan: RunPlan) -> bool {
    plan.driver().is_some()
}

/// Returns the statement of a run search with `plan`, which selects the runs of the page and
/// one more: their [`RUN_COLUMNS`] when `runs` is set, else only their ids.
///
/// On SQLite the runs index contains the run id (the primary key of a WITHOUT ROWID table).
/// So a scan whose clauses and order need no other run column checks each candidate run
/// without reading its row. A driven search checks the other param, tag and metric clauses
/// on the driving table's run id, before it reads the run.
fn search_statement(
    dialect: Dialect,
    scope: &Scope,
    query: &RunQuery,
    plan: RunPlan,
    runs: bool,
) -> Result<SqlBuilder, TrackingError> {
    let columns = if runs { RUN_COLUMNS } else { "r.run_id" };
    let mut sql = SqlBuilder::default();
    match plan.driver() {
        Some(position) => {
            let index = query
                .filter
                .clauses
                .get(position)
                .and_then(indexed)
                .ok_or_else(|| {
                    TrackingError::InvalidState(format!(
                        "run search plan names clause {position}, which no index serves"
                    ))
                })?;
            // CROSS JOIN makes SQLite read `d` first; PostgreSQL plans it as an inner join.
            sql.push(&format!(
                "SELECT {columns} FROM {} d CROSS JOIN tracking_runs r WHERE ",
                index.table
            ));
            if matches!(plan, RunPlan::DriveOrdered(_))
                && !(index.page_ordered
                    && query.experiment_ids.len() == 1
                    && query.order_by.is_empty())
            {
                return Err(TrackingError::InvalidState(format!(
                    "invalid run search plan: clause {position} cannot be read in page order; \
                     that needs `=` on a param or tag, one experiment and no order_by"
                )));
            }
            push_driving_conditions(&mut sql, scope, query, &index);
            sql.push(
                " AND r.tenant_id = d.tenant_id AND r.project_id = d.project_id AND \
                 r.run_id = d.run_id",
            );
        }
        None => {
            sql.push(&format!(
                "SELECT {columns} FROM tracking_runs r WHERE r.tenant_id = ? AND r.project_id = ?"
            ))
            .text(scope.tenant.as_str())
            .text(scope.project.as_str());
        }
    }
    push_run_scope(&mut sql, query);
    let mut checked: Vec<(usize, &RunClause)> = query
        .filter
        .clauses
        .iter()
        .enumerate()
        // The join already applies the driving clause.
        .filter(|(position, _)| plan.driver() != Some(*position))
        .collect();
    checked.sort_by_key(|(_, clause)| check_rank(clause));
    let owner = if plan.driver().is_some() { "d" } else { "r" };
    for (_, clause) in checked {
        run_clause(&mut sql, dialect, clause, owner);
    }
    if matches!(plan, RunPlan::DriveOrdered(_)) {
        // The same order as `run_order` without an `order_by`: the driving rows repeat the
        // run's start time, and naming them keeps the index order, so no sort step runs.
        sql.push(" ORDER BY d.start_time DESC, d.run_id ASC");
    } else {
        run_order(&mut sql, &query.order_by);
    }
    sql.page(query.max_results, query.offset);
    Ok(sql)
}

impl SqlTrackingStore {
    /// Searches runs. On a SQLite file database all statements of the search run on one
    /// direct connection in one blocking task. That saves sqlx's two thread hand-offs per
    /// statement and its conversion of each value. Other databases use the pool, with the
    /// same search statement.
    pub(crate) async fn search(
        &self,
        scope: &Scope,
        query: &RunQuery,
    ) -> Result<Page<Run>, TrackingError> {
        if self.db().sqlite_direct().is_none() {
            return SearchReader::search(self, scope, query).await;
        }
        let db = self.db().clone();
        let scope = scope.clone();
        let query = query.clone();
        let search = tokio::task::spawn_blocking(move || {
            let Some(direct) = db.sqlite_direct() else {
                return Err(TrackingError::InvalidState(
                    "the SQLite database lost its direct connections".into(),
                ));
            };
            // One read transaction gives every statement of the search the same snapshot, so
            // the page's runs and details match the ids that the search selected.
            direct.read(|conn| {
                let snapshot = conn.unchecked_transaction()?;
                let page = futures::executor::block_on((&*snapshot).search(&scope, &query));
                snapshot.finish()?;
                Ok(page)
            })?
        });
        search.await.map_err(|error| {
            TrackingError::InvalidState(format!("the run search task failed: {error}"))
        })?
    }

    /// Chooses the plan of a run search through the pool.
    #[cfg(test)]
    pub(crate) async fn run_plan(
        &self,
        scope: &Scope,
        query: &RunQuery,
    ) -> Result<RunPlan, TrackingError> {
        SearchReader::run_plan(self, scope, query).await
    }

    /// Runs the search with `plan` through the pool.
    #[cfg(test)]
    pub(crate) async fn search_runs_with(
        &self,
        scope: &Scope,
        query: &RunQuery,
        plan: RunPlan,
    ) -> Result<Page<Run>, TrackingError> {
        SearchReader::search_with(self, scope, query, plan).await
    }

    /// Loads params, tags, latest metrics and outputs of `infos`, keeping their order. One
    /// statement per [`IN_CHUNK`] runs returns one row per run, with each kind of detail
    /// aggregated into a JSON array by the database.
    pub(crate) async fn complete_runs(
        &self,
        scope: &Scope,
        infos: Vec<RunInfo>,
    ) -> Result<Vec<Run>, TrackingError> {
        let dialect = self.db().dialect();
        let mut details: HashMap<String, RunDetails> = HashMap::with_capacity(infos.len());
        let ids: Vec<Bind> = infos
            .iter()
            .map(|info| Bind::Text(info.run_id.clone()))
            .collect();
        for chunk in ids.chunks(IN_CHUNK) {
            let mut sql = SqlBuilder::default();
            sql.push(&details_statement(dialect))
                .text(scope.tenant.as_str())
                .text(scope.project.as_str())
                .list(chunk.iter().cloned());
            for row in self.fetch_all(&sql).await? {
                let run_id: String = row.try_get("run_id")?;
                let parsed = RunDetails::from_json(
                    &run_id,
                    &row.try_get::<String, _>("params")?,
                    &row.try_get::<String, _>("tags")?,
                    &row.try_get::<String, _>("metrics")?,
                    &row.try_get::<String, _>("outputs")?,
                )?;
                details.insert(run_id, parsed);
            }
        }
        Ok(infos
            .into_iter()
            .map(|info| {
                let found = details.remove(&info.run_id).unwrap_or_default();
                Run {
                    info,
                    metrics: found.metrics,
                    params: found.params,
                    tags: found.tags,
                    outputs: found.outputs,
                }
            })
            .collect())
    }
}

/// Returns the statement that selects [`RUN_COLUMNS`] of the runs `ids` that are still in
/// the experiments and view of `query`.
fn runs_by_id_statement(scope: &Scope, query: &RunQuery, ids: &[String]) -> SqlBuilder {
    let mut sql = SqlBuilder::default();
    sql.push(&format!(
        "SELECT {RUN_COLUMNS} FROM tracking_runs r WHERE r.tenant_id = ? AND r.project_id = ? \
         AND r.run_id IN "
    ))
    .text(scope.tenant.as_str())
    .text(scope.project.as_str())
    .list(ids.iter().map(|id| Bind::Text(id.clone())));
    push_run_scope(&mut sql, query);
    sql
}

/// Appends the experiment and lifecycle conditions of a run search on the alias `r`.
fn push_run_scope(sql: &mut SqlBuilder, query: &RunQuery) {
    sql.push(" AND r.experiment_id IN ")
        .list(query.experiment_ids.iter().map(|id| Bind::Int(*id)))
        .push(" AND r.lifecycle_stage IN ")
        .list(
            query
                .view
                .stages()
                .iter()
                .map(|s| Bind::Text((*s).to_owned())),
        );
}

/// Returns the statement that loads the details of the runs whose ids follow as an
/// `IN (…)` list, after the tenant and the project.
///
/// Metric values travel as text, because a JSON number would pass through a float parser
/// that is not exact: SQLite's `%!.17g` and PostgreSQL's `float8` output both round-trip,
/// and infinities come out as `Inf` and `Infinity`, which Rust's `f64` parser reads.
fn details_statement(dialect: Dialect) -> String {
    let aggregate = |pair: &str, table: &str, alias: &str| match dialect {
        Dialect::Sqlite => format!(
            "(SELECT json_group_array(json_array({pair})) FROM {table} {alias} WHERE \
             {alias}.tenant_id = r.tenant_id AND {alias}.project_id = r.project_id AND \
             {alias}.run_id = r.run_id)"
        ),
        Dialect::Postgres => format!(
            "(SELECT COALESCE(json_agg(json_build_array({pair}))::text, '[]') FROM {table} \
             {alias} WHERE {alias}.tenant_id = r.tenant_id AND {alias}.project_id = \
             r.project_id AND {alias}.run_id = r.run_id)"
        ),
    };
    let metric_value = match dialect {
        Dialect::Sqlite => "printf('%!.17g', m.value)",
        Dialect::Postgres => "m.value::text",
    };
    format!(
        "SELECT r.run_id, {params} AS params, {tags} AS tags, {metrics} AS metrics, \
         {outputs} AS outputs FROM tracking_runs r WHERE r.tenant_id = ? AND \
         r.project_id = ? AND r.run_id IN ",
        params = aggregate("p.key, p.value", "tracking_params", "p"),
        tags = aggregate("t.key, t.value", "tracking_run_tags", "t"),
        metrics = aggregate(
            &format!("m.key, {metric_value}, m.is_nan, m.timestamp, m.step"),
            "tracking_latest_metrics",
            "m"
        ),
        outputs = aggregate("o.model_id, o.step", "tracking_run_outputs", "o"),
    )
}

/// The params, tags, latest metrics and outputs of one run, each sorted by key.
#[derive(Default)]
struct RunDetails {
    params: Vec<Param>,
    tags: Vec<Tag>,
    metrics: Vec<Metric>,
    outputs: Vec<ModelOutput>,
}

impl RunDetails {
    fn from_json(
        run_id: &str,
        params: &str,
        tags: &str,
        metrics: &str,
        outputs: &str,
    ) -> Result<Self, TrackingError> {
        let mut params: Vec<Param> = parse_details::<(String, String)>(run_id, "params", params)?
            .into_iter()
            .map(|(key, value)| Param { key, value })
            .collect();
        params.sort_by(|a, b| a.key.cmp(&b.key));
        let mut tags: Vec<Tag> = parse_details::<(String, String)>(run_id, "tags", tags)?
            .into_iter()
            .map(|(key, value)| Tag { key, value })
            .collect();
        tags.sort_by(|a, b| a.key.cmp(&b.key));
        let mut parsed_metrics = Vec::new();
        for (key, value, is_nan, timestamp, step) in
            parse_details::<(String, String, i64, i64, i64)>(run_id, "metrics", metrics)?
        {
            let value = if is_nan != 0 {
                f64::NAN
            } else {
                value.parse::<f64>().map_err(|_| {
                    super::query::corrupt(
                        "metric value",
                        &format!("{value} (run {run_id}, key {key})"),
                    )
                })?
            };
            parsed_metrics.push(Metric {
                key,
                value,
                timestamp,
                step,
                model_id: String::new(),
            });
        }
        parsed_metrics.sort_by(|a, b| a.key.cmp(&b.key));
        let mut outputs: Vec<ModelOutput> =
            parse_details::<(String, i64)>(run_id, "outputs", outputs)?
                .into_iter()
                .map(|(model_id, step)| ModelOutput { model_id, step })
                .collect();
        outputs.sort_by(|a, b| a.model_id.cmp(&b.model_id));
        Ok(Self {
            params,
            tags,
            metrics: parsed_metrics,
            outputs,
        })
    }
}

fn parse_details<T: DeserializeOwned>(
    run_id: &str,
    what: &'static str,
    json: &str,
) -> Result<Vec<T>, TrackingError> {
    serde_json::from_str(json).map_err(|error| {
        TrackingError::Meta(ghaf_meta::MetaError::Corrupt {
            what,
            message: format!("the {what} of run {run_id} did not load as JSON: {error}"),
        })
    })
}
