//! The plans of a run search return the same pages, and the plan choice picks a driven plan
//! only for selective clauses. Runs are inserted with SQL, thousands at a time.

use ghaf_core::{ProjectId, TenantId};
use ghaf_meta::testing::{postgres_store, sqlite_store};

use super::*;
use crate::filter::{RunFilter, parse_run_order};

/// Runs in the large experiment; the small one has a tenth as many.
const LARGE: i64 = 3_000;

fn scope() -> Scope {
    Scope {
        tenant: TenantId::from_stored("acme"),
        project: ProjectId::from_stored("plans"),
    }
}

/// Inserts the runs of both experiments: run i has the tag `team` = `team-{i % 20}`, the
/// param `model` (one of four), the metric `loss` spread over [0, 1) and NaN for every
/// 97th run, and the tag `rare` on every 500th run.
async fn seed(store: &SqlTrackingStore) -> (i64, i64) {
    let scope = scope();
    let large = store
        .create_experiment(&scope, "large", None, &[])
        .await
        .unwrap()
        .experiment_id;
    let small = store
        .create_experiment(&scope, "small", None, &[])
        .await
        .unwrap()
        .experiment_id;
    let mut tx = store.db().pool().begin().await.unwrap();
    let experiments = [(large, LARGE), (small, LARGE / 10)];
    for (experiment, count) in experiments {
        for chunk_start in (0..count).step_by(200) {
            let chunk_end = (chunk_start + 200).min(count);
            let mut runs = SqlBuilder::default();
            runs.push(
                "INSERT INTO tracking_runs (tenant_id, project_id, run_id, experiment_id, \
                 run_name, user_id, status, start_time, end_time, lifecycle_stage, \
                 artifact_uri) VALUES ",
            );
            let mut tags = SqlBuilder::default();
            tags.push(
                "INSERT INTO tracking_run_tags (tenant_id, project_id, run_id, key, value, \
                 experiment_id, start_time) VALUES ",
            );
            let mut params = SqlBuilder::default();
            params.push(
                "INSERT INTO tracking_params (tenant_id, project_id, run_id, key, value, \
                 experiment_id, start_time) VALUES ",
            );
            let mut metrics = SqlBuilder::default();
            metrics.push(
                "INSERT INTO tracking_latest_metrics (tenant_id, project_id, run_id, key, \
                 step, timestamp, value, is_nan) VALUES ",
            );
            for i in chunk_start..chunk_end {
                let run_id = format!("{experiment:08x}{i:024x}");
                let start_time = 1_000 + i / 2;
                let separator = if i > chunk_start { ", " } else { "" };
                let scoped = |sql: &mut SqlBuilder| {
                    sql.push(separator);
                };
                scoped(&mut runs);
                runs.list([
                    Bind::Text("acme".into()),
                    Bind::Text("plans".into()),
                    Bind::Text(run_id.clone()),
                    Bind::Int(experiment),
                    Bind::Text(format!("run-{i}")),
                    Bind::Text("test".into()),
                    Bind::Text("FINISHED".into()),
                    // Pairs of runs share a start time, so the run id breaks ties.
                    Bind::Int(start_time),
                    Bind::Int(2_000 + i),
                    Bind::Text("active".into()),
                    Bind::Text(String::new()),
                ]);
                scoped(&mut tags);
                tags.list([
                    Bind::Text("acme".into()),
                    Bind::Text("plans".into()),
                    Bind::Text(run_id.clone()),
                    Bind::Text("team".into()),
                    Bind::Text(format!("team-{}", i % 20)),
                    Bind::Int(experiment),
                    Bind::Int(start_time),
                ]);
                if i % 500 == 0 {
                    tags.push(", ").list([
                        Bind::Text("acme".into()),
                        Bind::Text("plans".into()),
                        Bind::Text(run_id.clone()),
                        Bind::Text("rare".into()),
                        Bind::Text("yes".into()),
                        Bind::Int(experiment),
                        Bind::Int(start_time),
                    ]);
                }
                scoped(&mut params);
                params.list([
                    Bind::Text("acme".into()),
                    Bind::Text("plans".into()),
                    Bind::Text(run_id.clone()),
                    Bind::Text("model".into()),
                    Bind::Text(["rf", "gbm", "logreg", "mlp"][(i % 4) as usize].into()),
                    Bind::Int(experiment),
                    Bind::Int(start_time),
                ]);
                let nan = i % 97 == 0;
                let loss = (i * 104_729 % 10_000) as f64 / 10_000.0;
                scoped(&mut metrics);
                metrics.list([
                    Bind::Text("acme".into()),
                    Bind::Text("plans".into()),
                    Bind::Text(run_id),
                    Bind::Text("loss".into()),
                    Bind::Int(0),
                    Bind::Int(1),
                    Bind::Real(if nan { 0.0 } else { loss }),
                    Bind::Int(i64::from(nan)),
                ]);
            }
            for sql in [&runs, &tags, &params, &metrics] {
                let statement = store.db().sql(&sql.text);
                super::super::query::bind_all(sqlx::query(statement), &sql.binds)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
        }
    }
    tx.commit().await.unwrap();
    (large, small)
}

fn query(experiment: i64, filter: &str, order: &[&str], max: u32, offset: u64) -> RunQuery {
    RunQuery {
        experiment_ids: vec![experiment],
        filter: RunFilter::parse(filter).unwrap(),
        view: ViewType::ActiveOnly,
        order_by: order.iter().map(|o| parse_run_order(o).unwrap()).collect(),
        max_results: max,
        offset,
    }
}

async fn ids(store: &SqlTrackingStore, query: &RunQuery, plan: RunPlan) -> Vec<String> {
    store
        .search_runs_with(&scope(), query, plan)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|run| run.info.run_id)
        .collect()
}

