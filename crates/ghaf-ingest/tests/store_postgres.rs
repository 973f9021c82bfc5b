//! Runs the dataset-store conformance suite on PostgreSQL (127.0.0.1:5432 by default; set
//! `GHAF_TEST_POSTGRES_URL` to point elsewhere). Each test uses a database of its own.

macro_rules! postgres_case {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (store, guard) = ghaf_meta::testing::postgres_store().await;
            ghaf_ingest::conformance::$name(&store).await;
            store.db().close().await;
            guard.drop_database().await;
        }
    )*};
}

postgres_case!(
    datasets_are_scoped,
    schema_versions,
    versions_dedup_by_digest,
    concurrent_version_inserts,
    lineage_events,
);
