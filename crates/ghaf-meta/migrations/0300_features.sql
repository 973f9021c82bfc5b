-- Feature store definitions: entities, feature view versions, feature services, and the
-- materialised intervals of each view version, kept apart from the definitions so that a
-- long materialisation history never grows a definition row.
-- Portable between SQLite and PostgreSQL: BIGINT times in Unix milliseconds (event-time
-- bounds of intervals in microseconds), JSON documents stored as TEXT.

CREATE TABLE feature_entities (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, name)
);

-- One row per version of a view. A change of keys, source, timestamps or features adds a
-- version; description, tags, TTL and the online flag are updated in the latest row.
CREATE TABLE feature_view_versions (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    spec_json TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, name, version)
);

CREATE TABLE feature_services (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, name)
);

-- Event-time range [start_micros, end_micros] written to the online store by one run.
CREATE TABLE feature_materializations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    view_name TEXT NOT NULL,
    view_version BIGINT NOT NULL,
    dataset_version BIGINT NOT NULL,
    start_micros BIGINT NOT NULL,
    end_micros BIGINT NOT NULL,
    keys_written BIGINT NOT NULL,
    keys_skipped BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE INDEX feature_materializations_by_view
    ON feature_materializations (tenant_id, project_id, view_name, view_version, end_micros);