/// Each case: filter, order, page size, offset, and the plan chosen for the large experiment.
const CASES: &[(&str, &[&str], u32, u64, RunPlan)] = &[
    ("", &[], 1000, 0, RunPlan::Scan),
    (
        "tags.team = 'team-7'",
        &[],
        1000,
        0,
        RunPlan::DriveOrdered(0),
    ),
    ("params.model = 'rf'", &[], 1, 0, RunPlan::DriveOrdered(0)),
    (
        "tags.team = 'team-7' and metrics.loss < 0.05",
        &[],
        10,
        0,
        RunPlan::DriveOrdered(0),
    ),
    (
        "metrics.loss < 0.05 and tags.team = 'team-7'",
        &[],
        3,
        2,
        RunPlan::DriveOrdered(1),
    ),
    ("metrics.loss >= 0.99", &[], 20, 0, RunPlan::Drive(0)),
    ("metrics.loss <= 0.001", &[], 20, 0, RunPlan::Drive(0)),
    ("tags.rare IS NOT NULL", &[], 5, 0, RunPlan::Drive(0)),
    (
        "params.model = 'rf'",
        &[],
        1000,
        0,
        RunPlan::DriveOrdered(0),
    ),
    (
        "params.model = 'rf' and tags.team = 'team-4'",
        &["metrics.loss DESC"],
        50,
        0,
        RunPlan::Drive(1),
    ),
    (
        "params.model != 'rf' and metrics.loss > 0.5",
        &[],
        10,
        0,
        RunPlan::Scan,
    ),
    (
        "params.model IS NOT NULL and metrics.loss > 0.5 and params.model = 'gbm'",
        &[],
        10,
        0,
        RunPlan::DriveOrdered(2),
    ),
    ("params.model != 'rf'", &[], 100, 0, RunPlan::Scan),
    // Clauses checked on the driving table's run id: a negated lookup, LIKE and ILIKE on a
    // tag, IS NOT NULL, a metric inequality, and an attribute that needs the run's row.
    (
        "tags.team = 'team-7' and params.absent IS NULL and tags.team LIKE 'team-%' and \
         attributes.run_name LIKE 'run-1%'",
        &[],
        100,
        0,
        RunPlan::DriveOrdered(0),
    ),
    (
        "metrics.loss < 0.05 and tags.team ILIKE 'TEAM-7' and params.model IS NOT NULL and \
         metrics.loss != 0.01",
        &[],
        10,
        0,
        RunPlan::Drive(0),
    ),
    (
        "tags.team = 'team-7'",
        &["attributes.run_name ASC"],
        30,
        10,
        RunPlan::Drive(0),
    ),
];

