-- The layout of the tables that a run search reads, on SQLite.
--
-- The run, param, tag, latest-metric and output tables become WITHOUT ROWID tables, so each
-- is stored in its primary-key order (tenant, project, run, then key or model). A lookup by run then takes
-- one B-tree search instead of two (the key index, then the row), and rows of one run lie
-- together. A secondary index of such a table also holds the primary-key columns, so the
-- value indexes contain the run id and serve a filter clause without reading the rows.
--
-- The runs index sorts newest first with the run id as tie-breaker, the default order of a
-- run search, so a page needs no sort step. The latest-metric value index also holds the
-- NaN flag, which a search checks on every metric comparison.

CREATE TABLE tracking_runs_new (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    experiment_id BIGINT NOT NULL,
    run_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time BIGINT NOT NULL,
    end_time BIGINT,
    lifecycle_stage TEXT NOT NULL,
    artifact_uri TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, run_id)
) WITHOUT ROWID;
INSERT INTO tracking_runs_new (
    tenant_id, project_id, run_id, experiment_id, run_name, user_id,
    status, start_time, end_time, lifecycle_stage, artifact_uri)
    SELECT tenant_id, project_id, run_id, experiment_id, run_name, user_id,
        status, start_time, end_time, lifecycle_stage, artifact_uri
    FROM tracking_runs;
DROP TABLE tracking_runs;
ALTER TABLE tracking_runs_new RENAME TO tracking_runs;

CREATE TABLE tracking_params_new (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, run_id, key)
) WITHOUT ROWID;
INSERT INTO tracking_params_new (tenant_id, project_id, run_id, key, value)
    SELECT tenant_id, project_id, run_id, key, value FROM tracking_params;
DROP TABLE tracking_params;
ALTER TABLE tracking_params_new RENAME TO tracking_params;

CREATE TABLE tracking_run_tags_new (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, run_id, key)
) WITHOUT ROWID;
INSERT INTO tracking_run_tags_new (tenant_id, project_id, run_id, key, value)
    SELECT tenant_id, project_id, run_id, key, value FROM tracking_run_tags;
DROP TABLE tracking_run_tags;
ALTER TABLE tracking_run_tags_new RENAME TO tracking_run_tags;

CREATE TABLE tracking_latest_metrics_new (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    step BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, run_id, key)
) WITHOUT ROWID;
INSERT INTO tracking_latest_metrics_new (
    tenant_id, project_id, run_id, key, step, timestamp, value, is_nan)
    SELECT tenant_id, project_id, run_id, key, step, timestamp,
        value, is_nan
    FROM tracking_latest_metrics;
DROP TABLE tracking_latest_metrics;
ALTER TABLE tracking_latest_metrics_new RENAME TO tracking_latest_metrics;

CREATE TABLE tracking_run_outputs_new (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    step BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, run_id, model_id)
) WITHOUT ROWID;
INSERT INTO tracking_run_outputs_new (tenant_id, project_id, run_id, model_id, step)
    SELECT tenant_id, project_id, run_id, model_id, step FROM tracking_run_outputs;
DROP TABLE tracking_run_outputs;
ALTER TABLE tracking_run_outputs_new RENAME TO tracking_run_outputs;

CREATE INDEX tracking_runs_by_experiment ON tracking_runs
    (tenant_id, project_id, experiment_id, lifecycle_stage, start_time DESC, run_id);
CREATE INDEX tracking_params_by_value ON tracking_params (tenant_id, project_id, key, value);
CREATE INDEX tracking_run_tags_by_value ON tracking_run_tags (tenant_id, project_id, key, value);
CREATE INDEX tracking_latest_metrics_by_value
    ON tracking_latest_metrics (tenant_id, project_id, key, value, is_nan);
