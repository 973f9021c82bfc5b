-- Training jobs: the queue with leases, attempts, log chunks and per-tenant quotas.
-- Portable between SQLite and PostgreSQL: TEXT ids, BIGINT times in Unix milliseconds,
-- JSON documents stored as TEXT.

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    -- queued, running, succeeded, failed or cancelled.
    state TEXT NOT NULL,
    priority BIGINT NOT NULL,
    millicpus BIGINT NOT NULL,
    memory_mb BIGINT NOT NULL,
    gpus BIGINT NOT NULL,
    -- Attempts started so far; the running attempt's number while running.
    attempt BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    -- Attempts ended by an interruption (SIGTERM), which do not count toward max_attempts.
    interruptions BIGINT NOT NULL,
    -- A queued job is not claimed before this time (retry backoff).
    not_before BIGINT NOT NULL,
    cancel_requested BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    checkpoint_json TEXT,
    result_json TEXT,
    error TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    updated_at BIGINT NOT NULL
);

CREATE INDEX jobs_queue ON jobs (state, priority, created_at);
CREATE INDEX jobs_by_project ON jobs (tenant_id, project_id, created_at);
CREATE INDEX jobs_running_by_tenant ON jobs (tenant_id, state);

CREATE TABLE job_attempts (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    attempt BIGINT NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    worker TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    -- succeeded, failed, cancelled, interrupted or lease_expired; NULL while running.
    outcome TEXT,
    error TEXT,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE job_logs (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    seq BIGINT NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    -- stdout, stderr or system.
    stream TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Limits per tenant; NULL is unlimited. Claims lock the tenant's row, so claims of one
-- tenant's jobs are serialised across workers.
CREATE TABLE job_quotas (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
    max_running_jobs BIGINT,
    max_millicpus BIGINT,
    max_gpus BIGINT,
    updated_at BIGINT NOT NULL
);
