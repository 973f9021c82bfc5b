//! Versioned schema migrations, applied in order when a [`Db`] connects.
//!
//! Each migration has one script per dialect (often the same text). Applied versions are
//! recorded in `ghaf_migrations`; on PostgreSQL an advisory lock keeps two replicas that start
//! together from applying the same migration twice.

use sqlx::{AssertSqlSafe, Executor, Row};

use crate::{Db, Dialect, MetaError};

/// One schema migration.
#[derive(Debug)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Every migration, in the order it is applied. Versions are unique; domains use their own
/// ranges (1–99 foundation, 100–199 tracking, 200–299 ingestion, 300–399 feature store,
/// 400–499 jobs, 500–599 serving). Never edit a released entry.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "foundation",
        sqlite: include_str!("../migrations/0001_foundation.sql"),
        postgres: include_str!("../migrations/0001_foundation.sql"),
    },
    Migration {
        version: 2,
        name: "audit_append_only",
        sqlite: include_str!("../migrations/0002_audit_append_only.sqlite.sql"),
        postgres: include_str!("../migrations/0002_audit_append_only.postgres.sql"),
    },
    Migration {
        version: 3,
        name: "audit_head_guard",
        sqlite: include_str!("../migrations/0003_audit_head_guard.sqlite.sql"),
        postgres: include_str!("../migrations/0003_audit_head_guard.postgres.sql"),
    },
    Migration {
        version: 100,
        name: "tracking",
        sqlite: include_str!("../migrations/0100_tracking.sql"),
        postgres: include_str!("../migrations/0100_tracking.sql"),
    },
    Migration {
        version: 101,
        name: "tracking_search_layout",
        sqlite: include_str!("../migrations/0101_tracking_search_layout.sqlite.sql"),
        postgres: include_str!("../migrations/0101_tracking_search_layout.postgres.sql"),
    },
    Migration {
        version: 102,
        name: "tracking_experiment_scoped_values",
        sqlite: include_str!("../migrations/0102_tracking_experiment_scoped_values.sqlite.sql"),
        postgres: include_str!("../migrations/0102_tracking_experiment_scoped_values.postgres.sql"),
    },
    Migration {
        version: 200,
        name: "ingest",
        sqlite: include_str!("../migrations/0200_ingest.sql"),
        postgres: include_str!("../migrations/0200_ingest.sql"),
    },
    Migration {
        version: 300,
        name: "features",
        sqlite: include_str!("../migrations/0300_features.sql"),
        postgres: include_str!("../migrations/0300_features.sql"),
    },
    Migration {
        version: 301,
        name: "feature_view_keys",
        sqlite: include_str!("../migrations/0301_feature_view_keys.sql"),
        postgres: include_str!("../migrations/0301_feature_view_keys.sql"),
    },
    Migration {
        version: 400,
        name: "jobs",
        sqlite: include_str!("../migrations/0400_jobs.sql"),
        postgres: include_str!("../migrations/0400_jobs.sql"),
    },
    Migration {
        version: 500,
        name: "serving",
        sqlite: include_str!("../migrations/0500_serving.sql"),
        postgres: include_str!("../migrations/0500_serving.sql"),
    },
    Migration {
        version: 501,
        name: "rollouts",
        sqlite: include_str!("../migrations/0501_rollouts.sql"),
        postgres: include_str!("../migrations/0501_rollouts.sql"),
    },
    Migration {
        version: 600,
        name: "monitoring",
        sqlite: include_str!("../migrations/0600_monitoring.sql"),
        postgres: include_str!("../migrations/0600_monitoring.sql"),
    },
];

/// Arbitrary constant naming Ghaf's migration lock among PostgreSQL advisory locks.
const PG_MIGRATION_LOCK: i64 = 0x0067_6861_666d_6967;

pub(crate) async fn apply(db: &Db) -> Result<(), MetaError> {
    let mut conn = db.pool().acquire().await?;
    if db.dialect() == Dialect::Postgres {
        conn.execute(AssertSqlSafe(format!(
            "SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"
        )))
        .await?;
    }
    let result = apply_pending(db, &mut conn).await;
    if db.dialect() == Dialect::Postgres {
        conn.execute(AssertSqlSafe(format!(
            "SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})"
        )))
        .await?;
    }
    result
}

async fn apply_pending(db: &Db, conn: &mut sqlx::AnyConnection) -> Result<(), MetaError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS ghaf_migrations (\
         version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let rows = sqlx::query("SELECT version FROM ghaf_migrations")
        .fetch_all(&mut *conn)
        .await?;
    let applied: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();

    let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(&found) = applied.iter().max()
        && found > known
    {
        return Err(MetaError::SchemaTooNew { found, known });
    }

    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let script = match db.dialect() {
            Dialect::Sqlite => migration.sqlite,
            Dialect::Postgres => migration.postgres,
        };
        let wrap = |source| MetaError::Migration {
            version: migration.version,
            name: migration.name,
            source,
        };
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applying metadata migration"
        );
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::raw_sql(script)
            .execute(&mut *tx)
            .await
            .map_err(wrap)?;
        sqlx::query(
            db.sql("INSERT INTO ghaf_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(ghaf_core::now_millis())
        .execute(&mut *tx)
        .await
        .map_err(wrap)?;
        tx.commit().await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied metadata migration"
        );
    }
    Ok(())
}
