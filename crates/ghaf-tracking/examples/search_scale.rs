//! Times run searches over a project with many runs, on SQLite or PostgreSQL.
//!
//! ```sh
//! cargo run -p ghaf-tracking --example search_scale -- 100000            # SQLite in a temp dir
//! cargo run -p ghaf-tracking --example search_scale -- 100000 postgres://postgres@127.0.0.1:5432/bench
//! ```
//!
//! Each run gets the metrics `acc` and `loss`, the params `model` (one of four values) and
//! `depth`, and the tag `team`. Rows are inserted with plain multi-row SQL, then every search
//! goes through [`TrackingStore::search_runs`], as the API's would. Each search runs five
//! times; the median is printed.

use std::time::{Duration, Instant};

use ghaf_core::{ProjectId, TenantId};
use ghaf_meta::Db;
use ghaf_tracking::filter::{RunFilter, parse_run_order};
use ghaf_tracking::{RunQuery, Scope, SqlTrackingStore, TrackingStore, ViewType};

const MODELS: [&str; 4] = ["rf", "gbm", "logreg", "mlp"];
const ROWS_PER_INSERT: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let dir = tempfile::tempdir()?;
    let url = args
        .next()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let db = Db::connect(&url, 4).await?;
    let store = SqlTrackingStore::new(db.clone());
    let scope = Scope {
        tenant: TenantId::from_stored("bench"),
        project: ProjectId::from_stored(uuid::Uuid::new_v4().simple().to_string()),
    };
    let experiment = store.create_experiment(&scope, "bench", None, &[]).await?;

    let started = Instant::now();
    insert_runs(&db, &scope, experiment.experiment_id, runs).await?;
    println!(
        "inserted {runs} runs (8 rows each) in {:.1} s on {}",
        started.elapsed().as_secs_f64(),
        ghaf_meta::redact_url(&url)
    );

    let cases: [(&str, &str, &[&str], u32); 4] = [
        ("first page, no filter", "", &[], 1000),
        (
            "filter metrics.acc > 0.5 and params.model = 'rf'",
            "metrics.acc > 0.5 and params.model = 'rf'",
            &[],
            1000,
        ),
        (
            "order by metrics.acc DESC, top 100",
            "",
            &["metrics.acc DESC"],
            100,
        ),
        (
            "selective filter on tags and metrics",
            "tags.team = 'team-7' and metrics.loss < 0.01",
            &[],
            1000,
        ),
    ];
    for (label, filter, order, max) in cases {
        let query = RunQuery {
            experiment_ids: vec![experiment.experiment_id],
            filter: RunFilter::parse(filter)?,
            view: ViewType::ActiveOnly,
            order_by: order
                .iter()
                .map(|o| parse_run_order(o))
                .collect::<Result<_, _>>()?,
            max_results: max,
            offset: 0,
        };
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..5 {
            let started = Instant::now();
            found = store.search_runs(&scope, &query).await?.items.len();
            times.push(started.elapsed());
        }
        times.sort();
        println!("{label}: {found} runs, median {}", millis(times[2]));
    }
    Ok(())
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// Inserts `count` runs with their params, tag and metrics in transactions of a few thousand
/// rows.
async fn insert_runs(db: &Db, scope: &Scope, experiment: i64, count: usize) -> anyhow::Result<()> {
    let tenant = scope.tenant.as_str();
    let project = scope.project.as_str();
    let mut index = 0;
    while index < count {
        let end = (index + ROWS_PER_INSERT).min(count);
        let ids: Vec<String> = (index..end)
            .map(|i| format!("{:032x}", i as u128 + 1))
            .collect();
        let mut tx = db.pool().begin().await?;

        let mut runs = String::from(
            "INSERT INTO tracking_runs (tenant_id, project_id, run_id, experiment_id, run_name, \
             user_id, status, start_time, end_time, lifecycle_stage, artifact_uri) VALUES ",
        );
        let mut params = String::from(
            "INSERT INTO tracking_params (tenant_id, project_id, run_id, key, value, \
             experiment_id, start_time) VALUES ",
        );
        let mut tags = String::from(
            "INSERT INTO tracking_run_tags (tenant_id, project_id, run_id, key, value, \
             experiment_id, start_time) VALUES ",
        );
        let mut latest = String::from(
            "INSERT INTO tracking_latest_metrics (tenant_id, project_id, run_id, key, step, \
             timestamp, value, is_nan) VALUES ",
        );
        let mut history = String::from(
            "INSERT INTO tracking_metrics (tenant_id, project_id, run_id, key, step, timestamp, \
             value, is_nan, model_id) VALUES ",
        );
        for (offset, id) in ids.iter().enumerate() {
            let i = index + offset;
            let separator = if offset == 0 { "" } else { ", " };
            // Deterministic pseudo-random values, so runs differ without an RNG dependency.
            let acc = ((i * 7919) % 10_000) as f64 / 10_000.0;
            let loss = ((i * 104_729) % 10_000) as f64 / 10_000.0;
            let model = MODELS[i % MODELS.len()];
            let start = 1_700_000_000_000_i64 + i as i64;
            runs.push_str(&format!(
                "{separator}('{tenant}', '{project}', '{id}', {experiment}, 'run-{i}', 'bench', \
                 'FINISHED', {start}, NULL, 'active', \
                 'mlflow-artifacts:/{experiment}/{id}/artifacts')"
            ));
            // Param and tag rows repeat the run's experiment id and start time.
            params.push_str(&format!(
                "{separator}('{tenant}', '{project}', '{id}', 'model', '{model}', {experiment}, \
                 {start}), ('{tenant}', '{project}', '{id}', 'depth', '{}', {experiment}, {start})",
                i % 12
            ));
            tags.push_str(&format!(
                "{separator}('{tenant}', '{project}', '{id}', 'team', 'team-{}', {experiment}, \
                 {start})",
                i % 20
            ));
            latest.push_str(&format!(
                "{separator}('{tenant}', '{project}', '{id}', 'acc', 0, 1, {acc}, 0), \
                 ('{tenant}', '{project}', '{id}', 'loss', 0, 1, {loss}, 0)"
            ));
            history.push_str(&format!(
                "{separator}('{tenant}', '{project}', '{id}', 'acc', 0, 1, {acc}, 0, ''), \
                 ('{tenant}', '{project}', '{id}', 'loss', 0, 1, {loss}, 0, '')"
            ));
        }
        for statement in [runs, params, tags, latest, history] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        index = end;
    }
    Ok(())
}
