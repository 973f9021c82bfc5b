//! Ingests and pushes stopped by shutdown or by a dropped request store no version and
//! record ABORT. Schema updates keep omitted classification labels and lower one only when
//! asked.

mod common;

use std::time::Duration;

use common::{csv_options, harness};
use ghaf_ingest::{Classification, DatasetSchema, IngestError, LineageFilter, PushFormat};

const ROWS: &str = "columns: [{name: id, type: integer}, {name: name, type: string}]";

async fn event_types(h: &common::Harness, dataset: &str) -> Vec<String> {
    let filter = LineageFilter {
        dataset: Some(dataset.into()),
        limit: 100,
        ..LineageFilter::default()
    };
    h.service
        .lineage_events(&h.tenant, &filter)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.event_type)
        .collect()
}

/// Drops `running` (an ingest or push of dataset `d`) once its START event is stored, as a
/// timed-out request or a stopping consumer does. Returns the run's event types after the
/// ABORT event, which a spawned task writes, has arrived or 30 s have passed.
async fn abort_once_started<T>(
    h: &common::Harness,
    running: tokio::task::JoinHandle<T>,
) -> Vec<String> {
    while event_types(h, "d").await.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.abort();
    assert!(
        running
            .await
            .err()
            .is_some_and(|error| error.is_cancelled()),
        "the run finished before it was dropped"
    );

    let mut types = Vec::new();
    for _ in 0..300 {
        types = event_types(h, "d").await;
        if types.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    types
}

fn many_rows() -> Vec<u8> {
    let mut content = String::from("id,name\n");
    for index in 0..200_000 {
        content.push_str(&format!("{index},name{index}\n"));
    }
    content.into_bytes()
}

#[tokio::test]
async fn shutdown_cancels_ingest() {
    let h = harness().await;
    h.create("d", ROWS).await;
    let path = h.write("rows.csv", b"id,name\n1,a\n");

    h.service.cancel_running();
    let error = h.ingest("d", &path, &csv_options()).await.unwrap_err();

    assert!(matches!(error, IngestError::Cancelled), "{error}");
    assert!(error.to_string().contains("no version was stored"));
    assert!(h.versions("d").await.is_empty());
    assert_eq!(event_types(&h, "d").await, ["START", "ABORT"]);
}

#[tokio::test]
async fn dropped_request_aborts_ingest() {
    let h = harness().await;
    h.create("d", ROWS).await;
    let path = h.write("rows.csv", &many_rows());

    // The ingest's future is dropped once its run has started, as when a request times
    // out or its client disconnects.
    let service = h.service.clone();
    let dataset = h.dataset("d").await;
    let running = tokio::spawn(async move {
        let options = csv_options();
        let input = ghaf_ingest::IngestInput {
            path: &path,
            options: &options,
            source: "rows.csv",
            progress: None,
        };
        service.ingest(&dataset, "p", input, "tester").await
    });
    let types = abort_once_started(&h, running).await;

    assert_eq!(types, ["START", "ABORT"]);
    // Give a pass that ignored the flag time to store a version, then check there is none.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.versions("d").await.is_empty());
}

#[tokio::test]
async fn dropped_push_aborts_run() {
    let h = harness().await;
    h.create("d", ROWS).await;
    let mut body = Vec::new();
    for index in 0..200_000 {
        body.extend_from_slice(format!("{{\"id\": {index}, \"name\": \"n{index}\"}}\n").as_bytes());
    }

    // The push's future is dropped once its run has started, as when a stream consumer
    // stops in the middle of a batch.
    let service = h.service.clone();
    let dataset = h.dataset("d").await;
    let running = tokio::spawn(async move {
        service
            .push(&dataset, "p", &body, PushFormat::Ndjson, "tester")
            .await
    });
    let types = abort_once_started(&h, running).await;

    assert_eq!(types, ["START", "ABORT"]);
    // Give a pass that ignored the flag time to store a segment, then check there is none.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.versions("d").await.is_empty());
}

const LABELLED: &str = r#"
columns:
  - {name: id, type: integer}
  - {name: email, type: string, classification: pii}
"#;

#[tokio::test]
async fn omitted_label_keeps_the_old_one() {
    let h = harness().await;
    let dataset = h.create("people", LABELLED).await;
    let next = DatasetSchema::from_yaml(
        "columns: [{name: id, type: integer}, {name: email, type: string}, {name: age, type: integer}]",
    )
    .unwrap();

    h.service
        .update_schema(&dataset, &next, "tester")
        .await
        .unwrap();

    let updated = h.dataset("people").await;
    assert_eq!(
        updated.schema.column("email").unwrap().label(),
        Classification::Pii
    );
    assert_eq!(
        updated.schema.column("age").unwrap().classification,
        Some(Classification::Internal),
        "a new column without a label is stored as internal"
    );
}

#[tokio::test]
async fn lowering_a_label_needs_confirmation() {
    let h = harness().await;
    let dataset = h.create("people", LABELLED).await;
    let lower = DatasetSchema::from_yaml(
        "columns: [{name: id, type: integer}, {name: email, type: string, classification: public}]",
    )
    .unwrap();

    let error = h
        .service
        .update_schema(&dataset, &lower, "tester")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("column \"email\" would lower its classification from pii to public"),
        "{message}"
    );
    assert!(message.contains("lower_classification"), "{message}");
    assert_eq!(h.dataset("people").await.schema_version, 1);

    let (version, lowered) = h
        .service
        .update_schema_lowering(&dataset, &lower, "tester", &["email".to_owned()])
        .await
        .unwrap();
    assert_eq!(version.version, 2);
    assert_eq!(lowered.len(), 1);
    assert_eq!(lowered[0].column, "email");
    assert_eq!(lowered[0].from, Classification::Pii);
    assert_eq!(lowered[0].to, Classification::Public);
    let updated = h.dataset("people").await;
    assert_eq!(
        updated.schema.column("email").unwrap().label(),
        Classification::Public
    );
}