/// Returns every plan that can serve `query`: the scan, each indexed clause driving, and
/// each `=` param or tag clause in page order when the search allows it.
fn plans_of(query: &RunQuery) -> Vec<RunPlan> {
    let mut plans = vec![RunPlan::Scan];
    for (position, clause) in query.filter.clauses.iter().enumerate() {
        if let Some(index) = indexed(clause) {
            plans.push(RunPlan::Drive(position));
            if index.page_ordered && query.order_by.is_empty() && query.experiment_ids.len() == 1 {
                plans.push(RunPlan::DriveOrdered(position));
            }
        }
    }
    plans
}

async fn check_plans(store: &SqlTrackingStore) {
    let (large, small) = seed(store).await;
    for &(filter, order, max, offset, expected) in CASES {
        let query = query(large, filter, order, max, offset);
        let plan = store.run_plan(&scope(), &query).await.unwrap();
        assert_eq!(
            plan, expected,
            "plan of {filter:?} ordered by {order:?}, page {max}"
        );
        let scanned = ids(store, &query, RunPlan::Scan).await;
        assert!(!scanned.is_empty(), "{filter:?} matches no run");
        for other in plans_of(&query) {
            let driven = ids(store, &query, other).await;
            assert_eq!(driven, scanned, "{filter:?} with {other:?}");
        }
    }

    // The small experiment's runs only, although the large one has the same values.
    let small_query = query(small, "tags.team = 'team-7'", &[], 1000, 0);
    let plan = store.run_plan(&scope(), &small_query).await.unwrap();
    assert_eq!(plan, RunPlan::DriveOrdered(0));
    for plan in plans_of(&small_query) {
        let found = ids(store, &small_query, plan).await;
        assert_eq!(found.len(), (LARGE / 10 / 20) as usize, "{plan:?}");
    }

    // Two experiments: the value index is read for both, and no plan reads it in page
    // order.
    let mut both = query(
        large,
        "tags.team = 'team-3' and metrics.loss < 0.5",
        &[],
        200,
        5,
    );
    both.experiment_ids.push(small);
    let plan = store.run_plan(&scope(), &both).await.unwrap();
    assert_eq!(plan, RunPlan::Drive(0));
    let scanned = ids(store, &both, RunPlan::Scan).await;
    assert!(
        scanned
            .iter()
            .any(|id| id.starts_with(&format!("{small:08x}")))
    );
    assert!(!plans_of(&both).contains(&RunPlan::DriveOrdered(0)));
    for plan in plans_of(&both) {
        assert_eq!(ids(store, &both, plan).await, scanned, "{plan:?}");
    }
    assert!(matches!(
        store
            .search_runs_with(&scope(), &both, RunPlan::DriveOrdered(0))
            .await,
        Err(TrackingError::InvalidState(_))
    ));

    // With all but 10 of the small experiment's runs deleted, the value index contains more
    // of its runs than the active view has, so the scan runs.
    let statement = store.db().sql(
        "UPDATE tracking_runs SET lifecycle_stage = 'deleted' WHERE tenant_id = 'acme' AND \
         experiment_id = ? AND start_time >= 1005",
    );
    sqlx::query(statement)
        .bind(small)
        .execute(store.db().pool())
        .await
        .unwrap();
    let plan = store.run_plan(&scope(), &small_query).await.unwrap();
    assert_eq!(plan, RunPlan::Scan);
    let scanned = ids(store, &small_query, RunPlan::Scan).await;
    assert!(!scanned.is_empty());
    for plan in plans_of(&small_query) {
        assert_eq!(ids(store, &small_query, plan).await, scanned, "{plan:?}");
    }
}

#[tokio::test]
async fn sqlite_plans_agree() {
    let (meta, _dir) = sqlite_store().await;
    check_plans(&SqlTrackingStore::new(meta.db().clone())).await;
}

/// Searches through a direct connection of `store`'s SQLite file with `plan`, or with the
/// chosen plan when `plan` is `None`.
fn direct_search(store: &SqlTrackingStore, query: &RunQuery, plan: Option<RunPlan>) -> String {
    let direct = store.db().sqlite_direct().expect("a SQLite file database");
    let page = direct
        .read(|conn| {
            Ok(futures::executor::block_on(async {
                match plan {
                    Some(plan) => conn.search_with(&scope(), query, plan).await,
                    None => conn.search(&scope(), query).await,
                }
            }))
        })
        .unwrap()
        .unwrap();
    format!("{page:?}")
}

