//! The two plans of a run search return the same pages, and the plan choice picks the
//! driven plan only for selective clauses. Runs are inserted with SQL, because the plans
//! differ only beyond [`SCAN_ALWAYS`] runs.

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
                "INSERT INTO tracking_run_tags (tenant_id, project_id, run_id, key, value) \
                 VALUES ",
            );
            let mut params = SqlBuilder::default();
            params.push(
                "INSERT INTO tracking_params (tenant_id, project_id, run_id, key, value) \
                 VALUES ",
            );
            let mut metrics = SqlBuilder::default();
            metrics.push(
                "INSERT INTO tracking_latest_metrics (tenant_id, project_id, run_id, key, \
                 step, timestamp, value, is_nan) VALUES ",
            );
            for i in chunk_start..chunk_end {
                let run_id = format!("{experiment:08x}{i:024x}");
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
                    Bind::Int(1_000 + i / 2),
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
                ]);
                if i % 500 == 0 {
                    tags.push(", ").list([
                        Bind::Text("acme".into()),
                        Bind::Text("plans".into()),
                        Bind::Text(run_id.clone()),
                        Bind::Text("rare".into()),
                        Bind::Text("yes".into()),
                    ]);
                }
                scoped(&mut params);
                params.list([
                    Bind::Text("acme".into()),
                    Bind::Text("plans".into()),
                    Bind::Text(run_id.clone()),
                    Bind::Text("model".into()),
                    Bind::Text(["rf", "gbm", "logreg", "mlp"][(i % 4) as usize].into()),
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

/// Each case: filter, order, page size, offset, and whether the chosen plan drives.
const CASES: &[(&str, &[&str], u32, u64, bool)] = &[
    ("", &[], 1000, 0, false),
    ("tags.team = 'team-7'", &[], 1000, 0, true),
    ("params.model = 'rf'", &[], 1, 0, false),
    (
        "tags.team = 'team-7' and metrics.loss < 0.05",
        &[],
        10,
        0,
        true,
    ),
    (
        "metrics.loss < 0.05 and tags.team = 'team-7'",
        &[],
        3,
        2,
        true,
    ),
    ("metrics.loss >= 0.99", &[], 20, 0, true),
    ("metrics.loss <= 0.001", &[], 20, 0, true),
    ("tags.rare IS NOT NULL", &[], 5, 0, true),
    ("params.model = 'rf'", &[], 1000, 0, true),
    (
        "params.model = 'rf' and tags.team = 'team-4'",
        &["metrics.loss DESC"],
        50,
        0,
        true,
    ),
    (
        "params.model != 'rf' and metrics.loss > 0.5",
        &[],
        10,
        0,
        false,
    ),
    ("params.model != 'rf'", &[], 100, 0, false),
    // Clauses checked on the driving table's run id: a negated lookup, LIKE and ILIKE on a
    // tag, IS NOT NULL, a metric inequality, and an attribute that needs the run's row.
    (
        "tags.team = 'team-7' and params.absent IS NULL and tags.team LIKE 'team-%' and \
         attributes.run_name LIKE 'run-1%'",
        &[],
        100,
        0,
        true,
    ),
    (
        "metrics.loss < 0.05 and tags.team ILIKE 'TEAM-7' and params.model IS NOT NULL and \
         metrics.loss != 0.01",
        &[],
        10,
        0,
        true,
    ),
    (
        "tags.team = 'team-7'",
        &["attributes.run_name ASC"],
        30,
        10,
        true,
    ),
];

async fn check_plans(store: &SqlTrackingStore) {
    let (large, small) = seed(store).await;
    for &(filter, order, max, offset, drives) in CASES {
        let query = query(large, filter, order, max, offset);
        let plan = store.run_plan(&scope(), &query).await.unwrap();
        assert_eq!(
            matches!(plan, RunPlan::Drive(_)),
            drives,
            "plan of {filter:?} ordered by {order:?}, page {max}: {plan:?}"
        );
        let scanned = ids(store, &query, RunPlan::Scan).await;
        assert!(!scanned.is_empty(), "{filter:?} matches no run");
        if let RunPlan::Drive(_) = plan {
            let driven = ids(store, &query, plan).await;
            assert_eq!(
                driven, scanned,
                "driven and scanned pages of {filter:?} differ"
            );
        }
        for position in 0..query.filter.clauses.len() {
            if indexed(&query.filter.clauses[position]).is_some() {
                let driven = ids(store, &query, RunPlan::Drive(position)).await;
                assert_eq!(driven, scanned, "{filter:?} driven by clause {position}");
            }
        }
    }

    let small_query = query(small, "tags.team = 'team-7'", &[], 1000, 0);
    let plan = store.run_plan(&scope(), &small_query).await.unwrap();
    assert_eq!(plan, RunPlan::Scan, "a small experiment is scanned");
    let driven = ids(store, &small_query, RunPlan::Drive(0)).await;
    assert_eq!(driven.len(), (LARGE / 10 / 20) as usize);
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
