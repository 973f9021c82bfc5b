-- The indexes that a run search reads, on PostgreSQL. The runs index sorts newest first
-- with the run id as tie-breaker, the default order of a run search. The value indexes end
-- with the run id (and the latest-metric index with the NaN flag), so counting the matches of
-- a clause and driving a search from it read the index alone. The SQLite script of this
-- migration also moves these tables to WITHOUT ROWID, which has no PostgreSQL counterpart:
-- there the tables stay as they are.
--
-- The new indexes are built under temporary names first and replace the old ones at the end,
-- so the exclusive lock that DROP INDEX takes is held only for the last statements.

CREATE INDEX tracking_runs_by_experiment_v2 ON tracking_runs
    (tenant_id, project_id, experiment_id, lifecycle_stage, start_time DESC, run_id);
CREATE INDEX tracking_params_by_value_v2
    ON tracking_params (tenant_id, project_id, key, value, run_id);
CREATE INDEX tracking_run_tags_by_value_v2
    ON tracking_run_tags (tenant_id, project_id, key, value, run_id);
CREATE INDEX tracking_latest_metrics_by_value_v2
    ON tracking_latest_metrics (tenant_id, project_id, key, value, is_nan, run_id);

DROP INDEX tracking_runs_by_experiment;
DROP INDEX tracking_params_by_value;
DROP INDEX tracking_run_tags_by_value;
DROP INDEX tracking_latest_metrics_by_value;

ALTER INDEX tracking_runs_by_experiment_v2 RENAME TO tracking_runs_by_experiment;
ALTER INDEX tracking_params_by_value_v2 RENAME TO tracking_params_by_value;
ALTER INDEX tracking_run_tags_by_value_v2 RENAME TO tracking_run_tags_by_value;
ALTER INDEX tracking_latest_metrics_by_value_v2 RENAME TO tracking_latest_metrics_by_value;
