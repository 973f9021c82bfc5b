//! Store factories for tests of this crate and of the crates built on it: an empty SQLite
//! store in a temporary directory, or an empty PostgreSQL database per test.

use crate::{Db, SqlMetaStore};

pub const TEST_AUDIT_KEY: &[u8] = b"conformance-test-audit-key";

/// Creates an empty SQLite store in a temporary directory that lives as long as the returned
/// guard.
pub async fn sqlite_store() -> (SqlMetaStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let db = Db::connect(&url, 4).await.expect("connect sqlite");
    (SqlMetaStore::new(db, TEST_AUDIT_KEY.to_vec()), dir)
}

/// Base URL of the PostgreSQL server used by tests; `GHAF_TEST_POSTGRES_URL` overrides it.
pub fn postgres_base_url() -> String {
    std::env::var("GHAF_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A PostgreSQL database created for one test, dropped by [`PgGuard::drop_database`].
pub struct PgGuard {
    admin_url: String,
    name: String,
}

impl PgGuard {
    pub async fn drop_database(self) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .expect("connect to postgres");
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::Executor::execute(&mut conn, sqlx::AssertSqlSafe(statement))
            .await
            .expect("drop test database");
    }
}

/// Creates an empty PostgreSQL store in a new database of its own.
pub async fn postgres_store() -> (SqlMetaStore, PgGuard) {
    use sqlx::Connection;
    let base = postgres_base_url();
    let admin_url = format!("{base}/postgres");
    let name = format!("ghaf_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|error| {
        panic!("cannot reach PostgreSQL at {admin_url}: {error}; start it (scripts/test does) or set GHAF_TEST_POSTGRES_URL")
    });
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .expect("create test database");
    let db = Db::connect(&format!("{base}/{name}"), 4)
        .await
        .expect("connect to test database");
    (
        SqlMetaStore::new(db, TEST_AUDIT_KEY.to_vec()),
        PgGuard { admin_url, name },
    )
}
