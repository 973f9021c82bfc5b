-- Chain heads are never deleted and only move forward one entry at a time, so a head cannot
-- be rewound to hide removed entries without first dropping these triggers.
CREATE FUNCTION ghaf_audit_heads_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit_heads rows are never deleted';
    END IF;
    IF NEW.seq <> OLD.seq + 1 OR NEW.tenant_id <> OLD.tenant_id THEN
        RAISE EXCEPTION 'audit_heads only move forward by one entry';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_heads_guard BEFORE UPDATE OR DELETE ON audit_heads
FOR EACH ROW EXECUTE FUNCTION ghaf_audit_heads_guard();

CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
FOR EACH STATEMENT EXECUTE FUNCTION ghaf_audit_log_append_only();

ALTER TABLE audit_log ADD CONSTRAINT audit_log_positive_seq CHECK (seq >= 1);
