-- Traffic policies of endpoints and the live request counters of their variants.
-- Portable between SQLite and PostgreSQL: BIGINT times in Unix milliseconds, JSON as TEXT.

-- How requests are spread over the variants (single, A/B or canary); rows written before
-- this migration route every request to their one variant.
ALTER TABLE endpoints ADD COLUMN policy_json TEXT NOT NULL DEFAULT '{"kind":"single"}';
-- Variant that receives mirrored requests whose answers are only compared; NULL for none.
ALTER TABLE endpoints ADD COLUMN shadow_json TEXT;
-- Registered model alias (such as champion) whose moves start a rollout; NULL for none.
ALTER TABLE endpoints ADD COLUMN follow_alias TEXT;
-- State of the current or last automated rollout; NULL before the first one.
ALTER TABLE endpoints ADD COLUMN rollout_json TEXT;

-- Cumulative counters of one variant on one replica since that replica started. Each
-- replica writes only its own rows, so the sum over replica_id is the endpoint's total.
CREATE TABLE endpoint_variant_stats (
    tenant_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    variant TEXT NOT NULL,
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    -- UUIDv7 a server picks at start.
    replica_id TEXT NOT NULL,
    requests BIGINT NOT NULL,
    -- Requests that failed on the server side; invalid input is not counted.
    errors BIGINT NOT NULL,
    -- Request counts per latency bucket, as a JSON array.
    latency_json TEXT NOT NULL,
    shadow_compared BIGINT NOT NULL,
    shadow_disagreed BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, project_id, endpoint, variant, model, version, replica_id)
);

-- Pruning deletes rows of replicas that stopped writing long ago.
CREATE INDEX endpoint_variant_stats_updated ON endpoint_variant_stats (updated_at);
