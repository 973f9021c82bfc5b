-- Datasets, their schema versions, immutable dataset versions and lineage run events.
-- Portable between SQLite and PostgreSQL: TEXT ids, BIGINT times in Unix milliseconds,
-- JSON documents stored as TEXT.

CREATE TABLE datasets (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    schema_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (tenant_id, project_id, name)
);

CREATE TABLE dataset_schemas (
    dataset_id TEXT NOT NULL REFERENCES datasets (id),
    version BIGINT NOT NULL,
    schema_json TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (dataset_id, version)
);

CREATE TABLE dataset_versions (
    dataset_id TEXT NOT NULL REFERENCES datasets (id),
    version BIGINT NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    schema_version BIGINT NOT NULL,
    content_digest TEXT NOT NULL,
    content_size BIGINT NOT NULL,
    row_count BIGINT NOT NULL,
    quarantined_rows BIGINT NOT NULL,
    quarantine_digest TEXT,
    report_json TEXT NOT NULL,
    profile_json TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (dataset_id, version),
    UNIQUE (dataset_id, content_digest)
);

CREATE TABLE lineage_events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_time BIGINT NOT NULL,
    job_name TEXT NOT NULL,
    dataset_name TEXT NOT NULL,
    event_json TEXT NOT NULL
);

CREATE INDEX lineage_events_by_time ON lineage_events (tenant_id, event_time);
CREATE INDEX lineage_events_by_run ON lineage_events (tenant_id, run_id);

-- Message keys of rows committed through stream pushes, for dropping redelivered messages.
CREATE TABLE dataset_message_keys (
    dataset_id TEXT NOT NULL REFERENCES datasets (id),
    message_key TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (dataset_id, message_key)
);
