//! Runs the metadata-store conformance suite on PostgreSQL (127.0.0.1:5432 by default; set
//! `GHAF_TEST_POSTGRES_URL` to point elsewhere). Each test uses a database of its own.

use ghaf_meta::testing as common;

macro_rules! postgres_case {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (store, guard) = common::postgres_store().await;
            ghaf_meta::conformance::$name(&store).await;
            store.db().close().await;
            guard.drop_database().await;
        }
    )*};
}

postgres_case!(
    tenants,
    projects_are_tenant_scoped,
    principals,
    role_bindings,
    tokens,
    audit_log,
    audit_concurrent_appends,
);
