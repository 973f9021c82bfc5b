//! Runs the dataset-store conformance suite on SQLite.

macro_rules! sqlite_case {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (store, _dir) = ghaf_meta::testing::sqlite_store().await;
            ghaf_ingest::conformance::$name(&store).await;
        }
    )*};
}

sqlite_case!(
    datasets_are_scoped,
    schema_versions,
    versions_dedup_by_digest,
    concurrent_version_inserts,
    lineage_events,
);
