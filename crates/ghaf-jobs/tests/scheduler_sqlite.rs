//! Runs the scheduler scenarios on SQLite, each on a database of its own.

macro_rules! sqlite_case {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (store, _dir) = ghaf_meta::testing::sqlite_store().await;
            ghaf_jobs::conformance::$name(&store).await;
        }
    )*};
}

sqlite_case!(
    retry_with_backoff,
    permanent_failure_is_not_retried,
    cancel_queued_and_running,
    quota_exhaustion,
    full_tenant_does_not_starve_others,
    workers_race_for_one_job,
    expired_lease_requeues,
    interruption_requeues_with_checkpoint,
    priority_and_capability_order,
    logs_in_chunks,
    jobs_are_scoped,
);
