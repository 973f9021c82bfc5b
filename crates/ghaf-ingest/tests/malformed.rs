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
        ["FieldSize: field has 1000 bytes, more than the limit of 100 (ingest.max_field_bytes)"]
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
        ["FieldSize: line is longer than the limit of 100 bytes (ingest.max_field_bytes)"]
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

#[tokio::test]
async fn float_overflow_is_quarantined() {
    let h = harness().await;
    h.create(
        "f",
        "columns: [{name: x, type: float}]\nacceptance: {max_failure_share: 1.0}",
    )
    .await;
    let path = h.write("f.csv", b"x\n1e400\n-1e400\ninf\n1.5\n");
    let outcome = h.ingest("f", &path, &csv_options()).await.unwrap();
    assert_eq!(outcome.report.rows_quarantined, 2, "1e400 and -1e400");
    let message = &outcome.report.sample[0].reasons[0].message;
    assert!(
        message.contains("outside the range of a 64-bit float"),
        "{message}"
    );
    assert_eq!(
        outcome.report.rows_accepted, 2,
        "inf is spelled out, 1.5 fits"
    );

    let path = h.write("f.ndjson", b"{\"x\": 1e400}\n{\"x\": 2.5}\n");
    let outcome = h
        .ingest("f", &path, &ReadOptions::new(InputFormat::Ndjson))
        .await
        .unwrap();
    assert_eq!(outcome.report.rows_quarantined, 1);
    let message = &outcome.report.sample[0].reasons[0].message;
    assert!(message.contains("number out of range"), "{message}");
}

#[tokio::test]
async fn integer_overflow_names_the_range() {
    let found = reasons(b"id,name\n99999999999999999999,b\n", &csv_options())
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(
        found[0].contains("outside the range of a 64-bit integer"),
        "{found:?}"
    );
}

#[tokio::test]
async fn duplicate_csv_headers_are_errors() {
    let error = reasons(b"id,name,id\n1,a,2\n", &csv_options())
        .await
        .unwrap_err();
    assert!(
        error.contains("names the column \"id\" more than once"),
        "{error}"
    );
}

#[tokio::test]
async fn integer_bounds_compare_exactly() {
    let h = harness().await;
    // 2^53 + 1 is not a float; compared as f64 it would equal the bound 2^53.
    h.create(
        "big",
        "columns: [{name: n, type: integer, max: 9007199254740992}]\nacceptance: {max_failure_share: 1.0}",
    )
    .await;
    let path = h.write("big.csv", b"n\n9007199254740992\n9007199254740993\n");
    let outcome = h.ingest("big", &path, &csv_options()).await.unwrap();
    assert_eq!(outcome.report.rows_accepted, 1);
    assert_eq!(outcome.report.rows_quarantined, 1);
    assert_eq!(outcome.report.sample[0].row, 2);
}

#[tokio::test]
async fn date_range_errors_show_iso_dates() {
    let h = harness().await;
    h.create(
        "dates",
        "columns: [{name: d, type: date, min: \"2020-01-01\", max: \"2020-12-31\"}, {name: t, type: timestamp, min: \"2020-01-01T00:00:00Z\"}]\nacceptance: {max_failure_share: 1.0}",
    )
    .await;
    let path = h.write(
        "dates.csv",
        b"d,t\n2019-05-01,2019-05-01T10:00:00Z\n2020-05-01,2020-05-01T10:00:00Z\n",
    );
    let outcome = h.ingest("dates", &path, &csv_options()).await.unwrap();
    let messages: Vec<&str> = outcome.report.sample[0]
        .reasons
        .iter()
        .map(|reason| reason.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "2019-05-01 is outside the range [2020-01-01, 2020-12-31]",
            "2019-05-01T10:00:00Z is outside the range [2020-01-01T00:00:00Z, unbounded]",
        ]
    );
}

#[tokio::test]
async fn tsv_and_parquet_gz_file_names() {
    let options = ReadOptions::for_file_name("data.tsv.gz").unwrap();
    assert_eq!(options.format, InputFormat::Csv);
    assert_eq!(options.delimiter, b'\t');
    let found = reasons(b"id\tname\n1\ta\n", &options).await.unwrap();
    assert!(found.is_empty(), "{found:?}");

    let options = ReadOptions::for_file_name("data.parquet.gz").unwrap();
    assert_eq!(options.format, InputFormat::Parquet);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, b"PAR1 not really").unwrap();
    let error = reasons(&encoder.finish().unwrap(), &options)
        .await
        .unwrap_err();
    assert!(
        error.contains("gzip-compressed Parquet is not supported"),
        "{error}"
    );
}

#[tokio::test]
async fn invalid_utf8_ndjson_names_the_offset() {
    let found = reasons(
        b"{\"id\": 1, \"name\": \"ab\xffc\"}\n{\"id\": 2}\n",
        &ReadOptions::new(InputFormat::Ndjson),
    )
    .await
    .unwrap();
    assert_eq!(found, ["Encoding: invalid UTF-8 at byte 21 of the line"]);
}

#[tokio::test]
async fn byte_order_mark_is_skipped() {
    let options = ReadOptions {
        header: false,
        ..csv_options()
    };
    let found = reasons(b"\xef\xbb\xbf1,a\n2,b\n", &options).await.unwrap();
    assert!(found.is_empty(), "{found:?}");
}
