//! Ingest of CSV, NDJSON and Parquet files into dataset versions: checks, quarantine,
//! acceptance policy, profiles, content addressing and lineage.

mod common;

use common::{csv_options, harness};
use ghaf_ingest::{CheckKind, DatasetSchema, IngestError, InputFormat, LineageFilter, ReadOptions};

const ORDERS: &str = r#"
columns:
  - {name: id, type: integer, nullable: false}
  - {name: customer, type: string, nullable: false, classification: pii, pattern: "^C[0-9]+$"}
  - {name: amount, type: float, min: 0, max: 1000}
  - {name: status, type: string, allowed: [open, paid]}
  - {name: paid, type: boolean}
  - {name: day, type: date}
  - {name: at, type: timestamp, nullable: false}
event_time: at
unique_key: [id]
acceptance: {max_failure_share: 0.9}
"#;

const ORDERS_CSV: &str = "\
id,customer,amount,status,paid,day,at,ignored
1,C1,10.5,open,true,2024-01-01,2024-01-01T10:00:00Z,x
2,C2,NA,paid,false,2024-01-02,2024-01-02 11:00:00,x
3,X3,20,open,true,2024-01-03,2024-01-03T10:00:00+04:00,x
4,C4,-1,open,true,2024-01-04,2024-01-04T10:00:00Z,x
5,C5,30,closed,true,2024-01-05,2024-01-05T10:00:00Z,x
1,C6,40,open,true,2024-01-06,2024-01-06T10:00:00Z,x
seven,C7,50,open,true,2024-01-07,2024-01-07T10:00:00Z,x
8,C8,60,open,true,2024-01-08
9,,70,open,true,2024-01-09,2024-01-09T10:00:00Z,x
10,C10,\"1,5\",open,maybe,2024-01-10,2024-01-10T10:00:00Z,x
";

fn count(report: &ghaf_ingest::IngestReport, check: CheckKind, column: Option<&str>) -> u64 {
    report
        .checks
        .iter()
        .find(|count| count.check == check && count.column.as_deref() == column)
        .unwrap_or_else(|| panic!("no count for {check:?} {column:?}: {:?}", report.checks))
        .failed
}

