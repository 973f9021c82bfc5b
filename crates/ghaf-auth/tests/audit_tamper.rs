//! Tamper tests for the audit log: each kind of tampering is applied with raw SQL, as an
//! attacker with database owner rights would, and `verify_chain` must name the first bad
//! position. Every case runs on SQLite and on PostgreSQL.

use ghaf_auth::audit::{ChainReport, verify_chain};
use ghaf_core::audit::{self, AuditOutcome, NewAuditEntry};
use ghaf_meta::testing::{self, TEST_AUDIT_KEY};
use ghaf_meta::{Dialect, MetaStore, SqlMetaStore};
use sqlx::AssertSqlSafe;

const ENTRIES: i64 = 10;

fn entry(i: i64) -> NewAuditEntry {
    NewAuditEntry {
        tenant: "acme".into(),
        actor: format!("user-{}", i % 3),
        action: "projects.create".into(),
        resource: format!("projects/p{i}"),
        outcome: AuditOutcome::Success,
        status: 201,
        request_id: format!("req-{i}"),
        time: 1_700_000_000_000 + i,
        details: serde_json::json!({"i": i}),
    }
}

async fn fill(store: &SqlMetaStore) {
    for i in 1..=ENTRIES {
        store.append_audit(&entry(i)).await.unwrap();
    }
}

