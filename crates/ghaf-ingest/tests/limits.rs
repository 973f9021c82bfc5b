//! Size limits that bound the memory of one ingest: CSV fields and rows (also inside gzip),
//! Parquet row groups and batches, and the cut values of report samples and profiles.

mod common;

use std::io::Write;

use common::{csv_options, harness};
use ghaf_ingest::{
    IngestError, InputFormat, PROFILE_TEXT_CHARS, QuarantineRow, ReadOptions, SAMPLE_VALUE_CHARS,
};

const SCHEMA: &str = r#"
columns:
  - {name: id, type: integer, nullable: false}
  - {name: name, type: string, pattern: "^[a-z]+$"}
acceptance: {max_failure_share: 1.0}
"#;

fn gzip(content: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(content).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn oversized_gzip_row_is_quarantined() {
    let h = harness().await;
    h.create("d", SCHEMA).await;
    // A quoted field of 4 MiB with line breaks compresses to a few KiB.
    let huge = "ab\n".repeat(4 << 20 >> 2);
    let content = format!("id,name\n1,a\n2,\"{huge}\"\n3,c\n");
    let path = h.write("big.csv.gz", &gzip(content.as_bytes()));
    let options = ReadOptions {
        max_row_bytes: 64 * 1024,
        ..csv_options()
    };

    let outcome = h.ingest("d", &path, &options).await.unwrap();

    assert_eq!(outcome.report.rows_read, 3);
    assert_eq!(outcome.report.rows_accepted, 2, "rows 1 and 3 still read");
    assert_eq!(outcome.report.sample.len(), 1);
    let row = &outcome.report.sample[0];
    assert_eq!(row.row, 2);
    assert_eq!(
        row.reasons[0].message,
        "row is larger than the limit of 65536 bytes (ingest.max_row_bytes); its fields were \
         not read"
    );
}

#[tokio::test]
async fn oversized_header_is_an_error() {
    let h = harness().await;
    h.create("d", SCHEMA).await;
    let content = format!("id,{}\n1,a\n", "n".repeat(8192));
    let path = h.write("header.csv", content.as_bytes());
    let options = ReadOptions {
        max_row_bytes: 4096,
        ..csv_options()
    };
    let error = h.ingest("d", &path, &options).await.unwrap_err();
    assert!(
        error.to_string().contains("(ingest.max_row_bytes)"),
        "{error}"
    );
}

#[tokio::test]
async fn sample_values_are_cut_but_quarantine_keeps_them() {
    let h = harness().await;
    h.create("d", SCHEMA).await;
    let long = "X".repeat(5000);
    let content = format!("id,name\n1,{long}\n2,ok\n");
    let path = h.write("long.csv", content.as_bytes());

    let outcome = h.ingest("d", &path, &csv_options()).await.unwrap();

    let sampled = outcome.report.sample[0].record["name"].as_str().unwrap();
    assert!(sampled.starts_with(&"X".repeat(SAMPLE_VALUE_CHARS)));
    assert!(sampled.ends_with("… (5000 bytes, cut)"), "{sampled}");
    assert!(sampled.chars().count() < SAMPLE_VALUE_CHARS + 40);

    let stored = h
        .service
        .store()
        .get_version(&h.tenant, &h.dataset("d").await.id, 1)
        .await
        .unwrap();
    assert_eq!(stored.report.sample, outcome.report.sample);
    let quarantine = h
        .blob_text(stored.quarantine_digest.as_deref().unwrap())
        .await;
    let row: QuarantineRow = serde_json::from_str(quarantine.lines().next().unwrap()).unwrap();
    assert_eq!(row.record["name"].as_str().unwrap(), long);
}

#[tokio::test]
async fn profile_text_min_max_are_cut() {
    let h = harness().await;
    h.create("d", "columns: [{name: name, type: string}]").await;
    let content = format!("name\n{}\n{}\n", "a".repeat(1000), "z".repeat(1000));
    let path = h.write("names.csv", content.as_bytes());

    let outcome = h.ingest("d", &path, &csv_options()).await.unwrap();

    let column = &outcome.version.profile.columns[0];
    let min = column.min.as_ref().unwrap().as_str().unwrap();
    let max = column.max.as_ref().unwrap().as_str().unwrap();
    assert_eq!(min, "a".repeat(PROFILE_TEXT_CHARS));
    assert_eq!(max, "z".repeat(PROFILE_TEXT_CHARS));
}

/// Returns a Parquet file of `rows` rows with distinct 1000-byte names, made by an ingest.
async fn parquet_with_long_names(h: &common::Harness, rows: usize) -> std::path::PathBuf {
    h.create(
        "source",
        "columns: [{name: id, type: integer}, {name: name, type: string}]",
    )
    .await;
    let mut content = String::from("id,name\n");
    for index in 0..rows {
        content.push_str(&format!("{index},{index:0>1000}\n"));
    }
    let path = h.write("source.csv", content.as_bytes());
    let outcome = h.ingest("source", &path, &csv_options()).await.unwrap();
    let digest = ghaf_ingest::IngestService::digest(&outcome.version.content_digest).unwrap();
    let parquet = h.service.blobs().get(&h.tenant, &digest).await.unwrap();
    h.write("source.parquet", &parquet)
}

#[tokio::test]
async fn parquet_row_group_limit_is_enforced() {
    let h = harness().await;
    let input = parquet_with_long_names(&h, 200).await;
    h.create(
        "copy",
        "columns: [{name: id, type: integer}, {name: name, type: string}]",
    )
    .await;

    let options = ReadOptions {
        max_row_group_bytes: 64 * 1024,
        ..ReadOptions::new(InputFormat::Parquet)
    };
    let error = h.ingest("copy", &input, &options).await.unwrap_err();
    assert!(matches!(error, IngestError::InvalidInput(_)), "{error}");
    assert!(
        error
            .to_string()
            .contains("more than the limit of 65536 bytes (ingest.max_row_group_bytes)"),
        "{error}"
    );

    // Small batches by bytes read the same rows.
    let options = ReadOptions {
        max_batch_bytes: 16 * 1024,
        ..ReadOptions::new(InputFormat::Parquet)
    };
    let outcome = h.ingest("copy", &input, &options).await.unwrap();
    assert_eq!(outcome.report.rows_accepted, 200);
}