#[tokio::test]
async fn csv_checks_quarantine_and_profile() {
    let h = harness().await;
    h.create("orders", ORDERS).await;
    let path = h.write("orders.csv", ORDERS_CSV.as_bytes());
    let outcome = h.ingest("orders", &path, &csv_options()).await.unwrap();
    let report = &outcome.report;

    assert!(outcome.created);
    assert_eq!(report.rows_read, 10);
    assert_eq!(report.rows_accepted, 2, "{report:#?}");
    assert_eq!(report.rows_quarantined, 8);
    assert_eq!(count(report, CheckKind::Pattern, Some("customer")), 1);
    assert_eq!(count(report, CheckKind::Range, Some("amount")), 1);
    assert_eq!(count(report, CheckKind::Allowed, Some("status")), 1);
    assert_eq!(count(report, CheckKind::Unique, Some("id")), 1);
    assert_eq!(count(report, CheckKind::Type, Some("id")), 1);
    assert_eq!(count(report, CheckKind::Type, Some("amount")), 1);
    assert_eq!(count(report, CheckKind::Type, Some("paid")), 1);
    assert_eq!(count(report, CheckKind::Format, None), 1);
    assert_eq!(count(report, CheckKind::NotNull, Some("customer")), 1);
    assert_eq!(count(report, CheckKind::NotNull, Some("at")), 0);

    let version = &outcome.version;
    assert_eq!(version.version, 1);
    assert_eq!(version.row_count, 2);
    assert_eq!(version.quarantined_rows, 8);

    // The quarantine file has one line per failing row, with its input row and reasons.
    let quarantine = h
        .blob_text(version.quarantine_digest.as_deref().unwrap())
        .await;
    let rows: Vec<serde_json::Value> = quarantine
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let numbers: Vec<u64> = rows
        .iter()
        .map(|row| row["row"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 4, 5, 6, 7, 8, 9, 10]);
    let duplicate = &rows[3];
    assert_eq!(duplicate["reasons"][0]["check"], "unique");
    assert_eq!(duplicate["record"]["customer"], "C6");
    let bad_integer = &rows[4];
    assert_eq!(bad_integer["reasons"][0]["check"], "type");
    assert!(
        bad_integer["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("\"seven\"")
    );
    assert_eq!(rows[5]["reasons"][0]["check"], "format");
    assert!(
        rows[5]["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("6 fields, expected 8")
    );
    assert_eq!(
        rows[7]["reasons"].as_array().unwrap().len(),
        2,
        "{}",
        rows[7]
    );

    // Only rows 1 and 2 pass every check.
    let profile = &version.profile;
    assert_eq!(profile.row_count, 2);
    let amount = profile
        .columns
        .iter()
        .find(|column| column.name == "amount")
        .unwrap();
    assert_eq!(amount.null_count, 1);
    assert_eq!(amount.mean, Some(10.5));
    let at = profile
        .columns
        .iter()
        .find(|column| column.name == "at")
        .unwrap();
    assert_eq!(at.min, Some(serde_json::json!("2024-01-01T10:00:00Z")));
    let id = profile
        .columns
        .iter()
        .find(|column| column.name == "id")
        .unwrap();
    assert_eq!(id.distinct_estimate, 2);
    assert_eq!(id.max, Some(serde_json::json!(2)));
}

const POINTS: &str = r#"
columns:
  - {name: id, type: integer, nullable: false}
  - {name: name, type: string}
  - {name: score, type: float, min: 0}
"#;

#[tokio::test]
async fn same_content_returns_existing_version() {
    let h = harness().await;
    h.create("points", POINTS).await;
    let first = h.write("a.csv", b"id,name,score\n1,a,0.5\n2,b,1.5\n");
    let same_rows = h.write("b.csv", b"name,id,score\na,1,0.50\nb,2,1.5\n");
    let other = h.write("c.csv", b"id,name,score\n1,a,0.5\n");

    let one = h.ingest("points", &first, &csv_options()).await.unwrap();
    let again = h.ingest("points", &first, &csv_options()).await.unwrap();
    let reordered = h
        .ingest("points", &same_rows, &csv_options())
        .await
        .unwrap();
    let two = h.ingest("points", &other, &csv_options()).await.unwrap();

    assert!(one.created);
    assert!(!again.created);
    assert_eq!(again.version, one.version);
    assert!(
        !reordered.created,
        "equal rows in another column order are the same content"
    );
    assert_eq!(reordered.version.version, 1);
    assert!(two.created);
    assert_eq!(two.version.version, 2);
    let dataset = h.dataset("points").await;
    let versions = h
        .service
        .store()
        .list_versions(&h.tenant, &dataset.id)
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);
}

#[tokio::test]
async fn policy_rejects_above_failure_share() {
    let h = harness().await;
    h.create("points", POINTS).await;
    let path = h.write("bad.csv", b"id,name,score\n1,a,0.5\n2,b,-1\nx,c,1\n");
    let error = h.ingest("points", &path, &csv_options()).await.unwrap_err();
    let IngestError::PolicyRejected {
        failed,
        total,
        quarantine,
        report,
        ..
    } = &error
    else {
        panic!("expected a policy rejection, got {error}");
    };
    assert_eq!((*failed, *total), (2, 3));
    assert_eq!(report.sample.len(), 2);
    assert!(error.to_string().contains("2 of 3 rows failed"), "{error}");
    let quarantine = h.blob_text(quarantine).await;
    assert_eq!(quarantine.lines().count(), 2);

    let dataset = h.dataset("points").await;
    let versions = h
        .service
        .store()
        .list_versions(&h.tenant, &dataset.id)
        .await
        .unwrap();
    assert!(versions.is_empty(), "a rejected ingest creates no version");

    let events = h
        .service
        .lineage_events(
            &h.tenant,
            &LineageFilter {
                limit: 10,
                ..LineageFilter::default()
            },
        )
        .await
        .unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event.event_type.as_str())
        .collect();
    assert_eq!(kinds, ["START", "FAIL"]);
    let message = events[1].event["run"]["facets"]["errorMessage"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("acceptance policy"), "{message}");
}

