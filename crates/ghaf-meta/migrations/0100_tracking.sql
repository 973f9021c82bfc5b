-- Experiment tracking, artifacts and the model registry.
-- Portable between SQLite and PostgreSQL. Every key starts with (tenant_id, project_id), so
-- every query is scoped to one project of one tenant. Times are Unix milliseconds. Metric
-- values are DOUBLE PRECISION with a separate is_nan flag, because SQLite stores a NaN REAL
-- as NULL.

CREATE TABLE tracking_experiments (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    experiment_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    artifact_location TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, experiment_id),
    UNIQUE (tenant_id, project_id, name)
);

CREATE TABLE tracking_experiment_tags (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    experiment_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, experiment_id, key)
);

CREATE TABLE tracking_runs (
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
);

CREATE INDEX tracking_runs_by_experiment
    ON tracking_runs (tenant_id, project_id, experiment_id, lifecycle_stage, start_time);

CREATE TABLE tracking_params (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, run_id, key)
);

CREATE INDEX tracking_params_by_value ON tracking_params (tenant_id, project_id, key, value);

CREATE TABLE tracking_run_tags (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, run_id, key)
);

CREATE INDEX tracking_run_tags_by_value ON tracking_run_tags (tenant_id, project_id, key, value);

-- Full metric history. Logging the same (key, timestamp, step, value) twice keeps one row.
CREATE TABLE tracking_metrics (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    step BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL,
    model_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, run_id, key, step, timestamp, value, is_nan)
);

-- The latest value per run and key: largest step, then timestamp, then value.
CREATE TABLE tracking_latest_metrics (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    step BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, run_id, key)
);

CREATE INDEX tracking_latest_metrics_by_value
    ON tracking_latest_metrics (tenant_id, project_id, key, value);

CREATE TABLE tracking_run_outputs (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    step BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, run_id, model_id)
);

CREATE TABLE tracking_logged_models (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    experiment_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    model_type TEXT NOT NULL,
    source_run_id TEXT NOT NULL,
    status TEXT NOT NULL,
    artifact_uri TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, model_id)
);

CREATE INDEX tracking_logged_models_by_name
    ON tracking_logged_models (tenant_id, project_id, experiment_id, name);

CREATE TABLE tracking_logged_model_tags (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, model_id, key)
);

CREATE TABLE tracking_logged_model_params (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, model_id, key)
);

-- Artifact files by path below the project's artifact root; content lives in the blob
-- store under the digest.
CREATE TABLE tracking_artifacts (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    path TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, path)
);

CREATE TABLE registry_models (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    user_id TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, name)
);

CREATE TABLE registry_model_tags (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, name, key)
);

CREATE TABLE registry_versions (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    source TEXT NOT NULL,
    run_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    status TEXT NOT NULL,
    current_stage TEXT NOT NULL,
    description TEXT NOT NULL,
    user_id TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    artifact_prefix TEXT NOT NULL,
    manifest TEXT NOT NULL,
    manifest_signature TEXT NOT NULL,
    signing_key_id TEXT NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, name, version)
);

CREATE INDEX registry_versions_by_run ON registry_versions (tenant_id, project_id, run_id);

CREATE TABLE registry_version_tags (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, name, version, key)
);

CREATE TABLE registry_aliases (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, name, alias)
);
