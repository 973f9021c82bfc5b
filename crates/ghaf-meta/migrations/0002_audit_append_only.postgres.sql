-- The audit log rejects updates and deletes at the database level. Someone with owner rights
-- can still drop these triggers; the hash chain detects what they change afterwards.
CREATE FUNCTION ghaf_audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION ghaf_audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION ghaf_audit_log_append_only();