#[tokio::test]
async fn lineage_events_name_input_and_output() {
    let h = harness().await;
    h.create("points", POINTS).await;
    let path = h.write("a.csv", b"id,name,score\n1,a,0.5\n");
    let outcome = h.ingest("points", &path, &csv_options()).await.unwrap();
    let filter = LineageFilter {
        run_id: Some(outcome.run_id.clone()),
        limit: 10,
        ..LineageFilter::default()
    };
    let events = h.service.lineage_events(&h.tenant, &filter).await.unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event.event_type.as_str())
        .collect();
    assert_eq!(kinds, ["START", "COMPLETE"]);
    let complete = &events[1].event;
    assert_eq!(complete["run"]["runId"], outcome.run_id);
    assert!(uuid_like(complete["run"]["runId"].as_str().unwrap()));
    assert_eq!(complete["job"]["namespace"], "ghaf://acme/p");
    assert_eq!(complete["job"]["name"], "ingest.points");
    assert_eq!(complete["inputs"][0]["namespace"], "file");
    assert_eq!(complete["inputs"][0]["name"], path.display().to_string());
    let output = &complete["outputs"][0];
    assert_eq!(output["name"], "points");
    assert_eq!(output["facets"]["version"]["datasetVersion"], "1");
    let fields = output["facets"]["schema"]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 3);
    assert_eq!(fields[2]["name"], "score");
    assert_eq!(fields[2]["type"], "float");
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn ndjson_and_parquet_inputs() {
    let h = harness().await;
    h.create("points", POINTS).await;
    let ndjson = h.write(
        "points.ndjson",
        b"{\"id\": 1, \"name\": \"a\", \"score\": 0.5}\n\n{\"id\": 2, \"score\": 1}\n[1, 2]\n{\"id\": \"3\"}\nnot json\n",
    );
    let options = ReadOptions {
        max_field_bytes: 1024,
        ..ReadOptions::new(InputFormat::Ndjson)
    };
    let mut schema = DatasetSchema::from_yaml(POINTS).unwrap();
    schema.acceptance.max_failure_share = 0.9;
    let dataset = h.dataset("points").await;
    h.service
        .update_schema(&dataset, &schema, "tester")
        .await
        .unwrap();

    let outcome = h.ingest("points", &ndjson, &options).await.unwrap();
    assert_eq!(outcome.report.rows_read, 5, "blank lines are skipped");
    assert_eq!(outcome.report.rows_accepted, 2);
    let quarantine = h
        .blob_text(outcome.version.quarantine_digest.as_deref().unwrap())
        .await;
    let rows: Vec<serde_json::Value> = quarantine
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let lines: Vec<u64> = rows
        .iter()
        .map(|row| row["row"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 5, 6], "rows are numbered by input line");
    assert!(
        rows[0]["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("JSON array")
    );
    assert_eq!(rows[1]["reasons"][0]["check"], "type");
    assert_eq!(rows[2]["reasons"][0]["check"], "format");

    // A stored version read back as Parquet input has the same content address.
    let digest = ghaf_ingest::IngestService::digest(&outcome.version.content_digest).unwrap();
    let parquet = h.service.blobs().get(&h.tenant, &digest).await.unwrap();
    let path = h.write("points.parquet", &parquet);
    let again = h
        .ingest("points", &path, &ReadOptions::new(InputFormat::Parquet))
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.version.version, outcome.version.version);
    assert_eq!(again.report.rows_accepted, 2);
}

