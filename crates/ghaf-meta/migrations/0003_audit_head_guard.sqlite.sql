-- Chain heads are never deleted and only move forward one entry at a time, so a head cannot
-- be rewound to hide removed entries without first dropping these triggers.
CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
BEGIN
    SELECT RAISE(ABORT, 'audit_heads rows are never deleted');
END;

CREATE TRIGGER audit_heads_forward_only BEFORE UPDATE ON audit_heads
WHEN NEW.seq != OLD.seq + 1 OR NEW.tenant_id != OLD.tenant_id
BEGIN
    SELECT RAISE(ABORT, 'audit_heads only move forward by one entry');
END;

CREATE TRIGGER audit_log_positive_seq BEFORE INSERT ON audit_log
WHEN NEW.seq < 1
BEGIN
    SELECT RAISE(ABORT, 'audit_log sequence numbers start at 1');
END;
