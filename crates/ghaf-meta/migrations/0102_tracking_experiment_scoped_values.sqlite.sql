-- Param and tag rows carry their run's experiment id and start time, and the value indexes
-- start with the experiment, on SQLite.
--
-- Both columns are copies of the run's, which never change after the run is created, so
-- every writer sets them from the run and no update has to follow. A filter clause such as
-- `tags.team = 'team-7'` then reads only the searched experiment's range of the index, not
-- the whole project's. Within one experiment and one value the index is in the default
-- order of a run search (newest first, then run id), so an equality clause can drive a
-- search that stops once the page is full, without a sort.
--
-- The columns are added with the default 0 and filled from the runs, which are never
-- deleted from `tracking_runs`. Writers always set both columns; SQLite cannot drop the
-- default afterwards.

-- The old value indexes go first, so the updates do not maintain them.
DROP INDEX tracking_params_by_value;
DROP INDEX tracking_run_tags_by_value;

ALTER TABLE tracking_params ADD COLUMN experiment_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tracking_params ADD COLUMN start_time BIGINT NOT NULL DEFAULT 0;
UPDATE tracking_params SET experiment_id = r.experiment_id, start_time = r.start_time
    FROM tracking_runs r
    WHERE r.tenant_id = tracking_params.tenant_id AND r.project_id = tracking_params.project_id
        AND r.run_id = tracking_params.run_id;

ALTER TABLE tracking_run_tags ADD COLUMN experiment_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tracking_run_tags ADD COLUMN start_time BIGINT NOT NULL DEFAULT 0;
UPDATE tracking_run_tags SET experiment_id = r.experiment_id, start_time = r.start_time
    FROM tracking_runs r
    WHERE r.tenant_id = tracking_run_tags.tenant_id
        AND r.project_id = tracking_run_tags.project_id AND r.run_id = tracking_run_tags.run_id;

CREATE INDEX tracking_params_by_value ON tracking_params
    (tenant_id, project_id, experiment_id, key, value, start_time DESC, run_id);
CREATE INDEX tracking_run_tags_by_value ON tracking_run_tags
    (tenant_id, project_id, experiment_id, key, value, start_time DESC, run_id);