#[tokio::test]
async fn parquet_values_of_other_types_are_cast() {
    let h = harness().await;
    h.create(
        "text",
        "columns: [{name: id, type: string}, {name: score, type: string}]",
    )
    .await;
    h.create(
        "points",
        &format!("{POINTS}acceptance: {{max_failure_share: 0.5}}\n"),
    )
    .await;
    let path = h.write("text.csv", b"id,score\n1,0.5\n2,oops\n");
    let text = h.ingest("text", &path, &csv_options()).await.unwrap();
    let digest = ghaf_ingest::IngestService::digest(&text.version.content_digest).unwrap();
    let parquet = h.service.blobs().get(&h.tenant, &digest).await.unwrap();

    // The Parquet file lacks `name`, so it cannot be read as `points`.
    let input = h.write("text.parquet", &parquet);
    let error = h
        .ingest("points", &input, &ReadOptions::new(InputFormat::Parquet))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("lacks the declared columns [\"name\"]"),
        "{error}"
    );

    h.create("casts", "columns: [{name: id, type: integer}, {name: score, type: float}]\nacceptance: {max_failure_share: 0.5}").await;
    let outcome = h
        .ingest("casts", &input, &ReadOptions::new(InputFormat::Parquet))
        .await
        .unwrap();
    assert_eq!(outcome.report.rows_accepted, 1);
    assert_eq!(outcome.report.sample[0].row, 2);
    assert!(
        outcome.report.sample[0].reasons[0]
            .message
            .contains("\"oops\"")
    );
}

#[tokio::test]
async fn parquet_casts_that_change_values_fail() {
    let h = harness().await;
    h.create(
        "floats",
        "columns: [{name: id, type: string}, {name: x, type: float}]",
    )
    .await;
    let path = h.write("floats.csv", b"id,x\na,1.5\nb,6\nc,2\n");
    let floats = h.ingest("floats", &path, &csv_options()).await.unwrap();
    let digest = ghaf_ingest::IngestService::digest(&floats.version.content_digest).unwrap();
    let parquet = h.service.blobs().get(&h.tenant, &digest).await.unwrap();
    let input = h.write("floats.parquet", &parquet);

    h.create(
        "ints",
        "columns: [{name: id, type: string}, {name: x, type: integer}]\nacceptance: {max_failure_share: 0.5}",
    )
    .await;
    let outcome = h
        .ingest("ints", &input, &ReadOptions::new(InputFormat::Parquet))
        .await
        .unwrap();
    assert_eq!(outcome.report.rows_accepted, 2);
    assert_eq!(outcome.report.sample.len(), 1);
    assert_eq!(outcome.report.sample[0].row, 1);
    assert!(
        outcome.report.sample[0].reasons[0]
            .message
            .contains("without changing the value"),
        "{:?}",
        outcome.report.sample[0]
    );
}

#[tokio::test]
async fn incompatible_schema_update_is_rejected() {
    let h = harness().await;
    let dataset = h.create("points", POINTS).await;
    let narrower =
        DatasetSchema::from_yaml("columns: [{name: id, type: string, nullable: false}]").unwrap();
    let error = h
        .service
        .update_schema(&dataset, &narrower, "tester")
        .await
        .unwrap_err();
    let IngestError::IncompatibleSchema { version, problems } = &error else {
        panic!("expected incompatibility, got {error}");
    };
    assert_eq!(*version, 1);
    assert_eq!(problems.len(), 3, "{problems:?}");

    let wider =
        DatasetSchema::from_yaml(&format!("{POINTS}  - {{name: note, type: string}}\n")).unwrap();
    let added = h
        .service
        .update_schema(&dataset, &wider, "tester")
        .await
        .unwrap();
    assert_eq!(added.version, 2);
    assert_eq!(h.dataset("points").await.schema.columns.len(), 4);
}

