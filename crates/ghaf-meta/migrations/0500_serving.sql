-- Endpoints: a named endpoint of a project serves registered model versions. The routing is
-- a list of variants (name, model, version, weight) stored as JSON, so traffic policies can
-- be added without a schema change. Load status is kept in each server's memory, because
-- every replica loads the model itself.
-- Portable between SQLite and PostgreSQL: BIGINT times in Unix milliseconds, JSON as TEXT.

CREATE TABLE endpoints (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    -- Project name at creation, for the lineage of the prediction log.
    project_name TEXT NOT NULL,
    description TEXT NOT NULL,
    -- Feature service whose online features are joined to requests; NULL for plain
    -- endpoints.
    feature_service TEXT,
    execution_provider TEXT NOT NULL,
    variants_json TEXT NOT NULL,
    -- Incremented by every update, so replicas notice a redeployment.
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, name)
);