#[tokio::test]
async fn sqlite_direct_search_matches_pool() {
    let (meta, _dir) = sqlite_store().await;
    let store = SqlTrackingStore::new(meta.db().clone());
    let (large, small) = seed(&store).await;
    let mut queries: Vec<RunQuery> = CASES
        .iter()
        .map(|&(filter, order, max, offset, _)| query(large, filter, order, max, offset))
        .collect();
    queries.push(query(small, "tags.team = 'team-7'", &[], 1000, 0));
    queries.push(query(large, "", &["metrics.loss ASC"], 40, 3_000 - 20));
    for query in &queries {
        let plan = store.run_plan(&scope(), query).await.unwrap();
        let direct_plan = store
            .db()
            .sqlite_direct()
            .unwrap()
            .read(|conn| Ok(futures::executor::block_on(conn.run_plan(&scope(), query))))
            .unwrap()
            .unwrap();
        assert_eq!(direct_plan, plan, "plans of {:?}", query.filter);

        let pooled = store.search_runs_with(&scope(), query, plan).await.unwrap();
        assert!(
            !pooled.items.is_empty(),
            "{:?} matches no run",
            query.filter
        );
        assert_eq!(
            direct_search(&store, query, Some(plan)),
            format!("{pooled:?}"),
            "direct and pooled pages of {:?} differ",
            query.filter
        );
        assert_eq!(
            direct_search(&store, query, None),
            format!("{pooled:?}"),
            "chosen direct page of {:?}",
            query.filter
        );
        let searched = store.search_runs(&scope(), query).await.unwrap();
        assert_eq!(format!("{searched:?}"), format!("{pooled:?}"));
    }
}

#[tokio::test]
async fn postgres_plans_agree() {
    let (meta, guard) = postgres_store().await;
    check_plans(&SqlTrackingStore::new(meta.db().clone())).await;
    meta.db().close().await;
    guard.drop_database().await;
}

async fn check_exact_values(store: &SqlTrackingStore) {
    let scope = scope();
    let run = store
        .create_run(
            &scope,
            &NewRun {
                experiment_id: DEFAULT_EXPERIMENT_ID,
                user_id: "test".into(),
                run_name: None,
                start_time: Some(1),
                tags: vec![],
            },
        )
        .await
        .unwrap();
    let values = [
        0.1,
        1.0 / 3.0,
        -2.5e-300,
        f64::MIN_POSITIVE,
        5e-324,
        f64::MAX,
        f64::INFINITY,
        f64::NEG_INFINITY,
        123_456_789.123_456_78,
    ];
    let metrics: Vec<Metric> = values
        .iter()
        .enumerate()
        .map(|(index, value)| Metric {
            key: format!("m{index}"),
            value: *value,
            timestamp: 1,
            step: 0,
            model_id: String::new(),
        })
        .collect();
    store
        .log_batch(&scope, &run.info.run_id, &metrics, &[], &[])
        .await
        .unwrap();
    let loaded = store.get_run(&scope, &run.info.run_id).await.unwrap();
    for (index, value) in values.iter().enumerate() {
        let key = format!("m{index}");
        let found = loaded.metrics.iter().find(|m| m.key == key).unwrap();
        assert_eq!(found.value.to_bits(), value.to_bits(), "metric {key}");
    }

    // On SQLite file databases the search reads details through its own statements.
    let searched = store
        .search_runs(&scope, &query(DEFAULT_EXPERIMENT_ID, "", &[], 10, 0))
        .await
        .unwrap();
    assert_eq!(searched.items.len(), 1);
    for (index, value) in values.iter().enumerate() {
        let key = format!("m{index}");
        let found = searched.items[0]
            .metrics
            .iter()
            .find(|m| m.key == key)
            .unwrap();
        assert_eq!(
            found.value.to_bits(),
            value.to_bits(),
            "searched metric {key}"
        );
    }
}

#[tokio::test]
async fn sqlite_metric_values_exact() {
    let (meta, _dir) = sqlite_store().await;
    check_exact_values(&SqlTrackingStore::new(meta.db().clone())).await;
}

#[tokio::test]
async fn postgres_metric_values_exact() {
    let (meta, guard) = postgres_store().await;
    check_exact_values(&SqlTrackingStore::new(meta.db().clone())).await;
    meta.db().close().await;
    guard.drop_database().await;
}

