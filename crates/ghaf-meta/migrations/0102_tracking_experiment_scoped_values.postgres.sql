-- Param and tag rows carry their run's experiment id and start time, and the value indexes
-- start with the experiment, on PostgreSQL.
--
-- Both columns are copies of the run's, which never change after the run is created, so
-- every writer sets them from the run and no update has to follow. A filter clause such as
-- `tags.team = 'team-7'` then reads only the searched experiment's range of the index, not
-- the whole project's. Within one experiment and one value the index is in the default
-- order of a run search (newest first, then run id), so an equality clause can drive a
-- search that stops once the page is full, without a sort.
--
-- The columns are added with the default 0 and filled from the runs, which are never
-- deleted from `tracking_runs`. Then the defaults are dropped, so a writer that does not
-- set both columns (a replica of an older version on the same database) fails instead of
-- writing rows that a search would place in the wrong experiment. Upgrade all replicas
-- together. The old value indexes are dropped before the updates, which then do not
-- maintain them; the script runs in one transaction, so no search sees the table without
-- an index.

DROP INDEX tracking_params_by_value;
DROP INDEX tracking_run_tags_by_value;

ALTER TABLE tracking_params
    ADD COLUMN experiment_id BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN start_time BIGINT NOT NULL DEFAULT 0;
UPDATE tracking_params p SET experiment_id = r.experiment_id, start_time = r.start_time
    FROM tracking_runs r
    WHERE r.tenant_id = p.tenant_id AND r.project_id = p.project_id AND r.run_id = p.run_id;

ALTER TABLE tracking_run_tags
    ADD COLUMN experiment_id BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN start_time BIGINT NOT NULL DEFAULT 0;
UPDATE tracking_run_tags t SET experiment_id = r.experiment_id, start_time = r.start_time
    FROM tracking_runs r
    WHERE r.tenant_id = t.tenant_id AND r.project_id = t.project_id AND r.run_id = t.run_id;

ALTER TABLE tracking_params ALTER COLUMN experiment_id DROP DEFAULT,
    ALTER COLUMN start_time DROP DEFAULT;
ALTER TABLE tracking_run_tags ALTER COLUMN experiment_id DROP DEFAULT,
    ALTER COLUMN start_time DROP DEFAULT;

CREATE INDEX tracking_params_by_value ON tracking_params
    (tenant_id, project_id, experiment_id, key, value, start_time DESC, run_id);
CREATE INDEX tracking_run_tags_by_value ON tracking_run_tags
    (tenant_id, project_id, experiment_id, key, value, start_time DESC, run_id);
