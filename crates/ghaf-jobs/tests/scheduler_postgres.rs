//! Runs the scheduler scenarios on PostgreSQL (127.0.0.1:5432 by default; set
//! `GHAF_TEST_POSTGRES_URL` to point elsewhere). Each test uses a database of its own.

macro_rules! postgres_case {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let (store, guard) = ghaf_meta::testing::postgres_store().await;
            ghaf_jobs::conformance::$name(&store).await;
            store.db().close().await;
            guard.drop_database().await;
        }
    )*};
}

postgres_case!(
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
