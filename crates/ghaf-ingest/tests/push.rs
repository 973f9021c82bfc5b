//! Stream pushes: micro-batches become appended segments, redelivered messages are dropped
//! by key (also after a restart), and failing messages go to the dead-letter dataset.

mod common;

use common::harness;
use ghaf_ingest::{IngestService, PushFormat};

const EVENTS: &str = r#"
columns:
  - {name: id, type: integer, nullable: false}
  - {name: score, type: float, min: 0}
  - {name: email, type: string, classification: pii}
unique_key: [id]
"#;

async fn push(
    service: &IngestService,
    h: &common::Harness,
    body: &str,
    format: PushFormat,
) -> ghaf_ingest::PushOutcome {
    let dataset = service
        .store()
        .get_dataset(&h.tenant, &h.project, "events")
        .await
        .unwrap();
    service
        .push(&dataset, "p", body.as_bytes(), format, "tester")
        .await
        .unwrap()
}

#[tokio::test]
async fn push_appends_segments_and_drops_duplicates() {
    let h = harness().await;
    h.create("events", EVENTS).await;

    let batch =
        "{\"id\": 1, \"score\": 0.5}\n{\"id\": 2, \"score\": 1}\n{\"id\": 3, \"score\": -1}\n";
    let first = push(&h.service, &h, batch, PushFormat::Ndjson).await;
    assert_eq!(first.received, 3);
    assert_eq!(first.duplicates_dropped, 0);
    assert_eq!(first.accepted, 2);
    assert_eq!(first.dead_lettered, 1);
    assert_eq!(first.segment.as_ref().unwrap().version, 1);
    assert_eq!(first.dead_letter_version, Some(1));

    // The same batch again, with one new message and one repeat inside the batch.
    let again = format!("{batch}{{\"id\": 4, \"score\": 2}}\n{{\"id\": 4, \"score\": 3}}\n");
    let second = push(&h.service, &h, &again, PushFormat::Ndjson).await;
    assert_eq!(second.received, 5);
    assert_eq!(
        second.duplicates_dropped, 3,
        "ids 1 and 2 were stored, id 4 repeats"
    );
    assert_eq!(second.accepted, 1);
    assert_eq!(second.segment.as_ref().unwrap().version, 2);
    assert_eq!(
        second.dead_letter_version,
        Some(1),
        "the same dead letter is stored once"
    );

    // A restarted service drops the same keys.
    let (reopened, _, _) = common::open(h.dir.path()).await;
    let array = "[{\"id\": 4, \"score\": 2}, {\"id\": 5, \"score\": 2}]";
    let third = push(&reopened, &h, array, PushFormat::JsonArray).await;
    assert_eq!(third.duplicates_dropped, 1);
    assert_eq!(third.accepted, 1);

    let only_duplicates = push(&reopened, &h, array, PushFormat::JsonArray).await;
    assert_eq!(only_duplicates.duplicates_dropped, 2);
    assert!(only_duplicates.segment.is_none());
    assert!(only_duplicates.run_id.is_empty());

    let dataset = h.dataset("events").await;
    let segments = h
        .service
        .store()
        .list_versions(&h.tenant, &dataset.id)
        .await
        .unwrap();
    let total: u64 = segments.iter().map(|segment| segment.row_count).sum();
    assert_eq!(segments.len(), 3);
    assert_eq!(total, 4, "ids 1, 2, 4 and 5, each once");
}

#[tokio::test]
async fn dead_letters_keep_message_and_reasons() {
    let h = harness().await;
    h.create("events", EVENTS).await;
    let batch = "{\"id\": 1, \"score\": 0.5}\nnot json\n{\"id\": \"x\", \"email\": \"a@b.c\"}\n";
    let outcome = push(&h.service, &h, batch, PushFormat::Ndjson).await;
    assert_eq!(outcome.dead_lettered, 2);

    let letters = h.dataset("events.dead-letter").await;
    let message = letters.schema.column("message").unwrap();
    assert_eq!(
        message.classification,
        ghaf_ingest::Classification::Pii,
        "dead letters inherit the strictest label"
    );
    let versions = h
        .service
        .store()
        .list_versions(&h.tenant, &letters.id)
        .await
        .unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].row_count, 2);
    assert_eq!(versions[0].source, "push:events");
    let message_profile = &versions[0].profile.columns[0];
    assert_eq!(message_profile.min, Some(serde_json::json!("not json")));

    let error = h
        .service
        .push(
            &h.dataset("events").await,
            "p",
            b"{\"id\": 1}",
            PushFormat::JsonArray,
            "tester",
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not a JSON array"), "{error}");
}
