//! Stream pushes: micro-batches become appended segments, redelivered messages are dropped
//! by key (also after a restart), and failing messages go to the dead-letter dataset.

mod common;

use common::harness;
use ghaf_ingest::{DEAD_LETTER_MESSAGE_BYTES, IngestService, PushFormat, PushResult, ReadLimits};

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
        message.label(),
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

const UNKEYED: &str = r#"
columns:
  - {name: sensor, type: string, nullable: false}
  - {name: value, type: float}
"#;

#[tokio::test]
async fn equal_segments_are_appended() {
    let h = harness().await;
    h.create("readings", UNKEYED).await;
    let dataset = h.dataset("readings").await;
    let batch = b"{\"sensor\": \"a\", \"value\": 1.5}\n";

    let first = h
        .service
        .push(&dataset, "p", batch, PushFormat::Ndjson, "tester")
        .await
        .unwrap();
    let second = h
        .service
        .push(&dataset, "p", batch, PushFormat::Ndjson, "tester")
        .await
        .unwrap();

    assert_eq!(first.result, PushResult::Appended);
    assert_eq!(second.result, PushResult::Appended);
    assert_eq!(first.segment.as_ref().unwrap().version, 1);
    assert_eq!(second.segment.as_ref().unwrap().version, 2);
    let versions = h
        .service
        .store()
        .list_versions(&h.tenant, &dataset.id)
        .await
        .unwrap();
    assert_eq!(
        versions.len(),
        2,
        "two readings with equal values, both stored"
    );
    assert_ne!(versions[0].content_digest, versions[1].content_digest);
}

#[tokio::test]
async fn all_duplicates_are_reported() {
    let h = harness().await;
    h.create("events", EVENTS).await;
    let batch = "{\"id\": 1, \"score\": 0.5}\n";
    push(&h.service, &h, batch, PushFormat::Ndjson).await;

    let again = push(&h.service, &h, batch, PushFormat::Ndjson).await;

    assert_eq!(again.result, PushResult::AllDuplicates);
    assert!(again.segment.is_none());
    assert_eq!(again.duplicates_dropped, 1);
}

#[tokio::test]
async fn keys_dedup_by_normalised_value() {
    let h = harness().await;
    h.create(
        "ticks",
        r#"
columns:
  - {name: at, type: timestamp, nullable: false}
  - {name: price, type: float, nullable: false}
unique_key: [at, price]
"#,
    )
    .await;
    let dataset = h.dataset("ticks").await;
    let first = b"{\"at\": \"2024-01-01T10:00:00Z\", \"price\": 1}\n";
    // The same instant with an offset and the same price written as a float.
    let same = b"{\"price\": 1.0, \"at\": \"2024-01-01T14:00:00+04:00\"}\n";

    h.service
        .push(&dataset, "p", first, PushFormat::Ndjson, "tester")
        .await
        .unwrap();
    let again = h
        .service
        .push(&dataset, "p", same, PushFormat::Ndjson, "tester")
        .await
        .unwrap();

    assert_eq!(again.result, PushResult::AllDuplicates);
    assert_eq!(again.duplicates_dropped, 1);
}

#[tokio::test]
async fn invalid_utf8_is_dead_lettered_with_offset() {
    let h = harness().await;
    h.create("events", EVENTS).await;
    let dataset = h.dataset("events").await;
    let body = b"{\"id\": 1, \"email\": \"a\xffb\"}\n{\"id\": 2}\n";

    let outcome = h
        .service
        .push(&dataset, "p", body, PushFormat::Ndjson, "tester")
        .await
        .unwrap();

    assert_eq!(outcome.accepted, 1);
    assert_eq!(outcome.dead_lettered, 1);
    let letters = h.dataset("events.dead-letter").await;
    let version = h
        .service
        .store()
        .get_version(&h.tenant, &letters.id, 1)
        .await
        .unwrap();
    let reasons = version.profile.columns[1].min.clone().unwrap();
    assert!(
        reasons
            .as_str()
            .unwrap()
            .contains("invalid UTF-8 at byte 21"),
        "{reasons}"
    );

    let error = h
        .service
        .push(
            &dataset,
            "p",
            b"[{\"id\": 3, \"email\": \"\xff\"}]",
            PushFormat::JsonArray,
            "tester",
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("invalid byte at offset 21"),
        "{error}"
    );
}

#[tokio::test]
async fn oversized_message_is_dead_lettered() {
    let h = harness().await;
    h.create("events", EVENTS).await;
    let service = h.service.clone().with_limits(ReadLimits {
        max_field_bytes: 1024,
        ..ReadLimits::default()
    });
    let dataset = h.dataset("events").await;
    let huge = format!(
        "{{\"id\": 2, \"email\": \"{}\"}}",
        "x".repeat(DEAD_LETTER_MESSAGE_BYTES * 2)
    );
    let body = format!("{{\"id\": 1}}\n{huge}\n");

    let outcome = service
        .push(&dataset, "p", body.as_bytes(), PushFormat::Ndjson, "tester")
        .await
        .unwrap();

    assert_eq!(outcome.result, PushResult::Appended);
    assert_eq!(outcome.accepted, 1);
    assert_eq!(outcome.dead_lettered, 1);
    assert_eq!(outcome.dead_letter_version, Some(1));
    let letters = h.dataset("events.dead-letter").await;
    let version = h
        .service
        .store()
        .get_version(&h.tenant, &letters.id, 1)
        .await
        .unwrap();
    let parquet = h
        .service
        .blobs()
        .get(
            &h.tenant,
            &ghaf_ingest::IngestService::digest(&version.content_digest).unwrap(),
        )
        .await
        .unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(parquet)
        .unwrap()
        .build()
        .unwrap();
    let batch = reader.into_iter().next().unwrap().unwrap();
    let messages = batch
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    let reasons = batch
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    assert_eq!(messages.value(0).len(), DEAD_LETTER_MESSAGE_BYTES);
    assert!(
        reasons
            .value(0)
            .contains("line is longer than the limit of 1024 bytes")
    );
    assert!(
        reasons
            .value(0)
            .contains(&format!("the message has {} bytes", huge.len()))
    );

    // Pushing the same batch again stores nothing new and succeeds.
    let again = service
        .push(&dataset, "p", body.as_bytes(), PushFormat::Ndjson, "tester")
        .await
        .unwrap();
    assert_eq!(again.duplicates_dropped, 1);
    assert_eq!(again.dead_letter_version, Some(1));
}