/// Runs statements after dropping the append-only triggers, as an attacker with owner
/// rights can.
async fn tamper(store: &SqlMetaStore, statements: &[&str]) {
    let drop_triggers: &[&str] = match store.db().dialect() {
        Dialect::Sqlite => &[
            "DROP TRIGGER IF EXISTS audit_log_no_update",
            "DROP TRIGGER IF EXISTS audit_log_no_delete",
            "DROP TRIGGER IF EXISTS audit_log_positive_seq",
            "DROP TRIGGER IF EXISTS audit_heads_no_delete",
            "DROP TRIGGER IF EXISTS audit_heads_forward_only",
        ],
        Dialect::Postgres => &[
            "DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log",
            "DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log",
            "DROP TRIGGER IF EXISTS audit_heads_guard ON audit_heads",
            "DROP TRIGGER IF EXISTS audit_heads_no_truncate ON audit_heads",
            "ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_positive_seq",
        ],
    };
    for statement in drop_triggers.iter().chain(statements) {
        sqlx::query(AssertSqlSafe(statement.to_string()))
            .execute(store.db().pool())
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

async fn verify(store: &SqlMetaStore) -> ChainReport {
    verify_chain(store, "acme", TEST_AUDIT_KEY).await.unwrap()
}

fn assert_broken_at(report: &ChainReport, seq: i64) {
    assert!(!report.valid, "tampering went undetected: {report:?}");
    assert_eq!(report.first_bad_seq, Some(seq), "{report:?}");
    assert!(report.problem.is_some());
}

/// Hash of stored entry `seq`, read back from the database.
async fn stored_hash(store: &SqlMetaStore, seq: i64) -> String {
    store.audit_chain_page("acme", seq - 1, 1).await.unwrap()[0]
        .hash
        .clone()
}

async fn intact_chain_verifies(store: SqlMetaStore) {
    fill(&store).await;
    let report = verify(&store).await;
    assert!(report.valid, "{report:?}");
    assert_eq!(report.entries_checked, ENTRIES);
    let empty = verify_chain(&store, "nobody", TEST_AUDIT_KEY)
        .await
        .unwrap();
    assert!(empty.valid);
}

async fn append_only_triggers_reject_changes(store: SqlMetaStore) {
    fill(&store).await;
    let cases = [
        (
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3",
            "append-only",
        ),
        ("DELETE FROM audit_log WHERE seq = 3", "append-only"),
        (
            "DELETE FROM audit_heads WHERE tenant_id = 'acme'",
            "never deleted",
        ),
        (
            "UPDATE audit_heads SET seq = 5 WHERE tenant_id = 'acme'",
            "forward",
        ),
    ];
    for (statement, expected) in cases {
        let result = sqlx::query(statement).execute(store.db().pool()).await;
        let message = result.expect_err(statement).to_string();
        assert!(message.contains(expected), "{statement}: {message}");
    }
    let insert = "INSERT INTO audit_log (tenant_id, seq, actor, action, resource, outcome, \
                  status, request_id, time, details, hash) VALUES ('acme', 0, 'm', 'a', 'r', \
                  'success', 200, 'x', 0, '{}', 'h')";
    let result = sqlx::query(insert).execute(store.db().pool()).await;
    assert!(
        result.is_err(),
        "an entry with sequence number 0 was accepted"
    );
}

async fn entry_below_one_is_detected(store: SqlMetaStore) {
    fill(&store).await;
    tamper(
        &store,
        &[
            "INSERT INTO audit_log (tenant_id, seq, actor, action, resource, outcome, status, \
           request_id, time, details, hash) VALUES ('acme', -5, 'mallory', 'projects.create', \
           'projects/evil', 'success', 201, 'forged', 0, '{}', 'x')",
        ],
    )
    .await;
    assert_broken_at(&verify(&store).await, 1);
}

async fn unreadable_entry_is_reported(store: SqlMetaStore) {
    fill(&store).await;
    if store.db().dialect() == Dialect::Postgres {
        // PostgreSQL enforces column types, so the cell cannot hold text; change the column.
        tamper(
            &store,
            &[
                "ALTER TABLE audit_log ALTER COLUMN time TYPE TEXT",
                "UPDATE audit_log SET time = 'abc' WHERE seq = 4",
            ],
        )
        .await;
    } else {
        tamper(&store, &["UPDATE audit_log SET time = 'abc' WHERE seq = 4"]).await;
    }
    let report = verify(&store).await;
    assert!(!report.valid, "{report:?}");
    assert!(
        report
            .problem
            .as_deref()
            .unwrap()
            .contains("cannot be read"),
        "{report:?}"
    );
}

async fn broken_chain_is_never_extended(store: SqlMetaStore) {
    fill(&store).await;
    // Forge an entry with a valid chain hash and point the head at it without the key.
    let forged = NewAuditEntry {
        actor: "mallory".into(),
        ..entry(11)
    };
    let prev = audit::decode_hash(&stored_hash(&store, ENTRIES).await).unwrap();
    let hash = hex::encode(audit::chain_hash(&prev, 11, &forged));
    let insert = format!(
        "INSERT INTO audit_log (tenant_id, seq, actor, action, resource, outcome, status, \
         request_id, time, details, hash) VALUES ('acme', 11, 'mallory', 'projects.create', \
         'projects/p11', 'success', 201, 'req-11', 1700000000011, '{{\"i\":11}}', '{hash}')"
    );
    let head = format!(
        "UPDATE audit_heads SET seq = 11, hash = '{hash}', mac = 'garbage' WHERE tenant_id = 'acme'"
    );
    tamper(&store, &[&insert, &head]).await;

    let error = store.append_audit(&entry(12)).await.unwrap_err();
    assert!(
        matches!(error, ghaf_meta::MetaError::Corrupt { .. }),
        "{error}"
    );
    assert!(store.check_audit_chain("acme").await.is_err());
    // Verification still names the forged entry's position.
    assert_broken_at(&verify(&store).await, 11);
}

async fn entries_without_head_block_appends(store: SqlMetaStore) {
    fill(&store).await;
    tamper(
        &store,
        &["DELETE FROM audit_heads WHERE tenant_id = 'acme'"],
    )
    .await;
    let error = store.append_audit(&entry(11)).await.unwrap_err();
    assert!(
        matches!(error, ghaf_meta::MetaError::Corrupt { .. }),
        "{error}"
    );
}

async fn deleted_chain_of_existing_tenant_is_detected(store: SqlMetaStore) {
    let tenant = ghaf_core::TenantId::from_stored("acme");
    store.create_tenant(&tenant, "Acme").await.unwrap();
    fill(&store).await;
    tamper(
        &store,
        &[
            "DELETE FROM audit_log WHERE tenant_id = 'acme'",
            "DELETE FROM audit_heads WHERE tenant_id = 'acme'",
        ],
    )
    .await;
    assert_broken_at(&verify(&store).await, 1);
}

async fn edited_entry_is_detected(store: SqlMetaStore) {
    fill(&store).await;
    tamper(
        &store,
        &["UPDATE audit_log SET actor = 'mallory' WHERE seq = 4"],
    )
    .await;
    assert_broken_at(&verify(&store).await, 4);
}

async fn edited_details_are_detected(store: SqlMetaStore) {
    fill(&store).await;
    tamper(
        &store,
        &["UPDATE audit_log SET details = '{\"i\":99}' WHERE seq = 6"],
    )
    .await;
    assert_broken_at(&verify(&store).await, 6);
}

async fn deleted_entry_is_detected(store: SqlMetaStore) {
    fill(&store).await;
    tamper(&store, &["DELETE FROM audit_log WHERE seq = 5"]).await;
    assert_broken_at(&verify(&store).await, 5);
}

async fn reordered_entries_are_detected(store: SqlMetaStore) {
    fill(&store).await;
    tamper(
        &store,
        &[
            "UPDATE audit_log SET seq = 1000 WHERE seq = 3",
            "UPDATE audit_log SET seq = 3 WHERE seq = 4",
            "UPDATE audit_log SET seq = 4 WHERE seq = 1000",
        ],
    )
    .await;
    assert_broken_at(&verify(&store).await, 3);
}

async fn inserted_entry_is_detected(store: SqlMetaStore) {
    fill(&store).await;
    // Make room at position 3, then insert a row with a made-up hash.
    tamper(
        &store,
        &[
            "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 3",
            "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1000",
            "INSERT INTO audit_log (tenant_id, seq, actor, action, resource, outcome, status, \
             request_id, time, details, hash) VALUES ('acme', 3, 'mallory', 'projects.create', \
             'projects/evil', 'success', 201, 'forged', 1700000000003, '{}', \
             '0000000000000000000000000000000000000000000000000000000000000000')",
        ],
    )
    .await;
    assert_broken_at(&verify(&store).await, 3);
}

async fn inserted_entry_with_valid_hash_breaks_the_next(store: SqlMetaStore) {
    fill(&store).await;
    // The attacker has the hash rule and forges a correct hash for position 3; the
    // original entry 3, now at position 4, no longer matches.
    let forged = NewAuditEntry {
        actor: "mallory".into(),
        ..entry(3)
    };
    let prev = audit::decode_hash(&stored_hash(&store, 2).await).unwrap();
    let hash = hex::encode(audit::chain_hash(&prev, 3, &forged));
    let insert = format!(
        "INSERT INTO audit_log (tenant_id, seq, actor, action, resource, outcome, status, \
         request_id, time, details, hash) VALUES ('acme', 3, 'mallory', 'projects.create', \
         'projects/p3', 'success', 201, 'req-3', 1700000000003, '{{\"i\":3}}', '{hash}')"
    );
    tamper(
        &store,
        &[
            "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 3",
            "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1000",
            &insert,
        ],
    )
    .await;
    assert_broken_at(&verify(&store).await, 4);
}

async fn truncated_chain_is_detected(store: SqlMetaStore) {
    fill(&store).await;
    tamper(&store, &["DELETE FROM audit_log WHERE seq > 7"]).await;
    assert_broken_at(&verify(&store).await, 8);
}

async fn truncated_chain_with_rewound_head_is_detected(store: SqlMetaStore) {
    fill(&store).await;
    let hash7 = stored_hash(&store, 7).await;
    let rewind =
        format!("UPDATE audit_heads SET seq = 7, hash = '{hash7}' WHERE tenant_id = 'acme'");
    tamper(&store, &["DELETE FROM audit_log WHERE seq > 7", &rewind]).await;
    let report = verify(&store).await;
    assert!(!report.valid);
    assert!(
        report.problem.as_deref().unwrap().contains("MAC"),
        "{report:?}"
    );
}

async fn appended_entry_without_key_is_detected(store: SqlMetaStore) {
    fill(&store).await;
    let forged = NewAuditEntry {
        actor: "mallory".into(),
        ..entry(11)
    };
    let prev = audit::decode_hash(&stored_hash(&store, ENTRIES).await).unwrap();
    let hash = hex::encode(audit::chain_hash(&prev, 11, &forged));
    let insert = format!(
        "INSERT INTO audit_log (tenant_id, seq, actor, action, resource, outcome, status, \
         request_id, time, details, hash) VALUES ('acme', 11, 'mallory', 'projects.create', \
         'projects/p11', 'success', 201, 'req-11', 1700000000011, '{{\"i\":11}}', '{hash}')"
    );
    tamper(&store, &[&insert]).await;
    assert_broken_at(&verify(&store).await, 11);
}

async fn deleted_head_is_detected(store: SqlMetaStore) {
    fill(&store).await;
    tamper(
        &store,
        &["DELETE FROM audit_heads WHERE tenant_id = 'acme'"],
    )
    .await;
    assert_broken_at(&verify(&store).await, 1);
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, _dir) = super::testing::sqlite_store().await;
                    super::$case(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, guard) = super::testing::postgres_store().await;
                    let pool = store.db().clone();
                    super::$case(store).await;
                    pool.close().await;
                    guard.drop_database().await;
                }
            )*
        }
    };
}

on_both_backends!(
    intact_chain_verifies,
    append_only_triggers_reject_changes,
    edited_entry_is_detected,
    edited_details_are_detected,
    deleted_entry_is_detected,
    reordered_entries_are_detected,
    inserted_entry_is_detected,
    inserted_entry_with_valid_hash_breaks_the_next,
    truncated_chain_is_detected,
    truncated_chain_with_rewound_head_is_detected,
    appended_entry_without_key_is_detected,
    deleted_head_is_detected,
    entry_below_one_is_detected,
    unreadable_entry_is_reported,
    broken_chain_is_never_extended,
    entries_without_head_block_appends,
    deleted_chain_of_existing_tenant_is_detected,
);
