//! Malformed inputs: each gets a clear error or a quarantine reason, never a panic.

mod common;

use common::{csv_options, harness};
use ghaf_ingest::{IngestError, InputFormat, ReadOptions};

const SCHEMA: &str = r#"
columns:
  - {name: id, type: integer, nullable: false}
  - {name: name, type: string}
acceptance: {max_failure_share: 1.0}
"#;

/// Ingests `content` and returns the reasons of the quarantined rows, or the error.
async fn reasons(content: &[u8], options: &ReadOptions) -> Result<Vec<String>, String> {
    let h = harness().await;
    h.create("d", SCHEMA).await;
    let path = h.write("input", content);
    match h.ingest("d", &path, options).await {
        Ok(outcome) => Ok(outcome
            .report
            .sample
            .iter()
            .flat_map(|row| {
                row.reasons
                    .iter()
                    .map(|reason| format!("{:?}: {}", reason.check, reason.message))
            })
            .collect()),
        Err(IngestError::PolicyRejected { report, .. }) => Ok(report
            .sample
            .iter()
            .flat_map(|row| {
                row.reasons
                    .iter()
                    .map(|reason| format!("{:?}: {}", reason.check, reason.message))
            })
            .collect()),
        Err(error) => Err(error.to_string()),
    }
}

#[tokio::test]
async fn bad_utf8_is_quarantined() {
    let found = reasons(b"id,name\n1,ok\n2,\xff\xfe\n", &csv_options())
        .await
        .unwrap();
    assert_eq!(found, ["Encoding: invalid UTF-8 at byte 0"]);
}

#[tokio::test]
async fn ragged_rows_are_quarantined() {
    let found = reasons(b"id,name\n1,a,extra\n2\n3,c\n", &csv_options())
        .await
        .unwrap();
    assert_eq!(
        found,
        [
            "Format: row has 3 fields, expected 2",
            "Format: row has 1 fields, expected 2"
        ]
    );
}

#[tokio::test]
async fn wrong_types_are_quarantined() {
    let found = reasons(
        b"id,name\n1.5,a\n99999999999999999999,b\n3,c\n",
        &csv_options(),
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 2);
    assert!(
        found[0].starts_with("Type: cannot parse \"1.5\" as integer"),
        "{found:?}"
    );
    assert!(found[1].contains("99999999999999999999"), "{found:?}");
}

#[tokio::test]
async fn huge_fields_are_quarantined() {
    let options = ReadOptions {
        max_field_bytes: 100,
        ..csv_options()
    };
    let content = format!("id,name\n1,{}\n2,b\n", "x".repeat(1000));
    let found = reasons(content.as_bytes(), &options).await.unwrap();
    assert_eq!(
        found,
        ["FieldSize: field has 1000 bytes, more than the limit of 100"]
    );

    let ndjson = ReadOptions {
        max_field_bytes: 100,
        ..ReadOptions::new(InputFormat::Ndjson)
    };
    let content = format!(
        "{{\"id\": 1, \"name\": \"{}\"}}\n{{\"id\": 2}}\n",
        "x".repeat(100_000)
    );
    let found = reasons(content.as_bytes(), &ndjson).await.unwrap();
    assert_eq!(
        found,
        ["FieldSize: line is longer than the limit of 100 bytes"]
    );
}

#[tokio::test]
async fn empty_inputs_are_errors() {
    let error = reasons(b"", &csv_options()).await.unwrap_err();
    assert!(error.contains("the input is empty"), "{error}");
    let error = reasons(b"id,name\n", &csv_options()).await.unwrap_err();
    assert!(error.contains("no data rows"), "{error}");
    let error = reasons(b"\n\n", &ReadOptions::new(InputFormat::Ndjson))
        .await
        .unwrap_err();
    assert!(error.contains("no data rows"), "{error}");
}

#[tokio::test]
async fn wrong_formats_are_errors() {
    let error = reasons(b"id,name\n1,a\n", &ReadOptions::new(InputFormat::Parquet))
        .await
        .unwrap_err();
    assert!(error.contains("not a readable Parquet file"), "{error}");

    let error = reasons(b"PAR1\x00\x01garbage", &csv_options())
        .await
        .unwrap_err();
    assert!(error.contains("lacks the declared columns"), "{error}");

    let error = reasons(b"id;name\n1;a\n", &csv_options())
        .await
        .unwrap_err();
    assert!(error.contains("check the delimiter"), "{error}");

    let error = reasons(b"\x1f\x8b\x08\x00garbage", &csv_options())
        .await
        .unwrap_err();
    assert!(error.contains("cannot read the input"), "{error}");

    let found = reasons(b"id,name\n1,a\n", &ReadOptions::new(InputFormat::Ndjson))
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(
        found[0].starts_with("Format: line is not valid JSON"),
        "{found:?}"
    );
}

#[tokio::test]
async fn invalid_options_are_errors() {
    let options = ReadOptions {
        delimiter: b'\n',
        ..csv_options()
    };
    let error = reasons(b"id,name\n1,a\n", &options).await.unwrap_err();
    assert!(error.contains("invalid option `delimiter`"), "{error}");
}

#[tokio::test]
async fn gzip_input_is_decompressed() {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"id,name\n1,a\nx,b\n").unwrap();
    let found = reasons(&encoder.finish().unwrap(), &csv_options())
        .await
        .unwrap();
    assert_eq!(found, ["Type: cannot parse \"x\" as integer"]);
}