/// SQLite reads the driving index of the ordered plan in page order: the plan has no sort
/// step, and the index range is the searched experiment's.
#[tokio::test]
async fn sqlite_ordered_plan_needs_no_sort() {
    let (meta, _dir) = sqlite_store().await;
    let store = SqlTrackingStore::new(meta.db().clone());
    let (large, _) = seed(&store).await;
    let search = query(
        large,
        "metrics.loss < 0.5 and tags.team = 'team-2' and params.model = 'rf'",
        &[],
        100,
        0,
    );
    let explain = |plan: RunPlan| -> String {
        let sql =
            search_statement(Dialect::Sqlite, &scope(), &search, plan, selects_runs(plan)).unwrap();
        store
            .db()
            .sqlite_direct()
            .unwrap()
            .read(|conn| {
                let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", sql.text))?;
                let details = statement
                    .query_map(ghaf_meta::rusqlite::params_from_iter(&sql.binds), |row| {
                        row.get::<_, String>(3)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(details.join("\n"))
            })
            .unwrap()
    };
    let ordered = explain(RunPlan::DriveOrdered(1));
    assert!(!ordered.contains("TEMP B-TREE"), "{ordered}");
    assert!(
        ordered.contains("tracking_run_tags_by_value (tenant_id=? AND project_id=? AND experiment_id=? AND key=? AND value=?)"),
        "{ordered}"
    );
    let sorted = explain(RunPlan::Drive(1));
    assert!(sorted.contains("TEMP B-TREE"), "{sorted}");
}

/// Checks that every sqlx write path gives param and tag rows their run's experiment id and
/// start time, and that the ordered plan then finds the run.
async fn check_run_place(store: &SqlTrackingStore) {
    let scope = scope();
    let experiment = store
        .create_experiment(&scope, "placed", None, &[])
        .await
        .unwrap()
        .experiment_id;
    let run_id = store
        .create_run(
            &scope,
            &NewRun {
                experiment_id: experiment,
                user_id: "test".into(),
                run_name: None,
                start_time: Some(42),
                tags: vec![Tag {
                    key: "team".into(),
                    value: "a".into(),
                }],
            },
        )
        .await
        .unwrap()
        .info
        .run_id;
    let update = RunUpdate {
        run_name: Some("renamed".into()),
        ..RunUpdate::default()
    };
    store.update_run(&scope, &run_id, &update).await.unwrap();
    let params = [Param {
        key: "depth".into(),
        value: "3".into(),
    }];
    let tags = [Tag {
        key: "owner".into(),
        value: "b".into(),
    }];
    store
        .log_batch(&scope, &run_id, &[], &params, &tags)
        .await
        .unwrap();

    for table in ["tracking_params", "tracking_run_tags"] {
        let statement = store.db().sql(&format!(
            "SELECT key, experiment_id, start_time FROM {table} WHERE tenant_id = 'acme' AND \
             run_id = ? ORDER BY key"
        ));
        let rows = sqlx::query(statement)
            .bind(&run_id)
            .fetch_all(store.db().pool())
            .await
            .unwrap();
        let expected_keys: &[&str] = if table == "tracking_params" {
            &["depth"]
        } else {
            &["mlflow.runName", "owner", "team"]
        };
        assert_eq!(rows.len(), expected_keys.len(), "{table}");
        for (row, key) in rows.iter().zip(expected_keys) {
            assert_eq!(row.try_get::<String, _>(0).unwrap(), *key, "{table}");
            assert_eq!(
                row.try_get::<i64, _>(1).unwrap(),
                experiment,
                "{table} {key}"
            );
            assert_eq!(row.try_get::<i64, _>(2).unwrap(), 42, "{table} {key}");
        }
    }

    let search = query(
        experiment,
        "tags.owner = 'b' and params.depth = '3' and tags.`mlflow.runName` = 'renamed'",
        &[],
        10,
        0,
    );
    for plan in plans_of(&search) {
        let found = ids(store, &search, plan).await;
        assert_eq!(found, std::slice::from_ref(&run_id), "{plan:?}");
    }
}

#[tokio::test]
async fn sqlite_writes_place_rows() {
    let (meta, _dir) = sqlite_store().await;
    check_run_place(&SqlTrackingStore::new(meta.db().clone())).await;
}

#[tokio::test]
async fn postgres_writes_place_rows() {
    let (meta, guard) = postgres_store().await;
    check_run_place(&SqlTrackingStore::new(meta.db().clone())).await;
    meta.db().close().await;
    guard.drop_database().await;
}