/// Rows of `points` as an in-memory batch: `score` is text, row 2 fails the float cast and
/// row 3 the `min: 0` check, and the extra column is ignored.
fn points_batch() -> arrow::array::RecordBatch {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};

    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "extra",
            Arc::new(StringArray::from(vec!["x", "y", "z", "w"])),
        ),
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3, 4]))),
        (
            "name",
            Arc::new(StringArray::from(vec![
                Some("a"),
                None,
                Some("c"),
                Some("d"),
            ])),
        ),
        (
            "score",
            Arc::new(StringArray::from(vec!["0.5", "oops", "-1", "2"])),
        ),
    ];
    arrow::array::RecordBatch::try_from_iter(columns).unwrap()
}

#[tokio::test]
async fn batch_ingest_matches_file_ingest() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use sha2::Digest;

    let h = harness().await;
    h.create(
        "points",
        &format!("{POINTS}acceptance: {{max_failure_share: 0.5}}\n"),
    )
    .await;
    let dataset = h.dataset("points").await;
    let outcome = h
        .service
        .ingest_batch(
            &dataset,
            "p",
            points_batch(),
            "memory:points",
            ghaf_ingest::VersionEncoding::Fast,
            "tester",
        )
        .await
        .unwrap();
    assert!(outcome.created);
    assert_eq!(outcome.report.rows_read, 4);
    assert_eq!(outcome.report.rows_accepted, 2);
    let rows: Vec<u64> = outcome.report.sample.iter().map(|row| row.row).collect();
    assert_eq!(rows, [2, 3], "rows are numbered by batch row");
    assert_eq!(outcome.version.source, "memory:points");
    assert_eq!(outcome.version.row_count, 2);

    // The stored file is the one the digest names, in the fast encoding.
    let digest = ghaf_ingest::IngestService::digest(&outcome.version.content_digest).unwrap();
    let parquet = h.service.blobs().get(&h.tenant, &digest).await.unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&parquet)),
        outcome.version.content_digest
    );
    assert_eq!(outcome.version.content_size, parquet.len() as u64);
    let reader = SerializedFileReader::new(parquet.clone()).unwrap();
    for column in reader.metadata().row_group(0).columns() {
        assert_eq!(
            column.compression(),
            parquet::basic::Compression::LZ4_RAW,
            "{}",
            column.column_path()
        );
        assert!(
            column.dictionary_page_offset().is_none(),
            "{} has a dictionary page",
            column.column_path()
        );
    }

    // The same rows read from the stored file give the same profile, in a version of
    // its own because the file ingest writes the compact encoding.
    let path = h.write("points.parquet", &parquet);
    let again = h
        .ingest("points", &path, &ReadOptions::new(InputFormat::Parquet))
        .await
        .unwrap();
    assert!(again.created);
    assert_eq!(again.version.profile, outcome.version.profile);
    assert_eq!(again.version.row_count, 2);

    // The same batch again returns the first version.
    let repeated = h
        .service
        .ingest_batch(
            &dataset,
            "p",
            points_batch(),
            "memory:points",
            ghaf_ingest::VersionEncoding::Fast,
            "tester",
        )
        .await
        .unwrap();
    assert!(!repeated.created);
    assert_eq!(repeated.version.version, outcome.version.version);
}

#[tokio::test]
async fn batch_ingest_rejects_missing_columns() {
    let h = harness().await;
    h.create("points", POINTS).await;
    let dataset = h.dataset("points").await;
    let batch = points_batch().project(&[1, 3]).unwrap();
    let error = h
        .service
        .ingest_batch(
            &dataset,
            "p",
            batch,
            "memory:points",
            ghaf_ingest::VersionEncoding::Compact,
            "tester",
        )
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("record batch lacks the declared columns [\"name\"]"),
        "{error}"
    );
}
