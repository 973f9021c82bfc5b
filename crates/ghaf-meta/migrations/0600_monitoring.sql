-- Monitoring: monitors with their fitted reference, stored evaluations, alert rules, alerts
-- and alert deliveries. Portable between SQLite and PostgreSQL: TEXT ids, BIGINT times in
-- Unix milliseconds, JSON documents stored as TEXT.

CREATE TABLE monitors (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    -- Resolved reference dataset version, features and the blob holding the fitted reference.
    reference_json TEXT NOT NULL,
    -- Reference of the prediction column, fitted on the first window with predictions.
    prediction_reference_json TEXT,
    next_run_at BIGINT NOT NULL,
    last_evaluated_at BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, project_id, name)
);

CREATE INDEX monitors_due ON monitors (next_run_at);

CREATE TABLE monitor_evaluations (
    id TEXT PRIMARY KEY,
    monitor_id TEXT NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    evaluated_at BIGINT NOT NULL,
    window_start BIGINT,
    window_end BIGINT,
    rows_count BIGINT NOT NULL,
    report_json TEXT NOT NULL
);

CREATE INDEX monitor_evaluations_by_monitor ON monitor_evaluations (monitor_id, evaluated_at);

CREATE TABLE monitor_alert_rules (
    id TEXT PRIMARY KEY,
    monitor_id TEXT NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    -- Key of the HMAC-SHA256 signature of webhook deliveries.
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (monitor_id, name)
);

CREATE TABLE monitor_alerts (
    id TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL REFERENCES monitor_alert_rules (id) ON DELETE CASCADE,
    monitor_id TEXT NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    -- What the rule judged: a feature, a model version, or the whole dataset.
    subject TEXT NOT NULL,
    -- firing or resolved.
    state TEXT NOT NULL,
    fired_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    resolved_at BIGINT,
    -- Evaluations that met the condition again while the alert was firing or cooling down.
    repeats BIGINT NOT NULL,
    acknowledged_at BIGINT,
    acknowledged_by TEXT,
    evaluation_id TEXT NOT NULL,
    evidence_json TEXT NOT NULL,
    job_id TEXT,
    action_error TEXT
);

CREATE INDEX monitor_alerts_by_subject ON monitor_alerts (rule_id, subject, fired_at);
CREATE INDEX monitor_alerts_by_monitor ON monitor_alerts (monitor_id, fired_at);

CREATE TABLE monitor_alert_deliveries (
    id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL REFERENCES monitor_alerts (id) ON DELETE CASCADE,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    -- firing or resolved: the alert state the message announced.
    event TEXT NOT NULL,
    -- webhook, nats or kafka.
    sink TEXT NOT NULL,
    target TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    -- delivered or failed.
    outcome TEXT NOT NULL,
    status_code BIGINT,
    error TEXT,
    finished_at BIGINT NOT NULL
);

CREATE INDEX monitor_alert_deliveries_by_alert ON monitor_alert_deliveries (alert_id);
